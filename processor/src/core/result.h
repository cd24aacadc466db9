// rs_result: the outputs of one run, owned together.
//
// Immutable after construction, so several threads may read one result.
// Output names point into the model's Signature, which the result keeps alive
// (shared_ptr) so a result stays valid even after rs_model_close.
#ifndef RECSTRATA_CORE_RESULT_H_
#define RECSTRATA_CORE_RESULT_H_

#include <memory>
#include <vector>

#include "core/signature.h"
#include "recstrata.h"
#include "tensorflow/c/c_api.h"

struct rs_result {
  std::shared_ptr<const rs::Signature> signature;  // outputs[] names
  std::vector<int> output_index;                   // signature output per entry
  std::vector<TF_Tensor*> tensors;                 // owned
  std::vector<int64_t> dims;                       // all shapes, flat
  std::vector<size_t> dims_offset;                 // per entry into dims
  std::vector<std::unique_ptr<rs_bytes[]>> strings;  // per entry (string outputs)

  rs_result() = default;
  rs_result(const rs_result&) = delete;
  rs_result& operator=(const rs_result&) = delete;
  ~rs_result() {
    for (TF_Tensor* t : tensors)
      if (t) TF_DeleteTensor(t);
  }

  size_t count() const { return tensors.size(); }
  // Fills a view of entry i (i < count()).
  void View(size_t i, rs_tensor* out) const;
  // Computes dims/strings after tensors are set.
  void Finish();
};

#endif  // RECSTRATA_CORE_RESULT_H_
