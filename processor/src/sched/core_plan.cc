#include "sched/core_plan.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "base/status.h"
#include "sched/cpu_list.h"

namespace rs {

namespace {

namespace pb = ::recstrata::config;

constexpr double kDefaultUtilization = 0.7;
constexpr double kDefaultHysteresis = 0.2;
// A baseline over its latency target in dynamic mode asks for this much more
// than its measured load (and at least one more core than it has).
constexpr double kOverTargetBoost = 1.25;

struct Entry {
  const pb::ModelDemand* demand;
  bool baseline;
  int floor;
  double want_cores;  // load-derived demand, before clamping
  int cores = 0;
  std::vector<int> fixed;
};

// Splits `extra` cores among entries in proportion to weights, by largest
// remainder, never giving entry i more than caps[i] (caps < 0: no cap).
std::vector<int> Apportion(int extra, const std::vector<double>& weights, const std::vector<int>& caps) {
  std::vector<int> out(weights.size(), 0);
  double total = 0;
  for (double w : weights) total += w;
  if (extra <= 0 || weights.empty()) return out;
  std::vector<std::pair<double, size_t>> rest;
  int given = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    double share = total > 0 ? extra * weights[i] / total : double(extra) / weights.size();
    int whole = static_cast<int>(std::floor(share));
    if (caps[i] >= 0) whole = std::min(whole, caps[i]);
    out[i] = whole;
    given += whole;
    rest.push_back({share - whole, i});
  }
  std::sort(rest.begin(), rest.end(), [](auto& a, auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  // Hand out the remainder one core at a time, largest fraction first, in
  // rounds until nothing is left or every entry is at its cap.
  while (given < extra) {
    bool progressed = false;
    for (auto& [frac, i] : rest) {
      if (given >= extra) break;
      if (caps[i] >= 0 && out[i] >= caps[i]) continue;
      ++out[i];
      ++given;
      progressed = true;
    }
    if (!progressed) break;
  }
  return out;
}

void Validate(const pb::CorePlanRequest& req) {
  std::set<std::string> names;
  for (const auto& m : req.models()) {
    if (m.name().empty()) Fail(RS_ERR_INVALID_ARGUMENT, "core plan: a model has no name");
    if (!names.insert(m.name()).second) Fail(RS_ERR_INVALID_ARGUMENT, "core plan: model \"" + m.name() + "\" is listed twice");
    if (!m.role().empty() && m.role() != "baseline" && m.role() != "experiment")
      Fail(RS_ERR_INVALID_ARGUMENT, "core plan: model \"" + m.name() + "\": role must be \"baseline\" or \"experiment\", not \"" + m.role() + "\"");
    if (!(m.requests_per_second() >= 0) || !(m.cpu_ms_per_request() >= 0) || !(m.p99_ms() >= 0) || !(m.latency_target_ms() >= 0))
      Fail(RS_ERR_INVALID_ARGUMENT, "core plan: model \"" + m.name() + "\": loads and latencies must be finite and >= 0");
    if (m.has_min_cores() && m.min_cores() < 1)
      Fail(RS_ERR_INVALID_ARGUMENT, "core plan: model \"" + m.name() + "\": min_cores must be >= 1");
  }
  if (req.target_utilization() < 0 || req.target_utilization() > 1)
    Fail(RS_ERR_INVALID_ARGUMENT, "core plan: target_utilization must be in (0, 1]");
  if (req.has_min_shared_cores() && req.min_shared_cores() < 0)
    Fail(RS_ERR_INVALID_ARGUMENT, "core plan: min_shared_cores must be >= 0");
  if (req.has_hysteresis() && !(req.hysteresis() >= 0))
    Fail(RS_ERR_INVALID_ARGUMENT, "core plan: hysteresis must be >= 0");
}

// The previous plan's core count per model, when it can be kept at all:
// same mode, same models with the same roles.
std::map<std::string, int> ComparablePrevious(const pb::CorePlanRequest& req) {
  const pb::CorePlan& p = req.previous();
  if (p.models_size() != req.models_size()) return {};
  std::map<std::string, const pb::CoreAssignment*> by_name;
  for (const auto& a : p.models()) by_name[a.name()] = &a;
  std::map<std::string, int> prev;
  for (const auto& m : req.models()) {
    auto it = by_name.find(m.name());
    if (it == by_name.end()) return {};
    const std::string role = m.role().empty() ? "experiment" : m.role();
    if (role != it->second->role()) return {};
    prev[m.name()] = it->second->cores();
  }
  return prev;
}

}  // namespace

pb::CorePlan PlanCores(const pb::CorePlanRequest& req) {
  Validate(req);
  const std::string mode = req.mode().empty() ? "static" : req.mode();
  if (mode != "shared" && mode != "static" && mode != "dynamic")
    Fail(RS_ERR_INVALID_ARGUMENT, "core plan: mode must be \"shared\", \"static\" or \"dynamic\", not \"" + mode + "\"");
  std::vector<int> pool = req.cpus().empty() ? AllowedCpus() : ParseCpuList(req.cpus(), "core plan: cpus");
  if (pool.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "core plan: no CPUs to divide");
  const double util = req.target_utilization() > 0 ? req.target_utilization() : kDefaultUtilization;
  const double hysteresis = req.has_hysteresis() ? req.hysteresis() : kDefaultHysteresis;
  const std::map<std::string, int> previous = mode == "dynamic" ? ComparablePrevious(req) : std::map<std::string, int>{};

  // Opted-out models keep their CPUs; the rest of the pool is divided.
  std::set<int> pool_set(pool.begin(), pool.end()), fixed_union;
  std::vector<Entry> entries;
  for (const auto& m : req.models()) {
    Entry e{&m, m.role() == "baseline", m.has_min_cores() ? m.min_cores() : 1, 0, 0, {}};
    if (!m.fixed_cpus().empty()) {
      e.fixed = ParseCpuList(m.fixed_cpus(), ("core plan: model \"" + m.name() + "\" fixed_cpus").c_str());
      for (int c : e.fixed) {
        if (!pool_set.count(c))
          Fail(RS_ERR_INVALID_ARGUMENT, "core plan: model \"" + m.name() + "\" fixes cpu " + std::to_string(c) + ", which is not among the CPUs to divide");
        fixed_union.insert(c);
      }
    }
    e.want_cores = m.requests_per_second() * m.cpu_ms_per_request() / 1000.0 / util;
    if (mode == "dynamic" && e.baseline && m.latency_target_ms() > 0 && m.p99_ms() > m.latency_target_ms()) {
      auto it = previous.find(m.name());
      double have = it != previous.end() ? it->second : 0;
      e.want_cores = std::max(e.want_cores * kOverTargetBoost, have + 1);
    }
    entries.push_back(std::move(e));
  }
  std::vector<int> free;
  for (int c : pool)
    if (!fixed_union.count(c)) free.push_back(c);

  std::vector<Entry*> baselines, experiments, flexible;
  for (auto& e : entries) {
    if (!e.fixed.empty()) continue;
    flexible.push_back(&e);
    (e.baseline && mode != "shared" ? baselines : experiments).push_back(&e);
  }
  if (!flexible.empty() && free.empty())
    Fail(RS_ERR_FAILED_PRECONDITION, "core plan: the fixed cpusets take every CPU; nothing is left for the other models");

  const int n_free = static_cast<int>(free.size());
  int reserve = 0;
  if (!experiments.empty()) {
    reserve = req.has_min_shared_cores() ? req.min_shared_cores() : 1;
    for (Entry* e : experiments) reserve = std::max(reserve, e->floor);
    reserve = std::max(reserve, 1);
  }
  const int budget = n_free - reserve;
  int floors = 0, wants = 0;
  std::vector<int> want(baselines.size());
  for (size_t i = 0; i < baselines.size(); ++i) {
    Entry* e = baselines[i];
    floors += e->floor;
    want[i] = std::max(e->floor, static_cast<int>(std::ceil(e->want_cores - 1e-9)));
    wants += want[i];
  }
  if (floors > budget)
    Fail(RS_ERR_FAILED_PRECONDITION, "core plan: the baselines' floors (" + std::to_string(floors) + " cores) and the experiments' share (" +
                                         std::to_string(reserve) + ") exceed the " + std::to_string(n_free) + " CPUs to divide");
  if (wants <= budget) {
    for (size_t i = 0; i < baselines.size(); ++i) baselines[i]->cores = want[i];
    if (experiments.empty() && !baselines.empty()) {
      // No one to share with: spread the idle cores over the baselines.
      std::vector<double> w;
      std::vector<int> caps(baselines.size(), -1);
      for (Entry* e : baselines) w.push_back(std::max(e->want_cores, 1e-3));
      auto extra = Apportion(budget - wants, w, caps);
      for (size_t i = 0; i < baselines.size(); ++i) baselines[i]->cores += extra[i];
    }
  } else {
    // Oversubscribed: floors first, the rest in proportion to what each asks beyond it.
    std::vector<double> w;
    std::vector<int> caps;
    for (size_t i = 0; i < baselines.size(); ++i) {
      baselines[i]->cores = baselines[i]->floor;
      w.push_back(want[i] - baselines[i]->floor);
      caps.push_back(want[i] - baselines[i]->floor);
    }
    auto extra = Apportion(budget - floors, w, caps);
    for (size_t i = 0; i < baselines.size(); ++i) baselines[i]->cores += extra[i];
  }

  // Dynamic: keep the plan in force when no baseline moved beyond the
  // hysteresis (and the old plan still fits and respects every floor).
  if (mode == "dynamic" && !previous.empty()) {
    bool keep = true;
    int old_sum = 0;
    for (Entry* e : baselines) {
      int old = previous.at(e->demand->name());
      old_sum += old;
      if (old < e->floor || std::abs(e->cores - old) > hysteresis * old) keep = false;
    }
    if (keep && old_sum <= budget && req.previous().mode() == "dynamic") {
      pb::CorePlan kept = req.previous();
      kept.set_changed(false);
      for (auto& a : *kept.mutable_models())
        for (const Entry& e : entries)
          if (e.demand->name() == a.name()) a.set_demand_cores(e.want_cores);
      return kept;
    }
  }

  // Lay the dedicated sets out in request order, the shared pool after them.
  pb::CorePlan plan;
  plan.set_mode(mode);
  plan.set_changed(true);
  size_t next = 0;
  int dedicated_cores = 0;
  for (Entry* e : baselines) {
    e->fixed.assign(free.begin() + next, free.begin() + next + e->cores);
    next += e->cores;
    dedicated_cores += e->cores;
  }
  std::vector<int> shared(free.begin() + next, free.end());
  if (!experiments.empty()) plan.set_shared_cpus(FormatCpuList(shared));
  for (Entry& e : entries) {
    pb::CoreAssignment* a = plan.add_models();
    a->set_name(e.demand->name());
    a->set_role(e.demand->role().empty() ? "experiment" : e.demand->role());
    a->set_demand_cores(e.want_cores);
    bool is_fixed = !e.demand->fixed_cpus().empty();
    bool in_shared = !is_fixed && std::find(experiments.begin(), experiments.end(), &e) != experiments.end();
    const std::vector<int>& cpus = in_shared ? shared : e.fixed;
    a->set_cpus(FormatCpuList(cpus));
    a->set_cores(static_cast<int>(cpus.size()));
    a->set_dedicated(in_shared ? experiments.size() == 1 : true);
    if (is_fixed) {
      a->set_reason("fixed cpuset (opted out of the allocator)");
      a->set_dedicated(false);
    } else if (in_shared) {
      a->set_reason(mode == "shared" ? "shared: every model may run on every core" : "experiment: shares the cores the baselines leave");
    } else {
      a->set_reason(e.cores == e.floor && e.want_cores <= e.floor ? "baseline: floor" : "baseline: sized to its load");
    }
  }
  plan.set_summary(mode + ": " + std::to_string(baselines.size()) + " baseline(s) on " + std::to_string(dedicated_cores) +
                   " dedicated cores, " + std::to_string(experiments.size()) + " model(s) sharing " + std::to_string(shared.size()) +
                   (fixed_union.empty() ? "" : ", " + std::to_string(fixed_union.size()) + " CPUs fixed by opted-out models"));
  return plan;
}

}  // namespace rs
