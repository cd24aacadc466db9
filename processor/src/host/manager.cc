#include "host/manager.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <system_error>
#include <thread>

#include "base/status.h"
#include "base/json_text.h"
#include "bundle/bundle_stage.h"

namespace rs::host {

namespace {

std::string JoinVersions(const std::vector<int64_t>& vs) {
  std::string s;
  for (size_t i = 0; i < vs.size(); ++i) s += (i ? ", " : "") + std::to_string(vs[i]);
  return s.empty() ? "none" : s;
}

// Runs f on a short-lived thread whose nice value is raised by `nice` (as the
// loader does for loads), so an apply yields the CPU to serving threads; on
// this thread when nice is 0 or no thread can be started.
template <typename F>
void RunNiced(int nice, F&& f) {
  if (nice > 0) {
    try {
      std::thread t([&] {
        pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, tid);
        if (errno == 0) setpriority(PRIO_PROCESS, tid, cur + nice > 19 ? 19 : cur + nice);
        f();
      });
      t.join();
      return;
    } catch (const std::system_error&) {
    }
  }
  f();
}

// The delta applier of a bundle version (NULL for a SavedModel).
bundle::DeltaApplier* DeltasOf(const Model& m) {
  auto* st = dynamic_cast<bundle::BundleInputStage*>(m.input_stage());
  return st ? st->deltas() : nullptr;
}

}  // namespace

Manager::Manager(HostSpec spec, ModelDeps deps)
    : loader_(std::move(deps), spec.load_nice),
      poll_seconds_(spec.poll_seconds),
      retry_seconds_(spec.retry_seconds),
      load_nice_(spec.load_nice),
      cores_(AllocateCores(&spec.models, spec.cores)) {
  for (auto& m : spec.models) {
    auto slot = std::make_unique<Slot>();
    slot->name = m.name;
    slot->base_path = m.base_path;
    slot->config_json = m.config_json;
    slot->configured = slot->policy = m.policy;
    slot->batching = m.batching;
    slots_.emplace(m.name, std::move(slot));
  }
  {
    std::lock_guard<std::mutex> pass(pass_mu_);
    for (auto& [name, s] : slots_) Pass(*s);
    ++polls_;
  }
  if (cores_.mode == "dynamic") StartReplanner(spec.cores.replan_interval_ms);  // after the first loads
  if (poll_seconds_ > 0) poller_ = std::thread([this] { PollLoop(); });
}

Manager::~Manager() { Shutdown(); }

const char* Manager::StateName(State st) {
  switch (st) {
    case State::kLoading: return "loading";
    case State::kReady: return "ready";
    case State::kFailed: return "failed";
    case State::kUnloading: return "unloading";
    case State::kEnd: return "end";
  }
  return "?";
}

Manager::Slot& Manager::Find(const char* model) {
  if (model == nullptr) Fail(RS_ERR_INVALID_ARGUMENT, "model name is NULL");
  auto it = slots_.find(std::string_view(model));
  if (it == slots_.end()) {
    std::string names;
    for (const auto& [n, s] : slots_) names += (names.empty() ? "" : ", ") + n;
    Fail(RS_ERR_NOT_FOUND, std::string("no model named '") + model + "' (models: " + names + ")");
  }
  return *it->second;
}

std::shared_ptr<Servable> Manager::Acquire(const char* model, int64_t version) {
  Slot& s = Find(model);
  if (version < 0) Fail(RS_ERR_INVALID_ARGUMENT, "version " + std::to_string(version) + " is negative (0: default)");
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) Fail(RS_ERR_FAILED_PRECONDITION, "host is closed");
  const Table& t = *s.serving;
  if (version == 0) {
    if (t.empty()) {
      std::string why;
      int64_t newest_failed = -1;
      for (const auto& [v, r] : s.records)
        if (r.state == State::kFailed) newest_failed = v;
      if (newest_failed > 0)
        why = "version " + std::to_string(newest_failed) + " failed to load: " + s.records[newest_failed].error.message;
      else if (!s.base_error.empty())
        why = s.base_error;
      else
        why = "no complete version directory under " + s.base_path + " matches policy " + s.policy.Describe();
      Fail(RS_ERR_FAILED_PRECONDITION, "model '" + s.name + "' has no version serving (" + why + ")");
    }
    return t.rbegin()->second;
  }
  auto it = t.find(version);
  if (it == t.end()) {
    std::vector<int64_t> vs;
    for (const auto& [v, sv] : t) vs.push_back(v);
    Fail(RS_ERR_NOT_FOUND, "version " + std::to_string(version) + " of model '" + s.name +
                               "' is not serving (serving: " + JoinVersions(vs) + ")");
  }
  return it->second;
}

bool Manager::ShouldRetry(const Record& rec) const {
  auto age = std::chrono::duration<double>(std::chrono::steady_clock::now() - rec.last_attempt).count();
  return age >= retry_seconds_ || Fingerprint(rec.path) != rec.fingerprint;
}

void Manager::Pass(Slot& s) {
  VersionPolicy policy;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    policy = s.policy;
  }
  Scan scan = ScanVersions(s.base_path, policy);
  std::vector<std::shared_ptr<Servable>> dropped;
  {
    std::lock_guard<std::mutex> lk(mu_);
    s.base_error = scan.error;
    if (!scan.error.empty()) return;  // keep serving what we have
    s.incomplete = scan.incomplete;
  }
  for (auto it = scan.aspired.rbegin(); it != scan.aspired.rend(); ++it) {  // newest first
    int64_t v = *it;
    Record rec;
    bool known;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (closed_) return;
      if (s.serving->count(v)) continue;
      auto r = s.records.find(v);
      known = r != s.records.end() && r->second.state == State::kFailed && r->second.path == scan.complete[v];
      if (known) rec = r->second;
    }
    if (known && !ShouldRetry(rec)) continue;
    if (Revive(s, v, scan.complete[v])) continue;
    Load(s, v, scan.complete[v]);
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<int64_t> unwanted;
    bool any_wanted = false;
    for (const auto& [v, sv] : *s.serving) {
      if (scan.aspired.count(v))
        any_wanted = true;
      else
        unwanted.push_back(v);
    }
    if (any_wanted && !unwanted.empty()) Retire(s, unwanted, &dropped);
    for (auto& [v, r] : s.records)
      if (r.state == State::kFailed && !scan.complete.count(v)) {
        r.state = State::kEnd;
        r.error.message = "removed from disk after failing: " + r.error.message;
      }
    RefreshDraining(s);
  }
  dropped.clear();  // outside mu_: a last reference hands its model to the reaper
  ApplyDeltas(s);
}

void Manager::ApplyDeltas(Slot& s) {
  std::shared_ptr<const Table> serving;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    serving = s.serving;
  }
  for (const auto& [v, sv] : *serving) {
    bundle::DeltaApplier* d = DeltasOf(sv->model());
    if (!d) continue;
    size_t applied = 0;
    RunNiced(load_nice_, [&] { applied = d->Poll(); });  // no lock held: readers keep running
    if (applied == 0) continue;
    // The applied rows changed the store's files: a later revive compares against this.
    std::string fp = Fingerprint(sv->path());
    std::lock_guard<std::mutex> lk(mu_);
    auto r = s.records.find(v);
    if (r != s.records.end() && r->second.path == sv->path()) r->second.fingerprint = fp;
  }
}

void Manager::Load(Slot& s, int64_t v, const std::string& path) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    Record& rec = s.records[v];
    rec.path = path;
    rec.state = State::kLoading;
    rec.error = LoadError{};
    rec.last_attempt = std::chrono::steady_clock::now();
  }
  LoadResult r = loader_.Load(path, s.config_json);
  // A new bundle version catches up with its deltas before its first call.
  // Deltas may carry a dense stage: the model swaps it (a second SessionGroup,
  // warmed, then published); the applier lives inside the model.
  if (r.model)
    if (bundle::DeltaApplier* d = DeltasOf(*r.model)) {
      Model* m = r.model.get();
      d->set_dense_preparer([m](const std::string& dir) { return m->PrepareDense(dir); });
      RunNiced(load_nice_, [&] { d->Poll(); });
    }
  std::string fp = Fingerprint(path);
  LoadedLayout layout;
  if (r.model) layout = LayoutOf(*r.model);
  std::unique_lock<std::mutex> lk(mu_);
  Record& rec = s.records[v];
  rec.fingerprint = fp;
  rec.layout = std::move(layout);
  if (r.model && !s.dyn_cpus.empty()) Repin(s, *r.model, &rec);  // a re-plan ran while it loaded
  rec.loader = r.lowered ? "nice +" + std::to_string(load_nice_) : "normal priority";
  if (!r.model) {
    rec.state = State::kFailed;
    rec.error = r.status;
    ++rec.failures;
    ++s.load_failures;
    return;
  }
  if (closed_) {  // Shutdown ran while we loaded: do not publish
    rec.state = State::kEnd;
    lk.unlock();
    reaper_->Close(std::move(r.model));
    return;
  }
  auto& counters = s.counters[v];
  if (!counters) counters = std::make_shared<VersionCounters>();
  BatchingOptions batching = s.batching;
  if (batching.max_batch_size > 1) {
    std::string why = Batcher::Eligible(r.model->signature());
    rec.batching = why.empty() ? "on: max_batch_size " + std::to_string(batching.max_batch_size) +
                                     ", max_queue_delay_us " + std::to_string(batching.max_queue_delay_us)
                               : "off: " + why;
    if (!why.empty()) batching.max_batch_size = 0;
  } else {
    rec.batching = "off";
  }
  counters->batching = counters->batching || batching.max_batch_size > 1;
  auto sv = std::make_shared<Servable>(s.name, v, path, std::move(r.model), reaper_, counters, batching);
  auto t = std::make_shared<Table>(*s.serving);
  (*t)[v] = std::move(sv);
  s.serving = std::move(t);  // the publish
  rec.state = State::kReady;
  rec.load_ms = r.load_ms;
  ++s.loads;
  s.loaded_once = true;
}

bool Manager::Revive(Slot& s, int64_t v, const std::string& path) {
  std::shared_ptr<Servable> alive;
  std::string fp;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (const auto& d : s.draining)
      if (d.first == v)
        if (auto p = d.second.lock(); p && p->path() == path) alive = std::move(p);
    if (!alive) return false;
    fp = s.records[v].fingerprint;
  }
  if (Fingerprint(path) != fp) return false;  // the directory changed since: load it afresh
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) return false;
  auto t = std::make_shared<Table>(*s.serving);
  (*t)[v] = alive;
  s.serving = std::move(t);
  s.draining.erase(std::remove_if(s.draining.begin(), s.draining.end(),
                                  [&](const auto& d) { return d.second.lock() == alive; }),
                   s.draining.end());
  s.records[v].state = State::kReady;
  ++s.revivals;
  return true;
}

void Manager::Retire(Slot& s, const std::vector<int64_t>& versions, std::vector<std::shared_ptr<Servable>>* dropped) {
  auto t = std::make_shared<Table>(*s.serving);
  for (int64_t v : versions) {
    auto it = t->find(v);
    if (it == t->end()) continue;
    s.draining.emplace_back(v, it->second);
    dropped->push_back(std::move(it->second));
    t->erase(it);
    s.records[v].state = State::kUnloading;
  }
  s.serving = std::move(t);
}

void Manager::RefreshDraining(Slot& s) {
  s.draining.erase(std::remove_if(s.draining.begin(), s.draining.end(),
                                  [](const auto& d) { return d.second.expired(); }),
                   s.draining.end());
  for (auto& [v, r] : s.records) {
    if (r.state != State::kUnloading) continue;
    bool live = std::any_of(s.draining.begin(), s.draining.end(), [v = v](const auto& d) { return d.first == v; });
    if (!live) r.state = State::kEnd;
  }
}

void Manager::Reload(const char* model) {
  Slot* one = model ? &Find(model) : nullptr;
  std::lock_guard<std::mutex> pass(pass_mu_);
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) Fail(RS_ERR_FAILED_PRECONDITION, "host is closed");
  }
  if (one) {
    Pass(*one);
  } else {
    for (auto& [name, s] : slots_) Pass(*s);
  }
  std::lock_guard<std::mutex> lk(mu_);
  ++polls_;
}

void Manager::SetPolicy(const char* model, const char* policy_json) {
  Slot& s = Find(model);
  VersionPolicy p = ParsePolicyJson(policy_json, s.name);
  std::lock_guard<std::mutex> pass(pass_mu_);
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) Fail(RS_ERR_FAILED_PRECONDITION, "host is closed");
    s.configured = s.policy = p;
    s.pinned = false;
  }
  Pass(s);
}

void Manager::Pin(const char* model, int64_t version) {
  Slot& s = Find(model);
  if (version < 0) Fail(RS_ERR_INVALID_ARGUMENT, "pin: version " + std::to_string(version) + " is negative");
  std::lock_guard<std::mutex> pass(pass_mu_);
  VersionPolicy old;
  bool old_pinned;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) Fail(RS_ERR_FAILED_PRECONDITION, "host is closed");
    old = s.policy;
    old_pinned = s.pinned;
    if (version == 0) {
      s.policy = s.configured;
      s.pinned = false;
    }
  }
  if (version == 0) {
    Pass(s);
    return;
  }
  Scan scan = ScanVersions(s.base_path, old);
  if (!scan.error.empty()) Fail(RS_ERR_NOT_FOUND, "pin: " + scan.error);
  if (!scan.complete.count(version)) {
    std::vector<int64_t> vs;
    for (const auto& [v, d] : scan.complete) vs.push_back(v);
    Fail(RS_ERR_NOT_FOUND, "pin: version " + std::to_string(version) + " of model '" + s.name +
                               "' is not a complete version directory under " + s.base_path +
                               " (complete: " + JoinVersions(vs) + ")");
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    s.policy = VersionPolicy{VersionPolicy::kSpecific, 1, {version}};
    s.pinned = true;
  }
  Pass(s);
  std::lock_guard<std::mutex> lk(mu_);
  if (!s.serving->count(version)) {
    s.policy = old;
    s.pinned = old_pinned;
    const Record& r = s.records[version];
    rs_status code = r.error.ok() ? RS_ERR_FAILED_PRECONDITION : r.error.code;
    Fail(code, "pin: version " + std::to_string(version) + " of model '" + s.name + "' could not be served (" +
                   (r.error.ok() ? std::string("host is closing") : r.error.message) +
                   "); the previous policy " + old.Describe() + " stays in force");
  }
}

void Manager::PollLoop() {
  auto interval = std::chrono::duration<double>(poll_seconds_);
  while (true) {
    {
      std::unique_lock<std::mutex> lk(stop_mu_);
      if (stop_cv_.wait_for(lk, interval, [this] { return stop_; })) return;
    }
    try {
      std::lock_guard<std::mutex> pass(pass_mu_);
      for (auto& [name, s] : slots_) Pass(*s);
      std::lock_guard<std::mutex> lk(mu_);
      ++polls_;
    } catch (...) {  // never let the thread die; errors are in status
    }
  }
}

void Manager::Shutdown() {
  {
    std::lock_guard<std::mutex> lk(stop_mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (poller_.joinable() && poller_.get_id() != std::this_thread::get_id()) poller_.join();
  if (replanner_) replanner_->Stop();
  std::lock_guard<std::mutex> pass(pass_mu_);  // no load in progress from here on
  std::vector<std::shared_ptr<Servable>> dropped;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return;
    closed_ = true;
    for (auto& [name, s] : slots_) {
      std::vector<int64_t> all;
      for (const auto& [v, sv] : *s->serving) all.push_back(v);
      Retire(*s, all, &dropped);
    }
  }
  dropped.clear();
  reaper_->WaitIdle();  // versions nobody leases are closed now
}

std::string Manager::StatusJson() {
  auto num = [](std::string& o, const char* key, auto v) {
    o += ",\"";
    o += key;
    o += "\":" + std::to_string(v);
  };
  auto str = [](std::string& o, const char* key, const std::string& v) {
    o += ",\"";
    o += key;
    o += "\":";
    AppendJsonString(o, v);
  };
  auto list = [](std::string& o, const char* key, const std::vector<int64_t>& vs) {
    o += ",\"";
    o += key;
    o += "\":[";
    for (size_t i = 0; i < vs.size(); ++i) o += (i ? "," : "") + std::to_string(vs[i]);
    o += "]";
  };
  std::lock_guard<std::mutex> lk(mu_);
  std::string o = "{\"polls\":" + std::to_string(polls_);
  char interval[32];
  std::snprintf(interval, sizeof interval, "%.3f", poll_seconds_);
  o += ",\"poll_interval_seconds\":" + std::string(interval) + ",\"models\":[";
  bool first_model = true;
  for (auto& [name, sp] : slots_) {
    Slot& s = *sp;
    RefreshDraining(s);
    o += first_model ? "{\"name\":" : ",{\"name\":";
    first_model = false;
    AppendJsonString(o, s.name);
    str(o, "base_path", s.base_path);
    str(o, "policy", s.policy.Describe());
    o += std::string(",\"pinned\":") + (s.pinned ? "true" : "false");
    std::vector<int64_t> serving;
    for (const auto& [v, sv] : *s.serving) serving.push_back(v);
    list(o, "serving", serving);
    num(o, "default_version", serving.empty() ? int64_t{0} : serving.back());
    o += std::string(",\"ready\":") + (serving.empty() ? "false" : "true");
    list(o, "incomplete_versions", s.incomplete);
    str(o, "base_error", s.base_error);
    o += ",\"versions\":[";
    bool first = true;
    for (auto it = s.records.rbegin(); it != s.records.rend(); ++it) {
      const auto& [v, r] = *it;
      o += first ? "{\"version\":" : ",{\"version\":";
      first = false;
      o += std::to_string(v);
      str(o, "state", StateName(r.state));
      str(o, "path", r.path);
      str(o, "error", r.error.message);
      char ms[32];
      std::snprintf(ms, sizeof ms, "%.1f", r.load_ms < 0 ? 0.0 : r.load_ms);
      o += ",\"load_ms\":" + std::string(ms);
      num(o, "load_failures", r.failures);
      str(o, "batching", r.batching);
      str(o, "loader", r.loader);
      o += ",\"session_cpus\":[";
      for (size_t i = 0; i < r.layout.session_cpus.size(); ++i) {
        if (i) o += ",";
        AppendJsonString(o, r.layout.session_cpus[i]);
      }
      o += "]";
      num(o, "split_parts", r.layout.split_parts);
      int64_t refs = 0;
      auto sv = s.serving->find(v);
      if (sv != s.serving->end()) refs += sv->second.use_count() - 1;  // minus the table's own
      for (const auto& d : s.draining)
        if (d.first == v)
          if (auto p = d.second.lock()) refs += p.use_count() - 1;  // minus ours
      num(o, "in_flight", refs);
      auto c = s.counters.find(v);
      num(o, "requests", c == s.counters.end() ? uint64_t{0} : c->second->requests.load(std::memory_order_relaxed));
      num(o, "errors", c == s.counters.end() ? uint64_t{0} : c->second->errors.load(std::memory_order_relaxed));
      if (sv != s.serving->end())
        if (bundle::DeltaApplier* d = DeltasOf(sv->second->model())) o += ",\"deltas\":" + d->StatusJson();
      o += "}";
    }
    o += "]}";
  }
  o += "],\"cores\":" + (replanner_ ? replanner_->StatusJson() : cores_.StatusJson()) + "}";
  return o;
}

std::string Manager::MetricsText() {
  std::vector<ModelMetrics> models;
  std::vector<std::pair<VersionMetrics*, std::shared_ptr<Servable>>> live;
  {
    std::lock_guard<std::mutex> lk(mu_);
    models.reserve(slots_.size());
    for (auto& [name, sp] : slots_) {
      Slot& s = *sp;
      ModelMetrics mm;
      mm.name = s.name;
      mm.ready = !s.serving->empty();
      mm.loads = s.loads;
      mm.load_failures = s.load_failures;
      mm.revivals = s.revivals;
      for (const auto& [v, c] : s.counters) {
        VersionMetrics vm;
        vm.version = v;
        vm.counters = c.get();
        auto r = s.records.find(v);
        if (r != s.records.end() && r->second.load_ms >= 0) vm.load_seconds = r->second.load_ms / 1e3;
        vm.ready = s.serving->count(v) > 0;
        if (vm.ready)
          if (bundle::DeltaApplier* d = DeltasOf(s.serving->at(v)->model())) {
            bundle::DeltaStatus ds = d->Status();
            vm.has_deltas = true;
            vm.delta_sequence = ds.applied_sequence;
            vm.deltas_applied = ds.applied;
            vm.deltas_followed = ds.followed;
            vm.delta_rows = ds.rows_applied;
            vm.deltas_refused = ds.refused;
            vm.delta_failures = ds.failed;
            vm.deltas_pending = ds.pending;
            vm.delta_apply_seconds = ds.last_apply_ms / 1e3;
          }
        mm.versions.push_back(vm);
      }
      models.push_back(std::move(mm));
    }
    for (auto& mm : models) {
      Slot& s = *slots_.find(mm.name)->second;
      for (auto& vm : mm.versions)
        if (vm.ready) live.emplace_back(&vm, s.serving->at(vm.version));
    }
  }
  for (auto& [vm, sv] : live) {  // outside mu_: stats walk the model
    try {
      vm->stats_json = sv->model().StatsJson();
    } catch (...) {
    }
  }
  live.clear();
  return RenderMetrics(models) + (replanner_ ? replanner_->MetricsText() : cores_.MetricsText());
}

}  // namespace rs::host
