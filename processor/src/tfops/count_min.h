// Admission filter of dynamic tables: a count-min sketch of id occurrences.
//
// depth rows of `width` saturating 16-bit counters (width a power of two);
// row i hashes an id with the splitmix64 finaliser seeded by i. Estimate()
// never under-counts an id (it may over-count when ids collide in every row).
// Not thread-safe: the owning DynamicTable serializes access.
#ifndef RECSTRATA_TFOPS_COUNT_MIN_H_
#define RECSTRATA_TFOPS_COUNT_MIN_H_

#include <algorithm>
#include <cstdint>
#include <vector>

namespace rs {
namespace tfops {

inline uint64_t Mix64(uint64_t u, uint64_t seed) {
  uint64_t z = u + (seed + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

class CountMinSketch {
 public:
  CountMinSketch() = default;
  CountMinSketch(uint32_t depth, uint64_t width)
      : depth_(depth), width_(width), counters_(static_cast<size_t>(depth) * width, 0) {}

  uint32_t depth() const { return depth_; }
  uint64_t width() const { return width_; }
  bool empty() const { return counters_.empty(); }
  std::vector<uint16_t>& counters() { return counters_; }
  const std::vector<uint16_t>& counters() const { return counters_; }

  // Adds `count` occurrences of `key`; returns the new estimate.
  uint32_t Add(int64_t key, uint64_t count) {
    uint32_t est = UINT32_MAX;
    for (uint32_t i = 0; i < depth_; ++i) {
      uint16_t& c = counters_[Slot(key, i)];
      c = static_cast<uint16_t>(std::min<uint64_t>(uint64_t{c} + count, 0xffff));
      est = std::min<uint32_t>(est, c);
    }
    return depth_ ? est : 0;
  }

  uint32_t Estimate(int64_t key) const {
    uint32_t est = UINT32_MAX;
    for (uint32_t i = 0; i < depth_; ++i) est = std::min<uint32_t>(est, counters_[Slot(key, i)]);
    return depth_ ? est : 0;
  }

 private:
  size_t Slot(int64_t key, uint32_t row) const {
    const uint64_t h = Mix64(static_cast<uint64_t>(key), 0x5eed0000ULL + row);
    return static_cast<size_t>(row) * width_ + (h & (width_ - 1));
  }
  uint32_t depth_ = 0;
  uint64_t width_ = 0;
  std::vector<uint16_t> counters_;
};

}  // namespace tfops
}  // namespace rs

#endif  // RECSTRATA_TFOPS_COUNT_MIN_H_
