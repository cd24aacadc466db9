// Static facts the graph rewrite reads from TensorFlow's protos
// (core/graph_rewrite.h): shapes with unknown dims, small integer Consts and
// node attributes. Everything here only reads or writes protobuf messages;
// none of it evaluates an op.
//
// Internal to the rewrite (core/graph_*.cc). It includes TensorFlow's
// protobuf headers, so every file that includes it is built without TSan
// like core/tf_protos.cc (processor/CMakeLists.txt, DEVELOPERS.md).
#ifndef RECSTRATA_CORE_GRAPH_FACTS_H_
#define RECSTRATA_CORE_GRAPH_FACTS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "tensorflow/core/framework/node_def.pb.h"
#include "tensorflow/core/framework/tensor.pb.h"
#include "tensorflow/core/framework/tensor_shape.pb.h"

namespace rs {
namespace rewrite {

// Consts the rules read or create hold at most this many elements: the rules
// fold shape arithmetic, never data.
constexpr int kMaxConstElems = 64;

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
bool SameCount(const Shape& x, const Shape& y);

// y is x: same rank, same known dims, the one unknown (if any) in the same place.
bool SameShape(const Shape& x, const Shape& y);

// The shape a proto states (unknown dims as -1); nullopt for an unknown rank.
std::optional<Shape> FromProto(const tensorflow::TensorShapeProto& p);

bool IsIntType(int dt);  // DT_INT32 or DT_INT64

// A small integer Const: dtype, shape, values.
struct IntConst {
  int dtype = 0;
  Shape shape;
  std::vector<int64_t> v;
};

// The value of an int32/int64 TensorProto (tensor_content or repeated
// values, the last one repeating); nullopt if it is not a fully static
// integer tensor of at most kMaxConstElems elements.
std::optional<IntConst> ReadIntTensor(const tensorflow::TensorProto& t);
void WriteIntTensor(const IntConst& c, tensorflow::TensorProto* t);

// Attribute `name` of `n`, or `dflt` when it is absent.
int64_t AttrInt(const tensorflow::NodeDef& n, const char* name, int64_t dflt);
int AttrType(const tensorflow::NodeDef& n, const char* name, int dflt);

// Whether an attribute of `n` is a placeholder ("$T"): a polymorphic function
// body, which neither the rules nor the inliner touch.
bool HasPlaceholderAttr(const tensorflow::NodeDef& n);

}  // namespace rewrite
}  // namespace rs

#endif  // RECSTRATA_CORE_GRAPH_FACTS_H_
