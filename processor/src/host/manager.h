// The manager: the named models of a host, their serving tables, routing,
// discovery passes, pins and status (TF Serving's AspiredVersionsManager
// role). Source (host/source.h) says what exists and is aspired, the loader
// (host/loader.h) opens one version, this class decides when to load,
// publishes, retires and reports.
//
// Contracts
// - Load before traffic: a version is opened and warmed entirely off the
//   request path, then published by replacing the model's serving table
//   (copy on write) under the manager mutex.
// - Routing: version 0 goes to the newest serving version; any other version
//   must be serving (RS_ERR_NOT_FOUND otherwise).
// - Drain before close: calls and leases hold a shared_ptr<Servable>; a
//   retired version leaves the table at once and is closed (by the Reaper)
//   when its last reference is gone. A version is never closed under a call.
//   A version the policy wants again while it is still draining is put back
//   (revived) instead of loaded twice, if its directory did not change (a
//   bundle's store directory can only be open once).
// - Availability first: a serving version leaves the table only once a
//   version the policy wants is serving. A failed load keeps the old version
//   serving, is reported in status (state "failed" with the library's
//   message) and is retried when its directory changed or after
//   retry_seconds.
// - Thread-safety: every public method may be called from any thread at
//   once, except that the destructor must not overlap other calls (leases,
//   which own their Servable, may outlive the manager). Passes (Reload,
//   SetPolicy, Pin, the discovery thread) are serialized.
#ifndef RECSTRATA_HOST_MANAGER_H_
#define RECSTRATA_HOST_MANAGER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/model_deps.h"
#include "host/config.h"
#include "host/core_allocation.h"
#include "host/core_replanner.h"
#include "host/loader.h"
#include "host/servable.h"

namespace rs::host {

class Manager {
 public:
  // Parses nothing: `spec` is validated. Plans the cores first
  // (host/core_allocation.h; its errors fail the construction, before any
  // load), then runs the first pass of every model
  // before returning (a model whose first load failed is reported in status,
  // it does not fail the open), then starts the discovery thread if
  // spec.poll_seconds > 0.
  Manager(HostSpec spec, ModelDeps deps);
  ~Manager();

  // The version a call should use. Throws RS_ERR_NOT_FOUND (unknown model or
  // version), RS_ERR_FAILED_PRECONDITION (no version serving; host closed).
  std::shared_ptr<Servable> Acquire(const char* model, int64_t version);

  // One discovery pass of `model` (NULL: every model). Unknown model:
  // RS_ERR_NOT_FOUND.
  void Reload(const char* model);
  // Replaces the model's policy (and clears a pin), then runs a pass.
  void SetPolicy(const char* model, const char* policy_json);
  // Serves only `version` (policy specific:[version]) after loading it;
  // version 0 removes the pin (back to the configured policy). A version not
  // on disk: RS_ERR_NOT_FOUND; a version that fails to load: its error, and
  // the previous policy stays in force.
  void Pin(const char* model, int64_t version);

  std::string StatusJson();
  std::string MetricsText();

  // Dynamic core allocation (host/core_replanner.h; manager_cores.cc): one
  // re-plan decision now, and the test hook that imposes cpus on models
  // (CoreReplanner::Force). Both return the decision's JSON. Not in dynamic
  // mode, or the host is closed: RS_ERR_FAILED_PRECONDITION.
  std::string ReplanCores();
  std::string ForceCorePlan(const char* plan_json);

  // Stops discovery and refuses new calls; unleased versions are closed
  // before this returns. Idempotent.
  void Shutdown();

 private:
  enum class State { kLoading, kReady, kFailed, kUnloading, kEnd };
  struct Record {
    std::string path;
    State state = State::kLoading;
    LoadError error;
    double load_ms = -1;
    uint32_t failures = 0;
    std::chrono::steady_clock::time_point last_attempt{};
    std::string fingerprint;
    std::string batching;  // "on: ..." / "off: why" of the loaded model
    std::string loader;    // "nice +N" (loader thread) or "normal priority"
    LoadedLayout layout;   // where the loaded model runs, as it reports
  };
  using Table = std::map<int64_t, std::shared_ptr<Servable>>;
  struct Slot {  // one model; fields below `name` change under mu_
    std::string name, base_path, config_json;
    VersionPolicy configured, policy;
    BatchingOptions batching;
    bool pinned = false;
    std::shared_ptr<const Table> serving = std::make_shared<Table>();
    std::map<int64_t, Record> records;
    std::vector<std::pair<int64_t, std::weak_ptr<Servable>>> draining;  // retired, maybe still in use
    std::map<int64_t, std::shared_ptr<VersionCounters>> counters;
    std::vector<int64_t> incomplete;
    std::string base_error;
    uint64_t loads = 0, load_failures = 0, revivals = 0;
    bool loaded_once = false;
    std::string dyn_cpus;  // dynamic mode: the CPUs a re-plan moved it to ("": as its config says)
  };

  Slot& Find(const char* model);  // throws NOT_FOUND / INVALID_ARGUMENT (slots_ is fixed)
  void Pass(Slot& s);             // caller holds pass_mu_
  void Load(Slot& s, int64_t v, const std::string& path);
  // Puts a retired but still open instance of v (held by a call or lease)
  // back into the table instead of loading it again, if its directory is
  // unchanged. Caller holds pass_mu_.
  bool Revive(Slot& s, int64_t v, const std::string& path);
  // Caller holds mu_; the removed references go to *dropped (released after
  // the caller unlocks, so no Servable dies under mu_).
  void Retire(Slot& s, const std::vector<int64_t>& versions, std::vector<std::shared_ptr<Servable>>* dropped);
  bool ShouldRetry(const Record& rec) const;
  // Applies the pending deltas of every serving bundle version of `s`
  // (bundle/delta.h). Caller holds pass_mu_.
  void ApplyDeltas(Slot& s);
  void RefreshDraining(Slot& s);  // caller holds mu_
  void PollLoop();
  static const char* StateName(State st);
  // Dynamic core allocation (manager_cores.cc).
  void StartReplanner(int64_t interval_ms);
  std::vector<ModelTotals> CoreTotals();                // takes mu_
  std::string ApplyCores(const CoreAllocation& next);   // takes mu_
  // Re-pins a loaded model to s.dyn_cpus and refreshes rec.layout; "" or the
  // error. Caller holds mu_.
  std::string Repin(const Slot& s, Model& m, Record* rec);
  CoreReplanner& Replanner();

  VersionLoader loader_;
  double poll_seconds_, retry_seconds_;
  int load_nice_;
  const CoreAllocation cores_;  // the plan made at open (static mode: in force for good)
  std::unique_ptr<CoreReplanner> replanner_;  // dynamic mode: the plan in force (set in the constructor)
  std::map<std::string, std::unique_ptr<Slot>, std::less<>> slots_;  // fixed after construction
  std::shared_ptr<Reaper> reaper_ = std::make_shared<Reaper>();

  std::mutex mu_;       // serving tables, records, closed_
  std::mutex pass_mu_;  // one pass at a time
  bool closed_ = false;
  uint64_t polls_ = 0;

  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread poller_;
};

}  // namespace rs::host

#endif  // RECSTRATA_HOST_MANAGER_H_
