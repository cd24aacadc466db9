#include "api/model_calls.h"

#include <string>
#include <vector>

#include "base/buffers.h"
#include "base/status.h"
#include "wire/codec.h"

namespace rs {

std::unique_ptr<rs_result> RunNamed(Model& m, const rs_tensor* inputs, size_t n_inputs,
                                    const char* const* output_names, size_t n_outputs, const Runner& run) {
  constexpr size_t kStack = 32;
  int idx_stack[kStack];
  std::vector<int> idx_heap;
  int* idx = idx_stack;
  if (n_outputs > kStack) {
    idx_heap.resize(n_outputs);
    idx = idx_heap.data();
  }
  if (n_outputs > 0 && output_names == nullptr) {
    m.CountError();
    Fail(RS_ERR_INVALID_ARGUMENT, "output_names is NULL");
  }
  const Signature& sig = m.signature();
  for (size_t k = 0; k < n_outputs; ++k) {
    int i = output_names[k] ? sig.FindOutput(output_names[k]) : -1;
    if (i < 0) {
      m.CountError();
      std::string known;
      for (const auto& s : sig.outputs) known += (known.empty() ? "" : ", ") + s.name;
      Fail(RS_ERR_INVALID_ARGUMENT, std::string("unknown output '") + (output_names[k] ? output_names[k] : "(null)") +
                                        "' (signature outputs: " + known + ")");
    }
    idx[k] = i;
  }
  return run ? run(inputs, n_inputs, idx, n_outputs) : m.Run(inputs, n_inputs, idx, n_outputs);
}

void PredictWire(Model& m, const void* request, size_t request_size, void** out_response, size_t* out_size,
                 const Runner& run) {
  if (request_size == 0) {
    std::string json = m.signature().ToJson();
    *out_response = MallocCopy(json);
    *out_size = json.size();
    return;
  }
  DecodedRequest req;
  try {
    if (request == nullptr) Fail(RS_ERR_INVALID_ARGUMENT, "request is NULL");
    req.Parse(request, request_size, m.signature());
  } catch (...) {
    m.CountError();
    throw;
  }
  std::unique_ptr<rs_result> result =
      run ? run(req.inputs(), req.num_inputs(), req.outputs().data(), req.outputs().size())
          : m.Run(req.inputs(), req.num_inputs(), req.outputs().data(), req.outputs().size());
  EncodeResponse(*result, out_response, out_size);
}

}  // namespace rs
