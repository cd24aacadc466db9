// The union of a multi-worker run's shard snapshots (ckpt-N.dyn.w<k>: worker k
// holds the rows of the ids it owns, disjoint from the other shards) in one
// store: DynamicStore::RestoreUnion and DynamicTable::MergeShard
// (tfops/dynamic_table.h). Used to load a multi-worker checkpoint for
// inference and export.
#include <algorithm>
#include <unistd.h>

#include "tfops/dyn_errors.h"
#include "tfops/dynamic_table.h"
#include "tfops/store_files.h"

namespace rs {
namespace tfops {

void DynamicTable::MergeShard(rs_table* src, const std::string& state_path) {
  // the shard's state through a scratch table of the same configuration
  DynamicTable shard(name_, store_, cfg_);
  shard.LoadState(state_path);
  std::vector<int64_t> keys;
  keys.reserve(shard.meta_.size());
  for (const auto& kv : shard.meta_) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());
  std::lock_guard<std::mutex> g(mu_);
  for (int64_t k : keys)
    if (meta_.count(k)) Fail(name_ + ": id " + std::to_string(k) + " is in two shards (" + state_path + ")");
  const size_t n = keys.size(), d = static_cast<size_t>(row_dim());
  if (n) {
    std::vector<float> rows(n * d);
    std::vector<uint8_t> found(n);
    rs_error* err = nullptr;
    CheckCall([&] { return rs_table_lookup(src, keys.data(), n, rows.data(), found.data(), &err); }, err,
              name_ + ": shard lookup");
    for (size_t i = 0; i < n; ++i)
      if (!found[i]) Fail(name_ + ": shard " + state_path + " lists id " + std::to_string(keys[i]) + " without a row");
    CheckCall([&] { return rs_table_upsert(table_, keys.data(), n, rows.data(), &err); }, err, name_ + ": upsert");
  }
  for (int64_t k : keys) meta_[k] = shard.meta_[k];
  const TableStats& s = shard.stats_;
  stats_.step = std::max(stats_.step, s.step);
  stats_.admitted += s.admitted, stats_.evicted_cap += s.evicted_cap, stats_.evicted_age += s.evicted_age;
  stats_.updates += s.updates, stats_.lookups += s.lookups, stats_.lookup_hits += s.lookup_hits;
  auto& mine = sketch_.counters();
  const auto& theirs = shard.sketch_.counters();
  for (size_t i = 0; i < mine.size() && i < theirs.size(); ++i)   // disjoint ids: still never under
    mine[i] = static_cast<uint16_t>(std::min<uint32_t>(uint32_t{mine[i]} + theirs[i], 0xffff));
}

void DynamicStore::RestoreUnion(const std::vector<std::string>& snap_dirs) {
  if (snap_dirs.empty()) Fail("dynamic store " + dir_ + ": no shard snapshots to restore");
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    for (const auto& d : snap_dirs) CheckSnapshotLocked(d);
  }
  Restore(snap_dirs[0]);
  std::unique_lock<std::shared_mutex> lock(mu_);
  for (size_t i = 1; i < snap_dirs.size(); ++i) {
    // open a hard-linked copy of the shard's store (the snapshot itself stays untouched)
    const std::string tmp = dir_ + ".shard" + std::to_string(i) + "-" + std::to_string(::getpid());
    RemoveTree(tmp);
    CloneStoreDir(snap_dirs[i] + "/store", tmp);
    rs_store* shard = nullptr;
    rs_error* err = nullptr;
    try {
      CheckCall([&] { return rs_store_open(tmp.c_str(), options_.c_str(), &shard, &err); }, err,
                "dynamic shard " + snap_dirs[i]);
      for (auto& kv : tables_) {
        rs_table* t = nullptr;
        CheckCall([&] { return rs_store_table(shard, kv.first.c_str(), &t, &err); }, err,
                  "dynamic shard " + snap_dirs[i] + ": table " + kv.first);
        if (rs_table_dim(t) != kv.second->row_dim())
          Fail("dynamic shard " + snap_dirs[i] + ": table " + kv.first + " has another row width");
        kv.second->MergeShard(t, snap_dirs[i] + "/state/" + kv.first + ".bin");
      }
    } catch (...) {
      if (shard) rs_store_close(shard);
      RemoveTree(tmp);
      throw;
    }
    rs_store_close(shard);
    RemoveTree(tmp);
  }
}

}  // namespace tfops
}  // namespace rs
