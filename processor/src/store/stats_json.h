// The store's stats as JSON (the format rs_store_stats_json returns, see
// docs/store.md "Stats"), shared by the local store (store.cc) and the remote
// one (remote_store.cc).
#ifndef RECSTRATA_STORE_STATS_JSON_H_
#define RECSTRATA_STORE_STATS_JSON_H_

#include <string>

#include "store/store.h"

namespace rs {
namespace store {
std::string StoreStatsJson(const StoreStats& s);
}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_STATS_JSON_H_
