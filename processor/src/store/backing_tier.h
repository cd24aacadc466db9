// BackingTier: the tier under a table's DRAM cache, seen from the cache.
//
// The DRAM cache (CachedTable, cached_table.h) asks it for the rows it
// misses and sends it every write. Implementations: RedisTier (a Redis
// Cluster shared by many hosts, redis_tier.h). The local SSD hash tier is
// still built into TableImpl (table.h) and does not go through this seam.
//
// Threading: every method may be called from any number of threads at once.
#ifndef RECSTRATA_STORE_BACKING_TIER_H_
#define RECSTRATA_STORE_BACKING_TIER_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace rs {
namespace store {

// Per-key outcome of BackingTier::Read.
enum : uint8_t {
  kRowAbsent = 0,   // the tier does not hold the key (a real miss)
  kRowPresent = 1,  // the row was copied out
  kRowFailed = 2,   // the tier could not answer for this key (down, timeout)
  kRowCorrupt = 3,  // the tier returned a value that failed its checks
};

class BackingTier {
 public:
  virtual ~BackingTier() = default;
  // Reads n rows into out (n * dim floats); state[i] is one of the kRow*
  // values. Never throws for tier failures: *error receives the first
  // failure's message (state says which keys it hit).
  virtual void Read(const int64_t* keys, size_t n, float* out, uint8_t* state,
                    std::string* error) = 0;
  // Writes n rows; returns how many keys were new. Throws RS_ERR_IO when any
  // row could not be written (rows written before the failure stay).
  virtual uint64_t Write(const int64_t* keys, size_t n, const float* rows) = 0;
  // Deletes n keys; returns how many existed. Throws RS_ERR_IO.
  virtual uint64_t Erase(const int64_t* keys, size_t n) = 0;
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_BACKING_TIER_H_
