// C entry points of the Models section of recstrata.h: thin exception walls
// over rs::Model (core/model.h) and the wire codec (wire/codec.h).
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "api/composition.h"
#include "api/model_calls.h"
#include "base/buffers.h"
#include "base/status.h"
#include "core/model.h"
#include "core/result.h"
#include "wire/codec.h"

struct rs_model {
  std::unique_ptr<rs::Model> impl;
};

namespace {

rs::Model& Need(const rs_model* model) {
  if (model == nullptr || !model->impl) rs::Fail(RS_ERR_INVALID_ARGUMENT, "model is NULL");
  return *model->impl;
}

template <typename T>
void NeedOut(T* out, const char* what) {
  if (out == nullptr) rs::Fail(RS_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

void SpecView(const rs::TensorSpec& s, rs_tensor* out) {
  out->name = s.name.c_str();
  out->dtype = s.dtype;
  out->ndim = s.ndim;
  out->shape = s.ndim > 0 ? s.shape.data() : nullptr;
  out->data = nullptr;
  out->byte_size = 0;
}

}  // namespace

extern "C" {

RS_API int rs_model_open(const char* model_dir, const char* config_json, rs_model** out,
                         rs_error** error) noexcept {
  if (out) *out = nullptr;
  RS_API_BEGIN(error);
  NeedOut(out, "out");
  auto m = std::make_unique<rs_model>();
  m->impl = rs::Model::Open(model_dir, config_json, rs::LibraryModelDeps());
  *out = m.release();
  RS_API_END(error);
}

RS_API void rs_model_close(rs_model* model) noexcept {
  try {
    delete model;
  } catch (...) {
  }
}

RS_API size_t rs_model_num_inputs(const rs_model* model) noexcept {
  return model && model->impl ? model->impl->signature().inputs.size() : 0;
}

RS_API size_t rs_model_num_outputs(const rs_model* model) noexcept {
  return model && model->impl ? model->impl->signature().outputs.size() : 0;
}

RS_API int rs_model_input(const rs_model* model, size_t index, rs_tensor* out, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  const rs::Signature& sig = Need(model).signature();
  NeedOut(out, "out");
  if (index >= sig.inputs.size())
    rs::Fail(RS_ERR_OUT_OF_RANGE, "input index " + std::to_string(index) + " out of range (model has " +
                                      std::to_string(sig.inputs.size()) + " inputs)");
  SpecView(sig.inputs[index], out);
  RS_API_END(error);
}

RS_API int rs_model_output(const rs_model* model, size_t index, rs_tensor* out, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  const rs::Signature& sig = Need(model).signature();
  NeedOut(out, "out");
  if (index >= sig.outputs.size())
    rs::Fail(RS_ERR_OUT_OF_RANGE, "output index " + std::to_string(index) + " out of range (model has " +
                                      std::to_string(sig.outputs.size()) + " outputs)");
  SpecView(sig.outputs[index], out);
  RS_API_END(error);
}

RS_API int rs_model_describe_json(const rs_model* model, char** out_json, rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  rs::Model& m = Need(model);
  NeedOut(out_json, "out_json");
  *out_json = rs::MallocCopy(m.DescribeJson());
  RS_API_END(error);
}

RS_API int rs_model_stats_json(const rs_model* model, char** out_json, rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  rs::Model& m = Need(model);
  NeedOut(out_json, "out_json");
  *out_json = rs::MallocCopy(m.StatsJson());
  RS_API_END(error);
}

RS_API int rs_model_run(rs_model* model, const rs_tensor* inputs, size_t n_inputs,
                        const char* const* output_names, size_t n_outputs, rs_result** out,
                        rs_error** error) noexcept {
  if (out) *out = nullptr;
  RS_API_BEGIN(error);
  rs::Model& m = Need(model);
  NeedOut(out, "out");
  *out = rs::RunNamed(m, inputs, n_inputs, output_names, n_outputs).release();
  RS_API_END(error);
}

RS_API size_t rs_result_count(const rs_result* result) noexcept { return result ? result->count() : 0; }

RS_API int rs_result_output(const rs_result* result, size_t index, rs_tensor* out, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  if (result == nullptr) rs::Fail(RS_ERR_INVALID_ARGUMENT, "result is NULL");
  NeedOut(out, "out");
  if (index >= result->count())
    rs::Fail(RS_ERR_OUT_OF_RANGE, "output index " + std::to_string(index) + " out of range (result has " +
                                      std::to_string(result->count()) + " outputs)");
  result->View(index, out);
  RS_API_END(error);
}

RS_API int64_t rs_result_find(const rs_result* result, const char* name) noexcept {
  if (result == nullptr || name == nullptr) return -1;
  for (size_t i = 0; i < result->count(); ++i)
    if (result->signature->outputs[result->output_index[i]].name == name) return static_cast<int64_t>(i);
  return -1;
}

RS_API void rs_result_free(rs_result* result) noexcept { delete result; }

RS_API int rs_model_predict(rs_model* model, const void* request, size_t request_size, void** out_response,
                            size_t* out_size, rs_error** error) noexcept {
  if (out_response) *out_response = nullptr;
  if (out_size) *out_size = 0;
  RS_API_BEGIN(error);
  rs::Model& m = Need(model);
  NeedOut(out_response, "out_response");
  NeedOut(out_size, "out_size");
  rs::PredictWire(m, request, request_size, out_response, out_size);
  RS_API_END(error);
}

RS_API int rs_model_trace_json(rs_model* model, char** out_json, rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  rs::Model& m = Need(model);
  NeedOut(out_json, "out_json");
  *out_json = rs::MallocCopy(m.TraceJson());
  RS_API_END(error);
}

RS_API int rs_model_serving_info(const rs_model* model, void** out, size_t* out_size, rs_error** error) noexcept {
  if (out) *out = nullptr;
  if (out_size) *out_size = 0;
  RS_API_BEGIN(error);
  rs::Model& m = Need(model);
  NeedOut(out, "out");
  NeedOut(out_size, "out_size");
  rs::EncodeModelInfo(m.model_path(), out, out_size);
  RS_API_END(error);
}

}  // extern "C"
