// libserving_processor.so: DeepRec's processor entry points
// (serving/processor/serving/processor.h) over the public recstrata C API.
//
// Differences from DeepRec, all of them fixes:
//  - Every buffer we return (responses and error texts alike) is malloc'ed and
//    released with free_buffer() (DeepRec exports no release function and uses
//    two allocators).
//  - batch_process works: the number of requests is the number of entries of
//    input_data[] before its first NULL entry (DeepRec's signature has no
//    count; it only ever processed one request). batch_process_n takes an
//    explicit count instead.
//  - Nothing aborts: unknown input or output_filter names, bad dtypes/shapes
//    and garbage bytes return 500 with the message in the output buffer.
//
// Return codes: 200 on success, 500 on failure (the output buffer then holds
// the error text, NUL-terminated; *output_size excludes the NUL).
// Threading: process/batch_process/get_serving_model_info may be called by
// any number of threads at once on one model (as rs_model_predict).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "recstrata.h"

#define RS_COMPAT_API extern "C" __attribute__((visibility("default")))

namespace {

constexpr int kOk = 200;
constexpr int kError = 500;

// Stores `msg` as the (malloc'ed) output of a failed call.
int ErrorOut(const std::string& msg, void** output_data, int* output_size) {
  if (output_data) {
    char* buf = static_cast<char*>(std::malloc(msg.size() + 1));
    if (buf) {
      std::memcpy(buf, msg.data(), msg.size());
      buf[msg.size()] = '\0';
    }
    *output_data = buf;
    if (output_size) *output_size = buf ? static_cast<int>(msg.size()) : 0;
  } else if (output_size) {
    *output_size = 0;
  }
  return kError;
}

int ErrorOut(rs_error* err, int code, void** output_data, int* output_size) {
  std::string msg = std::string(rs_status_name(code)) + ": " + (err ? rs_error_message(err) : "");
  rs_error_free(err);
  return ErrorOut(msg, output_data, output_size);
}

int ProcessOne(void* model_buf, const void* input_data, int input_size, void** output_data, int* output_size) {
  if (output_data) *output_data = nullptr;
  if (output_size) *output_size = 0;
  if (output_data == nullptr || output_size == nullptr) return kError;  // nowhere to write anything
  if (model_buf == nullptr) return ErrorOut("model is NULL (initialize failed?)", output_data, output_size);
  if (input_size < 0)
    return ErrorOut("input_size " + std::to_string(input_size) + " is negative", output_data, output_size);
  if (input_size > 0 && input_data == nullptr) return ErrorOut("input_data is NULL", output_data, output_size);
  void* out = nullptr;
  size_t out_size = 0;
  rs_error* err = nullptr;
  int code = rs_model_predict(static_cast<rs_model*>(model_buf), input_data, static_cast<size_t>(input_size), &out,
                              &out_size, &err);
  if (code != RS_OK) return ErrorOut(err, code, output_data, output_size);
  if (out_size > 0x7fffffffu) {
    rs_free(out);
    return ErrorOut("response larger than 2 GiB", output_data, output_size);
  }
  *output_data = out;
  *output_size = static_cast<int>(out_size);
  return kOk;
}

}  // namespace

// model_entry: the SavedModel (or bundle) directory, or NULL/"" to use the
// config's savedmodel_dir. model_config: the JSON text. *state = 0 on success,
// -1 on failure (NULL is returned and the reason is printed to stderr, as
// DeepRec's signature has no error channel).
RS_COMPAT_API void* initialize(const char* model_entry, const char* model_config, int* state) {
  rs_model* model = nullptr;
  rs_error* err = nullptr;
  int code = rs_model_open(model_entry, model_config, &model, &err);
  if (code != RS_OK) {
    std::fprintf(stderr, "recstrata initialize failed: %s: %s\n", rs_status_name(code),
                 err ? rs_error_message(err) : "");
    rs_error_free(err);
    if (state) *state = -1;
    return nullptr;
  }
  if (state) *state = 0;
  return model;
}

// One serialized PredictRequest -> one serialized PredictResponse.
// input_size == 0 returns the signature description as JSON (as DeepRec).
RS_COMPAT_API int process(void* model_buf, const void* input_data, int input_size, void** output_data,
                          int* output_size) {
  try {
    return ProcessOne(model_buf, input_data, input_size, output_data, output_size);
  } catch (...) {
    return ErrorOut("internal error", output_data, output_size);
  }
}

// Requests i = 0.. up to (not including) the first NULL entry of input_data[];
// input_size[i], output_data[i], output_size[i] as in process(). Each request
// is processed independently: all outputs are filled (response or error
// text). Returns 200 if every request succeeded, 500 otherwise. input_data[]
// MUST be NULL-terminated (use batch_process_n when it cannot be).
RS_COMPAT_API int batch_process(void* model_buf, const void* input_data[], int* input_size, void* output_data[],
                                int* output_size) {
  if (input_data == nullptr || input_size == nullptr || output_data == nullptr || output_size == nullptr)
    return kError;
  int rc = kOk;
  for (int i = 0; input_data[i] != nullptr; ++i)
    if (process(model_buf, input_data[i], input_size[i], &output_data[i], &output_size[i]) != kOk) rc = kError;
  return rc;
}

// batch_process with an explicit count (count <= 0: nothing to do, 200).
// input_data[i] may be NULL only with input_size[i] == 0.
RS_COMPAT_API int batch_process_n(void* model_buf, const void* input_data[], const int* input_size,
                                  void* output_data[], int* output_size, int count) {
  if (count <= 0) return kOk;
  if (input_data == nullptr || input_size == nullptr || output_data == nullptr || output_size == nullptr)
    return kError;
  int rc = kOk;
  for (int i = 0; i < count; ++i)
    if (process(model_buf, input_data[i], input_size[i], &output_data[i], &output_size[i]) != kOk) rc = kError;
  return rc;
}

// Serialized ServingModelInfo{model_path}. 200 / 500 like process().
RS_COMPAT_API int get_serving_model_info(void* model_buf, void** output_data, int* output_size) {
  try {
    if (output_data) *output_data = nullptr;
    if (output_size) *output_size = 0;
    if (output_data == nullptr || output_size == nullptr) return kError;
    if (model_buf == nullptr) return ErrorOut("model is NULL (initialize failed?)", output_data, output_size);
    void* out = nullptr;
    size_t size = 0;
    rs_error* err = nullptr;
    int code = rs_model_serving_info(static_cast<rs_model*>(model_buf), &out, &size, &err);
    if (code != RS_OK) return ErrorOut(err, code, output_data, output_size);
    *output_data = out;
    *output_size = static_cast<int>(size);
    return kOk;
  } catch (...) {
    return ErrorOut("internal error", output_data, output_size);
  }
}

// Releases any buffer returned by the functions above. NULL-safe.
RS_COMPAT_API void free_buffer(void* buffer) { rs_free(buffer); }

// Not part of DeepRec's API: closes a model returned by initialize (DeepRec
// has no teardown). NULL-safe. Must not overlap other calls on the model.
RS_COMPAT_API void release_model(void* model_buf) { rs_model_close(static_cast<rs_model*>(model_buf)); }
