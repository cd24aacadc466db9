#include "core/graph_inline.h"

#include <cstdlib>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/graph_facts.h"
#include "tensorflow/c/c_api.h"
#include "tensorflow/core/framework/attr_value.pb.h"
#include "tensorflow/core/framework/function.pb.h"
#include "tensorflow/core/framework/node_def.pb.h"
#include "tensorflow/core/framework/op_def.pb.h"

namespace rs {
namespace rewrite {
namespace {

using tensorflow::AttrValue;
using tensorflow::NodeDef;

// The op registry's OpDefs (TF_GetAllOpList), read once.
const std::unordered_map<std::string, tensorflow::OpDef>& OpDefs() {
  static const auto* defs = [] {
    auto* m = new std::unordered_map<std::string, tensorflow::OpDef>();
    TF_Buffer* buf = TF_GetAllOpList();
    tensorflow::OpList list;
    if (buf && list.ParseFromArray(buf->data, static_cast<int>(buf->length)))
      for (const auto& op : list.op()) (*m)[op.name()] = op;
    if (buf) TF_DeleteBuffer(buf);
    return m;
  }();
  return *defs;
}

// One graph's inliner (see the header); Run is InlineCalls.
class Inliner {
 public:
  Inliner(tensorflow::GraphDef* g, std::set<std::string> keep, std::map<std::string, int>* rules)
      : g_(g), keep_(std::move(keep)), rules_(rules) {
    for (const auto& f : g_->library().function()) fns_[f.signature().name()] = &f;
  }

  bool Run() {
    bool any = false;
    for (int round = 0; round < 8; ++round) {
      bool changed = false;
      names_.clear();
      for (const NodeDef& n : g_->node()) names_.insert(n.name());
      const int count = g_->node_size();
      for (int i = 0; i < count; ++i)
        if (Inline(i)) changed = true;
      if (!changed) break;
      any = true;
    }
    return any;
  }

 private:
  // Sizes of the output args of `n` (its op's OpDef, or a function's signature).
  bool OutputSizes(const NodeDef& n, std::vector<std::pair<std::string, int>>* out) const {
    auto fit = fns_.find(n.op());
    if (fit != fns_.end()) {
      for (const auto& a : fit->second->signature().output_arg()) {
        if (!a.number_attr().empty() || !a.type_list_attr().empty()) return false;
        out->emplace_back(a.name(), 1);
      }
      return true;
    }
    auto it = OpDefs().find(n.op());
    if (it == OpDefs().end()) return false;
    const tensorflow::OpDef& def = it->second;
    auto attr = [&](const std::string& name) -> const AttrValue* {
      auto a = n.attr().find(name);
      if (a != n.attr().end()) return &a->second;
      for (const auto& d : def.attr())
        if (d.name() == name && d.has_default_value()) return &d.default_value();
      return nullptr;
    };
    for (const auto& a : def.output_arg()) {
      int size = 1;
      if (!a.number_attr().empty()) {
        const AttrValue* v = attr(a.number_attr());
        if (!v) return false;
        size = static_cast<int>(v->i());
      } else if (!a.type_list_attr().empty()) {
        const AttrValue* v = attr(a.type_list_attr());
        if (!v) return false;
        size = v->list().type_size();
      }
      out->emplace_back(a.name(), size);
    }
    return true;
  }

  static bool IsCall(const std::string& op) { return op == "StatefulPartitionedCall" || op == "PartitionedCall"; }

  bool Inline(int index) {
    const NodeDef& call = g_->node(index);
    if (!IsCall(call.op()) || keep_.count(call.name())) return false;
    for (const auto& in : call.input())
      if (!in.empty() && in[0] == '^') return false;
    auto fa = call.attr().find("f");
    if (fa == call.attr().end() || !fa->second.func().attr().empty()) return false;
    auto fit = fns_.find(fa->second.func().name());
    if (fit == fns_.end()) return false;
    const tensorflow::FunctionDef& f = *fit->second;
    for (const char* mark : {"_noinline", "_XlaMustCompile", "_xla_compile_device_type"}) {
      auto m = f.attr().find(mark);
      if (m != f.attr().end() && (m->second.b() || !m->second.s().empty())) return false;
    }
    const auto& sig = f.signature();
    if (sig.input_arg_size() != call.input_size() || sig.output_arg_size() == 0) return false;
    for (const auto& a : sig.output_arg())
      if (!a.number_attr().empty() || !a.type_list_attr().empty() || a.type() == tensorflow::DT_INVALID) return false;

    // Output arg offsets of every body node, and the body's data edges.
    std::unordered_map<std::string, std::vector<std::pair<std::string, int>>> outs;
    std::unordered_map<std::string, const NodeDef*> body;
    for (const NodeDef& n : f.node_def()) {
      if (HasPlaceholderAttr(n)) return false;
      std::vector<std::pair<std::string, int>> sizes;
      if (!OutputSizes(n, &sizes)) return false;
      outs[n.name()] = std::move(sizes);
      body[n.name()] = &n;
      if (names_.count(call.name() + "/" + n.name())) return false;
    }
    std::unordered_map<std::string, std::string> args;
    for (int i = 0; i < sig.input_arg_size(); ++i) args[sig.input_arg(i).name()] = call.input(i);
    const std::string prefix = call.name() + "/";
    auto translate = [&](const std::string& in, std::string* out) -> bool {
      if (in.empty()) return false;
      if (in[0] == '^') {
        if (!body.count(in.substr(1))) return false;
        *out = "^" + prefix + in.substr(1);
        return true;
      }
      size_t c1 = in.find(':');
      if (c1 == std::string::npos) {
        auto a = args.find(in);
        if (a == args.end()) return false;
        *out = a->second;
        return true;
      }
      size_t c2 = in.find(':', c1 + 1);
      if (c2 == std::string::npos) return false;
      std::string node = in.substr(0, c1), arg = in.substr(c1 + 1, c2 - c1 - 1);
      int k = std::atoi(in.c_str() + c2 + 1);
      auto o = outs.find(node);
      if (o == outs.end()) return false;
      int flat = 0;
      for (const auto& [name, size] : o->second) {
        if (name == arg) {
          if (k < 0 || k >= size) return false;
          *out = prefix + node + (flat + k ? ":" + std::to_string(flat + k) : "");
          return true;
        }
        flat += size;
      }
      return false;
    };
    // Effects: everything stateful (but reads and calls) must feed a returned tensor.
    std::set<std::string> live;
    std::vector<std::string> stack;
    for (const auto& a : sig.output_arg()) {
      auto r = f.ret().find(a.name());
      if (r == f.ret().end()) return false;
      stack.push_back(r->second.substr(0, r->second.find(':')));
    }
    while (!stack.empty()) {
      std::string n = stack.back();
      stack.pop_back();
      auto b = body.find(n);
      if (b == body.end() || !live.insert(n).second) continue;
      for (const auto& in : b->second->input())
        stack.push_back(in[0] == '^' ? in.substr(1) : in.substr(0, in.find(':')));
    }
    for (const auto& kv : f.control_ret())
      if (!live.count(kv.second) && body.count(kv.second) && body[kv.second]->op() != "ReadVariableOp") return false;
    for (const NodeDef& n : f.node_def()) {
      auto d = OpDefs().find(n.op());
      bool stateful = d == OpDefs().end() ? true : d->second.is_stateful();
      if (stateful && !live.count(n.name()) && n.op() != "ReadVariableOp" && !IsCall(n.op())) return false;
    }

    // Build the inlined nodes first; nothing changes unless all translate.
    std::vector<NodeDef> added;
    for (const NodeDef& n : f.node_def()) {
      NodeDef m = n;
      m.set_name(prefix + n.name());
      if (m.device().empty()) m.set_device(call.device());
      for (int i = 0; i < m.input_size(); ++i) {
        std::string t;
        if (!translate(n.input(i), &t)) return false;
        m.set_input(i, t);
      }
      auto cls = m.mutable_attr()->find("_class");
      if (cls != m.mutable_attr()->end())
        for (auto& s : *cls->second.mutable_list()->mutable_s())
          if (s.rfind("loc:@", 0) == 0 && body.count(s.substr(5))) s = "loc:@" + prefix + s.substr(5);
      added.push_back(std::move(m));
    }
    NodeDef idn;
    idn.set_name(call.name());
    idn.set_op("IdentityN");
    idn.set_device(call.device());
    auto* types = (*idn.mutable_attr())["T"].mutable_list();
    for (const auto& a : sig.output_arg()) {
      std::string t;
      if (!translate(f.ret().at(a.name()), &t)) return false;
      idn.add_input(t);
      types->add_type(a.type());
    }
    auto shapes = call.attr().find("_output_shapes");
    if (shapes != call.attr().end()) (*idn.mutable_attr())["_output_shapes"] = shapes->second;
    *g_->mutable_node(index) = idn;
    for (NodeDef& m : added) {
      names_.insert(m.name());
      *g_->add_node() = std::move(m);
    }
    (*rules_)["inline_call"]++;
    return true;
  }

  tensorflow::GraphDef* g_;
  std::set<std::string> keep_;
  std::map<std::string, int>* rules_;
  std::unordered_map<std::string, const tensorflow::FunctionDef*> fns_;
  std::set<std::string> names_;
};

}  // namespace

bool InlineCalls(tensorflow::GraphDef* g, std::set<std::string> keep, std::map<std::string, int>* rules) {
  return Inliner(g, std::move(keep), rules).Run();
}

}  // namespace rewrite
}  // namespace rs
