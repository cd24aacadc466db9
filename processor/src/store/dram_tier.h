// DramTier: the DRAM tier of one table — a sharded hash cache of rows.
//
// Readers (inside an EpochGuard) take no lock: they probe the shard's
// ShardIndex for a row slot and copy the row. Writers never modify a row in
// place: an update writes a fresh slot and swings the index entry (copy on
// write), and the old slot is reused only after an epoch grace period, so a
// reader copies either the whole old row or the whole new one.
//
// Bounded mode (capacity_bytes > 0, tiers "dram+ssd"): the capacity covers
// the rows (RowBytes(dim) each: vector, policy word, slot bookkeeping) and the
// shards' hash indexes, which are sized for the row limit up front (no growth
// while the cache fills); inserting past a shard's row limit evicts
// with a clock hand sweeping the shard's slots in order (sequential memory,
// amortized O(1)): LFU = GCLOCK over a logarithmic, probabilistically
// incremented counter (the hand halves it, a row is evicted at 0, so a row
// survives about log2(frequency) sweeps); LRU = CLOCK (a reference bit set
// on read, cleared by the hand).
// Unbounded mode keeps every row and never touches policy state on reads.
#ifndef RECSTRATA_STORE_DRAM_TIER_H_
#define RECSTRATA_STORE_DRAM_TIER_H_

#include <atomic>
#include <cstdint>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <vector>

#include "store/epoch.h"
#include "store/hash_index.h"

namespace rs {
namespace store {

enum class CachePolicy { kLfu, kLru };

class DramTier {
 public:
  DramTier(int32_t dim, int shard_bits, uint64_t capacity_bytes, CachePolicy policy,
           EpochDomain* epoch);
  ~DramTier();
  DramTier(const DramTier&) = delete;
  DramTier& operator=(const DramTier&) = delete;

  // Bytes per resident row besides the index: vector, policy word (4), the
  // slot's key (8) and live flag (1).
  static uint64_t RowBytes(int32_t dim) { return 4ull * dim + 4 + 8 + 1; }
  // Row limit of the whole tier in bounded mode (0: unbounded).
  uint64_t capacity_rows() const { return cap_rows_per_shard_ * nshards_; }

  int32_t dim() const { return dim_; }
  bool bounded() const { return cap_rows_per_shard_ != 0; }

  // ---- readers (inside an EpochGuard) ----
  void PrefetchIndex(uint64_t h) const { shard(h).index.Prefetch(h); }
  // Row of `key` or nullptr. Updates policy state in bounded mode. `rnd`: a
  // caller-owned xorshift state (nonzero; one per lookup batch) for the LFU
  // counter's probabilistic increment; nullptr uses a thread-local one (one
  // TLS access per hit — the batched read path passes its own).
  const float* Find(int64_t key, uint64_t h, uint64_t* rnd = nullptr) const {
    const Shard& s = shard(h);
    uint64_t slot = s.index.Find(key, h);
    if (slot == kEmptyVal) return nullptr;
    uint32_t ci, off;
    Locate(static_cast<uint32_t>(slot), &ci, &off);
    const char* c = s.chunks[ci].load(std::memory_order_acquire);
    if (cap_rows_per_shard_) Touch(MetaAt(c, ci, off), rnd);
    return reinterpret_cast<const float*>(c) + static_cast<size_t>(off) * dim_;
  }
  // A seed for Find's `rnd` (thread-local generator; call once per batch).
  static uint64_t RandomSeed();

  // ---- writers (take the shard mutex) ----
  void Put(int64_t key, uint64_t h, const float* row);
  // Replaces the row only if the key is resident (write-through of a cache).
  void ReplaceIfPresent(int64_t key, uint64_t h, const float* row);
  void Erase(int64_t key, uint64_t h);
  // Admission of a row read from a lower tier: inserts it unless the key is
  // resident, the shard is busy (never blocks a reader), or still_valid()
  // (evaluated under the shard mutex) says the row went stale meanwhile.
  template <class Pred>
  bool AdmitIf(int64_t key, uint64_t h, const float* row, Pred still_valid) {
    Shard& s = shard(h);
    std::unique_lock<std::mutex> lock(s.mu, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    if (s.index.Find(key, h) != kEmptyVal) return false;
    if (!still_valid()) return false;
    PutLocked(s, key, h, row);
    admissions_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  // Drops every row (writer side).
  void Clear();

  uint64_t rows() const;
  // Memory of the resident rows plus the shards' indexes.
  uint64_t bytes() const;
  uint64_t capacity_bytes() const { return capacity_bytes_; }
  uint64_t evictions() const { return evictions_.load(std::memory_order_relaxed); }
  uint64_t admissions() const { return admissions_.load(std::memory_order_relaxed); }

 private:
  // Row storage of a shard: chunk c holds kBaseRows << c rows (geometric, so
  // a fixed directory of kMaxChunks pointers never moves and big tables get
  // few, huge-page backed chunks). A chunk is one allocation: its rows of dim
  // floats, then one policy word (uint32) per row.
  static constexpr uint32_t kBaseShift = 4;  // 16 rows in chunk 0
  static constexpr int kMaxChunks = 28;
  static void Locate(uint32_t slot, uint32_t* chunk, uint32_t* off) {
    uint32_t q = (slot >> kBaseShift) + 1;
    uint32_t c = 31u - static_cast<uint32_t>(__builtin_clz(q));
    *chunk = c;
    *off = slot - (((1u << c) - 1u) << kBaseShift);
  }
  static uint32_t ChunkRows(uint32_t c) { return (1u << kBaseShift) << c; }
  struct Shard {
    std::mutex mu;
    ShardIndex index;
    std::atomic<char*> chunks[kMaxChunks] = {};
    uint32_t nchunks = 0;
    uint32_t high = 0;  // slots handed out so far
    std::vector<uint32_t> free_slots;
    std::deque<std::pair<uint32_t, uint64_t>> retired;  // slot, epoch
    std::vector<int64_t> slot_key;   // key held by a slot (writer side)
    std::vector<uint8_t> resident;   // slot holds a live row (writer side)
    uint32_t hand = 0;               // clock hand (bounded mode)
    std::atomic<uint64_t> rows{0};
  };

  const Shard& shard(uint64_t h) const { return shards_[shard_bits_ ? h >> (64 - shard_bits_) : 0]; }
  Shard& shard(uint64_t h) { return shards_[shard_bits_ ? h >> (64 - shard_bits_) : 0]; }
  std::atomic<uint32_t>& MetaAt(const char* chunk, uint32_t c, uint32_t off) const {
    return const_cast<std::atomic<uint32_t>*>(reinterpret_cast<const std::atomic<uint32_t>*>(
        chunk + static_cast<size_t>(ChunkRows(c)) * 4 * dim_))[off];
  }
  // Counters below kLfuInit grow on every read; above it logarithmically.
  static constexpr uint32_t kLfuInit = 5;
  static constexpr uint32_t kLfuMax = 255;
  // Read-side policy update (inline: it runs on every DRAM hit of a bounded tier).
  void Touch(std::atomic<uint32_t>& m, uint64_t* rnd) const {
    uint32_t v = m.load(std::memory_order_relaxed);
    if (policy_ == CachePolicy::kLru) {
      if (v == 0) m.store(1, std::memory_order_relaxed);  // reference bit
      return;
    }
    // Logarithmic counter: the hotter a row, the rarer its increments, so hot
    // rows are not written (and their cache lines not bounced) on every read.
    if (v >= kLfuMax) return;
    const uint64_t n = (v > kLfuInit ? v - kLfuInit : 0) * 8 + 1;
    uint64_t r;
    if (rnd) {
      r = *rnd;
      r ^= r << 13;
      r ^= r >> 7;
      r ^= r << 17;
      *rnd = r;
    } else {
      r = RandomSeed();
    }
    // Increment with probability ~1/n, without a division: the top 32 bits
    // times n stay below 2^32 for ceil(2^32 / n) of the 2^32 values.
    if (((r >> 32) * n) >> 32 == 0) m.store(v + 1, std::memory_order_relaxed);
  }
  uint32_t NewMeta() const;
  void PutLocked(Shard& s, int64_t key, uint64_t h, const float* row);
  uint32_t AllocSlot(Shard& s);
  void RetireSlot(Shard& s, uint32_t slot);
  bool EvictOne(Shard& s, uint32_t keep);  // false if nothing to evict
  std::atomic<uint32_t>& MetaOf(Shard& s, uint32_t slot) {
    uint32_t c, off;
    Locate(slot, &c, &off);
    return MetaAt(s.chunks[c].load(std::memory_order_relaxed), c, off);
  }

  int32_t dim_;
  int shard_bits_;
  uint64_t capacity_bytes_;
  uint64_t cap_rows_per_shard_;  // 0 = unbounded
  CachePolicy policy_;
  EpochDomain* epoch_;
  std::unique_ptr<Shard[]> shards_;
  size_t nshards_;
  std::atomic<uint64_t> evictions_{0}, admissions_{0};
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_DRAM_TIER_H_
