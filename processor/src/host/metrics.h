// Counters of one (model, version) pair and the Prometheus text rendering of
// the host's metrics. Counters live as long as the host (not the version), so
// a Prometheus counter never goes backwards while the host is open.
// Threading: VersionCounters are lock-free atomics (any thread).
#ifndef RECSTRATA_HOST_METRICS_H_
#define RECSTRATA_HOST_METRICS_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace rs::host {

// Latency bucket upper bounds in seconds (Prometheus `le`), +Inf implied.
inline constexpr std::array<double, 14> kLatencyBuckets = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5};

// Batch size (calls merged into one run) bucket bounds, +Inf implied.
inline constexpr std::array<double, 8> kBatchBuckets = {1, 2, 4, 8, 16, 32, 64, 128};

struct VersionCounters {
  std::atomic<uint64_t> requests{0};  // calls that reached this version
  std::atomic<uint64_t> errors{0};    // of those, the failed ones
  std::array<std::atomic<uint64_t>, kLatencyBuckets.size() + 1> buckets{};  // successful calls
  std::atomic<uint64_t> latency_ns_sum{0};
  // Thread CPU time (CLOCK_THREAD_CPUTIME_ID) of the calling thread around
  // each call, failed ones included: dynamic core allocation's CPU per request.
  std::atomic<uint64_t> cpu_ns_sum{0};
  // Dynamic batching (host/batcher.h): calls per model run, calls queued now.
  std::array<std::atomic<uint64_t>, kBatchBuckets.size() + 1> batch_buckets{};
  std::atomic<uint64_t> batch_calls_sum{0};
  std::atomic<int64_t> queued{0};
  bool batching = false;  // set before the version serves
  void Record(bool ok, uint64_t ns);
  void RecordBatch(size_t calls);
};

// One version as the metrics see it.
struct VersionMetrics {
  int64_t version = 0;
  const VersionCounters* counters = nullptr;
  bool ready = false;        // in the serving table
  double load_seconds = -1;  // < 0: not loaded (yet)
  std::string stats_json;    // Model::StatsJson of a serving version ("" otherwise)
  // Deltas of a serving bundle version (bundle/delta.h), per loaded instance.
  bool has_deltas = false;
  uint64_t delta_sequence = 0, deltas_applied = 0, delta_rows = 0, deltas_refused = 0,
           delta_failures = 0, deltas_pending = 0, deltas_followed = 0;
  double delta_apply_seconds = 0;
};

struct ModelMetrics {
  std::string name;
  bool ready = false;
  uint64_t loads = 0, load_failures = 0, revivals = 0;
  std::vector<VersionMetrics> versions;
};

// Prometheus text exposition format 0.0.4 of every model.
std::string RenderMetrics(const std::vector<ModelMetrics>& models);

// One model's assignment in the core allocator's plan (host/core_allocation.h).
struct CoreGauge {
  std::string model, role, cpus;
  int cores = 0;
  double demand_cores = 0;
  bool dedicated = false;
};

// The plan as gauges: rs_host_core_allocation_info{mode,cpus,shared_cpus} 1,
// and per model rs_host_model_cores{model,role},
// rs_host_model_demand_cores{model}, rs_host_model_cores_dedicated{model}
// (0/1) and rs_host_model_cpus_info{model,cpus} 1.
std::string RenderCoreMetrics(const std::string& mode, const std::string& cpus, const std::string& shared_cpus,
                              const std::vector<CoreGauge>& models);

// Dynamic core allocation (host/core_replanner.h): what one model measured
// over the last window.
struct MeasuredGauge {
  std::string model;
  double rps = 0, cpu_ms_per_request = 0, p99_ms = 0;
};

// rs_host_core_decisions_total, rs_host_core_replans_total, and per model
// rs_host_model_measured_rps, rs_host_model_measured_cpu_ms_per_request,
// rs_host_model_measured_p99_ms.
std::string RenderReplanMetrics(uint64_t decisions, uint64_t replans, const std::vector<MeasuredGauge>& models);

}  // namespace rs::host

#endif  // RECSTRATA_HOST_METRICS_H_
