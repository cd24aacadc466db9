// ShardIndex: an open-addressing hash index int64 key -> uint64 value with
// lock-free readers and one writer at a time (the caller's shard mutex).
//
// Entries are two atomic words {key, val}. A new entry is published by
// storing the key first and the value last (release); readers load the value
// first (acquire), so a non-empty value always comes with its key. An entry
// is never reused for another key: deletion stores kDeletedVal, and deleted
// entries disappear only when the array is rebuilt into a new one (published
// atomically, the old one retired through the EpochDomain). Readers therefore
// never see a key paired with another key's value.
#ifndef RECSTRATA_STORE_HASH_INDEX_H_
#define RECSTRATA_STORE_HASH_INDEX_H_

#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <utility>

#include "store/epoch.h"
#include "store/huge_alloc.h"

namespace rs {
namespace store {

constexpr uint64_t kEmptyVal = ~0ull;        // never-used entry / "absent"
constexpr uint64_t kDeletedVal = ~0ull - 1;  // entry of a deleted key

// splitmix64 finalizer: ids are often sequential; spread them.
inline uint64_t HashKey(int64_t key) {
  uint64_t x = static_cast<uint64_t>(key);
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

class ShardIndex {
 public:
  explicit ShardIndex(EpochDomain* epoch = nullptr) : epoch_(epoch) {
    arr_.store(NewArray(16), std::memory_order_release);
  }
  void set_epoch(EpochDomain* epoch) { epoch_ = epoch; }
  ~ShardIndex() {
    FreeArray(arr_.load());
    for (auto& r : retired_) FreeArray(r.first);
  }
  ShardIndex(const ShardIndex&) = delete;
  ShardIndex& operator=(const ShardIndex&) = delete;

  // ---- readers (inside an EpochGuard) ----
  void Prefetch(uint64_t h) const {
    const Array* a = arr_.load(std::memory_order_acquire);
    __builtin_prefetch(&a->e()[h & a->mask]);
  }
  // The value of `key`, or kEmptyVal when absent or deleted.
  uint64_t Find(int64_t key, uint64_t h) const {
    const Array* a = arr_.load(std::memory_order_acquire);
    uint64_t i = h & a->mask;
    for (;;) {
      uint64_t v = a->e()[i].val.load(std::memory_order_acquire);
      if (v == kEmptyVal) return kEmptyVal;
      if (a->e()[i].key.load(std::memory_order_relaxed) == key) {
        return v == kDeletedVal ? kEmptyVal : v;
      }
      i = (i + 1) & a->mask;
    }
  }

  // ---- writer (caller holds the shard's mutex) ----
  // Sets key -> val; returns the previous value (kEmptyVal if none).
  uint64_t Upsert(int64_t key, uint64_t h, uint64_t val) {
    Array* a = arr_.load(std::memory_order_relaxed);
    uint64_t i = h & a->mask;
    for (;;) {
      uint64_t v = a->e()[i].val.load(std::memory_order_relaxed);
      if (v == kEmptyVal) break;
      if (a->e()[i].key.load(std::memory_order_relaxed) == key) {
        a->e()[i].val.store(val, std::memory_order_release);
        if (v == kDeletedVal) {
          ++live_;
          return kEmptyVal;
        }
        return v;
      }
      i = (i + 1) & a->mask;
    }
    a->e()[i].key.store(key, std::memory_order_relaxed);
    a->e()[i].val.store(val, std::memory_order_release);
    ++live_;
    if (++a->used * 4 > (a->mask + 1) * 3) Rebuild();
    return kEmptyVal;
  }
  // Deletes key; returns its previous value (kEmptyVal if absent).
  uint64_t Erase(int64_t key, uint64_t h) {
    Array* a = arr_.load(std::memory_order_relaxed);
    uint64_t i = h & a->mask;
    for (;;) {
      uint64_t v = a->e()[i].val.load(std::memory_order_relaxed);
      if (v == kEmptyVal) return kEmptyVal;
      if (a->e()[i].key.load(std::memory_order_relaxed) == key) {
        if (v == kDeletedVal) return kEmptyVal;
        a->e()[i].val.store(kDeletedVal, std::memory_order_release);
        --live_;
        return v;
      }
      i = (i + 1) & a->mask;
    }
  }
  uint64_t live() const { return live_; }

  // Calls fn(key, val) for every live entry (writer side).
  template <class F>
  void ForEach(F&& fn) const {
    const Array* a = arr_.load(std::memory_order_relaxed);
    for (uint64_t i = 0; i <= a->mask; ++i) {
      uint64_t v = a->e()[i].val.load(std::memory_order_relaxed);
      if (v != kEmptyVal && v != kDeletedVal) fn(a->e()[i].key.load(std::memory_order_relaxed), v);
    }
  }
  // Bytes of the current array.
  uint64_t bytes() const {
    return (arr_.load(std::memory_order_relaxed)->mask + 1) * sizeof(Entry);
  }
  // Bytes of the array that Reserve(n) on an empty index allocates.
  static uint64_t BytesFor(uint64_t n) {
    uint64_t cap = 16;
    while (cap < n * 2 + 16) cap <<= 1;
    return cap * sizeof(Entry) + sizeof(Array);
  }
  // Presizes for n live keys (writer side, e.g. before a bulk load).
  void Reserve(uint64_t n) {
    Array* a = arr_.load(std::memory_order_relaxed);
    if ((a->used + n) * 4 > (a->mask + 1) * 3) Rebuild(live_ + n);
  }

 private:
  struct Entry {
    std::atomic<int64_t> key;
    std::atomic<uint64_t> val;
  };
  // One allocation: this 16-byte header, then the entries (one pointer
  // chase less on the read path).
  struct Array {
    uint64_t mask;
    uint64_t used;  // entries not empty (live + deleted)
    Entry* e() { return reinterpret_cast<Entry*>(this + 1); }
    const Entry* e() const { return reinterpret_cast<const Entry*>(this + 1); }
  };
  static_assert(sizeof(Array) == 16, "entries follow the header");
  static Array* NewArray(uint64_t cap) {
    void* mem = AllocHuge(sizeof(Array) + cap * sizeof(Entry));
    Array* a = static_cast<Array*>(mem);
    a->mask = cap - 1;
    a->used = 0;
    // kEmptyVal is all ones: memset is a valid initialisation of the atomics.
    std::memset(static_cast<void*>(a->e()), 0xff, cap * sizeof(Entry));
    return a;
  }
  static void FreeArray(Array* a) { FreeHuge(a); }
  void Rebuild(uint64_t want_live = 0) {
    Array* old = arr_.load(std::memory_order_relaxed);
    uint64_t need = (want_live ? want_live : live_) * 2 + 16;
    uint64_t cap = 16;
    while (cap < need) cap <<= 1;
    Array* a = NewArray(cap);
    for (uint64_t i = 0; i <= old->mask; ++i) {
      uint64_t v = old->e()[i].val.load(std::memory_order_relaxed);
      if (v == kEmptyVal || v == kDeletedVal) continue;
      int64_t k = old->e()[i].key.load(std::memory_order_relaxed);
      uint64_t j = HashKey(k) & a->mask;
      while (a->e()[j].val.load(std::memory_order_relaxed) != kEmptyVal) j = (j + 1) & a->mask;
      a->e()[j].key.store(k, std::memory_order_relaxed);
      a->e()[j].val.store(v, std::memory_order_relaxed);
      ++a->used;
    }
    arr_.store(a, std::memory_order_release);
    retired_.emplace_back(old, epoch_->current());
    epoch_->TryAdvance();
    while (!retired_.empty() && epoch_->IsSafe(retired_.front().second)) {
      FreeArray(retired_.front().first);
      retired_.pop_front();
    }
  }

  EpochDomain* epoch_;
  std::atomic<Array*> arr_{nullptr};
  uint64_t live_ = 0;
  std::deque<std::pair<Array*, uint64_t>> retired_;
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_HASH_INDEX_H_
