#include "store/dram_tier.h"

#include <algorithm>
#include <new>

#include "base/status.h"
#include "store/huge_alloc.h"

namespace rs {
namespace store {
namespace {

// A newly admitted row starts low: one clock turn without a second read
// evicts it, so one-off tail ids do not push out rows that are read again.
constexpr uint32_t kLfuNew = 1;

inline uint64_t NextRandom() {
  thread_local uint64_t s = 0x9E3779B97F4A7C15ull ^ reinterpret_cast<uintptr_t>(&s);
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

}  // namespace

DramTier::DramTier(int32_t dim, int shard_bits, uint64_t capacity_bytes, CachePolicy policy,
                   EpochDomain* epoch)
    : dim_(dim), shard_bits_(shard_bits), capacity_bytes_(capacity_bytes), policy_(policy),
      epoch_(epoch) {
  // A small budget is not split into many tiny shards (each would hold a few
  // rows beside a minimum-size index): at least ~64 rows per shard.
  if (capacity_bytes) {
    const uint64_t rows_est = capacity_bytes / (RowBytes(dim) + 48);
    while (shard_bits > 0 && (rows_est >> shard_bits) < 64) --shard_bits;
    shard_bits_ = shard_bits;
  }
  size_t nshards = size_t{1} << shard_bits;
  nshards_ = nshards;
  if (capacity_bytes) {
    // The most rows per shard whose rows and (presized) index fit the shard's share.
    const uint64_t budget = capacity_bytes / nshards;
    uint64_t r = std::max<uint64_t>(1, budget / (RowBytes(dim) + 32));
    while (r > 1 && r * RowBytes(dim) + ShardIndex::BytesFor(r) > budget) r -= std::max<uint64_t>(1, r / 64);
    cap_rows_per_shard_ = r;
  } else {
    cap_rows_per_shard_ = 0;
  }
  shards_.reset(new Shard[nshards]);
  for (size_t i = 0; i < nshards; ++i) {
    shards_[i].index.set_epoch(epoch);
    if (cap_rows_per_shard_) {
      shards_[i].index.Reserve(cap_rows_per_shard_);
      shards_[i].slot_key.reserve(cap_rows_per_shard_ + 64);
      shards_[i].resident.reserve(cap_rows_per_shard_ + 64);
    }
  }
}

DramTier::~DramTier() {
  for (size_t k = 0; k < nshards_; ++k) {
    Shard* s = &shards_[k];
    for (uint32_t i = 0; i < s->nchunks; ++i) FreeHuge(s->chunks[i].load());
  }
}

uint64_t DramTier::RandomSeed() { return NextRandom() | 1; }

uint32_t DramTier::NewMeta() const { return policy_ == CachePolicy::kLru ? 1 : kLfuNew; }

uint32_t DramTier::AllocSlot(Shard& s) {
  while (!s.retired.empty() && epoch_->IsSafe(s.retired.front().second)) {
    s.free_slots.push_back(s.retired.front().first);
    s.retired.pop_front();
  }
  // Advancing the epoch scans every reader stripe: do it once per batch of
  // retired slots, not per allocation (the slab grows by at most that much).
  if (s.free_slots.empty() && s.retired.size() >= 256) {
    epoch_->TryAdvance();
    while (!s.retired.empty() && epoch_->IsSafe(s.retired.front().second)) {
      s.free_slots.push_back(s.retired.front().first);
      s.retired.pop_front();
    }
  }
  if (!s.free_slots.empty()) {
    uint32_t slot = s.free_slots.back();
    s.free_slots.pop_back();
    return slot;
  }
  uint32_t slot = s.high;
  uint32_t ci, off;
  Locate(slot, &ci, &off);
  if (ci >= s.nchunks) {
    if (ci >= static_cast<uint32_t>(kMaxChunks)) Fail(RS_ERR_RESOURCE_EXHAUSTED, "DRAM tier shard full");
    size_t rows = ChunkRows(ci);
    char* c = static_cast<char*>(AllocHuge(rows * 4ull * dim_ + rows * sizeof(uint32_t)));
    for (size_t i = 0; i < rows; ++i) new (c + rows * 4ull * dim_ + i * 4) std::atomic<uint32_t>(0);
    s.chunks[ci].store(c, std::memory_order_release);
    s.nchunks = ci + 1;
  }
  ++s.high;
  if (s.slot_key.size() < s.high) {
    s.slot_key.resize(s.high);
    s.resident.resize(s.high);
  }
  return slot;
}

void DramTier::RetireSlot(Shard& s, uint32_t slot) {
  s.resident[slot] = 0;
  s.retired.emplace_back(slot, epoch_->current());
}

void DramTier::PutLocked(Shard& s, int64_t key, uint64_t h, const float* row) {
  uint32_t slot = AllocSlot(s);
  uint32_t ci, off;
  Locate(slot, &ci, &off);
  char* c = s.chunks[ci].load(std::memory_order_relaxed);
  std::memcpy(c + static_cast<size_t>(off) * 4 * dim_, row, 4ull * dim_);
  MetaAt(c, ci, off).store(NewMeta(), std::memory_order_relaxed);
  s.slot_key[slot] = key;
  s.resident[slot] = 1;
  // Publishes the fully written row (release store of the index value).
  uint64_t old = s.index.Upsert(key, h, slot);
  if (old != kEmptyVal) {
    RetireSlot(s, static_cast<uint32_t>(old));
  } else {
    s.rows.fetch_add(1, std::memory_order_relaxed);
  }
  if (cap_rows_per_shard_) {
    while (s.rows.load(std::memory_order_relaxed) > cap_rows_per_shard_ && EvictOne(s, slot)) {
    }
  }
}

bool DramTier::EvictOne(Shard& s, uint32_t keep) {
  // Every resident row's counter at least halves per full turn, so a victim
  // turns up within ~9 turns (8-bit counters); the bound is a safety net.
  const uint64_t max_steps = 10ull * s.high + 16;
  uint32_t victim = keep;
  for (uint64_t step = 0; step < max_steps; ++step) {
    uint32_t slot = s.hand;
    if (++s.hand >= s.high) s.hand = 0;
    if (!s.resident[slot] || slot == keep) continue;
    std::atomic<uint32_t>& m = MetaOf(s, slot);
    uint32_t v = m.load(std::memory_order_relaxed);
    if (v == 0) {
      victim = slot;
      break;
    }
    m.store(policy_ == CachePolicy::kLru ? 0 : v / 2, std::memory_order_relaxed);
  }
  if (victim == keep) return false;
  int64_t key = s.slot_key[victim];
  s.index.Erase(key, HashKey(key));
  RetireSlot(s, victim);
  s.rows.fetch_sub(1, std::memory_order_relaxed);
  evictions_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void DramTier::Put(int64_t key, uint64_t h, const float* row) {
  Shard& s = shard(h);
  std::lock_guard<std::mutex> lock(s.mu);
  PutLocked(s, key, h, row);
}

void DramTier::ReplaceIfPresent(int64_t key, uint64_t h, const float* row) {
  Shard& s = shard(h);
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.index.Find(key, h) != kEmptyVal) PutLocked(s, key, h, row);
}

void DramTier::Erase(int64_t key, uint64_t h) {
  Shard& s = shard(h);
  std::lock_guard<std::mutex> lock(s.mu);
  uint64_t old = s.index.Erase(key, h);
  if (old != kEmptyVal) {
    RetireSlot(s, static_cast<uint32_t>(old));
    s.rows.fetch_sub(1, std::memory_order_relaxed);
  }
}

void DramTier::Clear() {
  for (size_t k = 0; k < nshards_; ++k) {
    Shard& s = shards_[k];
    std::lock_guard<std::mutex> lock(s.mu);
    std::vector<std::pair<int64_t, uint64_t>> all;
    s.index.ForEach([&](int64_t k, uint64_t v) { all.emplace_back(k, v); });
    for (auto& kv : all) {
      s.index.Erase(kv.first, HashKey(kv.first));
      RetireSlot(s, static_cast<uint32_t>(kv.second));
    }
    s.rows.store(0, std::memory_order_relaxed);
  }
}

uint64_t DramTier::bytes() const {
  uint64_t b = rows() * RowBytes(dim_);
  for (size_t k = 0; k < nshards_; ++k) b += shards_[k].index.bytes();
  return b;
}

uint64_t DramTier::rows() const {
  uint64_t n = 0;
  for (size_t k = 0; k < nshards_; ++k) n += shards_[k].rows.load(std::memory_order_relaxed);
  return n;
}

}  // namespace store
}  // namespace rs
