// SessionGroup: `session_num` logical sessions over ONE loaded SavedModel
// (one graph, one set of variables, however many sessions), each with its own
// optional core set and, with use_per_session_threads and an inter-op pool,
// its own inter-op thread pool (ConfigProto.session_inter_op_thread_pool,
// chosen per run by RunOptions.inter_op_thread_pool), and a policy choosing
// the session of each call. Weights are held once, as DeepRec's SessionGroup
// does; a TF session is safe to run from many threads at once.
//
// Threading: Select(), Run() and SetCpus() are called by any number of
// threads at once; Select and Run take no locks (atomics only; the core set a
// run pins to is read once per run through std::atomic_load). Construction
// and destruction are single-threaded.
#ifndef RECSTRATA_CORE_SESSION_GROUP_H_
#define RECSTRATA_CORE_SESSION_GROUP_H_

#include <sched.h>

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/signature.h"
#include "tensorflow/c/c_api.h"

namespace rs {

class SessionGroup {
 public:
  // Loads the SavedModel in `dir` once, sets up cfg.session_num logical
  // sessions over it and parses the signature cfg.signature_name from its
  // MetaGraphDef. Throws rs::Error.
  //
  // With cfg.graph_rewrite, saved_model.pb is first rewritten by
  // core/graph_rewrite.h; when a rule applied, the rewritten MetaGraphDefs are
  // written to a private temporary directory (mkdtemp under $TMPDIR or /tmp)
  // whose variables/, assets/ and assets.extra/ are symlinks to `dir`'s, and
  // TensorFlow's own SavedModel loader (restore, init op, assets) loads that;
  // the directory is removed once the session exists. If the rewritten model
  // cannot be written or loaded, `dir` is loaded unchanged and the reason is
  // kept in rewrite_json()'s note: the pass never makes a loadable model fail.
  SessionGroup(const std::string& dir, const ModelConfig& cfg);
  ~SessionGroup();
  SessionGroup(const SessionGroup&) = delete;
  SessionGroup& operator=(const SessionGroup&) = delete;

  const std::shared_ptr<const Signature>& signature() const { return signature_; }
  size_t size() const { return sessions_.size(); }
  // {"applied":..,"nodes_before":..,..} (GraphRewriteReport::ToJson), or
  // {"applied":false,"note":"off"} when the config turned the pass off.
  const std::string& rewrite_json() const { return rewrite_json_; }

  // Picks a session by the configured policy.
  int Select();

  // Runs session `s`. inputs[i] feeds signature input i (all of them);
  // outputs[k] receives signature output out_idx[k]. On failure throws
  // rs::Error and leaves outputs NULL. run_options/run_metadata may be NULL.
  // Tracks the session's in-flight and call counters.
  void Run(int s, TF_Tensor* const* inputs, const int* out_idx, size_t n_out, TF_Tensor** outputs,
           const TF_Buffer* run_options = nullptr, TF_Buffer* run_metadata = nullptr);

  // Re-pins inline sessions at run time (the host's dynamic core allocation):
  // session i's runs pin the caller thread to per_session[i] (one set: every
  // session) from the next run on; a run in flight finishes on the set it
  // started with. Only sessions that pin the caller during runs (a cpuset and
  // inline ops, inter_op_parallelism_threads < 0) can be re-pinned: pooled
  // sessions' threads are not moved, RS_ERR_FAILED_PRECONDITION. A set with
  // no CPU this process may run on, or a count that is neither 1 nor
  // size(): RS_ERR_INVALID_ARGUMENT. Nothing changes when it throws.
  void SetCpus(const std::vector<cpu_set_t>& per_session);

  // {"policy":..,"sessions":[{"calls":..,"in_flight":..,"cpus":".."}...]}
  std::string StatsJson() const;
  // {"session_num":..,"policy":..,"inter_op_parallelism_threads":.., ...}
  std::string LayoutJson() const;

 private:
  // The one loaded graph and TF session every logical session runs.
  struct Loaded {
    TF_Graph* graph = nullptr;
    TF_Session* session = nullptr;
    std::vector<TF_Output> inputs;   // signature input order
    std::vector<TF_Output> outputs;  // signature output order
    Loaded() = default;
    Loaded(const Loaded&) = delete;
    Loaded& operator=(const Loaded&) = delete;
    ~Loaded();
  };
  struct CpuSet {  // immutable once published
    cpu_set_t set;
    std::string text;
  };
  struct Session {
    int pool = -1;                   // inter-op pool index, -1: the session's default
    std::string run_options;         // serialized RunOptions selecting `pool`
    bool pin_caller = false;         // set the caller's affinity during Run
    bool has_cpus = false;
    std::shared_ptr<const CpuSet> cpus;  // std::atomic_load/store (SetCpus swaps it)
    std::vector<int> pinned_threads;  // pool threads pinned at creation
    alignas(64) std::atomic<int64_t> in_flight{0};
    std::atomic<int64_t> calls{0};
  };

  void Load(const std::string& dir, const ModelConfig& cfg);
  // TF_LoadSessionFromSavedModel of `dir` into loaded_; false (and `error`) on failure.
  bool LoadFrom(const std::string& dir, const ModelConfig& cfg, TF_Buffer* meta, std::string* error);
  void PinPoolThreads(const std::set<int>& threads_before);

  ModelConfig cfg_;
  Loaded loaded_;
  bool session_pools_ = false;  // one inter-op pool per logical session
  std::shared_ptr<const Signature> signature_;
  std::string rewrite_json_;
  int last_load_code_ = 0;  // TF_Code of LoadFrom's last failure
  std::vector<std::unique_ptr<Session>> sessions_;
  alignas(64) std::atomic<uint64_t> rr_{0};
};

// Maps a TF_Code to a public status code.
int StatusFromTF(int tf_code);

}  // namespace rs

#endif  // RECSTRATA_CORE_SESSION_GROUP_H_
