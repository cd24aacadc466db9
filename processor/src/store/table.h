// TableImpl: one table — DRAM tier + (optional) SSD hash tier + write path.
// The public contract is rs::store::Table in store.h. Implementation split:
//   table.cc       lookups, writes, stats
//   recovery.cc    rebuilding the index from data files at open
//   compaction.cc  rewriting files whose stale share passed the threshold
#ifndef RECSTRATA_STORE_TABLE_H_
#define RECSTRATA_STORE_TABLE_H_

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/data_file.h"
#include "store/direct_index.h"
#include "store/dram_tier.h"
#include "store/epoch.h"
#include "store/file_slots.h"
#include "store/hash_index.h"
#include "store/store.h"

namespace rs {
namespace store {

enum class CompactionMode { kAsync, kSync, kOff };

// Tier and file settings shared by every table of a store: the store
// resolves them once from its options (store.cc) and each table copies them.
struct TierOptions {
  bool ssd_tier = false;  // tiers "dram+ssd": DRAM is a bounded cache
  uint64_t dram_capacity_bytes = 64ull << 20;
  CachePolicy policy = CachePolicy::kLfu;
  CompactionMode compaction = CompactionMode::kAsync;
  double stale_ratio = 0.34;
  bool fsync = true;
  uint64_t file_target_bytes = 64ull << 20;
  bool use_mmap = true;
  int shard_bits = 4;
  bool skip_corrupt = false;
  bool doorkeeper = true;  // admit SSD rows on their second miss (TinyLFU doorkeeper)
  bool repair = false;       // recovery "repair": keep valid records, rewrite damaged files
  bool verify_full = false;  // verify "full": record required, whole-file CRC-32C compared
};

// A table's state at a clean close (store.proto TableState, decoded).
struct FileRecord {
  uint64_t file_no = 0, size = 0;
  uint32_t crc = 0;
};
struct TableRecord {
  uint64_t rows = 0, last_seq = 0;
  std::vector<FileRecord> files;
};

struct TableConfig : TierOptions {
  uint32_t id = 0;
  std::string name;
  int32_t dim = 0;
  std::vector<float> default_value;  // dim floats
  uint64_t dense_keys = 0;           // keys [0, dense_keys) use a DirectIndex (0: none)
  std::string dir;                   // t<id>/ folder; "" = volatile (no files)
};

class TableImpl final : public Table {
 public:
  static constexpr uint32_t kMaxFiles = FileSlots::kMaxSlots;

  TableImpl(TableConfig cfg, EpochDomain* epoch, std::atomic<uint64_t>* last_seq);
  ~TableImpl() override;

  // Rebuilds the index from the table's data files (recovery.cc). `clean`:
  // the table's clean-close record, nullptr after a crash (or for a new
  // table). Appends what it left out to *dropped. Returns the highest
  // sequence number of the table. Throws RS_ERR_CORRUPTION naming file and
  // offset for damage (unless cfg.repair / cfg.skip_corrupt).
  uint64_t Recover(const TableRecord* clean, std::vector<DroppedData>* dropped);
  // "repair": rewrites every file recovery found damaged without its bad
  // records (compaction.cc); the damaged file is renamed to *.corrupt.
  void RewriteDamaged();
  // For a clean close: syncs every written file, cuts bytes past the last
  // committed batch (a failed write), and returns files, sizes, CRCs, rows.
  TableRecord Seal();

  const std::string& name() const override { return cfg_.name; }
  int32_t dim() const override { return cfg_.dim; }
  void Lookup(const int64_t* keys, size_t n, float* out, uint8_t* found) const override;
  void Upsert(const int64_t* keys, size_t n, const float* rows) override;
  void Delete(const int64_t* keys, size_t n) override;
  void BulkLoad(const int64_t* keys, size_t n, const float* rows) override;
  TableStats Stats() const override;

  // Compacts one file past the stale threshold (compaction.cc); false when
  // there is none. Serialized by compact_mu_; never blocks readers, holds
  // the write mutex only to swing index entries.
  bool CompactOnce();
  bool CompactFile(DataFile* victim, uint64_t min_other_seq);
  bool has_files() const { return !cfg_.dir.empty(); }
  void Sync();  // fdatasync the append file
  // Set by the store: called after a committed batch in async mode.
  std::function<void()> notify_compactor;
  // Set by the store: called before any data file is changed (removes the
  // clean-close record from the MANIFEST first). Called with the write mutex
  // or the compaction mutex held; takes the store's mutex.
  std::function<void()> before_change;

 private:
  enum WriteKind { kPut, kTombstone, kBulk };
  void Write(const int64_t* keys, size_t n, const float* rows, WriteKind kind);
  // SSD index access (shards share the DRAM tier's hash split).
  ShardIndex& ssd(uint64_t h) { return *ssd_[cfg_.shard_bits ? h >> (64 - cfg_.shard_bits) : 0]; }
  const ShardIndex& ssd(uint64_t h) const {
    return *ssd_[cfg_.shard_bits ? h >> (64 - cfg_.shard_bits) : 0];
  }
  // The SSD index of a key: the direct array for dense keys, else the hash shards.
  bool InDirect(int64_t key) const { return direct_ && direct_->Covers(key); }
  uint64_t IndexFind(int64_t key, uint64_t h) const {
    return InDirect(key) ? direct_->Find(key) : ssd(h).Find(key, h);
  }
  void IndexPrefetch(int64_t key, uint64_t h) const {
    if (InDirect(key)) direct_->Prefetch(key);
    else ssd(h).Prefetch(h);
  }
  uint64_t IndexUpsert(int64_t key, uint64_t h, uint64_t loc) {
    return InDirect(key) ? direct_->Upsert(key, loc) : ssd(h).Upsert(key, h, loc);
  }
  uint64_t IndexErase(int64_t key, uint64_t h) {
    return InDirect(key) ? direct_->Erase(key) : ssd(h).Erase(key, h);
  }
  DataFile* file(uint32_t slot) const { return files_.Get(slot); }
  uint32_t AllocFileSlot();
  std::string FilePath(uint64_t file_no, bool tmp) const;
  DataFile* ActiveFileFor(uint64_t bytes, uint64_t seq);
  // Points the index at a new record; accounts the record it replaces.
  void IndexRecord(int64_t key, uint64_t h, uint64_t loc, DataFile* f);
  uint64_t SeqOfLoc(uint64_t loc) const;
  void RetireFile(DataFile* f);
  void ReclaimFiles();
  void LoadAllIntoDram();
  [[noreturn]] void CorruptRecord(int64_t key, uint64_t loc) const;
  // Doorkeeper: true if `h` was seen missing before in the current window
  // (then the row is admitted); otherwise remembers it. *added counts new bits.
  bool DoorkeeperPass(uint64_t h, uint64_t* added) const;
  void DoorkeeperAdded(uint64_t added) const;

  TableConfig cfg_;
  EpochDomain* epoch_;
  std::atomic<uint64_t>* last_seq_;
  uint32_t rec_size_;
  std::unique_ptr<DramTier> dram_;
  std::vector<std::unique_ptr<ShardIndex>> ssd_;
  std::unique_ptr<DirectIndex> direct_;  // cfg_.dense_keys > 0
  FileSlots files_;  // used only when has_files()
  std::vector<uint32_t> free_file_slots_;
  uint32_t file_slots_used_ = 0;

  mutable std::mutex write_mu_;  // one committed batch at a time; file table
  std::mutex compact_mu_;
  DataFile* active_ = nullptr;
  uint64_t next_file_no_ = 1;
  std::deque<std::pair<DataFile*, uint64_t>> retired_files_;
  std::vector<char> wbuf_;

  // Counters (relaxed atomics; writer-owned ones are written under write_mu_).
  std::atomic<uint64_t> live_rows_{0};
  mutable std::atomic<uint64_t> dram_hits_{0}, dram_misses_{0}, ssd_hits_{0}, ssd_misses_{0};
  mutable std::atomic<uint64_t> corrupt_records_{0};
  // Doorkeeper bitset (dram+ssd): 2^door_bits_ bits, cleared every
  // door_reset_ insertions so it remembers a recent window of misses.
  std::unique_ptr<std::atomic<uint64_t>[]> door_;
  uint32_t door_bits_ = 0;
  uint64_t door_reset_ = 0;
  mutable std::atomic<uint64_t> door_adds_{0};
  std::atomic<uint64_t> payload_written_{0}, disk_written_{0};
  std::atomic<uint64_t> compactions_{0}, compaction_written_{0};
  uint64_t recovered_records_ = 0, truncated_bytes_ = 0;
  uint64_t table_seq_ = 0;  // highest sequence written to this table (writer-owned)
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_TABLE_H_
