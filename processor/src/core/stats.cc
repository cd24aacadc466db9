#include "core/stats.h"

#include <cmath>
#include <cstdio>

namespace rs {

static int BucketOf(uint64_t ns) {
  if (ns < 1) return 0;
  int b = static_cast<int>(std::log2(static_cast<double>(ns)) * 4.0);
  return b < 0 ? 0 : (b >= RunStats::kBuckets ? RunStats::kBuckets - 1 : b);
}

void RunStats::Record(uint64_t ns) {
  requests.fetch_add(1, std::memory_order_relaxed);
  total_ns.fetch_add(ns, std::memory_order_relaxed);
  uint64_t prev = max_ns.load(std::memory_order_relaxed);
  while (ns > prev && !max_ns.compare_exchange_weak(prev, ns, std::memory_order_relaxed)) {
  }
  buckets[BucketOf(ns)].fetch_add(1, std::memory_order_relaxed);
}

double RunStats::QuantileUs(double q) const {
  uint64_t total = 0;
  for (const auto& b : buckets) total += b.load(std::memory_order_relaxed);
  if (total == 0) return 0;
  uint64_t target = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total)));
  if (target == 0) target = 1;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets[i].load(std::memory_order_relaxed);
    if (seen >= target) return std::exp2((i + 1) / 4.0) / 1000.0;
  }
  return static_cast<double>(max_ns.load()) / 1000.0;
}

std::string RunStats::JsonFields() const {
  uint64_t n = requests.load(), total = total_ns.load();
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "\"requests\":%llu,\"errors\":%llu,\"latency_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,"
                "\"p99\":%.1f,\"max\":%.1f,\"note\":\"successful runs; percentiles are histogram upper edges (+19%%)\"}",
                static_cast<unsigned long long>(n), static_cast<unsigned long long>(errors.load()),
                n ? total / 1000.0 / n : 0.0, QuantileUs(0.5), QuantileUs(0.9), QuantileUs(0.99),
                max_ns.load() / 1000.0);
  return buf;
}

}  // namespace rs
