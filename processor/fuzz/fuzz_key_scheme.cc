// Fuzzes key derivation (bundle/keys.h): the input is a key scheme as JSON
// (a bundle manifest's "key_scheme" object) followed by a NUL and raw bytes
// read as int64 ids. A scheme either is refused with rs::Error or derives, for
// every id, one row key per sub-table inside that sub-table's row count.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "base/status.h"
#include "bundle/keys.h"
#include "bundle/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* text = reinterpret_cast<const char*>(data);
  const void* nul = std::memchr(text, 0, size);
  const size_t json_len = nul ? static_cast<size_t>(static_cast<const char*>(nul) - text) : size;
  try {
    recstrata::bundle::KeyScheme proto;
    rs::bundle::ParseJson(std::string(text, json_len), &proto, /*ignore_unknown=*/false,
                          RS_ERR_INVALID_ARGUMENT, "key scheme");
    rs::bundle::KeyScheme s = rs::bundle::KeyScheme::FromProto(proto, "fuzz");
    const size_t S = s.num_subtables();
    if (S == 0 || S > rs::bundle::kMaxSubtables) __builtin_trap();
    const auto& rows = s.subtable_rows();
    int64_t keys[rs::bundle::kMaxSubtables];
    size_t off = nul ? json_len + 1 : size;
    std::vector<uint64_t> ids = {0, 1, ~0ULL, 1ULL << 63};
    for (; off + 8 <= size; off += 8) {
      uint64_t u;
      std::memcpy(&u, data + off, 8);
      ids.push_back(u);
    }
    for (uint64_t u : ids) {
      s.RowKeys(u, keys);
      for (size_t j = 0; j < S; ++j)
        if (keys[j] < 0 || keys[j] >= rows[j]) __builtin_trap();
    }
    for (int32_t dim : {1, 7, 16, 64}) {
      try {
        std::vector<int32_t> dims = s.SubtableDims(dim);
        int64_t sum = 0;
        for (int32_t d : dims) sum += d;
        if (dims.size() != S) __builtin_trap();
        if (s.combiner() == rs::bundle::SubCombiner::kConcat && sum != dim) __builtin_trap();
      } catch (const rs::Error&) {
      }
    }
  } catch (const rs::Error&) {
  }
  return 0;
}
