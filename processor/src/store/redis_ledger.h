// RedisDeltaLedger: the DeltaLedger (delta_ledger.h) of a "dram+redis" store,
// kept in the Redis Cluster next to the key space it describes:
//   rsd:{<model>:<space>}        hash {base_crc32c, applied_sequence, applying,
//                                      dense_sequence}
//   rsd:{<model>:<space>}:lease  string: the lease holder's token, with a TTL
// Both keys share a hash slot, so each step is one Lua script: atomic on the
// node, whatever other hosts do at the same time.
#ifndef RECSTRATA_STORE_REDIS_LEDGER_H_
#define RECSTRATA_STORE_REDIS_LEDGER_H_

#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "store/delta_ledger.h"
#include "store/redis_cluster.h"

namespace rs {
namespace store {

class RedisDeltaLedger final : public DeltaLedger {
 public:
  // active_space: the store's active key space now; hold_mu: the mutex the
  // store's pointer switches take; sync_held: reads the change notices
  // (called with hold_mu held). The cluster outlives the ledger.
  RedisDeltaLedger(RedisCluster* cluster, std::string model, std::function<std::string()> active_space,
                   std::mutex* hold_mu, std::function<void()> sync_held);

  // Binds `space` to the bundle whose bundle.json has CRC-32C `base_crc32c`
  // (the export calls it before publishing). Binding again to the same CRC
  // is a no-op; to another one is RS_ERR_FAILED_PRECONDITION.
  static void Bind(RedisCluster* cluster, const std::string& model, const std::string& space,
                   const std::string& base_crc32c);

  std::unique_lock<std::mutex> Hold() override;
  DeltaLedgerState Read() override;
  DeltaClaim Claim(uint64_t seq, const std::string& base_crc32c, int lease_ms, std::string* token) override;
  bool Commit(uint64_t seq, uint64_t dense_sequence, const std::string& token) override;
  void Release(const std::string& token) override;
  void Sync() override;

 private:
  std::string ActiveOrFail();
  RedisCluster* cluster_;
  std::string model_;
  std::function<std::string()> active_space_;
  std::mutex* hold_mu_;
  std::function<void()> sync_held_;
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_REDIS_LEDGER_H_
