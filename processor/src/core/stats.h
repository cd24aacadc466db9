// Lock-free per-model request counters and a log-scale latency histogram.
#ifndef RECSTRATA_CORE_STATS_H_
#define RECSTRATA_CORE_STATS_H_

#include <atomic>
#include <cstdint>
#include <string>

namespace rs {

struct RunStats {
  // Bucket b holds latencies in [2^(b/4), 2^((b+1)/4)) ns: 4 buckets per
  // octave (~19% wide), up to ~2^40 ns.
  static constexpr int kBuckets = 160;

  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> total_ns{0};
  std::atomic<uint64_t> max_ns{0};
  std::atomic<uint64_t> buckets[kBuckets] = {};

  void Record(uint64_t ns);
  // Approximate quantile (upper edge of the bucket), in microseconds.
  double QuantileUs(double q) const;
  // "requests":..,"errors":..,"latency_us":{...}  (no braces around)
  std::string JsonFields() const;
};

}  // namespace rs

#endif  // RECSTRATA_CORE_STATS_H_
