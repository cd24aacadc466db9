// Dynamic core allocation (docs/host.md "Cores", core_allocation
// "dynamic"): starts from the static plan made at open
// (host/core_allocation.h), then every interval measures each model over the
// window since the last decision (request rate, calling-thread CPU time per
// request, a p99 estimate from the latency histogram's deltas), feeds that to
// the allocator's dynamic rule (sched/core_plan.h: hysteresis against the plan
// in force, floors, the p99-over-target boost) and, when the assignment
// changes, hands the new allocation to the host to re-pin its inline
// sessions (Model::SetSessionCpus: runs in flight finish on their old set,
// no request is dropped). split_parts stays as planned at open.
//
// The replanner knows nothing of models or versions: the host gives it a
// Measure callback (cumulative counters per plan model, summed over the
// model's versions) and an Apply callback (re-pins; returns "" or the errors
// it met, which are reported, not thrown).
//
// Threading: ReplanNow, Force, StatusJson, MetricsText and Current may be
// called from any thread at once; decisions (the thread's, ReplanNow's,
// Force's) are serialized. Measure and Apply are called with the decision
// lock held and no other lock of this class; StatusJson/MetricsText take only
// a short state lock, so a caller may hold its own lock around them as long
// as Measure/Apply may take that lock without holding one of ours (lock
// order: decision lock, then the host's, then the state lock). Stop() must
// not be called from Measure or Apply.
#ifndef RECSTRATA_HOST_CORE_REPLANNER_H_
#define RECSTRATA_HOST_CORE_REPLANNER_H_

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "host/core_allocation.h"
#include "host/metrics.h"

namespace rs::host {

// Cumulative counters of one model (summed over its versions) at one instant.
struct ModelTotals {
  uint64_t requests = 0;  // calls, failed ones included
  uint64_t cpu_ns = 0;    // calling-thread CPU time of those calls
  std::array<uint64_t, kLatencyBuckets.size() + 1> buckets{};  // successful calls
};

// One model over one window.
struct WindowMeasure {
  double seconds = 0;
  uint64_t requests = 0;
  double rps = 0, cpu_ms_per_request = 0, p99_ms = 0;
  bool p99_over_last_bucket = false;  // p99 beyond the histogram's last bound (2.5 s): reported as that bound
};

// The window between two totals of a model.
WindowMeasure MeasureWindow(const ModelTotals& before, const ModelTotals& after, double seconds);

// p99 in milliseconds from per-bucket counts (kLatencyBuckets, +Inf last):
// linear interpolation inside the bucket holding the 99th percentile (the
// first bucket from 0). 0 for no calls.
double P99Ms(const std::array<uint64_t, kLatencyBuckets.size() + 1>& counts, bool* over_last_bucket = nullptr);

class CoreReplanner {
 public:
  using Measure = std::function<std::vector<ModelTotals>()>;  // one per plan model, plan order
  using Apply = std::function<std::string(const CoreAllocation&)>;

  // `initial`: the dynamic-mode allocation made at open (mode "dynamic").
  // interval_ms 0: no thread (decisions only through ReplanNow/Force).
  CoreReplanner(CoreAllocation initial, int64_t interval_ms, Measure measure, Apply apply);
  ~CoreReplanner();  // Stop()
  CoreReplanner(const CoreReplanner&) = delete;
  CoreReplanner& operator=(const CoreReplanner&) = delete;

  void Start();  // the re-plan thread, when interval_ms > 0
  void Stop();   // joins the thread; idempotent

  // One decision now over the window since the last one. Returns the
  // decision as JSON {"decision", "changed", "forced", "reason", "plan",
  // "apply_errors"}.
  std::string ReplanNow();
  // TEST HOOK: imposes cpus on some allocator-placed models, applied like a
  // re-plan (counted, reason "forced ..."); later decisions start from it.
  // `plan_json`: {"models": [{"name", "cpus"}]} (a CorePlan). Unknown or
  // opted-out models, CPUs outside the divided ones: RS_ERR_INVALID_ARGUMENT.
  std::string Force(const std::string& plan_json);

  CoreAllocation Current() const;
  // CoreAllocation::StatusJson of the plan in force plus "replan_interval_ms",
  // "hysteresis", "decisions", "replans", "last_decision" and per model
  // "measured".
  std::string StatusJson() const;
  std::string MetricsText() const;

 private:
  // Caller holds decide_mu_; forced: NULL for the allocator's decision.
  std::string Decide(const recstrata::config::CorePlan* forced);
  void Loop();

  const int64_t interval_ms_;
  const Measure measure_;
  const Apply apply_;

  std::mutex decide_mu_;  // one decision at a time; guards the window start below
  std::vector<ModelTotals> last_totals_;
  std::chrono::steady_clock::time_point last_time_;

  mutable std::mutex state_mu_;  // what status and metrics read
  CoreAllocation current_;
  std::vector<WindowMeasure> measured_;
  uint64_t decisions_ = 0, replans_ = 0;
  std::string last_reason_ = "none yet (the plan made at open from the declared traffic)";
  std::string last_errors_;
  bool last_changed_ = false, last_forced_ = false;
  std::chrono::steady_clock::time_point last_decision_time_{};

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace rs::host

#endif  // RECSTRATA_HOST_CORE_REPLANNER_H_
