// The two ways a loaded model is called through the C ABI, shared by the
// rs_model_* (model_api.cc) and rs_host_* / rs_lease_* (host_api.cc) entry
// points: by tensors with output names, and by DeepRec PredictRequest bytes.
// Both throw rs::Error and count a request that fails before Run as an
// error of the model. Thread-safe like Model::Run.
#ifndef RECSTRATA_API_MODEL_CALLS_H_
#define RECSTRATA_API_MODEL_CALLS_H_

#include <cstddef>
#include <functional>
#include <memory>

#include "core/model.h"
#include "recstrata.h"

namespace rs {

// What runs the resolved call; empty: m.Run. (The host passes its batcher.)
using Runner = std::function<std::unique_ptr<rs_result>(const rs_tensor* inputs, size_t n, const int* out_idx,
                                                         size_t n_out)>;

std::unique_ptr<rs_result> RunNamed(Model& m, const rs_tensor* inputs, size_t n_inputs,
                                    const char* const* output_names, size_t n_outputs, const Runner& run = {});

// request_size 0: the signature as JSON text (DeepRec's convention).
void PredictWire(Model& m, const void* request, size_t request_size, void** out_response, size_t* out_size,
                 const Runner& run = {});

}  // namespace rs

#endif  // RECSTRATA_API_MODEL_CALLS_H_
