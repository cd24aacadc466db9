#include "core/result.h"

#include "tensorflow/c/tf_tstring.h"

void rs_result::Finish() {
  const size_t n = tensors.size();
  dims.clear();
  dims_offset.resize(n);
  strings.resize(n);
  for (size_t i = 0; i < n; ++i) {
    TF_Tensor* t = tensors[i];
    dims_offset[i] = dims.size();
    int nd = TF_NumDims(t);
    for (int d = 0; d < nd; ++d) dims.push_back(TF_Dim(t, d));
    if (TF_TensorType(t) == TF_STRING) {
      int64_t count = TF_TensorElementCount(t);
      std::unique_ptr<rs_bytes[]> b(new rs_bytes[count > 0 ? count : 1]);
      const TF_TString* s = static_cast<const TF_TString*>(TF_TensorData(t));
      for (int64_t k = 0; k < count; ++k) {
        b[k].data = TF_StringGetDataPointer(&s[k]);
        b[k].size = TF_StringGetSize(&s[k]);
      }
      strings[i] = std::move(b);
    }
  }
}

void rs_result::View(size_t i, rs_tensor* out) const {
  TF_Tensor* t = tensors[i];
  out->name = signature->outputs[output_index[i]].name.c_str();
  out->dtype = static_cast<int>(TF_TensorType(t));
  out->ndim = TF_NumDims(t);
  out->shape = dims.data() + dims_offset[i];
  if (strings[i]) {
    out->data = strings[i].get();
    out->byte_size = static_cast<size_t>(TF_TensorElementCount(t)) * sizeof(rs_bytes);
  } else {
    out->data = TF_TensorData(t);
    out->byte_size = TF_TensorByteSize(t);
  }
}
