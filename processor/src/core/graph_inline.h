// The inline_call rule of core/graph_rewrite.h: replaces calls
// (StatefulPartitionedCall / PartitionedCall) in a top-level graph by the
// called function's body, so that TensorFlow's own inliner adds no Identity
// per argument and output at every call.
//
// A call is inlined only if it is plain: no control inputs, a known function
// without attributes to substitute, no _noinline / XLA marks, every op known
// to the registry, every output a single tensor, and nothing in the body with
// effects beyond its outputs (every stateful node other than ReadVariableOp /
// nested calls feeds a returned tensor, and so does every control output).
// The call node stays, as an IdentityN of the body's returned tensors with
// the call's name, so whatever names "call:k" or "^call" still does. Body
// nodes are renamed "call/node"; a call whose renamed nodes would collide with
// an existing name is left alone.
//
// Internal to the rewrite; includes TensorFlow's protobuf headers, so built
// without TSan (see core/graph_facts.h).
#ifndef RECSTRATA_CORE_GRAPH_INLINE_H_
#define RECSTRATA_CORE_GRAPH_INLINE_H_

#include <map>
#include <set>
#include <string>

#include "tensorflow/core/framework/graph.pb.h"

namespace rs {
namespace rewrite {

// Inlines the plain calls of `g` in rounds (calls a body brought in are
// inlined in the next round, at most 8), except the calls named in `keep`
// (run as targets by the saver or a collection: they keep their function).
// Counts "inline_call" in `rules`; returns whether anything changed.
bool InlineCalls(tensorflow::GraphDef* g, std::set<std::string> keep, std::map<std::string, int>* rules);

}  // namespace rewrite
}  // namespace rs

#endif  // RECSTRATA_CORE_GRAPH_INLINE_H_
