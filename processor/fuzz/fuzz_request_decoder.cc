// Fuzzes the PredictRequest decoder (wire/codec.h) against a signature with a
// float matrix, an int64 vector, a string vector and a half input: any bytes
// either decode into tensors that match the signature or throw rs::Error.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "base/status.h"
#include "core/signature.h"
#include "wire/codec.h"

namespace {

const rs::Signature& Sig() {
  static const rs::Signature sig = [] {
    rs::Signature s;
    s.name = "serving_default";
    s.inputs = {{"x", "x:0", RS_DT_FLOAT, 2, {-1, 4}},
                {"ids", "ids:0", RS_DT_INT64, 1, {-1}},
                {"s", "s:0", RS_DT_STRING, 1, {-1}},
                {"h", "h:0", RS_DT_HALF, -1, {}}};
    s.outputs = {{"y", "y:0", RS_DT_FLOAT, 2, {-1, 1}}, {"z", "z:0", RS_DT_INT32, 1, {-1}}};
    s.Finalize();
    return s;
  }();
  return sig;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    rs::DecodedRequest req;
    req.Parse(data, size, Sig());
    // Touch every decoded byte: the views must be readable for their sizes.
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < req.num_inputs(); ++i) {
      const rs_tensor& t = req.inputs()[i];
      if (t.dtype == RS_DT_STRING) {
        const rs_bytes* b = static_cast<const rs_bytes*>(t.data);
        for (size_t k = 0; k < t.byte_size / sizeof(rs_bytes); ++k)
          for (size_t j = 0; j < b[k].size; ++j) sink ^= static_cast<const uint8_t*>(static_cast<const void*>(b[k].data))[j];
      } else {
        for (size_t j = 0; j < t.byte_size; ++j) sink ^= static_cast<const uint8_t*>(t.data)[j];
      }
    }
    for (int o : req.outputs())
      if (o < 0 || o >= static_cast<int>(Sig().outputs.size())) __builtin_trap();
  } catch (const rs::Error&) {
  }
  return 0;
}
