// Tensor validation and conversion between rs_tensor views and TF_Tensors.
//
// Everything a caller hands us is validated here BEFORE TensorFlow sees it:
// TF kernels may CHECK-fail (abort) on malformed tensors, and the library must
// never abort.
#ifndef RECSTRATA_CORE_TENSORS_H_
#define RECSTRATA_CORE_TENSORS_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/signature.h"
#include "recstrata.h"
#include "tensorflow/c/c_api.h"

namespace rs {

// Bytes per element of a supported dtype; 0 for RS_DT_STRING; -1 if the
// dtype is not supported by recstrata.
int DtypeSize(int dtype);
inline bool DtypeSupported(int dtype) { return DtypeSize(dtype) >= 0; }

// Largest element count we accept for one tensor (2^40).
inline constexpr int64_t kMaxElements = int64_t{1} << 40;

// Element count of a shape. Throws RS_ERR_INVALID_ARGUMENT on negative dims
// or a product above kMaxElements (no overflow is possible).
int64_t CheckedElementCount(const int64_t* shape, int32_t ndim, const char* tensor_name);

// Checks one caller tensor against its signature spec: dtype, rank, known
// dims, element count vs byte_size, data pointer, string element pointers.
void ValidateInput(const TensorSpec& spec, const rs_tensor& t);

// Matches caller inputs to signature inputs: every signature input exactly
// once, no unknown or duplicate names, each validated with ValidateInput.
// ordered[i] receives the tensor of sig.inputs[i].
void OrderInputs(const Signature& sig, const rs_tensor* inputs, size_t n,
                 std::vector<const rs_tensor*>& ordered);

// TF_Tensors of one call, deleted on scope exit.
struct TensorList {
  std::vector<TF_Tensor*> v;
  TensorList() = default;
  TensorList(const TensorList&) = delete;
  TensorList& operator=(const TensorList&) = delete;
  ~TensorList() {
    for (TF_Tensor* t : v)
      if (t) TF_DeleteTensor(t);
  }
};

// Builds the TF_Tensor of a validated input. Numeric inputs whose data is
// aligned to 64 bytes are borrowed without a copy (*borrowed = true: the
// tensor aliases caller memory that is only valid during the call); others
// are copied. String inputs are always copied into TF_TStrings.
TF_Tensor* ToTFTensor(const rs_tensor& t, bool* borrowed);

// Checks a TF_Tensor produced by an InputStage against the dense spec.
void CheckTFTensor(const TensorSpec& spec, TF_Tensor* t);

// A copy of a numeric TF_Tensor in fresh TF-owned memory.
TF_Tensor* CopyTFTensor(TF_Tensor* t);

}  // namespace rs

#endif  // RECSTRATA_CORE_TENSORS_H_
