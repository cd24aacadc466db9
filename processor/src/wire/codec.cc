#include "wire/codec.h"

#include <climits>
#include <cstdio>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "base/status.h"
#include "core/tensors.h"
#include "recstrata/wire/predict.pb.h"
#include "recstrata/wireview/request_view.pb.h"
#include "tensorflow/c/tf_tstring.h"

namespace rs {

using recstrata::wire::ArrayProto;
using recstrata::wire::PredictRequest;
using recstrata::wire::PredictResponse;

// ---- half / bfloat16 ------------------------------------------------------

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t exp = (x >> 23) & 0xffu;
  uint32_t man = x & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (man ? 0x200u : 0));  // inf / nan
  int e = static_cast<int>(exp) - 127 + 15;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (e <= 0) {                                                  // subnormal or zero
    if (e < -10) return static_cast<uint16_t>(sign);
    man |= 0x800000u;
    uint32_t shift = static_cast<uint32_t>(14 - e);
    uint32_t half = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = sign | (static_cast<uint32_t>(e) << 10) | (man >> 13);
  uint32_t rem = man & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) ++half;  // may carry into exp: correct
  return static_cast<uint16_t>(half);
}

float HalfToFloat(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, x;
  if (exp == 0) {
    if (man == 0) {
      x = sign;
    } else {
      float v = std::ldexp(static_cast<float>(man), -24);
      return sign ? -v : v;
    }
  } else if (exp == 0x1f) {
    x = sign | 0x7f800000u | (man << 13);
  } else {
    x = sign | ((exp - 15 + 127) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

uint16_t FloatToBfloat16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if (std::isnan(f)) return static_cast<uint16_t>((x >> 16) | 0x40u);
  uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>((x + rounding) >> 16);
}

float Bfloat16ToFloat(uint16_t b) {
  uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// ---- request --------------------------------------------------------------

namespace {
constexpr size_t kArenaBlock = 64 * 1024;
struct ThreadBlocks {
  std::unique_ptr<char[]> block[2];
  bool in_use[2] = {false, false};
};
thread_local ThreadBlocks tls_blocks;
}  // namespace

ArenaBlockLease::ArenaBlockLease(int which) : which_(which) {
  ThreadBlocks& tb = tls_blocks;
  if (tb.in_use[which]) return;
  if (!tb.block[which]) tb.block[which].reset(new char[kArenaBlock]);
  tb.in_use[which] = true;
  block_ = tb.block[which].get();
}

ArenaBlockLease::~ArenaBlockLease() {
  if (block_) tls_blocks.in_use[which_] = false;
}

google::protobuf::ArenaOptions ArenaBlockLease::options() const {
  google::protobuf::ArenaOptions o;
  if (block_) {
    o.initial_block = block_;
    o.initial_block_size = kArenaBlock;
  }
  return o;
}

DecodedRequest::DecodedRequest() : arena_(lease_.options()) {}
DecodedRequest::~DecodedRequest() = default;

namespace {

const char* FieldName(int dtype) {
  switch (dtype) {
    case RS_DT_FLOAT: case RS_DT_HALF: case RS_DT_BFLOAT16: return "float_val";
    case RS_DT_DOUBLE: return "double_val";
    case RS_DT_INT32: case RS_DT_UINT8: case RS_DT_INT16: case RS_DT_INT8: case RS_DT_UINT16: return "int_val";
    case RS_DT_STRING: return "string_val";
    case RS_DT_INT64: return "int64_val";
    case RS_DT_BOOL: return "bool_val";
    default: return nullptr;
  }
}

// A request-supplied name, safe to embed in an error message.
std::string Printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
    if (out.size() > 200) return out + "...";
  }
  return out;
}

// Every value field other than `expected` must be empty.
void CheckOtherFieldsEmpty(const std::string& name, const ArrayProto& a, const char* expected) {
  struct F { const char* n; int size; } fields[] = {
      {"float_val", a.float_val_size()}, {"double_val", a.double_val_size()}, {"int_val", a.int_val_size()},
      {"string_val", a.string_val_size()}, {"int64_val", a.int64_val_size()}, {"bool_val", a.bool_val_size()}};
  for (const F& f : fields)
    if (f.size > 0 && std::strcmp(f.n, expected) != 0)
      Fail(RS_ERR_INVALID_ARGUMENT, "input '" + name + "': dtype " +
                                        recstrata::wire::ArrayDataType_Name(a.dtype()) + " carries its values in " +
                                        expected + ", but " + f.n + " has " + std::to_string(f.size) + " values");
}

template <typename T>
std::unique_ptr<char[]> Narrow(const std::string& name, const google::protobuf::RepeatedField<int32_t>& v) {
  std::unique_ptr<char[]> buf(new char[v.size() * sizeof(T) + 1]);
  T* out = reinterpret_cast<T*>(buf.get());
  for (int i = 0; i < v.size(); ++i) {
    int32_t x = v.Get(i);
    if (x < static_cast<int32_t>(std::numeric_limits<T>::min()) ||
        x > static_cast<int32_t>(std::numeric_limits<T>::max()))
      Fail(RS_ERR_INVALID_ARGUMENT, "input '" + name + "': int_val[" + std::to_string(i) + "] = " +
                                        std::to_string(x) + " is out of range of the dtype");
    out[i] = static_cast<T>(x);
  }
  return buf;
}

}  // namespace

void DecodedRequest::Parse(const void* data, size_t size, const Signature& sig) {
  if (size == 0 || data == nullptr) Fail(RS_ERR_INVALID_ARGUMENT, "empty request");
  if (size > static_cast<size_t>(INT_MAX))
    Fail(RS_ERR_INVALID_ARGUMENT, "request of " + std::to_string(size) + " bytes is larger than 2 GiB");
  request_ = google::protobuf::Arena::Create<recstrata::wireview::PredictRequestView>(&arena_);
  if (!request_->ParseFromArray(data, static_cast<int>(size)))
    Fail(RS_ERR_INVALID_ARGUMENT, "could not parse the request as a PredictRequest (" + std::to_string(size) +
                                      " bytes; truncated or not protobuf)");
  if (!request_->signature_name().empty() && request_->signature_name() != sig.name)
    Fail(RS_ERR_INVALID_ARGUMENT, "request asks for signature '" + Printable(request_->signature_name()) +
                                      "' but the model serves '" + sig.name + "'");
  if (request_->inputs().empty()) Fail(RS_ERR_INVALID_ARGUMENT, "empty request: no inputs");

  tensors_.reserve(request_->inputs().size());
  slot_.assign(sig.inputs.size(), -1);
  for (const auto& entry : request_->inputs()) {
    const std::string& name = entry.key();
    const ArrayProto& a = entry.value();
    int sig_index = sig.FindInput(name);
    if (sig_index < 0) {
      std::string known;
      for (const TensorSpec& s : sig.inputs) known += (known.empty() ? "" : ", ") + s.name;
      Fail(RS_ERR_INVALID_ARGUMENT, "unknown input '" + Printable(name) + "' (signature inputs: " + known + ")");
    }
    rs_tensor t{};
    t.name = name.c_str();
    t.dtype = static_cast<int>(a.dtype());
    const char* field = FieldName(t.dtype);
    if (field == nullptr)
      Fail(RS_ERR_INVALID_ARGUMENT, "input '" + name + "': dtype " +
                                        recstrata::wire::ArrayDataType_Name(a.dtype()) + " (" +
                                        std::to_string(t.dtype) + ") is not supported");
    CheckOtherFieldsEmpty(name, a, field);
    const auto& dims = a.array_shape().dim();
    t.ndim = dims.size();
    t.shape = dims.data();
    int64_t count = CheckedElementCount(t.shape, t.ndim, name.c_str());
    int values = 0;
    switch (t.dtype) {
      case RS_DT_FLOAT: values = a.float_val_size(); t.data = a.float_val().data(); break;
      case RS_DT_DOUBLE: values = a.double_val_size(); t.data = a.double_val().data(); break;
      case RS_DT_INT32: values = a.int_val_size(); t.data = a.int_val().data(); break;
      case RS_DT_INT64: values = a.int64_val_size(); t.data = a.int64_val().data(); break;
      case RS_DT_BOOL: values = a.bool_val_size(); t.data = a.bool_val().data(); break;
      case RS_DT_UINT8: case RS_DT_INT8: case RS_DT_INT16: case RS_DT_UINT16:
        values = a.int_val_size();
        break;
      case RS_DT_HALF: case RS_DT_BFLOAT16: values = a.float_val_size(); break;
      case RS_DT_STRING: values = a.string_val_size(); break;
    }
    if (values != count)
      Fail(RS_ERR_INVALID_ARGUMENT, "input '" + name + "': " + field + " has " + std::to_string(values) +
                                        " values but the shape holds " + std::to_string(count) + " elements");
    int esize = DtypeSize(t.dtype);
    t.byte_size = static_cast<size_t>(count) * (t.dtype == RS_DT_STRING ? sizeof(rs_bytes) : esize);
    switch (t.dtype) {
      case RS_DT_UINT8: buffers_.push_back(Narrow<uint8_t>(name, a.int_val())); break;
      case RS_DT_INT8: buffers_.push_back(Narrow<int8_t>(name, a.int_val())); break;
      case RS_DT_INT16: buffers_.push_back(Narrow<int16_t>(name, a.int_val())); break;
      case RS_DT_UINT16: buffers_.push_back(Narrow<uint16_t>(name, a.int_val())); break;
      case RS_DT_HALF: case RS_DT_BFLOAT16: {
        std::unique_ptr<char[]> buf(new char[count * 2 + 1]);
        uint16_t* out = reinterpret_cast<uint16_t*>(buf.get());
        bool half = t.dtype == RS_DT_HALF;
        for (int64_t i = 0; i < count; ++i)
          out[i] = half ? FloatToHalf(a.float_val(i)) : FloatToBfloat16(a.float_val(i));
        buffers_.push_back(std::move(buf));
        break;
      }
      case RS_DT_STRING: {
        std::unique_ptr<rs_bytes[]> b(new rs_bytes[count > 0 ? count : 1]);
        for (int64_t i = 0; i < count; ++i) b[i] = rs_bytes{a.string_val(i).data(), a.string_val(i).size()};
        t.data = b.get();
        strings_.push_back(std::move(b));
        break;
      }
      default: break;
    }
    if (t.dtype == RS_DT_UINT8 || t.dtype == RS_DT_INT8 || t.dtype == RS_DT_INT16 || t.dtype == RS_DT_UINT16 ||
        t.dtype == RS_DT_HALF || t.dtype == RS_DT_BFLOAT16)
      t.data = buffers_.back().get();
    if (count == 0) t.data = nullptr;
    // Map semantics: a key repeated on the wire replaces the earlier entry.
    if (slot_[sig_index] >= 0) {
      tensors_[slot_[sig_index]] = t;
    } else {
      slot_[sig_index] = static_cast<int>(tensors_.size());
      tensors_.push_back(t);
    }
  }

  // Hand the inputs over in signature order (the run's fast path).
  if (tensors_.size() == sig.inputs.size()) {
    std::vector<rs_tensor> ordered;
    ordered.reserve(tensors_.size());
    for (int s : slot_) ordered.push_back(tensors_[s]);
    tensors_.swap(ordered);
  }

  outputs_.clear();
  if (request_->output_filter().empty()) {
    for (size_t i = 0; i < sig.outputs.size(); ++i) outputs_.push_back(static_cast<int>(i));
  } else {
    for (const std::string& f : request_->output_filter()) {
      int idx = sig.FindOutput(f);
      if (idx < 0) {
        std::string known;
        for (const TensorSpec& s : sig.outputs) known += (known.empty() ? "" : ", ") + s.name;
        Fail(RS_ERR_INVALID_ARGUMENT,
             "unknown output '" + Printable(f) + "' in output_filter (signature outputs: " + known + ")");
      }
      outputs_.push_back(idx);
    }
  }
}

// ---- response -------------------------------------------------------------

namespace {

template <typename T, typename Field>
void CopyInto(Field* field, const void* data, int64_t count) {
  field->Resize(static_cast<int>(count), T());
  if (count) std::memcpy(field->mutable_data(), data, count * sizeof(T));
}

template <typename T>
void Widen(google::protobuf::RepeatedField<int32_t>* field, const void* data, int64_t count) {
  field->Reserve(static_cast<int>(count));
  const T* p = static_cast<const T*>(data);
  for (int64_t i = 0; i < count; ++i) field->AddAlreadyReserved(static_cast<int32_t>(p[i]));
}

void FillArray(TF_Tensor* t, ArrayProto* a) {
  int dtype = static_cast<int>(TF_TensorType(t));
  if (!recstrata::wire::ArrayDataType_IsValid(dtype) || !DtypeSupported(dtype))
    Fail(RS_ERR_UNIMPLEMENTED, "output dtype " + std::to_string(dtype) + " cannot be encoded");
  a->set_dtype(static_cast<recstrata::wire::ArrayDataType>(dtype));
  int nd = TF_NumDims(t);
  auto* dims = a->mutable_array_shape()->mutable_dim();
  dims->Reserve(nd);
  for (int d = 0; d < nd; ++d) dims->AddAlreadyReserved(TF_Dim(t, d));
  int64_t count = TF_TensorElementCount(t);
  if (count > INT_MAX) Fail(RS_ERR_RESOURCE_EXHAUSTED, "output too large for a PredictResponse");
  const void* data = TF_TensorData(t);
  switch (dtype) {
    case RS_DT_FLOAT: CopyInto<float>(a->mutable_float_val(), data, count); break;
    case RS_DT_DOUBLE: CopyInto<double>(a->mutable_double_val(), data, count); break;
    case RS_DT_INT32: CopyInto<int32_t>(a->mutable_int_val(), data, count); break;
    case RS_DT_INT64: CopyInto<int64_t>(a->mutable_int64_val(), data, count); break;
    case RS_DT_BOOL: CopyInto<bool>(a->mutable_bool_val(), data, count); break;
    case RS_DT_UINT8: Widen<uint8_t>(a->mutable_int_val(), data, count); break;
    case RS_DT_INT8: Widen<int8_t>(a->mutable_int_val(), data, count); break;
    case RS_DT_INT16: Widen<int16_t>(a->mutable_int_val(), data, count); break;
    case RS_DT_UINT16: Widen<uint16_t>(a->mutable_int_val(), data, count); break;
    case RS_DT_HALF: case RS_DT_BFLOAT16: {
      auto* f = a->mutable_float_val();
      f->Reserve(static_cast<int>(count));
      const uint16_t* p = static_cast<const uint16_t*>(data);
      for (int64_t i = 0; i < count; ++i)
        f->AddAlreadyReserved(dtype == RS_DT_HALF ? HalfToFloat(p[i]) : Bfloat16ToFloat(p[i]));
      break;
    }
    case RS_DT_STRING: {
      const TF_TString* s = static_cast<const TF_TString*>(data);
      auto* out = a->mutable_string_val();
      out->Reserve(static_cast<int>(count));
      for (int64_t i = 0; i < count; ++i) out->Add()->assign(TF_StringGetDataPointer(&s[i]), TF_StringGetSize(&s[i]));
      break;
    }
  }
}

void SerializeToMalloc(const google::protobuf::MessageLite& m, void** out, size_t* out_size) {
  size_t n = m.ByteSizeLong();
  if (n > static_cast<size_t>(INT_MAX)) Fail(RS_ERR_RESOURCE_EXHAUSTED, "response larger than 2 GiB");
  char* buf = static_cast<char*>(std::malloc(n + 1));
  if (buf == nullptr) Fail(RS_ERR_RESOURCE_EXHAUSTED, "out of memory");
  m.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(buf));
  buf[n] = '\0';
  *out = buf;
  *out_size = n;
}

}  // namespace

void EncodeResponse(const rs_result& result, void** out, size_t* out_size) {
  ArenaBlockLease lease(1);
  google::protobuf::Arena arena(lease.options());
  PredictResponse* resp = google::protobuf::Arena::Create<PredictResponse>(&arena);
  auto* outputs = resp->mutable_outputs();
  for (size_t i = 0; i < result.count(); ++i) {
    const std::string& name = result.signature->outputs[result.output_index[i]].name;
    FillArray(result.tensors[i], &(*outputs)[name]);
  }
  SerializeToMalloc(*resp, out, out_size);
}

void EncodeModelInfo(const std::string& model_path, void** out, size_t* out_size) {
  recstrata::wire::ServingModelInfo info;
  info.set_model_path(model_path);
  SerializeToMalloc(info, out, out_size);
}

}  // namespace rs
