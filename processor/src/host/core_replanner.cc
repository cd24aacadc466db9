#include "host/core_replanner.h"

#include <google/protobuf/json/json.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "base/json_text.h"
#include "base/status.h"
#include "sched/core_plan.h"
#include "sched/cpu_list.h"

namespace rs::host {

namespace pb = ::recstrata::config;
using Clock = std::chrono::steady_clock;

namespace {

std::string Fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string Repeat(const std::string& cpus, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += (i ? ";" : "") + cpus;
  return out;
}

// "base: 120.0 rps x 0.85 ms = 0.15 cores busy, p99 1.2 ms (target 20 ms)"
std::string Detail(const pb::ModelDemand& d, const WindowMeasure& w) {
  std::string o = d.name() + ": " + Fmt("%.1f", w.rps) + " rps x " + Fmt("%.3f", w.cpu_ms_per_request) + " ms = " +
                  Fmt("%.3f", w.rps * w.cpu_ms_per_request / 1000.0) + " cores busy, p99 " + Fmt("%.2f", w.p99_ms) + " ms";
  if (d.latency_target_ms() > 0) o += " (target " + Fmt("%g", d.latency_target_ms()) + " ms)";
  return o;
}

bool SameAssignment(const pb::CorePlan& a, const pb::CorePlan& b) {
  if (a.models_size() != b.models_size() || a.shared_cpus() != b.shared_cpus()) return false;
  for (int i = 0; i < a.models_size(); ++i)
    if (a.models(i).name() != b.models(i).name() || a.models(i).cpus() != b.models(i).cpus()) return false;
  return true;
}

std::string PlanJson(const pb::CorePlan& p) {
  std::string out;
  google::protobuf::json::PrintOptions opt;
  opt.preserve_proto_field_names = true;
  opt.always_print_fields_with_no_presence = true;
  if (!google::protobuf::json::MessageToJsonString(p, &out, opt).ok()) return "null";
  return out;
}

}  // namespace

double P99Ms(const std::array<uint64_t, kLatencyBuckets.size() + 1>& counts, bool* over_last_bucket) {
  if (over_last_bucket) *over_last_bucket = false;
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  if (total == 0) return 0;
  const double rank = 0.99 * static_cast<double>(total);
  double cum = 0;
  for (size_t b = 0; b < counts.size(); ++b) {
    double next = cum + static_cast<double>(counts[b]);
    if (next >= rank && counts[b] > 0) {
      if (b == kLatencyBuckets.size()) {  // +Inf: no upper bound to interpolate to
        if (over_last_bucket) *over_last_bucket = true;
        return kLatencyBuckets.back() * 1e3;
      }
      double lo = b == 0 ? 0.0 : kLatencyBuckets[b - 1], hi = kLatencyBuckets[b];
      double frac = (rank - cum) / static_cast<double>(counts[b]);
      return (lo + (hi - lo) * std::clamp(frac, 0.0, 1.0)) * 1e3;
    }
    cum = next;
  }
  return kLatencyBuckets.back() * 1e3;
}

WindowMeasure MeasureWindow(const ModelTotals& before, const ModelTotals& after, double seconds) {
  WindowMeasure w;
  w.seconds = seconds;
  // Counters only grow; a smaller value (never expected) reads as no traffic.
  w.requests = after.requests >= before.requests ? after.requests - before.requests : 0;
  uint64_t cpu = after.cpu_ns >= before.cpu_ns ? after.cpu_ns - before.cpu_ns : 0;
  w.rps = seconds > 0 ? static_cast<double>(w.requests) / seconds : 0;
  w.cpu_ms_per_request = w.requests ? static_cast<double>(cpu) / 1e6 / static_cast<double>(w.requests) : 0;
  std::array<uint64_t, kLatencyBuckets.size() + 1> d{};
  for (size_t b = 0; b < d.size(); ++b) d[b] = after.buckets[b] >= before.buckets[b] ? after.buckets[b] - before.buckets[b] : 0;
  w.p99_ms = P99Ms(d, &w.p99_over_last_bucket);
  return w;
}

CoreReplanner::CoreReplanner(CoreAllocation initial, int64_t interval_ms, Measure measure, Apply apply)
    : interval_ms_(interval_ms), measure_(std::move(measure)), apply_(std::move(apply)), current_(std::move(initial)) {
  last_totals_.resize(static_cast<size_t>(current_.plan.models_size()));
  measured_.resize(last_totals_.size());
  last_time_ = Clock::now();
}

CoreReplanner::~CoreReplanner() { Stop(); }

void CoreReplanner::Start() {
  if (interval_ms_ > 0 && !thread_.joinable()) thread_ = std::thread([this] { Loop(); });
}

void CoreReplanner::Stop() {
  {
    std::lock_guard<std::mutex> lk(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable() && thread_.get_id() != std::this_thread::get_id()) thread_.join();
}

void CoreReplanner::Loop() {
  while (true) {
    {
      std::unique_lock<std::mutex> lk(stop_mu_);
      if (stop_cv_.wait_for(lk, std::chrono::milliseconds(interval_ms_), [this] { return stop_; })) return;
    }
    try {
      ReplanNow();
    } catch (...) {  // never let the thread die; the reason is in status
    }
  }
}

std::string CoreReplanner::ReplanNow() {
  std::lock_guard<std::mutex> lk(decide_mu_);
  return Decide(nullptr);
}

std::string CoreReplanner::Force(const std::string& plan_json) {
  pb::CorePlan want;
  auto st = google::protobuf::json::JsonStringToMessage(plan_json, &want);
  if (!st.ok()) Fail(RS_ERR_INVALID_ARGUMENT, "force core plan: not a CorePlan JSON: " + std::string(st.message()));
  std::lock_guard<std::mutex> lk(decide_mu_);
  pb::CorePlan forced;
  {
    std::lock_guard<std::mutex> s(state_mu_);
    forced = current_.plan;
  }
  const std::vector<int> pool = ParseCpuList(current_.cpus, "force core plan: cpus");
  const std::set<int> pool_set(pool.begin(), pool.end());
  for (const auto& w : want.models()) {
    int i = 0;
    while (i < forced.models_size() && forced.models(i).name() != w.name()) ++i;
    if (i == forced.models_size()) Fail(RS_ERR_INVALID_ARGUMENT, "force core plan: no model \"" + w.name() + "\" in the plan");
    if (current_.applied[static_cast<size_t>(i)].source != "allocator")
      Fail(RS_ERR_INVALID_ARGUMENT, "force core plan: model \"" + w.name() + "\" opted out of the allocator");
    std::vector<int> cpus = ParseCpuList(w.cpus(), "force core plan: cpus");
    if (cpus.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "force core plan: model \"" + w.name() + "\" gets no CPU");
    for (int c : cpus)
      if (!pool_set.count(c))
        Fail(RS_ERR_INVALID_ARGUMENT, "force core plan: cpu " + std::to_string(c) + " is not among the CPUs divided (" + current_.cpus + ")");
    pb::CoreAssignment* a = forced.mutable_models(i);
    a->set_cpus(FormatCpuList(cpus));
    a->set_cores(static_cast<int>(cpus.size()));
    a->set_reason("forced (test hook)");
  }
  // What the experiments share now, and who has a set of its own.
  std::vector<int> shared;
  for (int i = 0; i < forced.models_size(); ++i)
    if (forced.models(i).role() == "experiment" && current_.applied[static_cast<size_t>(i)].source == "allocator")
      for (int c : ParseCpuList(forced.models(i).cpus(), "cpus")) shared.push_back(c);
  std::sort(shared.begin(), shared.end());
  shared.erase(std::unique(shared.begin(), shared.end()), shared.end());
  if (!forced.shared_cpus().empty()) forced.set_shared_cpus(FormatCpuList(shared));
  for (int i = 0; i < forced.models_size(); ++i) {
    std::set<int> mine;
    for (int c : ParseCpuList(forced.models(i).cpus(), "cpus")) mine.insert(c);
    bool alone = true;
    for (int j = 0; j < forced.models_size() && alone; ++j)
      if (j != i)
        for (int c : ParseCpuList(forced.models(j).cpus(), "cpus")) alone = alone && !mine.count(c);
    forced.mutable_models(i)->set_dedicated(alone);
  }
  forced.set_mode("dynamic");
  forced.set_changed(true);
  forced.set_summary("dynamic: forced by the test hook");
  return Decide(&forced);
}

std::string CoreReplanner::Decide(const pb::CorePlan* forced) {
  const Clock::time_point now = Clock::now();
  const double seconds = std::max(std::chrono::duration<double>(now - last_time_).count(), 1e-3);
  std::vector<ModelTotals> totals = measure_();
  totals.resize(last_totals_.size());
  std::vector<WindowMeasure> window(totals.size());
  for (size_t i = 0; i < totals.size(); ++i) window[i] = MeasureWindow(last_totals_[i], totals[i], seconds);
  last_totals_ = totals;
  last_time_ = now;

  CoreAllocation cur;
  {
    std::lock_guard<std::mutex> lk(state_mu_);
    cur = current_;
  }
  pb::CorePlanRequest req = cur.request;
  req.set_mode("dynamic");
  *req.mutable_previous() = cur.plan;
  std::string details;
  for (int i = 0; i < req.models_size(); ++i) {
    pb::ModelDemand* d = req.mutable_models(i);
    const WindowMeasure& w = window[static_cast<size_t>(i)];
    d->set_requests_per_second(w.rps);
    d->set_cpu_ms_per_request(w.cpu_ms_per_request);
    d->set_p99_ms(w.p99_ms);
    if (d->role() == "baseline" && d->fixed_cpus().empty()) details += (details.empty() ? "" : "; ") + Detail(*d, w);
  }
  if (details.empty()) details = "no baseline: the experiments share what is left";

  pb::CorePlan plan;
  std::string reason;
  bool planned = true;
  if (forced) {
    plan = *forced;
  } else {
    try {
      plan = PlanCores(req);
    } catch (const Error& e) {
      planned = false;
      reason = std::string("kept: the allocator refused the measured demands (") + e.what() + "); " + details;
    }
  }
  const bool change = planned && !SameAssignment(plan, cur.plan);
  if (planned) {
    if (change) {
      std::string moves;
      for (int i = 0; i < plan.models_size(); ++i) {
        const auto &a = plan.models(i), &b = cur.plan.models(i);
        if (a.cpus() != b.cpus())
          moves += (moves.empty() ? "" : ", ") + a.name() + " " + std::to_string(b.cores()) + " -> " + std::to_string(a.cores()) +
                   " cores (cpus " + b.cpus() + " -> " + a.cpus() + ")";
      }
      reason = (forced ? "forced (test hook): " : "changed: ") + moves + (forced ? "" : "; " + details);
    } else if (!plan.changed()) {
      reason = "kept: every baseline's need is within the hysteresis (" +
               Fmt("%g", req.has_hysteresis() ? req.hysteresis() : 0.2) + ") of its cores; " + details;
    } else {
      reason = "kept: the re-plan gives the same cores; " + details;
    }
  }

  CoreAllocation next = cur;
  std::string errors;
  if (change) {
    next.plan = plan;
    // Demands are in the plan already; the kept reasons of unchanged models stay.
    for (int i = 0; i < next.plan.models_size(); ++i) {
      CoreAllocation::Applied& ap = next.applied[static_cast<size_t>(i)];
      if (ap.source == "allocator") ap.cpusets = Repeat(next.plan.models(i).cpus(), ap.sessions);
    }
    errors = apply_(next);
  } else if (planned) {
    for (int i = 0; i < next.plan.models_size() && i < plan.models_size(); ++i)
      next.plan.mutable_models(i)->set_demand_cores(plan.models(i).demand_cores());
  }
  std::lock_guard<std::mutex> lk(state_mu_);
  current_ = std::move(next);
  measured_ = window;
  ++decisions_;
  if (change) ++replans_;
  last_reason_ = reason;
  last_errors_ = errors;
  last_changed_ = change;
  last_forced_ = forced != nullptr;
  last_decision_time_ = now;
  std::string o = "{\"decision\":" + std::to_string(decisions_) + ",\"changed\":" + (change ? "true" : "false");
  o += std::string(",\"forced\":") + (forced ? "true" : "false") + ",\"reason\":" + JsonString(reason);
  o += ",\"apply_errors\":" + JsonString(errors) + ",\"plan\":" + PlanJson(current_.plan) + "}";
  return o;
}

CoreAllocation CoreReplanner::Current() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  return current_;
}

std::string CoreReplanner::StatusJson() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  std::vector<std::string> per_model;
  for (int i = 0; i < current_.plan.models_size(); ++i) {
    const WindowMeasure& w = measured_[static_cast<size_t>(i)];
    const pb::ModelDemand& d = current_.request.models(i);
    std::string o = ",\"measured\":{\"window_seconds\":" + Fmt("%.3f", w.seconds) + ",\"requests\":" + std::to_string(w.requests);
    o += ",\"requests_per_second\":" + Fmt("%.3f", w.rps) + ",\"cpu_ms_per_request\":" + Fmt("%.4f", w.cpu_ms_per_request);
    o += ",\"p99_ms\":" + Fmt("%.3f", w.p99_ms) + ",\"p99_over_last_bucket\":" + (w.p99_over_last_bucket ? "true" : "false");
    o += ",\"latency_target_ms\":" + Fmt("%g", d.latency_target_ms()) + "}";
    per_model.push_back(std::move(o));
  }
  double hyst = current_.request.has_hysteresis() ? current_.request.hysteresis() : 0.2;
  std::string extra = ",\"replan_interval_ms\":" + std::to_string(interval_ms_) + ",\"hysteresis\":" + Fmt("%g", hyst);
  extra += ",\"decisions\":" + std::to_string(decisions_) + ",\"replans\":" + std::to_string(replans_);
  extra += ",\"last_decision\":{\"reason\":" + JsonString(last_reason_) + ",\"changed\":" + (last_changed_ ? "true" : "false");
  extra += std::string(",\"forced\":") + (last_forced_ ? "true" : "false") + ",\"apply_errors\":" + JsonString(last_errors_);
  double ago = decisions_ ? std::chrono::duration<double>(Clock::now() - last_decision_time_).count() : -1;
  extra += ",\"seconds_ago\":" + Fmt("%.3f", ago) + "}";
  return current_.StatusJson(per_model, extra);
}

std::string CoreReplanner::MetricsText() const {
  std::lock_guard<std::mutex> lk(state_mu_);
  std::vector<MeasuredGauge> gauges;
  for (int i = 0; i < current_.plan.models_size(); ++i) {
    const WindowMeasure& w = measured_[static_cast<size_t>(i)];
    gauges.push_back({current_.plan.models(i).name(), w.rps, w.cpu_ms_per_request, w.p99_ms});
  }
  return current_.MetricsText() + RenderReplanMetrics(decisions_, replans_, gauges);
}

}  // namespace rs::host
