// The Manager's side of dynamic core allocation (host/core_replanner.h):
// per-model totals for the replanner's windows, and re-pinning every loaded
// version of a model when a re-plan moves it. Kept out of manager.cc.
#include <sched.h>

#include "base/status.h"
#include "host/manager.h"
#include "sched/cpu_list.h"

namespace rs::host {

namespace {

cpu_set_t ToCpuSet(const std::string& cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : ParseCpuList(cpus, "core plan cpus"))
    if (c < CPU_SETSIZE) CPU_SET(c, &set);
  return set;
}

}  // namespace

void Manager::StartReplanner(int64_t interval_ms) {
  replanner_ = std::make_unique<CoreReplanner>(
      cores_, interval_ms, [this] { return CoreTotals(); },
      [this](const CoreAllocation& next) { return ApplyCores(next); });
  replanner_->Start();
}

CoreReplanner& Manager::Replanner() {
  if (!replanner_)
    Fail(RS_ERR_FAILED_PRECONDITION, "core re-plans need core_allocation \"dynamic\" (this host's is \"" + cores_.mode + "\")");
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) Fail(RS_ERR_FAILED_PRECONDITION, "host is closed");
  }
  return *replanner_;
}

std::string Manager::ReplanCores() { return Replanner().ReplanNow(); }

std::string Manager::ForceCorePlan(const char* plan_json) {
  if (plan_json == nullptr) Fail(RS_ERR_INVALID_ARGUMENT, "plan_json is NULL");
  return Replanner().Force(plan_json);
}

std::vector<ModelTotals> Manager::CoreTotals() {
  std::vector<ModelTotals> out;
  std::lock_guard<std::mutex> lk(mu_);
  for (const auto& a : cores_.plan.models()) {
    ModelTotals t;
    auto it = slots_.find(a.name());
    if (it != slots_.end())
      for (const auto& [v, c] : it->second->counters) {
        t.requests += c->requests.load(std::memory_order_relaxed);
        t.cpu_ns += c->cpu_ns_sum.load(std::memory_order_relaxed);
        for (size_t b = 0; b < t.buckets.size(); ++b) t.buckets[b] += c->buckets[b].load(std::memory_order_relaxed);
      }
    out.push_back(t);
  }
  return out;
}

std::string Manager::Repin(const Slot& s, Model& m, Record* rec) {
  try {
    m.SetSessionCpus(ToCpuSet(s.dyn_cpus));
  } catch (const std::exception& e) {
    return "model \"" + s.name + "\": " + e.what();
  }
  if (rec) rec->layout = LayoutOf(m);
  return "";
}

std::string Manager::ApplyCores(const CoreAllocation& next) {
  std::string errors;
  auto note = [&](const std::string& e) {
    if (!e.empty()) errors += (errors.empty() ? "" : "; ") + e;
  };
  std::vector<std::shared_ptr<Servable>> held;  // released after mu_: no Servable dies under it
  std::lock_guard<std::mutex> lk(mu_);           // a load publishes under mu_ too: none misses the new set
  for (int i = 0; i < next.plan.models_size(); ++i) {
    if (next.applied[static_cast<size_t>(i)].source != "allocator") continue;  // opted out: never moved
    const std::string& cpus = next.plan.models(i).cpus();
    auto it = slots_.find(next.plan.models(i).name());
    if (it == slots_.end()) continue;
    Slot& s = *it->second;
    const std::string& now = s.dyn_cpus.empty() ? cores_.plan.models(i).cpus() : s.dyn_cpus;
    if (cpus == now) continue;
    s.dyn_cpus = cpus;
    for (const auto& [v, sv] : *s.serving) {
      auto r = s.records.find(v);
      note(Repin(s, sv->model(), r == s.records.end() ? nullptr : &r->second));
    }
    for (const auto& d : s.draining)  // retiring versions' last calls run on the new set too
      if (auto p = d.second.lock()) {
        note(Repin(s, p->model(), nullptr));
        held.push_back(std::move(p));
      }
  }
  return errors;
}

}  // namespace rs::host
