#include "core/graph_facts.h"

#include <cstring>

namespace rs {
namespace rewrite {

using tensorflow::NodeDef;
using tensorflow::TensorProto;

bool SameCount(const Shape& x, const Shape& y) {
  if (x.Unknown() > 1 || y.Unknown() > 1 || x.Unknown() != y.Unknown()) return false;
  return x.KnownProduct() == y.KnownProduct();
}

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

bool HasPlaceholderAttr(const NodeDef& n) {
  for (const auto& kv : n.attr())
    if (!kv.second.placeholder().empty()) return true;
  return false;
}

}  // namespace rewrite
}  // namespace rs
