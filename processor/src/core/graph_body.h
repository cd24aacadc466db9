// Body: the rewrite rules of core/graph_rewrite.h (shape_chain,
// reshape_chain, identity_reshape, concat_split, concat_flatten,
// fold_constant) over one graph body, run to a fixpoint.
//
// A body is either a GraphDef's top-level nodes (inputs named "node:index")
// or one FunctionDef's (inputs "node:arg:index", function inputs by their arg
// name). The graph_rewrite.h contract holds per body: a rule applies only
// when static facts (core/graph_facts.h) prove its output identical, a node
// named from outside the body (`protected_names`: signatures, saver,
// collections) is never rewired or removed, and a function's ret / control_ret
// follow every rewiring.
//
// The rules themselves are in core/graph_rules.cc; this header's .cc holds
// name resolution, shape inference over shape ops, rewiring and the removal
// of orphaned nodes. Not thread-safe: one Body per body, on one thread.
// Includes TensorFlow's protobuf headers: built without TSan (see
// core/graph_facts.h).
#ifndef RECSTRATA_CORE_GRAPH_BODY_H_
#define RECSTRATA_CORE_GRAPH_BODY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>

#include "core/graph_facts.h"
#include "tensorflow/core/framework/function.pb.h"
#include "tensorflow/core/framework/node_def.pb.h"

namespace rs {
namespace rewrite {

class Body {
 public:
  // `nodes` and `fn` (null for a top-level graph) are modified in place;
  // `rules` counts the applications per rule name.
  Body(google::protobuf::RepeatedPtrField<tensorflow::NodeDef>* nodes, tensorflow::FunctionDef* fn,
       std::set<std::string> protected_names, std::map<std::string, int>* rules);

  // Records which nodes had consumers before the pass (see orphans_ok); call
  // once before Run.
  void RecordUses();

  // Runs the rules to a fixpoint (at most kMaxPasses passes, one rewrite per
  // node per pass); returns whether anything changed. A body with a
  // placeholder attribute (polymorphic) is left alone.
  bool Run();

 private:
  struct Ref {
    const tensorflow::NodeDef* node = nullptr;  // null: a function input (arg) or unknown node
    int index = -1;                             // flat output index, -1: not resolvable
    std::string arg;                            // function input name
  };

  // --- the body's facts (graph_body.cc) ---------------------------------
  void Index();
  Ref Resolve(const std::string& in) const;
  // The name consumers use for output `index` of `n` (n's op must be in OutputArg).
  std::string Name(const tensorflow::NodeDef& n, int index) const;
  const tensorflow::NodeDef* Producer(const std::string& in, int want_index = 0) const;
  std::optional<IntConst> ConstOf(const std::string& in) const;
  std::optional<Shape> ShapeOf(const std::string& in, int depth = 0) const;
  // Output shape of a Reshape(Const) / ExpandDims(Const) / Squeeze node, from its input's.
  std::optional<Shape> OpShape(const tensorflow::NodeDef& n, int depth = 0) const;
  bool HasControlInputs(const tensorflow::NodeDef& n) const;
  // Data and control uses of `m`, plus one if it is named from outside.
  int Consumers(const tensorflow::NodeDef& m) const;

  // --- edits (graph_body.cc) --------------------------------------------
  std::string UniqueName(const std::string& base);
  // A new Const node next to `near` (same device); returns the name to consume it by.
  std::string AddConst(const tensorflow::NodeDef& near, const IntConst& c, const std::string& suffix);
  void Count(const char* rule) { (*rules_)[rule]++; }
  // Every data use of output `index` of `from` now reads `to` instead; false
  // (nothing changed) if `from` is named from outside the body.
  bool Rewire(const tensorflow::NodeDef& from, int index, const std::string& to);
  // Removes nodes without consumers that the rules may have orphaned.
  void RemoveDead();
  // Only nodes the pass created or whose consumers it took away are removed:
  // a dead node the exporter left stays (someone may fetch it by name).
  bool orphans_ok(const tensorflow::NodeDef& n) const { return initially_used_.count(n.name()) || created_(n); }
  static bool created_(const tensorflow::NodeDef& n) { return n.name().find("/_rs_") != std::string::npos; }

  // --- rules (graph_rules.cc): each rewrites `n` or returns false -------
  bool FoldConstant(tensorflow::NodeDef* n);
  bool ShapeChain(tensorflow::NodeDef* n);
  bool ReshapeChain(tensorflow::NodeDef* n);
  bool ConcatSplit(tensorflow::NodeDef* n);
  bool ConcatFlatten(tensorflow::NodeDef* n);
  static bool ShapeOp(const tensorflow::NodeDef& n);
  // The normalized const axis of a concat/split, given the rank (-1: unknown).
  static std::optional<int64_t> Axis(const std::optional<IntConst>& c, int64_t rank);

  google::protobuf::RepeatedPtrField<tensorflow::NodeDef>* nodes_;
  tensorflow::FunctionDef* fn_;
  std::set<std::string> protected_;
  std::map<std::string, int>* rules_;
  std::unordered_map<std::string, tensorflow::NodeDef*> by_name_;
  std::set<std::string> names_;
  std::set<std::string> touched_;
  std::set<std::string> initially_used_;
  std::unordered_map<std::string, Shape> arg_shapes_;
};

}  // namespace rewrite
}  // namespace rs

#endif  // RECSTRATA_CORE_GRAPH_BODY_H_
