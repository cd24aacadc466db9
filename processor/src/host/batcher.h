// Server-side dynamic batching of one model version (Triton's dynamic
// batcher is the reference): concurrent compatible calls are merged into one
// Model::Run of at most max_batch_size rows, waiting at most
// max_queue_delay_us for company, and each caller gets its own rows back.
//
// No thread of its own (leader/follower): the first queued call of a batch
// leads it. It waits until the batch is full or its delay is over, takes the
// queued calls compatible with it, runs the merged batch on its own thread
// and hands every follower its slice; a call left queued becomes the next
// leader. Batches of different callers may run at once (one per session).
//
// Mergeable: the model's signature has only numeric inputs and outputs, all
// with an unknown first (batch) dimension (Eligible); a call is merged with
// calls that give the same trailing dims per input and request the same
// outputs, and whose inputs all have the same first dimension, below
// max_batch_size. Any other call runs alone, unchanged. A merged run whose
// outputs do not have the batch's row count is re-run call by call. Rows are
// computed independently by such models, so outputs equal unmerged ones.
//
// Threading: Run may be called by any number of threads at once.
#ifndef RECSTRATA_HOST_BATCHER_H_
#define RECSTRATA_HOST_BATCHER_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "core/model.h"
#include "host/metrics.h"

namespace rs::host {

struct BatchingOptions {
  int max_batch_size = 0;         // 0: off
  int64_t max_queue_delay_us = 0;
};

class Batcher {
 public:
  // "" when `sig` can be batched, else why not (for status).
  static std::string Eligible(const Signature& sig);

  Batcher(Model& model, BatchingOptions opt, VersionCounters& counters)
      : model_(model), opt_(opt), counters_(counters) {}

  // Like Model::Run(inputs, n, out_idx, n_out). Throws rs::Error.
  std::unique_ptr<rs_result> Run(const rs_tensor* inputs, size_t n, const int* out_idx, size_t n_out);

 private:
  struct Call;
  void Lead(std::unique_lock<std::mutex>& lk, Call* self);
  void RunBatch(const std::vector<Call*>& batch);
  static bool Compatible(const Call& a, const Call& b);

  Model& model_;
  BatchingOptions opt_;
  VersionCounters& counters_;
  std::mutex mu_;
  std::condition_variable leader_cv_;  // the collecting leader waits here
  std::deque<Call*> queue_;
  bool leader_waiting_ = false;  // a leader is collecting its batch
};

}  // namespace rs::host

#endif  // RECSTRATA_HOST_BATCHER_H_
