// The store of tiers "dram+redis": tables of CachedTable over RedisTier,
// their metadata and the serving pointer in a Redis Cluster (redis_tier.h
// has the key layout). Store::Open hands it options with those tiers.
#ifndef RECSTRATA_STORE_REMOTE_STORE_H_
#define RECSTRATA_STORE_REMOTE_STORE_H_

#include <memory>
#include <string>

#include "store/store.h"

namespace rs {
namespace store {
// `dir` must be "" (a remote store has no directory).
std::unique_ptr<Store> OpenRemoteStore(const std::string& dir, const ::recstrata::store::StoreOptions& options);
}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_REMOTE_STORE_H_
