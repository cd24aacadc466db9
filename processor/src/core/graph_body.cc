#include "core/graph_body.h"

#include <cstdlib>
#include <set>
#include <string>
#include <unordered_map>

namespace rs {
namespace rewrite {

using tensorflow::NodeDef;

namespace {

// A bound on the passes over one body (each pass rewrites a node at most
// once); Run stops earlier at a fixpoint.
constexpr int kMaxPasses = 16;

// The output argument name of the ops whose outputs the rules read or
// replace (function bodies name outputs "node:arg:index").
const char* OutputArg(const std::string& op) {
  static const std::unordered_map<std::string, const char*> kArgs = {
      {"Const", "output"},   {"Shape", "output"},    {"StridedSlice", "output"}, {"Pack", "output"},
      {"Reshape", "output"}, {"ExpandDims", "output"}, {"Squeeze", "output"},  {"ConcatV2", "output"},
      {"Split", "output"},   {"SplitV", "output"},   {"Cast", "y"},              {"GatherV2", "output"},
      {"Identity", "output"}, {"Placeholder", "output"}};
  auto it = kArgs.find(op);
  return it == kArgs.end() ? nullptr : it->second;
}

// Stateless ops the rules create or orphan: the only ones RemoveDead drops.
bool Removable(const std::string& op) {
  static const std::set<std::string> kOps = {"Const",   "Shape",      "StridedSlice", "Pack",  "Reshape",
                                             "ExpandDims", "Squeeze", "ConcatV2",     "Split", "SplitV",
                                             "Cast"};
  return kOps.count(op) > 0;
}

}  // namespace

Body::Body(google::protobuf::RepeatedPtrField<NodeDef>* nodes, tensorflow::FunctionDef* fn,
           std::set<std::string> protected_names, std::map<std::string, int>* rules)
    : nodes_(nodes), fn_(fn), protected_(std::move(protected_names)), rules_(rules) {
  if (fn_) {
    for (int i = 0; i < fn_->signature().input_arg_size(); ++i) {
      const std::string& name = fn_->signature().input_arg(i).name();
      auto it = fn_->arg_attr().find(static_cast<uint32_t>(i));
      if (it == fn_->arg_attr().end()) continue;
      auto a = it->second.attr().find("_output_shapes");
      if (a != it->second.attr().end() && a->second.list().shape_size() == 1)
        if (auto s = FromProto(a->second.list().shape(0))) arg_shapes_[name] = *s;
    }
  }
}

void Body::RecordUses() {
  for (const NodeDef& n : *nodes_)
    for (const auto& in : n.input()) {
      if (in.empty()) continue;
      initially_used_.insert(in[0] == '^' ? in.substr(1) : in.substr(0, in.find(':')));
    }
  if (fn_) {
    for (const auto& kv : fn_->ret()) initially_used_.insert(kv.second.substr(0, kv.second.find(':')));
    for (const auto& kv : fn_->control_ret()) initially_used_.insert(kv.second);
  }
}

bool Body::Run() {
  for (const NodeDef& n : *nodes_) {
    if (HasPlaceholderAttr(n)) return false;  // a polymorphic body: left alone
    names_.insert(n.name());
  }
  bool any = false;
  for (int pass = 0; pass < kMaxPasses; ++pass) {
    Index();
    bool changed = false;
    const int count = nodes_->size();
    for (int i = 0; i < count; ++i) {
      NodeDef* n = nodes_->Mutable(i);
      if (touched_.count(n->name())) continue;  // one rewrite per node per pass
      if (FoldConstant(n) || ShapeChain(n) || ReshapeChain(n) || ConcatSplit(n) || ConcatFlatten(n)) {
        touched_.insert(n->name());
        changed = true;
      }
    }
    touched_.clear();
    if (!changed) break;
    any = true;
    RemoveDead();
  }
  return any;
}

void Body::Index() {
  by_name_.clear();
  for (NodeDef& n : *nodes_) by_name_[n.name()] = &n;
}

Body::Ref Body::Resolve(const std::string& in) const {
  Ref r;
  if (in.empty() || in[0] == '^') return r;
  if (!fn_) {
    size_t colon = in.rfind(':');
    std::string name = in;
    int index = 0;
    if (colon != std::string::npos && colon + 1 < in.size() &&
        in.find_first_not_of("0123456789", colon + 1) == std::string::npos) {
      name = in.substr(0, colon);
      index = std::atoi(in.c_str() + colon + 1);
    }
    auto it = by_name_.find(name);
    if (it != by_name_.end()) {
      r.node = it->second;
      r.index = index;
    }
    return r;
  }
  size_t c1 = in.find(':');
  if (c1 == std::string::npos) {
    r.arg = in;
    return r;
  }
  size_t c2 = in.find(':', c1 + 1);
  if (c2 == std::string::npos) return r;
  auto it = by_name_.find(in.substr(0, c1));
  if (it == by_name_.end()) return r;
  r.node = it->second;
  const char* arg = OutputArg(r.node->op());
  if (arg && in.compare(c1 + 1, c2 - c1 - 1, arg) == 0 &&
      in.find_first_not_of("0123456789", c2 + 1) == std::string::npos && c2 + 1 < in.size())
    r.index = std::atoi(in.c_str() + c2 + 1);
  return r;
}

std::string Body::Name(const NodeDef& n, int index) const {
  if (!fn_) return index == 0 ? n.name() : n.name() + ":" + std::to_string(index);
  return n.name() + ":" + OutputArg(n.op()) + ":" + std::to_string(index);
}

const NodeDef* Body::Producer(const std::string& in, int want_index) const {
  Ref r = Resolve(in);
  return r.node && r.index == want_index ? r.node : nullptr;
}

std::optional<IntConst> Body::ConstOf(const std::string& in) const {
  const NodeDef* p = Producer(in);
  if (!p || p->op() != "Const") return std::nullopt;
  auto it = p->attr().find("value");
  if (it == p->attr().end()) return std::nullopt;
  return ReadIntTensor(it->second.tensor());
}

std::optional<Shape> Body::ShapeOf(const std::string& in, int depth) const {
  if (depth > 64) return std::nullopt;
  Ref r = Resolve(in);
  if (!r.node) {
    if (r.arg.empty()) return std::nullopt;
    auto it = arg_shapes_.find(r.arg);
    if (it == arg_shapes_.end()) return std::nullopt;
    return it->second;
  }
  if (r.index < 0) return std::nullopt;
  const NodeDef& n = *r.node;
  // Shape ops: computed from the input (the rewrite must agree with them).
  if (n.op() == "Reshape" || n.op() == "ExpandDims" || n.op() == "Squeeze") return OpShape(n, depth);
  if (n.op() == "Const") {
    auto it = n.attr().find("value");
    if (it != n.attr().end()) return FromProto(it->second.tensor().tensor_shape());
    return std::nullopt;
  }
  if (n.op() == "Placeholder") {
    auto it = n.attr().find("shape");
    if (it != n.attr().end()) return FromProto(it->second.shape());
    return std::nullopt;
  }
  auto it = n.attr().find("_output_shapes");
  if (it != n.attr().end() && r.index < it->second.list().shape_size())
    return FromProto(it->second.list().shape(r.index));
  return std::nullopt;
}

std::optional<Shape> Body::OpShape(const NodeDef& n, int depth) const {
  if (n.input_size() < 1) return std::nullopt;
  auto in = ShapeOf(n.input(0), depth + 1);
  if (!in || in->Unknown() > 1) return std::nullopt;
  if (n.op() == "Reshape") {
    if (n.input_size() < 2) return std::nullopt;
    auto t = ConstOf(n.input(1));
    if (!t || t->shape.dims.size() != 1) return std::nullopt;
    Shape out;
    int minus = 0;
    for (int64_t d : t->v) {
      if (d < -1) return std::nullopt;
      minus += d == -1;
      out.dims.push_back(d);
    }
    if (minus > 1) return std::nullopt;
    if (minus == 0) {
      // A fully static target is right only if the input's count matches.
      if (in->Unknown() || in->KnownProduct() != out.KnownProduct()) return std::nullopt;
      return out;
    }
    int64_t pk = out.KnownProduct();
    if (pk <= 0) return std::nullopt;
    if (in->Unknown() == 0) {
      if (in->KnownProduct() % pk) return std::nullopt;
      for (auto& d : out.dims)
        if (d == -1) d = in->KnownProduct() / pk;
      return out;
    }
    // One unknown in and out: the same unknown only if the known parts match.
    if (in->KnownProduct() != pk) return std::nullopt;
    return out;
  }
  if (n.op() == "ExpandDims") {
    if (n.input_size() < 2) return std::nullopt;
    auto d = ConstOf(n.input(1));
    if (!d || d->v.size() != 1) return std::nullopt;
    int64_t r = static_cast<int64_t>(in->dims.size()), a = d->v[0];
    if (a < -(r + 1) || a > r) return std::nullopt;
    if (a < 0) a += r + 1;
    Shape out = *in;
    out.dims.insert(out.dims.begin() + a, 1);
    return out;
  }
  if (n.op() == "Squeeze") {
    auto it = n.attr().find("squeeze_dims");
    std::set<int64_t> drop;
    int64_t r = static_cast<int64_t>(in->dims.size());
    if (it == n.attr().end() || it->second.list().i_size() == 0) {
      for (int64_t i = 0; i < r; ++i) {
        if (in->dims[i] < 0) return std::nullopt;  // might be 1 at run time
        if (in->dims[i] == 1) drop.insert(i);
      }
    } else {
      for (int64_t a : it->second.list().i()) {
        if (a < -r || a >= r) return std::nullopt;
        if (a < 0) a += r;
        if (in->dims[a] != 1) return std::nullopt;  // would fail at run time: leave it
        drop.insert(a);
      }
    }
    Shape out;
    for (int64_t i = 0; i < r; ++i)
      if (!drop.count(i)) out.dims.push_back(in->dims[i]);
    return out;
  }
  return std::nullopt;
}

bool Body::HasControlInputs(const NodeDef& n) const {
  for (const auto& in : n.input())
    if (!in.empty() && in[0] == '^') return true;
  return false;
}

int Body::Consumers(const NodeDef& m) const {
  int uses = 0;
  for (const NodeDef& n : *nodes_)
    for (const auto& in : n.input()) {
      if (in == "^" + m.name()) ++uses;
      else if (Resolve(in).node == &m) ++uses;
    }
  if (fn_) {
    for (const auto& kv : fn_->ret())
      if (Resolve(kv.second).node == &m) ++uses;
    for (const auto& kv : fn_->control_ret())
      if (kv.second == m.name()) ++uses;
  }
  return uses + static_cast<int>(protected_.count(m.name()));
}

std::string Body::UniqueName(const std::string& base) {
  std::string name = base;
  for (int k = 1; names_.count(name); ++k) name = base + "_" + std::to_string(k);
  names_.insert(name);
  return name;
}

std::string Body::AddConst(const NodeDef& near, const IntConst& c, const std::string& suffix) {
  std::string base = near.name() + "/" + suffix, dev = near.device();
  NodeDef* k = nodes_->Add();
  k->set_name(UniqueName(base));
  k->set_op("Const");
  k->set_device(dev);
  (*k->mutable_attr())["dtype"].set_type(static_cast<tensorflow::DataType>(c.dtype));
  WriteIntTensor(c, (*k->mutable_attr())["value"].mutable_tensor());
  tensorflow::AttrValue shapes;
  auto* sp = shapes.mutable_list()->add_shape();
  for (int64_t d : c.shape.dims) sp->add_dim()->set_size(d);
  (*k->mutable_attr())["_output_shapes"] = shapes;
  by_name_[k->name()] = k;
  return Name(*k, 0);
}

bool Body::Rewire(const NodeDef& from, int index, const std::string& to) {
  if (protected_.count(from.name())) return false;  // named from outside: keep it as it is
  const std::string from_name = from.name();
  for (NodeDef& n : *nodes_) {
    for (int i = 0; i < n.input_size(); ++i) {
      Ref r = Resolve(n.input(i));
      if (r.node && r.node->name() == from_name && r.index == index) n.set_input(i, to);
    }
  }
  if (fn_) {
    for (auto& kv : *fn_->mutable_ret()) {
      Ref r = Resolve(kv.second);
      if (r.node && r.node->name() == from_name && r.index == index) kv.second = to;
    }
  }
  return true;
}

void Body::RemoveDead() {
  Index();
  for (bool again = true; again;) {
    again = false;
    std::unordered_map<std::string, int> uses;
    auto use = [&](const std::string& in) {
      if (in.empty()) return;
      std::string name = in[0] == '^' ? in.substr(1) : in.substr(0, in.find(':'));
      uses[name]++;
    };
    for (const NodeDef& n : *nodes_)
      for (const auto& in : n.input()) use(in);
    if (fn_) {
      for (const auto& kv : fn_->ret()) use(kv.second);
      for (const auto& kv : fn_->control_ret()) uses[kv.second]++;
    }
    for (int i = nodes_->size() - 1; i >= 0; --i) {
      const NodeDef& n = nodes_->Get(i);
      if (!Removable(n.op()) || uses.count(n.name()) || protected_.count(n.name())) continue;
      if (!orphans_ok(n)) continue;
      names_.erase(n.name());
      nodes_->DeleteSubrange(i, 1);
      again = true;
    }
  }
  Index();
}

}  // namespace rewrite
}  // namespace rs
