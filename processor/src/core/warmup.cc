#include "core/warmup.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "base/status.h"
#include "core/tensors.h"

namespace rs {

void GenerateInputs(const Signature& sig, GeneratedInputs& g) {
  g.tensors.resize(sig.inputs.size());
  g.shapes.resize(sig.inputs.size());
  for (size_t i = 0; i < sig.inputs.size(); ++i) {
    const TensorSpec& s = sig.inputs[i];
    std::vector<int64_t>& shape = g.shapes[i];
    if (s.ndim < 0) {
      shape = {1};
    } else {
      for (int64_t d : s.shape) shape.push_back(d < 0 ? 1 : d);
    }
    int64_t count = CheckedElementCount(shape.data(), static_cast<int32_t>(shape.size()), s.name.c_str());
    rs_tensor& t = g.tensors[i];
    t.name = s.name.c_str();
    t.dtype = s.dtype;
    t.ndim = static_cast<int32_t>(shape.size());
    t.shape = shape.data();
    if (s.dtype == RS_DT_STRING) {
      std::unique_ptr<rs_bytes[]> b(new rs_bytes[count > 0 ? count : 1]);
      for (int64_t k = 0; k < count; ++k) b[k] = rs_bytes{"", 0};
      t.data = b.get();
      t.byte_size = count * sizeof(rs_bytes);
      g.strings.push_back(std::move(b));
      continue;
    }
    int esize = DtypeSize(s.dtype);
    std::unique_ptr<char[]> buf(new char[count * esize + 1]);
    for (int64_t k = 0; k < count; ++k) {
      char* p = buf.get() + k * esize;
      switch (s.dtype) {
        case RS_DT_FLOAT: { float v = 1; std::memcpy(p, &v, 4); break; }
        case RS_DT_DOUBLE: { double v = 1; std::memcpy(p, &v, 8); break; }
        case RS_DT_INT32: { int32_t v = 1; std::memcpy(p, &v, 4); break; }
        case RS_DT_INT64: { int64_t v = 1; std::memcpy(p, &v, 8); break; }
        case RS_DT_INT16: case RS_DT_UINT16: { uint16_t v = 1; std::memcpy(p, &v, 2); break; }
        case RS_DT_HALF: { uint16_t v = 0x3c00; std::memcpy(p, &v, 2); break; }
        case RS_DT_BFLOAT16: { uint16_t v = 0x3f80; std::memcpy(p, &v, 2); break; }
        default: *p = 1; break;  // int8, uint8, bool
      }
    }
    t.data = buf.get();
    t.byte_size = count * esize;
    g.data.push_back(std::move(buf));
  }
}

WarmupOutcome WarmUp(const ModelConfig& cfg, const Signature& sig, size_t sessions,
                     const WarmupDecoder& decode, const SessionRun& run) {
  WarmupOutcome out;
  if (cfg.warmup_runs == 0) {
    out.source = "disabled";
    return out;
  }
  if (!cfg.warmup_file_name.empty()) {
    const std::string& path = cfg.warmup_file_name;
    if (!decode) Fail(RS_ERR_UNIMPLEMENTED, "warmup file " + path + ": this library cannot decode warmup files");
    std::ifstream f(path, std::ios::binary);
    if (!f) Fail(RS_ERR_NOT_FOUND, "warmup file " + path + " cannot be read");
    std::stringstream ss;
    ss << f.rdbuf();
    const std::string bytes = ss.str();
    try {
      decode(bytes, sig, [&](const rs_tensor* in, size_t n, const int* out_idx, size_t n_out) {
        for (size_t s = 0; s < sessions; ++s)
          for (int r = 0; r < cfg.warmup_runs; ++r) run(in, n, out_idx, n_out, static_cast<int>(s));
      });
    } catch (const Error& e) {
      Fail(e.code(), "warmup file " + path + ": " + e.what());
    }
    out.source = "file";
    return out;
  }
  GeneratedInputs g;
  out.source = "generated";
  try {
    GenerateInputs(sig, g);
    for (size_t s = 0; s < sessions; ++s)
      for (int r = 0; r < cfg.warmup_runs; ++r)
        run(g.tensors.data(), g.tensors.size(), nullptr, 0, static_cast<int>(s));
  } catch (const Error& e) {
    out.error = e.what();
  }
  return out;
}

}  // namespace rs
