// GraphRewrite: recstrata's own fusion pass over a plain SavedModel, applied
// at load (config "graph_rewrite": "on"; SessionGroup loads the rewritten
// MetaGraphDef through TensorFlow's own SavedModel loader, see
// core/session_group.h). It works on tensorflow::GraphDef protos: the
// top-level graph of every MetaGraphDef and every function of its library
// (TF2 / Keras exports keep the model's body in a FunctionDef).
//
// Contract: every rewrite is output-identical by construction — for every
// input, the rewritten graph computes bit-identical outputs, and fails where
// the original fails. A rewrite is applied only when that is proven from
// static facts in the graph (Const values, the exporter's "_output_shapes",
// Placeholder shapes); anything it cannot prove, or any op, attribute or
// naming it does not recognise, is left exactly as it was. The rules:
//   shape_chain     Reshape(x, Pack(StridedSlice(Shape(x))[0], c1..ck)) with
//                   x's non-batch dims static and product c1*..*ck ->
//                   Reshape(x, Const[-1, c1..ck]) (Keras's Reshape layer
//                   around every embedding lookup);
//   reshape_chain   a chain of Reshape(Const) / ExpandDims(Const) / Squeeze
//                   with static shapes (at most one unknown dim) -> one
//                   Reshape(Const);
//   identity_reshape  a Reshape whose output shape equals its input's -> its input;
//   concat_split    ConcatV2 of all outputs of one Split/SplitV, in order, on the
//                   split axis -> the split's input;
//   concat_flatten  ConcatV2 whose input is another single-use ConcatV2 on the
//                   same axis -> one ConcatV2;
//   inline_call     a top-level StatefulPartitionedCall/PartitionedCall that a
//                   signature's outputs depend on -> the function's body (renamed
//                   "call/node"), the call kept as an IdentityN of the body's
//                   results under its own name; only for bodies whose effects
//                   all feed their results (see core/graph_inline.h); calls the
//                   saver or a collection names (save, restore, init) are kept.
//                   TensorFlow's own inliner would add an Identity per argument;
//   fold_constant   Shape of a fully static tensor, StridedSlice (1-D, stride 1),
//                   Cast between int32/int64 and Pack of small integer Consts
//                   -> Const (at most 64 elements; only these shape ops are
//                   evaluated).
// Nodes left without consumers by a rewrite are removed if they are one of
// the ops above (stateless); nodes named by a signature, the saver, a
// collection or a function's outputs are never removed.
//
// Thread-safe: a pure function. Its implementation touches TensorFlow's
// protobuf messages, so like core/tf_protos.cc its files are built without
// TSan (processor/CMakeLists.txt, DEVELOPERS.md): graph_rewrite.cc (the
// driver and the report), graph_facts.{h,cc} (shapes, Consts, attrs),
// graph_body.{h,cc} and graph_rules.cc (the rules over one body),
// graph_inline.{h,cc} (inline_call).
#ifndef RECSTRATA_CORE_GRAPH_REWRITE_H_
#define RECSTRATA_CORE_GRAPH_REWRITE_H_

#include <map>
#include <string>

namespace rs {

struct GraphRewriteReport {
  bool changed = false;
  // Nodes the signature runs: the top-level nodes its outputs depend on plus
  // the nodes of every function those call (inlined functions no longer count).
  int nodes_before = 0;
  int nodes_after = 0;
  std::map<std::string, int> rules;  // rule name -> applications
  std::string note;                  // why nothing was rewritten / a fallback
  // {"applied":..,"nodes_before":..,"nodes_after":..,"rules":{..},"note":..}
  std::string ToJson(bool applied) const;
};

// Rewrites a serialized SavedModel (saved_model.pb). Returns the rewritten
// serialization, or an empty string when no rule applied. Throws rs::Error
// RS_ERR_CORRUPTION if `bytes` is not a SavedModel.
// `signature` only scopes the node counts of the report.
std::string RewriteSavedModel(const std::string& bytes, const std::string& signature, GraphRewriteReport* report);

}  // namespace rs

#endif  // RECSTRATA_CORE_GRAPH_REWRITE_H_
