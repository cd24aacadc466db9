// The rules of core/graph_rewrite.h, as Body members (core/graph_body.h).
// Each looks at one node and rewrites it only when static facts prove the
// result identical (returning false otherwise), counting itself in the
// report.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

#include "core/graph_body.h"

namespace rs {
namespace rewrite {

using tensorflow::NodeDef;

bool Body::FoldConstant(NodeDef* n) {
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

bool Body::ShapeChain(NodeDef* n) {
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

bool Body::ShapeOp(const NodeDef& n) {
  return n.op() == "Reshape" || n.op() == "ExpandDims" || n.op() == "Squeeze";
}

bool Body::ReshapeChain(NodeDef* n) {
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

std::optional<int64_t> Body::Axis(const std::optional<IntConst>& c, int64_t rank) {
  if (!c || c->v.size() != 1 || !c->shape.dims.empty()) return std::nullopt;
  int64_t a = c->v[0];
  if (a < 0) {
    if (rank < 0) return std::nullopt;
    a += rank;
  }
  if (a < 0 || (rank >= 0 && a >= rank)) return std::nullopt;
  return a;
}

bool Body::ConcatSplit(NodeDef* n) {
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

bool Body::ConcatFlatten(NodeDef* n) {
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

}  // namespace rewrite
}  // namespace rs
