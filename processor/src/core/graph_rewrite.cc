#include "core/graph_rewrite.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <set>
#include <unordered_map>
#include <vector>

#include "base/json_text.h"
#include "tensorflow/c/c_api.h"
#include "base/status.h"
#include "tensorflow/core/framework/attr_value.pb.h"
#include "tensorflow/core/framework/function.pb.h"
#include "tensorflow/core/framework/graph.pb.h"
#include "tensorflow/core/framework/node_def.pb.h"
#include "tensorflow/core/framework/op_def.pb.h"
#include "tensorflow/core/framework/tensor.pb.h"
#include "tensorflow/core/framework/tensor_shape.pb.h"
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

using tensorflow::AttrValue;
using tensorflow::NodeDef;
using tensorflow::TensorProto;

constexpr int kMaxConstElems = 64;
constexpr int kMaxPasses = 16;

// A static shape: known rank, dims >= 0 or -1 (unknown).
struct Shape {
  std::vector<int64_t> dims;
  int Unknown() const {
    int n = 0;
    for (int64_t d : dims) n += d < 0;
    return n;
  }
  int64_t KnownProduct() const {
    int64_t p = 1;
    for (int64_t d : dims)
      if (d >= 0) p *= d;
    return p;
  }
};

// x and y hold the same number of elements for every input, with at most one
// unknown dim each (the same unknown: element counts are preserved through
// shape ops, and the known parts match).
bool SameCount(const Shape& x, const Shape& y) {
  if (x.Unknown() > 1 || y.Unknown() > 1 || x.Unknown() != y.Unknown()) return false;
  return x.KnownProduct() == y.KnownProduct();
}

// y is x: same rank, same known dims, the one unknown (if any) in the same place.
bool SameShape(const Shape& x, const Shape& y) {
  if (!SameCount(x, y) || x.dims.size() != y.dims.size()) return false;
  for (size_t i = 0; i < x.dims.size(); ++i)
    if (x.dims[i] != y.dims[i]) return false;
  return true;
}

std::optional<Shape> FromProto(const tensorflow::TensorShapeProto& p) {
  if (p.unknown_rank()) return std::nullopt;
  Shape s;
  for (const auto& d : p.dim()) s.dims.push_back(d.size() < 0 ? -1 : d.size());
  return s;
}

bool IsIntType(int dt) { return dt == tensorflow::DT_INT32 || dt == tensorflow::DT_INT64; }

// A small integer Const: dtype, shape, values.
struct IntConst {
  int dtype = 0;
  Shape shape;
  std::vector<int64_t> v;
};

std::optional<IntConst> ReadIntTensor(const TensorProto& t) {
  if (!IsIntType(t.dtype())) return std::nullopt;
  auto shape = FromProto(t.tensor_shape());
  if (!shape || shape->Unknown()) return std::nullopt;
  int64_t n = shape->KnownProduct();
  if (n > kMaxConstElems) return std::nullopt;
  IntConst c;
  c.dtype = t.dtype();
  c.shape = *shape;
  const bool i64 = t.dtype() == tensorflow::DT_INT64;
  if (!t.tensor_content().empty()) {
    size_t w = i64 ? 8 : 4;
    if (t.tensor_content().size() != static_cast<size_t>(n) * w) return std::nullopt;
    for (int64_t i = 0; i < n; ++i) {
      if (i64) {
        int64_t x;
        std::memcpy(&x, t.tensor_content().data() + i * 8, 8);
        c.v.push_back(x);
      } else {
        int32_t x;
        std::memcpy(&x, t.tensor_content().data() + i * 4, 4);
        c.v.push_back(x);
      }
    }
    return c;
  }
  int have = i64 ? t.int64_val_size() : t.int_val_size();
  if (have > n || (have == 0 && n > 0)) return std::nullopt;
  for (int64_t i = 0; i < n; ++i) {
    int k = static_cast<int>(i < have ? i : have - 1);  // the last value repeats
    c.v.push_back(i64 ? t.int64_val(k) : t.int_val(k));
  }
  return c;
}

void WriteIntTensor(const IntConst& c, TensorProto* t) {
  t->set_dtype(static_cast<tensorflow::DataType>(c.dtype));
  for (int64_t d : c.shape.dims) t->mutable_tensor_shape()->add_dim()->set_size(d);
  for (int64_t x : c.v) {
    if (c.dtype == tensorflow::DT_INT64) t->add_int64_val(x); else t->add_int_val(static_cast<int32_t>(x));
  }
}

int64_t AttrInt(const NodeDef& n, const char* name, int64_t dflt) {
  auto it = n.attr().find(name);
  return it == n.attr().end() ? dflt : it->second.i();
}
int AttrType(const NodeDef& n, const char* name, int dflt) {
  auto it = n.attr().find(name);
  return it == n.attr().end() ? dflt : static_cast<int>(it->second.type());
}

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

bool Removable(const std::string& op) {
  static const std::set<std::string> kOps = {"Const",   "Shape",      "StridedSlice", "Pack",  "Reshape",
                                             "ExpandDims", "Squeeze", "ConcatV2",     "Split", "SplitV",
                                             "Cast"};
  return kOps.count(op) > 0;
}

bool HasPlaceholderAttr(const NodeDef& n) {
  for (const auto& kv : n.attr())
    if (!kv.second.placeholder().empty()) return true;
  return false;
}

// One graph body: a GraphDef's nodes ("node:index" names) or a FunctionDef's
// ("node:arg:index", function inputs by their arg name).
class Body {
 public:
  Body(google::protobuf::RepeatedPtrField<NodeDef>* nodes, tensorflow::FunctionDef* fn,
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

  // Runs the rules to a fixpoint; returns whether anything changed.
  bool Run() {
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

 private:
  struct Ref {
    const NodeDef* node = nullptr;  // null: a function input (arg) or unknown node
    int index = -1;                 // flat output index, -1: not resolvable
    std::string arg;                // function input name
  };

  void Index() {
    by_name_.clear();
    for (NodeDef& n : *nodes_) by_name_[n.name()] = &n;
  }

  Ref Resolve(const std::string& in) const {
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

  // The name consumers use for output `index` of `n` (n's op must be in OutputArg).
  std::string Name(const NodeDef& n, int index) const {
    if (!fn_) return index == 0 ? n.name() : n.name() + ":" + std::to_string(index);
    return n.name() + ":" + OutputArg(n.op()) + ":" + std::to_string(index);
  }

  const NodeDef* Producer(const std::string& in, int want_index = 0) const {
    Ref r = Resolve(in);
    return r.node && r.index == want_index ? r.node : nullptr;
  }

  std::optional<IntConst> ConstOf(const std::string& in) const {
    const NodeDef* p = Producer(in);
    if (!p || p->op() != "Const") return std::nullopt;
    auto it = p->attr().find("value");
    if (it == p->attr().end()) return std::nullopt;
    return ReadIntTensor(it->second.tensor());
  }

  std::optional<Shape> ShapeOf(const std::string& in, int depth = 0) const {
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

  // Output shape of a Reshape(Const) / ExpandDims(Const) / Squeeze node, from its input's.
  std::optional<Shape> OpShape(const NodeDef& n, int depth = 0) const {
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

  std::string UniqueName(const std::string& base) {
    std::string name = base;
    for (int k = 1; names_.count(name); ++k) name = base + "_" + std::to_string(k);
    names_.insert(name);
    return name;
  }

  // A new Const node next to `near` (same device); returns the name to consume it by.
  std::string AddConst(const NodeDef& near, const IntConst& c, const std::string& suffix) {
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

  void Count(const char* rule) { (*rules_)[rule]++; }

  // Every data use of output `index` of `from` now reads `to` instead.
  bool Rewire(const NodeDef& from, int index, const std::string& to) {
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

  bool HasControlInputs(const NodeDef& n) const {
    for (const auto& in : n.input())
      if (!in.empty() && in[0] == '^') return true;
    return false;
  }

  // --- rules -------------------------------------------------------------

  bool FoldConstant(NodeDef* n) {
    if (HasControlInputs(*n) || protected_.count(n->name())) return false;
    std::optional<IntConst> out;
    if (n->op() == "Shape" && n->input_size() == 1) {
      int dt = AttrType(*n, "out_type", tensorflow::DT_INT32);
      auto s = ShapeOf(n->input(0));
      if (!s || s->Unknown() || !IsIntType(dt) || s->dims.size() > kMaxConstElems) return false;
      IntConst c;
      c.dtype = dt;
      c.shape.dims = {static_cast<int64_t>(s->dims.size())};
      for (int64_t d : s->dims) {
        if (dt == tensorflow::DT_INT32 && d > INT32_MAX) return false;
        c.v.push_back(d);
      }
      out = c;
    } else if (n->op() == "StridedSlice" && n->input_size() == 4) {
      auto x = ConstOf(n->input(0)), b = ConstOf(n->input(1)), e = ConstOf(n->input(2)), s = ConstOf(n->input(3));
      if (!x || !b || !e || !s || x->shape.dims.size() != 1 || b->v.size() != 1 || e->v.size() != 1 ||
          s->v.size() != 1 || s->v[0] != 1)
        return false;
      int64_t bm = AttrInt(*n, "begin_mask", 0), em = AttrInt(*n, "end_mask", 0);
      int64_t shrink = AttrInt(*n, "shrink_axis_mask", 0);
      if (AttrInt(*n, "ellipsis_mask", 0) || AttrInt(*n, "new_axis_mask", 0) || (bm | em | shrink) & ~1LL)
        return false;
      const int64_t len = static_cast<int64_t>(x->v.size());
      IntConst c;
      c.dtype = x->dtype;
      if (shrink) {
        int64_t i = b->v[0] < 0 ? b->v[0] + len : b->v[0];
        if (bm || i < 0 || i >= len) return false;  // out of range: TF reports it
        c.v.push_back(x->v[i]);
      } else {
        int64_t lo = bm ? 0 : b->v[0], hi = em ? len : e->v[0];
        if (lo < 0) lo += len;
        if (hi < 0) hi += len;
        lo = std::min(std::max<int64_t>(lo, 0), len);
        hi = std::min(std::max<int64_t>(hi, 0), len);
        for (int64_t i = lo; i < hi; ++i) c.v.push_back(x->v[i]);
        c.shape.dims = {static_cast<int64_t>(c.v.size())};
      }
      out = c;
    } else if (n->op() == "Cast" && n->input_size() == 1) {
      auto x = ConstOf(n->input(0));
      int src = AttrType(*n, "SrcT", 0), dst = AttrType(*n, "DstT", 0);
      if (!x || src != x->dtype || !IsIntType(dst)) return false;
      IntConst c = *x;
      c.dtype = dst;
      if (dst == tensorflow::DT_INT32)
        for (int64_t v : c.v)
          if (v < INT32_MIN || v > INT32_MAX) return false;  // wrap-around: not folded
      out = c;
    } else if (n->op() == "Pack" && n->input_size() >= 1 && AttrInt(*n, "axis", 0) == 0) {
      IntConst c;
      for (const auto& in : n->input()) {
        auto x = ConstOf(in);
        if (!x || !x->shape.dims.empty() || (c.dtype && c.dtype != x->dtype)) return false;
        c.dtype = x->dtype;
        c.v.push_back(x->v[0]);
      }
      if (c.v.size() > kMaxConstElems) return false;
      c.shape.dims = {static_cast<int64_t>(c.v.size())};
      out = c;
    } else {
      return false;
    }
    std::string k = AddConst(*n, *out, "_rs_folded");
    if (!Rewire(*n, 0, k)) return false;
    Count("fold_constant");
    return true;
  }

  bool ShapeChain(NodeDef* n) {
    if (n->op() != "Reshape" || n->input_size() != 2) return false;
    const NodeDef* pack = Producer(n->input(1));
    if (!pack || pack->op() != "Pack" || AttrInt(*pack, "axis", 0) != 0 || pack->input_size() < 2 ||
        HasControlInputs(*pack))
      return false;
    const NodeDef* ss = Producer(pack->input(0));
    if (!ss || ss->op() != "StridedSlice" || ss->input_size() != 4) return false;
    if (AttrInt(*ss, "shrink_axis_mask", 0) != 1 || AttrInt(*ss, "begin_mask", 0) ||
        AttrInt(*ss, "end_mask", 0) || AttrInt(*ss, "ellipsis_mask", 0) || AttrInt(*ss, "new_axis_mask", 0))
      return false;
    auto b = ConstOf(ss->input(1)), e = ConstOf(ss->input(2)), s = ConstOf(ss->input(3));
    if (!b || !e || !s || b->v != std::vector<int64_t>{0} || e->v != std::vector<int64_t>{1} ||
        s->v != std::vector<int64_t>{1})
      return false;
    const NodeDef* shape = Producer(ss->input(0));
    // Shape of the very tensor being reshaped.
    if (!shape || shape->op() != "Shape" || shape->input_size() != 1) return false;
    Ref a = Resolve(shape->input(0)), x = Resolve(n->input(0));
    if (shape->input(0) != n->input(0) && !(a.node && a.node == x.node && a.index == x.index && a.index >= 0))
      return false;
    auto xs = ShapeOf(n->input(0));
    if (!xs || xs->dims.empty()) return false;
    for (size_t i = 1; i < xs->dims.size(); ++i)
      if (xs->dims[i] < 0) return false;
    int64_t rest = 1;
    for (size_t i = 1; i < xs->dims.size(); ++i) rest *= xs->dims[i];
    IntConst target;
    target.dtype = AttrType(*n, "Tshape", tensorflow::DT_INT32);
    if (!IsIntType(target.dtype)) return false;
    target.v.push_back(-1);
    int64_t prod = 1;
    for (int i = 1; i < pack->input_size(); ++i) {
      auto c = ConstOf(pack->input(i));
      if (!c || !c->shape.dims.empty() || c->v[0] <= 0) return false;
      prod *= c->v[0];
      target.v.push_back(c->v[0]);
    }
    // [dim0(x), c...] holds dim0*prod elements and x holds dim0*rest: with
    // rest == prod > 0, -1 resolves to dim0(x) for every input.
    if (prod != rest || prod <= 0) return false;
    target.shape.dims = {static_cast<int64_t>(target.v.size())};
    n->set_input(1, AddConst(*n, target, "_rs_shape"));
    Count("shape_chain");
    return true;
  }

  static bool ShapeOp(const NodeDef& n) {
    return n.op() == "Reshape" || n.op() == "ExpandDims" || n.op() == "Squeeze";
  }

  bool ReshapeChain(NodeDef* n) {
    if (!ShapeOp(*n) || n->input_size() < 1 || HasControlInputs(*n)) return false;
    auto out = OpShape(*n);
    if (!out) return false;
    // Identity reshape: drop it.
    if (n->op() == "Reshape") {
      auto in = ShapeOf(n->input(0));
      if (in && SameShape(*in, *out)) {
        if (!Rewire(*n, 0, n->input(0))) return false;
        Count("identity_reshape");
        return true;
      }
    }
    const NodeDef* m = Producer(n->input(0));
    if (!m || !ShapeOp(*m) || HasControlInputs(*m) || !OpShape(*m)) return false;
    const std::string x = m->input(0);
    auto xs = ShapeOf(x);
    if (!xs || !SameCount(*xs, *out)) return false;
    if (SameShape(*xs, *out)) {
      if (!Rewire(*n, 0, x)) return false;
      Count("reshape_chain");
      return true;
    }
    IntConst target;
    target.dtype = n->op() == "Reshape" ? AttrType(*n, "Tshape", tensorflow::DT_INT32) : tensorflow::DT_INT32;
    if (!IsIntType(target.dtype)) return false;
    target.v = out->dims;  // the unknown dim (if any) is -1
    target.shape.dims = {static_cast<int64_t>(target.v.size())};
    tensorflow::AttrValue t = n->attr().at("T");
    tensorflow::AttrValue shapes;
    bool has_shapes = n->attr().count("_output_shapes") > 0;
    if (has_shapes) shapes = n->attr().at("_output_shapes");
    std::string k = AddConst(*n, target, "_rs_shape");
    n->set_op("Reshape");
    n->clear_input();
    n->add_input(x);
    n->add_input(k);
    n->mutable_attr()->clear();
    (*n->mutable_attr())["T"] = t;
    (*n->mutable_attr())["Tshape"].set_type(static_cast<tensorflow::DataType>(target.dtype));
    if (has_shapes) (*n->mutable_attr())["_output_shapes"] = shapes;
    Count("reshape_chain");
    return true;
  }

  // The normalized const axis of a concat/split, given the rank (-1: unknown).
  static std::optional<int64_t> Axis(const std::optional<IntConst>& c, int64_t rank) {
    if (!c || c->v.size() != 1 || !c->shape.dims.empty()) return std::nullopt;
    int64_t a = c->v[0];
    if (a < 0) {
      if (rank < 0) return std::nullopt;
      a += rank;
    }
    if (a < 0 || (rank >= 0 && a >= rank)) return std::nullopt;
    return a;
  }

  bool ConcatSplit(NodeDef* n) {
    if (n->op() != "ConcatV2" || HasControlInputs(*n)) return false;
    const int k = n->input_size() - 1;
    if (k < 2 || AttrInt(*n, "N", -1) != k) return false;
    Ref first = Resolve(n->input(0));
    const NodeDef* s = first.node;
    if (!s || (s->op() != "Split" && s->op() != "SplitV") || AttrInt(*s, "num_split", -1) != k) return false;
    for (int i = 0; i < k; ++i) {
      Ref r = Resolve(n->input(i));
      if (r.node != s || r.index != i) return false;
    }
    const bool v = s->op() == "SplitV";
    if (s->input_size() != (v ? 3 : 2)) return false;
    const std::string x = v ? s->input(0) : s->input(1);
    auto xs = ShapeOf(x);
    int64_t rank = xs ? static_cast<int64_t>(xs->dims.size()) : -1;
    auto sa = Axis(ConstOf(v ? s->input(2) : s->input(0)), rank);
    auto ca = Axis(ConstOf(n->input(k)), rank);
    // Same axis, and the split's input the same dtype as the concat's output.
    if (!sa || !ca || *sa != *ca || AttrType(*s, "T", -1) != AttrType(*n, "T", -2)) return false;
    if (!Rewire(*n, 0, x)) return false;
    Count("concat_split");
    return true;
  }

  int Consumers(const NodeDef& m) const {
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

  bool ConcatFlatten(NodeDef* n) {
    if (n->op() != "ConcatV2" || HasControlInputs(*n)) return false;
    const int k = n->input_size() - 1;
    if (k < 2 || AttrInt(*n, "N", -1) != k) return false;
    auto out = ShapeOf(Name(*n, 0));
    int64_t rank = out ? static_cast<int64_t>(out->dims.size()) : -1;
    auto axis = Axis(ConstOf(n->input(k)), rank);
    if (!axis) return false;
    std::vector<std::string> inputs;
    bool flat = false;
    for (int i = 0; i < k; ++i) {
      const NodeDef* m = Producer(n->input(i));
      if (m && m != n && m->op() == "ConcatV2" && !HasControlInputs(*m) && m->input_size() >= 3 &&
          AttrInt(*m, "N", -1) == m->input_size() - 1 && AttrType(*m, "T", -1) == AttrType(*n, "T", -2) &&
          Consumers(*m) == 1) {
        auto ma = Axis(ConstOf(m->input(m->input_size() - 1)), rank);
        if (ma && *ma == *axis) {
          for (int j = 0; j + 1 < m->input_size(); ++j) inputs.push_back(m->input(j));
          flat = true;
          continue;
        }
      }
      inputs.push_back(n->input(i));
    }
    if (!flat) return false;
    std::string axis_in = n->input(k);
    n->clear_input();
    for (const auto& in : inputs) n->add_input(in);
    n->add_input(axis_in);
    (*n->mutable_attr())["N"].set_i(static_cast<int64_t>(inputs.size()));
    Count("concat_flatten");
    return true;
  }

  // Removes nodes without consumers that the rules may have orphaned.
  void RemoveDead() {
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

  // Only nodes the pass created or whose consumers it took away are removed:
  // a dead node the exporter left stays (someone may fetch it by name).
  bool orphans_ok(const NodeDef& n) const { return initially_used_.count(n.name()) || created_(n); }
  static bool created_(const NodeDef& n) { return n.name().find("/_rs_") != std::string::npos; }

 public:
  // Records which nodes had consumers before the pass (see orphans_ok).
  void RecordUses() {
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

 private:
  google::protobuf::RepeatedPtrField<NodeDef>* nodes_;
  tensorflow::FunctionDef* fn_;
  std::set<std::string> protected_;
  std::map<std::string, int>* rules_;
  std::unordered_map<std::string, NodeDef*> by_name_;
  std::set<std::string> names_;
  std::set<std::string> touched_;
  std::set<std::string> initially_used_;
  std::unordered_map<std::string, Shape> arg_shapes_;
};

// --- inlining of the serving function calls ---------------------------------

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

// Replaces calls (StatefulPartitionedCall / PartitionedCall) in a top-level
// graph by the called function's body, so that TensorFlow's own inliner adds
// no Identity per argument and output at every call. A call is inlined only if
// it is plain: no control inputs, a known function without attributes to
// substitute, no _noinline / XLA marks, every op known to the registry, every
// output a single tensor, and nothing in the body with effects beyond its
// outputs (every stateful node other than ReadVariableOp / nested calls feeds
// a returned tensor, and so does every control output). The call node stays,
// as an IdentityN of the body's returned tensors with the call's name, so
// whatever names "call:k" or "^call" still does.
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
      changed |= Inliner(graph, targets, &report->rules).Run();
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
