// DirectIndex: the SSD-tier index of a table whose keys are dense — the row
// indices 0 .. n-1 of an exported embedding table. One atomic 8-byte word per
// key, addressed by the key itself: 8 bytes per row instead of the hash
// index's 32-64 (16-byte entries at a 37-75% load factor), and one memory
// access per lookup instead of a probe. Keys outside [0, n) go to the table's
// hash index as before (TableImpl routes them).
//
// Same contract as ShardIndex: values are published with release stores and
// read with acquire loads, so readers are lock-free; writers are serialized by
// the table's write mutex. kEmptyVal marks an absent key (a deleted key is
// stored as kEmptyVal too: no probe chain needs a tombstone here).
#ifndef RECSTRATA_STORE_DIRECT_INDEX_H_
#define RECSTRATA_STORE_DIRECT_INDEX_H_

#include <atomic>
#include <cstdint>
#include <cstring>

#include "store/hash_index.h"
#include "store/huge_alloc.h"

namespace rs {
namespace store {

class DirectIndex {
 public:
  explicit DirectIndex(uint64_t n)
      : n_(n), a_(static_cast<std::atomic<uint64_t>*>(AllocHuge(n ? n * 8 : 8))) {
    // kEmptyVal is all ones: memset is a valid initialisation of the atomics.
    std::memset(static_cast<void*>(a_), 0xff, n * 8);
  }
  ~DirectIndex() { FreeHuge(a_); }
  DirectIndex(const DirectIndex&) = delete;
  DirectIndex& operator=(const DirectIndex&) = delete;

  bool Covers(int64_t key) const { return static_cast<uint64_t>(key) < n_; }
  uint64_t size() const { return n_; }
  uint64_t bytes() const { return n_ * 8; }

  // ---- readers (key must be covered) ----
  void Prefetch(int64_t key) const { __builtin_prefetch(&a_[key]); }
  uint64_t Find(int64_t key) const { return a_[key].load(std::memory_order_acquire); }

  // ---- writer (caller holds the table's write mutex) ----
  // Sets key -> val / deletes key; returns the previous value (kEmptyVal if none).
  uint64_t Upsert(int64_t key, uint64_t val) {
    return a_[key].exchange(val, std::memory_order_acq_rel);
  }
  uint64_t Erase(int64_t key) { return a_[key].exchange(kEmptyVal, std::memory_order_acq_rel); }

  // Calls fn(key, val) for every present key (writer side).
  template <class F>
  void ForEach(F&& fn) const {
    for (uint64_t k = 0; k < n_; ++k) {
      const uint64_t v = a_[k].load(std::memory_order_relaxed);
      if (v != kEmptyVal) fn(static_cast<int64_t>(k), v);
    }
  }

 private:
  uint64_t n_;
  std::atomic<uint64_t>* a_;
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_DIRECT_INDEX_H_
