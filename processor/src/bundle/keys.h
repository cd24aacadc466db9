// Native id -> row-key derivation of bundle tables: a bit-exact C++ twin of
// recstrata.training.keys (docs/embedding-keys.md, schema version 1).
//
// Every function is pure and thread-safe. tests/test_bundle_keys.py checks
// this code against the Python reference's test vectors through
// rs_bundle_row_keys (recstrata.h), so the two can never drift.
#ifndef RECSTRATA_BUNDLE_KEYS_H_
#define RECSTRATA_BUNDLE_KEYS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "recstrata/bundle/manifest.pb.h"

namespace rs {
namespace bundle {

// FNV-1a 64 of the bytes (string ids -> int64 ids, reinterpreted).
inline uint64_t Fnv1a64(const char* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ULL;
  const auto* p = reinterpret_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

// splitmix64 finaliser of u + (seed + 1) * golden (all mod 2^64).
inline uint64_t Hash64(uint64_t u, uint64_t seed) {
  uint64_t z = u + (seed + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// How the sub-vectors of one id combine into its embedding.
enum class SubCombiner { kAdd, kMultiply, kConcat };

// Most sub-tables a key scheme may have (binary_code with bits = 64 and
// block_bits = 1). The pooling hot path keeps per-sub-table pointers in arrays
// of this size on the stack; FromProto refuses any scheme with more.
inline constexpr size_t kMaxSubtables = 64;

// A validated key scheme. Construct with FromProto (throws rs::Error with
// RS_ERR_INVALID_ARGUMENT naming the bad field, same rules as keys.py).
class KeyScheme {
 public:
  static KeyScheme FromProto(const recstrata::bundle::KeyScheme& proto,
                             const std::string& context);

  size_t num_subtables() const { return rows_.size(); }
  const std::vector<int64_t>& subtable_rows() const { return rows_; }
  SubCombiner combiner() const { return combiner_; }
  // Width of each sub-table's rows for an embedding of width `dim`: `dim`
  // each, except concat, which splits dim as evenly as possible (the first
  // dim mod S sub-tables get one extra column). Throws if dim < S (concat).
  std::vector<int32_t> SubtableDims(int32_t dim) const;

  // Row keys of one id (as uint64): out[j] = row in sub-table j, j < S.
  void RowKeys(uint64_t u, int64_t* out) const;
  // Dynamic tables: one sub-table keyed by the raw id, any number of rows
  // (subtable_rows() is {0}; the manifest gives the live row count).
  bool is_dynamic() const { return kind_ == Kind::kDynamic; }
  // Frequency-aware tables: sub-table 0 holds the hot ids' exact rows, keyed
  // by the raw id (row key 0 = the id). An id found there is embedded by that
  // row alone; any other id by the tail scheme's sub-tables 1..S-1, combined
  // by combiner(). A missing hot row is the normal case, not a missing row.
  bool has_hot_subtable() const { return kind_ == Kind::kFreqAware; }
  // Whether a manifest's sub-table j may hold `rows` rows: exactly the
  // scheme's count, any count (dynamic), or at most hot_rows (the hot table).
  bool RowsOk(size_t j, int64_t rows) const;

 private:
  enum class Kind { kPlain, kQr, kKway, kBinaryCode, kDynamic, kFreqAware };
  Kind kind_ = Kind::kPlain;
  bool hashed_ = true;
  uint64_t seed_ = 0;
  uint64_t vocab_ = 0, m_ = 0;               // qr
  std::vector<uint64_t> sizes_;              // plain (1 entry) and kway
  int bits_ = 0;                             // binary_code
  uint64_t code_mask_ = ~0ULL;
  bool skip_ = false;
  std::vector<std::vector<int>> blocks_;     // binary_code bit positions per block
  std::shared_ptr<const KeyScheme> tail_;    // freq_aware
  std::vector<int64_t> rows_;
  SubCombiner combiner_ = SubCombiner::kAdd;
};

}  // namespace bundle
}  // namespace rs

#endif  // RECSTRATA_BUNDLE_KEYS_H_
