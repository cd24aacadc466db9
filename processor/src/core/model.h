// Model: what rs_model wraps. A public signature served by a SessionGroup,
// optionally behind a bundle InputStage (see core/input_stage.h).
//
// Threading: Run/Describe/Stats/Trace may be called concurrently; the model
// is immutable after Open except for atomic counters and the dense stage a
// bundle delta may replace (PrepareDense): a call runs wholly on the stage it
// started with.
//
// Batch splitting (bundles): a call of at least cfg.split_min_batch rows that
// finds no other call of this model in flight is cut into row ranges that
// run at once, each through the input stage and a session (the caller's
// thread plus a SplitPool), and the outputs are joined in row order. The
// result is the same as unsplit (every row is computed independently); one
// large request then uses cores that would otherwise idle (TensorFlow's
// oneDNN kernels keep matmuls of these sizes on one thread).
#ifndef RECSTRATA_CORE_MODEL_H_
#define RECSTRATA_CORE_MODEL_H_

#include <atomic>
#include <chrono>
#include <climits>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/input_stage.h"
#include "core/model_deps.h"
#include "core/result.h"
#include "core/session_group.h"
#include "core/split_pool.h"
#include "core/signature.h"
#include "core/stats.h"

namespace rs {

class Model {
 public:
  // Opens a SavedModel or bundle directory (model_dir may be NULL when the
  // config names savedmodel_dir), then warms every session up (core/warmup.h).
  // `deps` supplies what lives above the core (bundles, the warmup file's wire
  // format); api/composition.h has the library's set.
  static std::unique_ptr<Model> Open(const char* model_dir, const char* config_json,
                                     const ModelDeps& deps);
  ~Model();

  // The signature callers use: public inputs (raw features for a bundle),
  // dense outputs.
  const Signature& signature() const { return *public_sig_; }
  const std::string& model_path() const { return model_path_; }

  // Runs once. out_idx: n_out signature output indices (n_out == 0: all).
  // session < 0: chosen by policy. Throws rs::Error.
  std::unique_ptr<rs_result> Run(const rs_tensor* inputs, size_t n, const int* out_idx, size_t n_out,
                                 int session = -1, const TF_Buffer* run_options = nullptr,
                                 TF_Buffer* run_metadata = nullptr);

  std::string DescribeJson() const;
  std::string StatsJson() const;
  // One warmup request with FULL_TRACE: executed op types per partition graph.
  std::string TraceJson();

  // The bundle's input stage (NULL for a plain SavedModel); the host reaches
  // a bundle's deltas through it. Valid for the life of the model.
  InputStage* input_stage() const { return stage_.get(); }

  // Bundles: loads the dense SavedModel in `dense_dir` as a new SessionGroup
  // (same config and cores), checks that its signature equals the served
  // dense signature and warms it up, all off the request path; returns the
  // step that makes it the served stage (it cannot fail; calls already
  // running finish on the old stage, which is freed after them). Nothing
  // changes if this throws. One PrepareDense/publish at a time (the caller
  // serializes them). Throws rs::Error.
  std::function<void()> PrepareDense(const std::string& dense_dir);

  // Re-pins the sessions of the served dense stage, and of any stage a later
  // PrepareDense publishes, to `cpus` (every session the same set) from
  // their next run on (SessionGroup::SetCpus; its errors). Runs in flight
  // finish on their old set. Bundle split workers (SplitPool) are not
  // pinned. Thread-safe.
  void SetSessionCpus(const cpu_set_t& cpus);

  // Counts a failure of a call that never reached Run (e.g. a bad request).
  void CountError() { stats_.errors.fetch_add(1, std::memory_order_relaxed); }

 private:
  Model() = default;
  // Run on one dense stage; `count`: record the call in stats_ (warmups don't).
  std::unique_ptr<rs_result> RunOn(SessionGroup& g, bool count, const rs_tensor* inputs, size_t n,
                                   const int* out_idx, size_t n_out, int session,
                                   const TF_Buffer* run_options, TF_Buffer* run_metadata);
  // Bundle path: input stage + session `s` of `g` on one (part of a) request.
  void RunStaged(SessionGroup& g, const rs_tensor* staged, size_t n, const int* out_idx, size_t n_out,
                 int s, TF_Tensor** outs, const TF_Buffer* run_options, TF_Buffer* run_metadata);
  // Splits a bundle request of `batch` rows into parts run concurrently;
  // outs[k] receives the joined output k.
  void RunSplit(SessionGroup& g, const std::vector<rs_tensor>& staged, int64_t batch, const int* out_idx,
                size_t n_out, TF_Tensor** outs);
  // The served dense stage (replaced whole by a dense delta).
  std::shared_ptr<SessionGroup> Group() const { return std::atomic_load(&group_); }

  ModelConfig cfg_;
  std::mutex cpus_mu_;                     // SetSessionCpus against a dense publish
  std::vector<cpu_set_t> cpus_override_;   // empty: the config's cpusets
  std::string model_path_;
  std::shared_ptr<const std::string> dense_dir_;  // std::atomic_load/store, with group_
  std::unique_ptr<InputStage> stage_;    // bundles only; destroyed after group_
  std::shared_ptr<SessionGroup> group_;  // std::atomic_load/store (Group())
  WarmupDecoder warmup_decoder_;
  std::atomic<uint64_t> dense_swaps_{0};
  std::shared_ptr<const Signature> public_sig_;
  std::vector<int> all_outputs_;
  std::string warmup_source_;
  std::string warmup_error_;
  double warmup_ms_ = 0, load_ms_ = 0;
  RunStats stats_;
  std::unique_ptr<SplitPool> split_pool_;  // bundles with splitting enabled
  int split_parts_ = 1;
  alignas(64) std::atomic<int> active_calls_{0};
  std::atomic<int64_t> last_overlap_ns_{INT64_MIN / 2};  // steady clock, ns
  static int64_t NowNs() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch()).count();
  }
  void MarkOverlap() { last_overlap_ns_.store(NowNs(), std::memory_order_relaxed); }
  std::atomic<uint64_t> split_calls_{0};
};

}  // namespace rs

#endif  // RECSTRATA_CORE_MODEL_H_
