#include "core/split_pool.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RS_CPU_RELAX() _mm_pause()
#else
#define RS_CPU_RELAX() std::this_thread::yield()
#endif

namespace rs {
namespace {
// How long a worker spins for the next part before it sleeps.
constexpr auto kSpin = std::chrono::microseconds(50);
}  // namespace

SplitPool::SplitPool(int threads) {
  workers_.reserve(static_cast<size_t>(threads));
  for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
}

SplitPool::~SplitPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void SplitPool::Execute(const Task& t) {
  std::exception_ptr error;
  try {
    (*t.fn)(t.part);
  } catch (...) {
    error = std::current_exception();
  }
  // Under join->mu: once the waiter holds that mutex after pending reached 0,
  // no part touches `join` again (it lives on the waiter's stack).
  std::lock_guard<std::mutex> lock(t.join->mu);
  if (error && !t.join->error) t.join->error = error;
  if (t.join->pending.fetch_sub(1, std::memory_order_acq_rel) == 1) t.join->cv.notify_one();
}

void SplitPool::Work() {
  for (;;) {
    // Spin a little for work (cheap hand-off between back-to-back calls) ...
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (queued_.load(std::memory_order_acquire) == 0 &&
           std::chrono::steady_clock::now() < until)
      for (int i = 0; i < 64; ++i) RS_CPU_RELAX();
    Task t;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // ... then sleep until there is some.
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_
      t = queue_.front();
      queue_.pop_front();
      queued_.fetch_sub(1, std::memory_order_release);
    }
    Execute(t);
  }
}

void SplitPool::Run(int parts, const std::function<void(int)>& fn) {
  Join join;
  join.pending.store(parts, std::memory_order_relaxed);
  if (parts > 1) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (int p = 1; p < parts; ++p) queue_.push_back({&fn, p, &join});
      queued_.fetch_add(parts - 1, std::memory_order_release);
    }
    if (parts == 2) cv_.notify_one();
    else cv_.notify_all();
  }
  Execute({&fn, 0, &join});
  // Part 0 done: run any of our parts no worker has taken yet (all busy) ourselves.
  while (join.pending.load(std::memory_order_acquire) > 0) {
    Task mine{nullptr, 0, nullptr};
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = queue_.begin(); it != queue_.end(); ++it) {
        if (it->join == &join) {
          mine = *it;
          queue_.erase(it);
          queued_.fetch_sub(1, std::memory_order_release);
          break;
        }
      }
    }
    if (!mine.join) break;
    Execute(mine);
  }
  // Wait for the parts workers run (spin briefly first: they are usually close).
  const auto until = std::chrono::steady_clock::now() + kSpin;
  while (join.pending.load(std::memory_order_acquire) != 0 &&
         std::chrono::steady_clock::now() < until)
    RS_CPU_RELAX();
  {
    std::unique_lock<std::mutex> lock(join.mu);
    join.cv.wait(lock, [&] { return join.pending.load(std::memory_order_acquire) == 0; });
  }
  if (join.error) std::rethrow_exception(join.error);
}

}  // namespace rs
