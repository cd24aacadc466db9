// Dynamic embedding tables for training: rows keyed by raw ids in the native
// tiered store (recstrata.h rs_store_*), created on admission, evicted by age
// and frequency, trained with row-wise Adagrad whose accumulator lives in the
// row itself: a store row is [embedding (width) | accumulator (width)].
//
// One DynamicStore (one rs_store directory) holds every dynamic table of a
// worker and is shared by the worker's replicas. A training step is:
//   1. every replica Lookup()s its unique ids (read-only: admitted ids get
//      their embedding, others zeros);
//   2. every replica Contribute()s its ids, occurrence counts and row
//      gradients; the last of the num_replicas contributions of the step
//      applies them all at once (gradients summed per id over the replicas in
//      replica order, so the update is deterministic and equals one replica
//      training the whole batch), counts the occurrences into the admission
//      sketch, creates the rows of ids whose count reached the threshold,
//      and evicts (row cap every step, age every evict_every_steps).
// Snapshot() closes the store cleanly, hard-links its files (append-only, so
// a cleanly closed file never changes again: a reopened store appends to new
// files) plus every table's admission/eviction state into a directory, and
// reopens. Restore() replaces the working store by such a snapshot.
//
// Thread safety: Lookup may run on any number of threads, concurrently with
// Contribute (a step's apply runs only after all its lookups, by
// construction of the step). Contribute/Evict/stats are serialized per table.
// Snapshot/Restore/Close take the store exclusively (they wait for running
// lookups and applies to finish).
//
// Implementation: dynamic_table.cc (lookup, apply, eviction),
// dynamic_table_state.cc (the state file), dynamic_store.cc (the store and
// the registry), dynamic_union.cc (the union of multi-worker shards),
// store_files.cc (CloneStoreDir and directory helpers).
#ifndef RECSTRATA_TFOPS_DYNAMIC_TABLE_H_
#define RECSTRATA_TFOPS_DYNAMIC_TABLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "recstrata.h"
#include "tfops/count_min.h"

extern "C" {
// Mirrored by recstrata.training.dynamic (ctypes): keep the field order.
typedef struct rsdyn_table_config {
  int32_t width;                // embedding columns (the accumulator has as many)
  int32_t num_replicas;         // contributions per step
  int64_t seed;                 // initial rows: N(0, init_stddev) from (seed, id, column)
  double init_stddev;
  int64_t admit_threshold;      // occurrences before a row is created (<= 1: at once)
  int64_t sketch_depth;         // count-min rows (threshold > 1)
  int64_t sketch_width;         // counters per row, a power of two
  int64_t max_rows;             // row cap (0 = none): evict down to 90% when passed
  int64_t ttl_steps;            // evict rows not updated for more steps (0 = never)
  int64_t evict_every_steps;    // age pass period
  double age_scale_steps;       // cap eviction score = freq / (1 + age / age_scale)
  double learning_rate;         // Adagrad
  double initial_accumulator;
  double epsilon;
  int64_t dram_capacity_bytes;  // DRAM tier budget of this table (store option)
} rsdyn_table_config;
}

namespace rs {
namespace tfops {

struct DynError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class DynamicStore;

struct RowMeta {
  int64_t last_step;  // step of the last update (or creation)
  uint64_t freq;      // steps the row was updated in
};

struct TableStats {
  int64_t step = 0;
  uint64_t rows = 0, admitted = 0, evicted_cap = 0, evicted_age = 0, updates = 0;
  uint64_t lookups = 0, lookup_hits = 0;
};

class DynamicTable {
 public:
  DynamicTable(std::string name, DynamicStore* store, const rsdyn_table_config& cfg);

  const std::string& name() const { return name_; }
  int32_t width() const { return cfg_.width; }
  int32_t row_dim() const { return 2 * cfg_.width; }

  // out [n, width]: the embedding of each key, zeros for keys without a row.
  void Lookup(const int64_t* keys, size_t n, float* out);
  // See the file comment; returns the step number when this contribution
  // completed the step (the update ran), else -1.
  int64_t Contribute(int replica, const int64_t* keys, const int64_t* counts,
                     const float* grads, size_t n);
  // Age pass now plus the cap; returns the rows evicted.
  int64_t Evict();
  TableStats Stats();
  void SaveState(const std::string& path);
  void LoadState(const std::string& path);
  // Adds the rows of another shard (its table `src`, its state file `state_path`) to this
  // table: rows and eviction metadata copied, counters and sketch summed, step the maximum.
  // The shards must hold disjoint ids (tfops/dynamic_union.cc).
  void MergeShard(rs_table* src, const std::string& state_path);

  // The store (re)binds the table's rs_table after an open.
  void Bind(rs_table* t) { table_ = t; }
  void ClearPending();

 private:
  struct Pending {
    bool present = false;
    std::vector<int64_t> keys, counts;
    std::vector<float> grads;
  };
  void ApplyLocked();
  int64_t EvictLocked(bool age_pass);
  void InitRow(int64_t key, float* row) const;

  std::string name_;
  DynamicStore* store_;
  rsdyn_table_config cfg_;
  rs_table* table_ = nullptr;
  std::mutex mu_;
  std::vector<Pending> pending_;
  int pending_count_ = 0;
  CountMinSketch sketch_;
  std::unordered_map<int64_t, RowMeta> meta_;
  TableStats stats_;
};

class DynamicStore {
 public:
  DynamicStore(std::string dir, std::string options_json);
  ~DynamicStore();

  const std::string& dir() const { return dir_; }
  std::shared_mutex& mu() { return mu_; }
  // Creates (or, when the store already holds it, reuses) table `name`.
  std::shared_ptr<DynamicTable> CreateTable(const std::string& name, const rsdyn_table_config& cfg);
  void Snapshot(const std::string& out_dir);
  void Restore(const std::string& snap_dir);
  // Replaces every table by the union of shard snapshots (a multi-worker checkpoint's
  // ckpt-N.dyn.w<k>, disjoint ids), for inference and export (tfops/dynamic_union.cc).
  void RestoreUnion(const std::vector<std::string>& snap_dirs);
  void Close();
  std::string StatsJson();

 private:
  void OpenLocked();
  void CheckSnapshotLocked(const std::string& snap_dir);
  std::string dir_, options_;
  std::shared_mutex mu_;
  rs_store* store_ = nullptr;
  std::map<std::string, std::shared_ptr<DynamicTable>> tables_;
};

// Copies the files of a cleanly closed store directory `src` into `dst`
// (created): data files as hard links (a copy across file systems), the
// MANIFEST as a copy, the LOCK file skipped.
void CloneStoreDir(const std::string& src, const std::string& dst);

// Process-wide registry: stores by id, tables by "<store id>/<table>".
std::shared_ptr<DynamicStore> OpenStore(const std::string& id, const std::string& dir,
                                        const std::string& options_json);
std::shared_ptr<DynamicStore> FindStore(const std::string& id);
std::shared_ptr<DynamicTable> FindTable(const std::string& key);
void RegisterTable(const std::string& key, std::shared_ptr<DynamicTable> t);
void CloseStore(const std::string& id);

}  // namespace tfops
}  // namespace rs

#endif  // RECSTRATA_TFOPS_DYNAMIC_TABLE_H_
