// A loaded model version shared by the manager's serving table, in-flight
// calls and leases (std::shared_ptr<Servable>). When the last reference goes,
// the model is handed to the Reaper, which closes it on its own thread: a
// retired version is closed only after its last call/lease is gone, and
// never on a request thread.
//
// Threading: Servable is immutable apart from its atomic counters; any number
// of threads may use one. The Reaper is thread-safe.
#ifndef RECSTRATA_HOST_SERVABLE_H_
#define RECSTRATA_HOST_SERVABLE_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "core/model.h"
#include "host/batcher.h"
#include "host/metrics.h"

namespace rs::host {

// Closes models off the request path. Destroying the Reaper closes whatever
// is still queued, then joins its thread.
class Reaper {
 public:
  Reaper();
  ~Reaper();
  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;
  void Close(std::unique_ptr<Model> model);
  // Blocks until nothing is queued or being closed.
  void WaitIdle();

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::unique_ptr<Model>> queue_;
  bool stop_ = false;
  int closing_ = 0;
  std::thread thread_;
};

class Servable {
 public:
  // batching.max_batch_size > 1: calls may go through a Batcher (the caller
  // checked Batcher::Eligible).
  Servable(std::string model_name, int64_t version, std::string path, std::unique_ptr<Model> model,
           std::shared_ptr<Reaper> reaper, std::shared_ptr<VersionCounters> counters, BatchingOptions batching)
      : name_(std::move(model_name)), version_(version), path_(std::move(path)), model_(std::move(model)),
        reaper_(std::move(reaper)), counters_(std::move(counters)) {
    if (batching.max_batch_size > 1) batcher_ = std::make_unique<Batcher>(*model_, batching, *counters_);
  }
  ~Servable();
  Servable(const Servable&) = delete;
  Servable& operator=(const Servable&) = delete;

  const std::string& name() const { return name_; }
  int64_t version() const { return version_; }
  const std::string& path() const { return path_; }
  Model& model() const { return *model_; }
  VersionCounters& counters() const { return *counters_; }
  Batcher* batcher() const { return batcher_.get(); }  // NULL: calls run directly

 private:
  std::string name_;
  int64_t version_;
  std::string path_;
  std::unique_ptr<Model> model_;
  std::shared_ptr<Reaper> reaper_;
  std::shared_ptr<VersionCounters> counters_;
  std::unique_ptr<Batcher> batcher_;  // after model_: destroyed first
};

}  // namespace rs::host

#endif  // RECSTRATA_HOST_SERVABLE_H_
