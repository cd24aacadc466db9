// CachedTable: a table whose rows live in a BackingTier (backing_tier.h),
// with a bounded DRAM cache (DramTier) in front of it. The store of tiers
// "dram+redis" (remote_store.cc) is made of these.
//
// Reads: DRAM first; the misses of a call go to the backing tier in one
// batch, and the rows it returns are admitted into DRAM. A key the tier does
// not hold gets the table's default vector (found = 0). A key the tier could
// not answer for (node down, timeout) fails the whole call with RS_ERR_IO,
// and a damaged value with RS_ERR_CORRUPTION: a request never gets a default
// vector in place of a row it could not read. Keys resident in DRAM keep
// serving while the tier is down.
//
// Writes go to the backing tier first, then replace resident DRAM copies
// (BulkLoad drops them instead). Each row is atomic; a batch is not (a
// failed write may leave part of the batch written; the DRAM copies of the
// whole batch are dropped so reads refetch).
//
// Forget() drops given keys (another host changed them: the store reads
// change notices). Invalidate() drops the whole cache (the store calls it when the serving
// key space changes). A row read from the tier before an Invalidate or a
// write to the table is not admitted afterwards (generation checks under the
// shard mutex), so the cache never holds a row older than the tier's.
//
// Threading: as rs::store::Table (store.h): lookups lock-free on DRAM hits,
// any number of threads, concurrent with writes.
#ifndef RECSTRATA_STORE_CACHED_TABLE_H_
#define RECSTRATA_STORE_CACHED_TABLE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "store/backing_tier.h"
#include "store/dram_tier.h"
#include "store/epoch.h"
#include "store/store.h"

namespace rs {
namespace store {

struct CachedTableConfig {
  std::string name;
  int32_t dim = 0;
  std::vector<float> default_value;  // dim floats (empty: zeros)
  uint64_t dram_capacity_bytes = 64ull << 20;
  CachePolicy policy = CachePolicy::kLfu;
  int shard_bits = 4;
};

class CachedTable final : public Table {
 public:
  CachedTable(CachedTableConfig cfg, EpochDomain* epoch, std::unique_ptr<BackingTier> tier,
              std::function<uint64_t()> generation);

  const std::string& name() const override { return cfg_.name; }
  int32_t dim() const override { return cfg_.dim; }
  void Lookup(const int64_t* keys, size_t n, float* out, uint8_t* found) const override;
  void Upsert(const int64_t* keys, size_t n, const float* rows) override;
  void Delete(const int64_t* keys, size_t n) override;
  void BulkLoad(const int64_t* keys, size_t n, const float* rows) override;
  TableStats Stats() const override;

  void Invalidate();
  // Drops the DRAM copies of n keys (another host changed them).
  void Forget(const int64_t* keys, size_t n);
  // Row count as the backing tier's metadata says (set by the store).
  void set_rows(uint64_t r) { rows_.store(r, std::memory_order_relaxed); }
  // Called after a write with the change of the row count (new minus deleted keys).
  std::function<void(int64_t)> on_rows_changed;
  // Called after the backing tier accepted (part of) a write or delete of
  // these keys; may throw (the write's caller sees the error).
  std::function<void(const int64_t*, size_t)> on_written;

 private:
  void Write(const int64_t* keys, size_t n, const float* rows, bool bulk);
  uint64_t Generation() const {
    return generation_() * 0x100000000ull + write_gen_.load(std::memory_order_acquire);
  }

  CachedTableConfig cfg_;
  EpochDomain* epoch_;
  std::unique_ptr<BackingTier> tier_;
  std::function<uint64_t()> generation_;
  std::unique_ptr<DramTier> dram_;
  std::atomic<uint64_t> write_gen_{0};
  std::atomic<uint64_t> rows_{0};
  mutable std::atomic<uint64_t> dram_hits_{0}, dram_misses_{0}, remote_hits_{0}, remote_misses_{0},
      remote_errors_{0}, remote_corrupt_{0}, failed_lookups_{0};
  std::atomic<uint64_t> payload_written_{0};
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_CACHED_TABLE_H_
