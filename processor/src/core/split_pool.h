// SplitPool: a few worker threads that run the parts of one split call
// (Model::Run cuts a large bundle request into row ranges, see core/model.h).
//
// Run(parts, fn) calls fn(0) in the calling thread and fn(1..parts-1) on pool
// threads, and returns when all have returned; the first exception thrown by
// any part is rethrown in the caller. A worker that finishes spins briefly
// (tens of microseconds) for the next part before it sleeps, so back-to-back
// requests do not pay a thread wake-up each; an idle pool uses no CPU.
//
// Threading: Run may be called from any number of threads at once (parts of
// concurrent calls queue up FIFO). The destructor joins the workers; no Run
// may be in progress then.
#ifndef RECSTRATA_CORE_SPLIT_POOL_H_
#define RECSTRATA_CORE_SPLIT_POOL_H_

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace rs {

class SplitPool {
 public:
  explicit SplitPool(int threads);
  ~SplitPool();
  SplitPool(const SplitPool&) = delete;
  SplitPool& operator=(const SplitPool&) = delete;

  int threads() const { return static_cast<int>(workers_.size()); }
  void Run(int parts, const std::function<void(int)>& fn);

 private:
  struct Join {
    std::atomic<int> pending{0};
    std::mutex mu;
    std::condition_variable cv;
    std::exception_ptr error;
  };
  struct Task {
    const std::function<void(int)>* fn;
    int part;
    Join* join;
  };
  void Work();
  static void Execute(const Task& t);

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  std::atomic<int> queued_{0};  // queue_.size(), readable without mu_ (spinning)
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace rs

#endif  // RECSTRATA_CORE_SPLIT_POOL_H_
