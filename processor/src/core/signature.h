// Signature of a served model: the named, typed input and output tensors a
// caller sees (SavedModel SignatureDef aliases, or a bundle's raw features).
//
// A Signature is immutable once built and shared read-only by every thread.
#ifndef RECSTRATA_CORE_SIGNATURE_H_
#define RECSTRATA_CORE_SIGNATURE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rs {

// One input or output of a signature.
struct TensorSpec {
  std::string name;         // alias callers use (SignatureDef key)
  std::string tensor_name;  // graph tensor "op:index" (empty for bundle raw inputs)
  int dtype = 0;            // TF_DataType == rs_dtype number
  int32_t ndim = -1;        // -1: unknown rank
  std::vector<int64_t> shape;  // ndim entries; -1 marks an unknown dimension
};

class Signature {
 public:
  std::string name;  // e.g. "serving_default"
  std::vector<TensorSpec> inputs;
  std::vector<TensorSpec> outputs;

  // Must be called after inputs/outputs are filled (builds the name index).
  void Finalize();

  // Index of the input/output with that alias, or -1.
  int FindInput(std::string_view alias) const;
  int FindOutput(std::string_view alias) const;

  // {"name":..,"inputs":[{"name","dtype","shape"}...],"outputs":[...]}
  std::string ToJson() const;

 private:
  std::unordered_map<std::string_view, int> input_index_;
  std::unordered_map<std::string_view, int> output_index_;
};

// Name of a TF_DataType ("float", "int64", ...), "unknown" otherwise.
const char* DtypeName(int dtype);

}  // namespace rs

#endif  // RECSTRATA_CORE_SIGNATURE_H_
