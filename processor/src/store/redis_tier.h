// RedisTier: a table's rows in a Redis Cluster (the "dram+redis" tiers),
// shared by every host that opens the same model. docs/store.md, "Remote
// tier", documents the layout; in short:
//
//   rsp:<model>                       hash {serving: <space>, backup: <space>}
//   rsm:<model>:<space>               hash {<table>#dim, <table>#rows, <table>#default}
//   rs:<model>:<space>:<table>:<id>   string: a row value
//   rsc:<model>:<space>               stream of change notices {table, keys: int64[]}
//   rsd:{<model>:<space>}             hash: the deltas applied to the space
//                                     {base_crc32c, applied_sequence, applying}
//   rsd:{<model>:<space>}:lease       string: the host applying a delta (PX TTL)
//
// A key space is one full version of the model's tables (an export writes
// one); `serving` names the space hosts read, `backup` the one before it,
// so a rollback is one atomic HSET of the pointer hash.
//
// Row value: 16-byte header, then dim little-endian float32:
//   bytes 0-3 "RSE1", 4-7 dim (uint32), 8-11 CRC-32C of the int64 id
//   followed by the floats, 12-15 zero.
// A value with another magic, dim, length or checksum is refused
// (kRowCorrupt), never served.
//
// Threading: Read/Write/Erase may run on any number of threads.
#ifndef RECSTRATA_STORE_REDIS_TIER_H_
#define RECSTRATA_STORE_REDIS_TIER_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "store/backing_tier.h"
#include "store/redis_cluster.h"

namespace rs {
namespace store {

// The key space a store reads and writes, swapped when the serving pointer
// moves. Readers load generation() before space(): a generation they saw is
// never newer than the space they then read.
class RedisKeySpace {
 public:
  std::shared_ptr<const std::string> space() const { return std::atomic_load(&space_); }
  uint64_t generation() const { return gen_.load(std::memory_order_acquire); }
  void Set(const std::string& s) {
    std::atomic_store(&space_, std::make_shared<const std::string>(s));
    gen_.fetch_add(1, std::memory_order_acq_rel);
  }

 private:
  std::shared_ptr<const std::string> space_ = std::make_shared<const std::string>();
  std::atomic<uint64_t> gen_{1};
};

namespace redis_keys {
std::string Row(const std::string& model, const std::string& space, const std::string& table, int64_t id);
std::string RowPrefix(const std::string& model, const std::string& space);  // "rs:<model>:<space>:"
std::string Meta(const std::string& model, const std::string& space);
std::string Pointer(const std::string& model);
std::string Changes(const std::string& model, const std::string& space);  // "rsc:<model>:<space>"
// The delta ledger of a space and its apply lease (one hash slot: a Lua
// script may touch both).
std::string DeltaRecord(const std::string& model, const std::string& space);
std::string DeltaLease(const std::string& model, const std::string& space);
constexpr size_t kValueHeader = 16;
std::string EncodeValue(int64_t id, const float* row, int32_t dim);
// false unless the value is a well-formed row of `dim` for `id`.
bool DecodeValue(const std::string& v, int64_t id, int32_t dim, float* out);
}  // namespace redis_keys

class RedisTier final : public BackingTier {
 public:
  RedisTier(RedisCluster* cluster, const RedisKeySpace* space, std::string model, std::string table,
            int32_t dim)
      : cluster_(cluster), space_(space), model_(std::move(model)), table_(std::move(table)), dim_(dim) {}
  void Read(const int64_t* keys, size_t n, float* out, uint8_t* state, std::string* error) override;
  uint64_t Write(const int64_t* keys, size_t n, const float* rows) override;
  uint64_t Erase(const int64_t* keys, size_t n) override;

 private:
  RedisCluster* cluster_;
  const RedisKeySpace* space_;
  std::string model_, table_;
  int32_t dim_;
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_REDIS_TIER_H_
