// DeepRec wire format codec: PredictRequest -> validated rs_tensor views,
// rs_result -> PredictResponse bytes, on the generated recstrata.wire classes
// (processor/proto/recstrata/wire/predict.proto).
//
// Parsing uses recstrata.wireview.PredictRequestView (same bytes, map entries
// as a repeated field: faster, no hash map); a repeated key keeps map
// semantics (the last entry wins).
//
// Strictness (each violation is RS_ERR_INVALID_ARGUMENT with a message naming
// the input): unparsable bytes, empty request, a signature_name other than
// the model's, values in a field that does not match the dtype (e.g. DT_FLOAT
// with int_val), value count != element count of the shape, negative or
// overflowing dims, int_val values out of range of a narrow dtype, unknown
// output_filter names. Input names/dtypes/shapes are then checked against the
// signature by core/tensors.h (OrderInputs) when the model runs.
#ifndef RECSTRATA_WIRE_CODEC_H_
#define RECSTRATA_WIRE_CODEC_H_

#include <google/protobuf/arena.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "core/result.h"
#include "core/signature.h"
#include "recstrata.h"

namespace recstrata::wireview {
class PredictRequestView;
}

namespace rs {

// Lends this thread's reusable first block for a protobuf arena (0: request,
// 1: response), so typical requests are parsed and responses built without
// malloc. A second lease of the same block on one thread (nesting) gets no
// block and the arena falls back to malloc.
class ArenaBlockLease {
 public:
  explicit ArenaBlockLease(int which);
  ~ArenaBlockLease();
  ArenaBlockLease(const ArenaBlockLease&) = delete;
  ArenaBlockLease& operator=(const ArenaBlockLease&) = delete;
  google::protobuf::ArenaOptions options() const;

 private:
  int which_;
  char* block_ = nullptr;
};

// A parsed request. Tensor views point into the request (arena-allocated) or
// into conversion buffers owned here; valid until this object is destroyed.
// One object per call (not thread-safe).
class DecodedRequest {
 public:
  DecodedRequest();
  ~DecodedRequest();
  // Parses and checks `size` bytes against `sig`. Throws rs::Error.
  void Parse(const void* data, size_t size, const Signature& sig);

  const rs_tensor* inputs() const { return tensors_.data(); }
  size_t num_inputs() const { return tensors_.size(); }
  // Signature output indices requested (output_filter, or all outputs).
  const std::vector<int>& outputs() const { return outputs_; }

 private:
  ArenaBlockLease lease_{0};        // must outlive (be declared before) arena_
  google::protobuf::Arena arena_;
  recstrata::wireview::PredictRequestView* request_ = nullptr;
  std::vector<rs_tensor> tensors_;
  std::vector<std::unique_ptr<char[]>> buffers_;  // converted narrow/half data
  std::vector<std::unique_ptr<rs_bytes[]>> strings_;
  std::vector<int> outputs_;
  std::vector<int> slot_;  // signature input -> index in tensors_, or -1
};

// Serializes a result as a PredictResponse into a new malloc'ed buffer
// (released with rs_free). Throws rs::Error.
void EncodeResponse(const rs_result& result, void** out, size_t* out_size);

// Serialized ServingModelInfo{model_path}, in a malloc'ed buffer.
void EncodeModelInfo(const std::string& model_path, void** out, size_t* out_size);

// float <-> IEEE half / bfloat16 (round to nearest even).
uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBfloat16(float f);
float Bfloat16ToFloat(uint16_t b);

}  // namespace rs

#endif  // RECSTRATA_WIRE_CODEC_H_
