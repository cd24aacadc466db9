// EpochDomain: lock-free read-side protection for memory and files that a
// writer retires (index arrays, DRAM row slots, data files replaced by
// compaction). Readers never block and never write a shared cache line other
// than their own thread-striped counter; reclamation is deferred, not waited
// for, on the read path.
//
// Contract:
//   - A reader wraps every access to retirable objects in an EpochGuard.
//   - A writer first unlinks an object (so no new reader can reach it), then
//     records Retire epoch = current(); the object may be freed once
//     IsSafe(that epoch) holds, i.e. after the epoch advanced twice, which
//     proves that every reader that entered before the unlink has left.
//   - TryAdvance() never blocks; WaitSafe() blocks and must never be called
//     while the caller holds an EpochGuard (it would wait for itself).
//
// Two generations of counters (parity of the epoch), striped over 64 cache
// lines by thread, like userspace SRCU.
#ifndef RECSTRATA_STORE_EPOCH_H_
#define RECSTRATA_STORE_EPOCH_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>

namespace rs {
namespace store {

class EpochDomain {
 public:
  static constexpr int kStripes = 64;

  uint64_t Enter() {
    Stripe& s = stripes_[StripeIndex()];
    for (;;) {
      uint64_t e = epoch_.load(std::memory_order_seq_cst);
      s.n[e & 1].fetch_add(1, std::memory_order_seq_cst);
      if (epoch_.load(std::memory_order_seq_cst) == e) return e;
      s.n[e & 1].fetch_sub(1, std::memory_order_seq_cst);  // raced an advance
    }
  }
  void Exit(uint64_t e) {
    stripes_[StripeIndex()].n[e & 1].fetch_sub(1, std::memory_order_release);
  }

  uint64_t current() const { return epoch_.load(std::memory_order_seq_cst); }
  bool IsSafe(uint64_t retired_at) const { return current() >= retired_at + 2; }

  // Advances the epoch if every reader of the previous epoch has left.
  bool TryAdvance() {
    std::unique_lock<std::mutex> lock(mu_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    uint64_t e = epoch_.load(std::memory_order_seq_cst);
    int parity = static_cast<int>((e + 1) & 1);  // readers of epoch e - 1
    int64_t in = 0;
    for (auto& s : stripes_) in += s.n[parity].load(std::memory_order_seq_cst);
    if (in != 0) return false;
    epoch_.store(e + 1, std::memory_order_seq_cst);
    return true;
  }

  // Blocks until objects retired at `retired_at` may be freed.
  void WaitSafe(uint64_t retired_at) {
    while (!IsSafe(retired_at)) {
      if (!TryAdvance()) std::this_thread::yield();
    }
  }

 private:
  struct alignas(64) Stripe {
    std::atomic<int64_t> n[2] = {{0}, {0}};
  };
  static int StripeIndex() {
    static std::atomic<unsigned> next{0};
    thread_local int index = static_cast<int>(next.fetch_add(1) % kStripes);
    return index;
  }
  Stripe stripes_[kStripes];
  std::atomic<uint64_t> epoch_{2};
  std::mutex mu_;
};

class EpochGuard {
 public:
  explicit EpochGuard(EpochDomain& d) : d_(d), e_(d.Enter()) {}
  ~EpochGuard() { d_.Exit(e_); }
  EpochGuard(const EpochGuard&) = delete;
  EpochGuard& operator=(const EpochGuard&) = delete;

 private:
  EpochDomain& d_;
  uint64_t e_;
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_EPOCH_H_
