// The rewrite's driver (core/graph_rewrite.h): parses the SavedModel, runs
// the rules (core/graph_body.h, core/graph_rules.cc) over every function and,
// unless collections may name nodes it cannot see, inlines the serving calls
// (core/graph_inline.h) and rewrites the top-level graph; the report's node
// counts are scoped to one signature.
#include "core/graph_rewrite.h"

#include <functional>
#include <set>
#include <unordered_map>
#include <vector>

#include "base/json_text.h"
#include "base/status.h"
#include "core/graph_body.h"
#include "core/graph_inline.h"
#include "tensorflow/core/framework/attr_value.pb.h"
#include "tensorflow/core/framework/function.pb.h"
#include "tensorflow/core/framework/graph.pb.h"
#include "tensorflow/core/framework/node_def.pb.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"
#include "tensorflow/core/protobuf/saved_model.pb.h"

namespace rs {

std::string GraphRewriteReport::ToJson(bool applied) const {
  std::string out = std::string("{\"applied\":") + (applied ? "true" : "false");
  out += ",\"nodes_before\":" + std::to_string(nodes_before) + ",\"nodes_after\":" + std::to_string(nodes_after);
  out += ",\"rules\":{";
  bool first = true;
  for (const auto& kv : rules) {
    if (!first) out += ",";
    first = false;
    AppendJsonString(out, kv.first);
    out += ":" + std::to_string(kv.second);
  }
  out += "},\"note\":";
  if (note.empty()) out += "null"; else AppendJsonString(out, note);
  out += "}";
  return out;
}

namespace {

using rewrite::Body;
using tensorflow::AttrValue;
using tensorflow::NodeDef;

// Functions reachable from the top-level graph through function attrs.
void CollectFunctions(const tensorflow::GraphDef& g, std::set<std::string>* used) {
  std::unordered_map<std::string, const tensorflow::FunctionDef*> fns;
  for (const auto& f : g.library().function()) fns[f.signature().name()] = &f;
  std::vector<std::string> stack;
  std::function<void(const AttrValue&)> visit = [&](const AttrValue& v) {
    if (v.has_func()) {
      stack.push_back(v.func().name());
      for (const auto& kv : v.func().attr()) visit(kv.second);
    }
    for (const auto& fn : v.list().func()) stack.push_back(fn.name());
  };
  auto visit_node = [&](const NodeDef& n) {
    if (fns.count(n.op())) stack.push_back(n.op());
    for (const auto& kv : n.attr()) visit(kv.second);
  };
  for (const NodeDef& n : g.node()) visit_node(n);
  while (!stack.empty()) {
    std::string name = stack.back();
    stack.pop_back();
    auto it = fns.find(name);
    if (it == fns.end() || !used->insert(name).second) continue;
    for (const NodeDef& n : it->second->node_def()) visit_node(n);
  }
}

std::string NodeOf(const std::string& tensor) {
  std::string s = tensor[0] == '^' ? tensor.substr(1) : tensor;
  return s.substr(0, s.find(':'));
}

// Names the world outside the top-level graph refers to.
std::set<std::string> ProtectedNames(const tensorflow::MetaGraphDef& mg) {
  std::set<std::string> names;
  for (const auto& kv : mg.signature_def()) {
    for (const auto& io : kv.second.inputs()) names.insert(NodeOf(io.second.name()));
    for (const auto& io : kv.second.outputs()) names.insert(NodeOf(io.second.name()));
  }
  if (mg.has_saver_def()) {
    const auto& s = mg.saver_def();
    for (const std::string& t : {s.filename_tensor_name(), s.save_tensor_name(), s.restore_op_name()})
      if (!t.empty()) names.insert(NodeOf(t));
  }
  for (const auto& kv : mg.collection_def()) {
    for (const auto& v : kv.second.node_list().value()) names.insert(NodeOf(v));
    // Other collections (bytes, any) may name nodes too: they keep whatever
    // they mention only by not being rewritten (see Rewire / RemoveDead).
  }
  for (const auto& a : mg.asset_file_def()) names.insert(NodeOf(a.tensor_info().name()));
  return names;
}

// Nodes signature `sig` runs: the top-level nodes its outputs depend on and
// every node of the functions those call (0 if mg has no such signature).
int CountNodes(const tensorflow::MetaGraphDef& mg, const std::string& sig) {
  auto s = mg.signature_def().find(sig);
  if (s == mg.signature_def().end()) return 0;
  const auto& g = mg.graph_def();
  std::unordered_map<std::string, const NodeDef*> by_name;
  for (const NodeDef& n : g.node()) by_name[n.name()] = &n;
  std::set<std::string> seen;
  std::vector<std::string> stack;
  for (const auto& io : s->second.outputs()) stack.push_back(NodeOf(io.second.name()));
  tensorflow::GraphDef reached;
  while (!stack.empty()) {
    std::string name = stack.back();
    stack.pop_back();
    auto it = by_name.find(name);
    if (it == by_name.end() || !seen.insert(name).second) continue;
    *reached.add_node() = *it->second;
    for (const auto& in : it->second->input()) stack.push_back(NodeOf(in));
  }
  *reached.mutable_library() = g.library();
  std::set<std::string> used;
  CollectFunctions(reached, &used);
  int n = reached.node_size();
  for (const auto& f : g.library().function())
    if (used.count(f.signature().name())) n += f.node_def_size();
  return n;
}

}  // namespace

std::string RewriteSavedModel(const std::string& bytes, const std::string& signature, GraphRewriteReport* report) {
  tensorflow::SavedModel sm;
  if (!sm.ParseFromString(bytes)) Fail(RS_ERR_CORRUPTION, "saved_model.pb does not parse as a SavedModel");
  bool changed = false;
  for (auto& mg : *sm.mutable_meta_graphs()) {
    report->nodes_before += CountNodes(mg, signature);
    // Collections holding anything but node lists may name nodes we cannot
    // see: such a graph's top level is left alone (functions still rewritten).
    bool opaque_collections = false;
    for (const auto& kv : mg.collection_def())
      if (!kv.second.has_node_list() && kv.first != "saved_model_main_op" && kv.first != "legacy_init_op" &&
          kv.first != "saved_model_assets" && kv.first != "variables" && kv.first != "trainable_variables")
        opaque_collections = true;
    auto* graph = mg.mutable_graph_def();
    for (auto& f : *graph->mutable_library()->mutable_function()) {
      std::set<std::string> keep;
      Body body(f.mutable_node_def(), &f, keep, &report->rules);
      body.RecordUses();
      changed |= body.Run();
    }
    if (!opaque_collections) {
      // Calls named by the saver or a collection (restore, save, init) are run
      // as targets: they keep their function.
      std::set<std::string> targets = ProtectedNames(mg);
      for (const auto& kv : mg.signature_def())
        for (const auto& io : kv.second.outputs()) targets.erase(NodeOf(io.second.name()));
      changed |= rewrite::InlineCalls(graph, targets, &report->rules);
      Body top(graph->mutable_node(), nullptr, ProtectedNames(mg), &report->rules);
      top.RecordUses();
      changed |= top.Run();
    }
    report->nodes_after += CountNodes(mg, signature);
  }
  report->changed = changed;
  if (!changed) return std::string();
  return sm.SerializeAsString();
}

}  // namespace rs
