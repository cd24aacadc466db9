// SessionGroup: `session_num` TensorFlow sessions of one SavedModel signature,
// each with its own ConfigProto (thread pools) and optional core set, and a
// policy choosing the session of each call.
//
// Threading: Select() and Run() are called by any number of threads at once;
// they take no locks (atomics only). Construction and destruction are
// single-threaded.
#ifndef RECSTRATA_CORE_SESSION_GROUP_H_
#define RECSTRATA_CORE_SESSION_GROUP_H_

#include <sched.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/signature.h"
#include "tensorflow/c/c_api.h"

namespace rs {

class SessionGroup {
 public:
  // Loads cfg.session_num sessions of the SavedModel in `dir` and parses the
  // signature cfg.signature_name from its MetaGraphDef. Throws rs::Error.
  SessionGroup(const std::string& dir, const ModelConfig& cfg);
  ~SessionGroup();
  SessionGroup(const SessionGroup&) = delete;
  SessionGroup& operator=(const SessionGroup&) = delete;

  const std::shared_ptr<const Signature>& signature() const { return signature_; }
  size_t size() const { return sessions_.size(); }

  // Picks a session by the configured policy.
  int Select();

  // Runs session `s`. inputs[i] feeds signature input i (all of them);
  // outputs[k] receives signature output out_idx[k]. On failure throws
  // rs::Error and leaves outputs NULL. run_options/run_metadata may be NULL.
  // Tracks the session's in-flight and call counters.
  void Run(int s, TF_Tensor* const* inputs, const int* out_idx, size_t n_out, TF_Tensor** outputs,
           const TF_Buffer* run_options = nullptr, TF_Buffer* run_metadata = nullptr);

  // {"policy":..,"sessions":[{"calls":..,"in_flight":..,"cpus":".."}...]}
  std::string StatsJson() const;
  // {"session_num":..,"policy":..,"inter_op_parallelism_threads":.., ...}
  std::string LayoutJson() const;

 private:
  struct Session {
    TF_Graph* graph = nullptr;
    TF_Session* session = nullptr;
    std::vector<TF_Output> inputs;   // signature input order
    std::vector<TF_Output> outputs;  // signature output order
    bool pin_caller = false;         // set the caller's affinity during Run
    bool has_cpus = false;
    cpu_set_t cpus;
    std::string cpus_text;
    std::vector<int> pinned_threads;  // pool threads pinned at creation
    alignas(64) std::atomic<int64_t> in_flight{0};
    std::atomic<int64_t> calls{0};
  };

  void LoadSession(const std::string& dir, const ModelConfig& cfg, int index);

  ModelConfig cfg_;
  std::shared_ptr<const Signature> signature_;
  std::vector<std::unique_ptr<Session>> sessions_;
  alignas(64) std::atomic<uint64_t> rr_{0};
};

// Maps a TF_Code to a public status code.
int StatusFromTF(int tf_code);

}  // namespace rs

#endif  // RECSTRATA_CORE_SESSION_GROUP_H_
