#include "core/signature.h"

#include <cctype>
#include <cstdio>

#include "base/json_text.h"

namespace rs {

void Signature::Finalize() {
  input_index_.clear();
  output_index_.clear();
  for (size_t i = 0; i < inputs.size(); ++i) input_index_.emplace(inputs[i].name, static_cast<int>(i));
  for (size_t i = 0; i < outputs.size(); ++i) output_index_.emplace(outputs[i].name, static_cast<int>(i));
}

int Signature::FindInput(std::string_view alias) const {
  auto it = input_index_.find(alias);
  return it == input_index_.end() ? -1 : it->second;
}

int Signature::FindOutput(std::string_view alias) const {
  auto it = output_index_.find(alias);
  return it == output_index_.end() ? -1 : it->second;
}

const char* DtypeName(int dtype) {
  switch (dtype) {
    case 1: return "float";
    case 2: return "double";
    case 3: return "int32";
    case 4: return "uint8";
    case 5: return "int16";
    case 6: return "int8";
    case 7: return "string";
    case 9: return "int64";
    case 10: return "bool";
    case 14: return "bfloat16";
    case 17: return "uint16";
    case 19: return "half";
    default: return "unknown";
  }
}

static void AppendSpecs(std::string& out, const std::vector<TensorSpec>& specs) {
  out.push_back('[');
  for (size_t i = 0; i < specs.size(); ++i) {
    const TensorSpec& s = specs[i];
    if (i) out.push_back(',');
    out += "{\"name\":";
    AppendJsonString(out, s.name);
    out += ",\"dtype\":";
    AppendJsonString(out, DtypeName(s.dtype));
    out += ",\"type\":";  // DeepRec's spelling, e.g. "DT_FLOAT"
    std::string dt = DtypeName(s.dtype);
    for (char& c : dt) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    AppendJsonString(out, "DT_" + dt);
    if (s.ndim < 0) {
      out += ",\"shape\":null";
    } else {
      out += ",\"shape\":[";
      for (int32_t d = 0; d < s.ndim; ++d) {
        if (d) out.push_back(',');
        out += std::to_string(s.shape[d]);
      }
      out.push_back(']');
    }
    if (!s.tensor_name.empty()) {
      out += ",\"tensor\":";
      AppendJsonString(out, s.tensor_name);
    }
    out.push_back('}');
  }
  out.push_back(']');
}

std::string Signature::ToJson() const {
  std::string out = "{\"signature_name\":";
  AppendJsonString(out, name);
  out += ",\"inputs\":";
  AppendSpecs(out, inputs);
  out += ",\"outputs\":";
  AppendSpecs(out, outputs);
  out.push_back('}');
  return out;
}

}  // namespace rs
