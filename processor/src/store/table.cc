#include "store/table.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/status.h"

namespace rs {
namespace store {
namespace {

// Per-thread scratch of the lookup path: reused, so lookups allocate nothing
// once a thread has seen its largest batch.
struct LookupScratch {
  std::vector<uint32_t> misses;
  std::vector<char> record;
};
LookupScratch& Scratch() {
  thread_local LookupScratch s;
  return s;
}

inline void PrefetchRow(const float* p, int32_t dim) {
  const char* c = reinterpret_cast<const char*>(p);
  for (int32_t b = 0; b < dim * 4; b += 64) __builtin_prefetch(c + b);
}

}  // namespace

TableImpl::TableImpl(TableConfig cfg, EpochDomain* epoch, std::atomic<uint64_t>* last_seq)
    : cfg_(std::move(cfg)), epoch_(epoch), last_seq_(last_seq), rec_size_(RecordSize(cfg_.dim)) {
  uint64_t cap = cfg_.ssd_tier ? cfg_.dram_capacity_bytes : 0;
  dram_.reset(new DramTier(cfg_.dim, cfg_.shard_bits, cap, cfg_.policy, epoch_));
  if (has_files()) {
    size_t n = size_t{1} << cfg_.shard_bits;
    for (size_t i = 0; i < n; ++i) ssd_.emplace_back(new ShardIndex(epoch_));
    if (cfg_.dense_keys) direct_.reset(new DirectIndex(cfg_.dense_keys));
  }
  if (cfg_.default_value.empty()) cfg_.default_value.assign(cfg_.dim, 0.0f);
  if (cfg_.ssd_tier && cfg_.doorkeeper) {
    uint64_t cap_rows = std::max<uint64_t>(1, dram_->capacity_rows());
    door_bits_ = 16;
    while (door_bits_ < 26 && (1ull << door_bits_) < 8 * cap_rows) ++door_bits_;
    door_reset_ = (1ull << door_bits_) / 4;
    size_t words = (size_t{1} << door_bits_) / 64;
    door_.reset(new std::atomic<uint64_t>[words]());  // value-initialized: all zero
  }
}

bool TableImpl::DoorkeeperPass(uint64_t h, uint64_t* added) const {
  if (!door_) return true;
  // Bits from the middle of the hash: the top ones pick the shard, the low
  // ones the index bucket.
  uint64_t bit = (h >> 20) & ((1ull << door_bits_) - 1);
  std::atomic<uint64_t>& w = door_[bit >> 6];
  uint64_t m = 1ull << (bit & 63);
  if (w.load(std::memory_order_relaxed) & m) return true;
  w.fetch_or(m, std::memory_order_relaxed);
  ++*added;
  return false;
}

void TableImpl::DoorkeeperAdded(uint64_t added) const {
  if (!door_ || added == 0) return;
  if (door_adds_.fetch_add(added, std::memory_order_relaxed) + added >= door_reset_) {
    door_adds_.store(0, std::memory_order_relaxed);
    size_t words = (size_t{1} << door_bits_) / 64;
    for (size_t i = 0; i < words; ++i) door_[i].store(0, std::memory_order_relaxed);
  }
}

TableImpl::~TableImpl() {
  // Retired files are still in their slots.
  for (uint32_t i = 0; i < file_slots_used_; ++i) delete files_.Get(i);
}

// ---------------------------------------------------------------- lookups --

[[noreturn]] void TableImpl::CorruptRecord(int64_t key, uint64_t loc) const {
  corrupt_records_.fetch_add(1, std::memory_order_relaxed);
  DataFile* f = file(LocSlot(loc));
  Fail(RS_ERR_CORRUPTION, "table '" + cfg_.name + "': checksum mismatch reading key " +
                              std::to_string(key) + " at " + (f ? f->path() : "?") + ":" +
                              std::to_string(LocOffset(loc)));
}

void TableImpl::Lookup(const int64_t* keys, size_t n, float* out, uint8_t* found) const {
  if (n == 0) return;
  if (keys == nullptr || out == nullptr) Fail(RS_ERR_INVALID_ARGUMENT, "lookup: null keys or out");
  const int32_t dim = cfg_.dim;
  const size_t row_bytes = 4ull * dim;
  LookupScratch& sc = Scratch();
  sc.misses.clear();
  uint64_t hits = 0;
  EpochGuard guard(*epoch_);
  // The DRAM tier's LFU increments draw from this batch-local generator (no
  // thread-local access per hit).
  uint64_t rnd = DramTier::RandomSeed();
  // Software pipeline over the batch: key i + 2D has its index bucket
  // prefetched while key i + D is probed (and its row prefetched) and key i
  // is copied, so ~2D independent cache misses are in flight at a time.
  constexpr size_t D = 16;
  constexpr size_t W = 4 * D;  // ring of in-flight hashes / row pointers
  uint64_t h[W];
  const float* p[W];
  const size_t pre = std::min(n, 2 * D);
  for (size_t i = 0; i < pre; ++i) {
    h[i % W] = HashKey(keys[i]);
    dram_->PrefetchIndex(h[i % W]);
  }
  for (size_t i = 0; i < std::min(n, D); ++i) {
    p[i % W] = dram_->Find(keys[i], h[i % W], &rnd);
    if (p[i % W]) PrefetchRow(p[i % W], dim);
  }
  for (size_t i = 0; i < n; ++i) {
    if (i + 2 * D < n) {
      const size_t f = (i + 2 * D) % W;
      h[f] = HashKey(keys[i + 2 * D]);
      dram_->PrefetchIndex(h[f]);
    }
    if (i + D < n) {
      const size_t f = (i + D) % W;
      p[f] = dram_->Find(keys[i + D], h[f], &rnd);
      if (p[f]) PrefetchRow(p[f], dim);
    }
    const float* row = p[i % W];
    float* dst = out + i * dim;
    if (row) {
      std::memcpy(dst, row, row_bytes);
      if (found) found[i] = 1;
      ++hits;
    } else {
      sc.misses.push_back(static_cast<uint32_t>(i));
    }
  }
  uint64_t ssd_hits = 0, absent = 0;
  if (!cfg_.ssd_tier) {
    for (uint32_t i : sc.misses) {
      std::memcpy(out + static_cast<size_t>(i) * dim, cfg_.default_value.data(), row_bytes);
      if (found) found[i] = 0;
    }
    absent = sc.misses.size();
  } else {
    if (sc.record.size() < rec_size_) sc.record.resize(rec_size_);
    uint64_t door_added = 0;
    // Misses in blocks of 16: prefetch their SSD index buckets, then probe
    // and prefetch their records, then verify and copy — overlapping the
    // cache and TLB misses of a block instead of taking them one by one.
    constexpr size_t MB = 16;
    uint64_t mh[MB], mloc[MB];
    const size_t nm = sc.misses.size();
    for (size_t base = 0; base < nm; base += MB) {
      const size_t cnt = std::min(MB, nm - base);
      for (size_t j = 0; j < cnt; ++j) {
        mh[j] = HashKey(keys[sc.misses[base + j]]);
        IndexPrefetch(keys[sc.misses[base + j]], mh[j]);
      }
      for (size_t j = 0; j < cnt; ++j) {
        mloc[j] = IndexFind(keys[sc.misses[base + j]], mh[j]);
        if (mloc[j] != kEmptyVal && !LocIsTombstone(mloc[j])) {
          if (DataFile* pf = file(LocSlot(mloc[j]))) pf->Prefetch(LocOffset(mloc[j]), rec_size_);
        }
      }
      for (size_t j = 0; j < cnt; ++j) {
        const uint32_t i = sc.misses[base + j];
        const int64_t key = keys[i];
        const uint64_t h = mh[j];
        float* dst = out + static_cast<size_t>(i) * dim;
        const uint64_t loc = mloc[j];
        if (loc == kEmptyVal || LocIsTombstone(loc)) {
          std::memcpy(dst, cfg_.default_value.data(), row_bytes);
          if (found) found[i] = 0;
          ++absent;
          continue;
        }
        DataFile* f = file(LocSlot(loc));
        const char* rec = f ? f->RecordPtr(LocOffset(loc), rec_size_, sc.record.data()) : nullptr;
        RecordView rv;
        if (rec == nullptr || !DecodeRecord(rec, dim, &rv) || rv.key != key ||
            (rv.meta & kTombstoneBit)) {
          CorruptRecord(key, loc);
        }
        std::memcpy(dst, rv.vec, row_bytes);
        if (found) found[i] = 1;
        ++ssd_hits;
        // Admission: on the key's second recent miss (the doorkeeper keeps
        // one-off tail ids out of the cache), and only if the index still
        // points at what we read (a writer may have replaced the row
        // meanwhile; see DramTier::AdmitIf).
        if (DoorkeeperPass(h, &door_added)) {
          dram_->AdmitIf(key, h, dst, [&] { return IndexFind(key, h) == loc; });
        }
      }
    }
    DoorkeeperAdded(door_added);
  }
  dram_hits_.fetch_add(hits, std::memory_order_relaxed);
  dram_misses_.fetch_add(sc.misses.size(), std::memory_order_relaxed);
  if (ssd_hits) ssd_hits_.fetch_add(ssd_hits, std::memory_order_relaxed);
  if (absent) ssd_misses_.fetch_add(absent, std::memory_order_relaxed);
}

// ----------------------------------------------------------------- writes --

uint32_t TableImpl::AllocFileSlot() {
  if (!free_file_slots_.empty()) {
    uint32_t s = free_file_slots_.back();
    free_file_slots_.pop_back();
    return s;
  }
  if (file_slots_used_ >= kMaxFiles) {
    Fail(RS_ERR_RESOURCE_EXHAUSTED, "table '" + cfg_.name + "': too many data files");
  }
  return file_slots_used_++;
}

std::string TableImpl::FilePath(uint64_t file_no, bool tmp) const {
  char name[32];
  std::snprintf(name, sizeof(name), "%08llx.%s", static_cast<unsigned long long>(file_no),
                tmp ? "tmp" : "dat");
  return cfg_.dir + "/" + name;
}

DataFile* TableImpl::ActiveFileFor(uint64_t bytes, uint64_t seq) {
  if (active_) {
    uint64_t size = active_->size();
    bool fresh = size == kFileHeaderSize;
    bool fits = size + bytes <= active_->map_capacity() || !cfg_.use_mmap;
    bool under_target = fresh || size + bytes <= cfg_.file_target_bytes;
    bool seq_ok = seq - active_->base_seq() <= kSeqDeltaMax;
    if (fits && under_target && seq_ok) return active_;
    if (fresh && seq_ok && !cfg_.use_mmap) return active_;
  }
  FileHeader h{};
  h.format_version = kFormatVersion;
  h.kind = kAppendFile;
  h.table_id = cfg_.id;
  h.dim = cfg_.dim;
  h.file_no = next_file_no_++;
  h.base_seq = seq;
  h.record_size = rec_size_;
  uint64_t cap = std::max<uint64_t>(cfg_.file_target_bytes, kFileHeaderSize + bytes) + (1u << 20);
  auto f = DataFile::Create(FilePath(h.file_no, false), h, cap, cfg_.use_mmap, cfg_.fsync);
  if (cfg_.fsync) SyncDir(cfg_.dir);
  disk_written_.fetch_add(kFileHeaderSize, std::memory_order_relaxed);
  DataFile* raw = f.release();
  raw->slot = AllocFileSlot();
  files_.Set(raw->slot, raw);
  active_ = raw;
  return raw;
}

uint64_t TableImpl::SeqOfLoc(uint64_t loc) const {
  DataFile* f = file(LocSlot(loc));
  thread_local std::vector<char> scratch;
  if (scratch.size() < rec_size_) scratch.resize(rec_size_);
  const char* rec = f ? f->RecordPtr(LocOffset(loc), rec_size_, scratch.data()) : nullptr;
  if (!rec) return 0;
  uint32_t meta;
  std::memcpy(&meta, rec + 4, 4);
  return f->base_seq() + (meta & kSeqDeltaMax);
}

void TableImpl::IndexRecord(int64_t key, uint64_t h, uint64_t loc, DataFile* f) {
  uint64_t old = IndexUpsert(key, h, loc);
  f->live++;
  if (old != kEmptyVal) {
    DataFile* of = file(LocSlot(old));
    if (of) of->live--;
  }
  bool was_live = old != kEmptyVal && !LocIsTombstone(old);
  bool is_live = !LocIsTombstone(loc);
  if (is_live && !was_live) live_rows_.fetch_add(1, std::memory_order_relaxed);
  if (!is_live && was_live) live_rows_.fetch_sub(1, std::memory_order_relaxed);
}

void TableImpl::Write(const int64_t* keys, size_t n, const float* rows, WriteKind kind) {
  if (n == 0) return;
  if (keys == nullptr || (kind != kTombstone && rows == nullptr)) {
    Fail(RS_ERR_INVALID_ARGUMENT, "write: null keys or rows");
  }
  const int32_t dim = cfg_.dim;
  const size_t row_floats = static_cast<size_t>(dim);
  const bool tomb = kind == kTombstone;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    std::vector<int64_t> present;
    if (tomb) {  // a delete writes tombstones only for keys that exist
      for (size_t i = 0; i < n; ++i) {
        uint64_t h = HashKey(keys[i]);
        bool exists = has_files() ? [&] {
          uint64_t loc = IndexFind(keys[i], h);
          return loc != kEmptyVal && !LocIsTombstone(loc);
        }() : dram_->Find(keys[i], h) != nullptr;
        if (exists) present.push_back(keys[i]);
      }
      std::sort(present.begin(), present.end());
      present.erase(std::unique(present.begin(), present.end()), present.end());
      if (present.empty()) return;
      keys = present.data();
      n = present.size();
    }
    const uint64_t seq = last_seq_->load(std::memory_order_relaxed) + 1;
    if (has_files()) {
      if (before_change) before_change();
      const uint64_t bytes = static_cast<uint64_t>(n) * rec_size_;
      DataFile* f;
      std::unique_ptr<DataFile> bulk;
      if (kind == kBulk) {
        // A sealed file of its own, written sequentially and renamed into
        // place only when complete: the bulk load is one atomic batch.
        FileHeader hd{};
        hd.format_version = kFormatVersion;
        hd.kind = kSealedFile;
        hd.table_id = cfg_.id;
        hd.dim = dim;
        hd.file_no = next_file_no_++;
        hd.base_seq = seq;
        hd.record_size = rec_size_;
        bulk = DataFile::Create(FilePath(hd.file_no, true), hd, 0, false, false);
        f = bulk.get();
      } else {
        f = ActiveFileFor(bytes, seq);
      }
      const uint64_t start = f->size();
      const uint32_t delta = static_cast<uint32_t>(seq - f->base_seq());
      // Encode and write in pieces of <= 8 MiB (one piece for normal batches).
      const size_t per_piece = std::max<size_t>(1, (8u << 20) / rec_size_);
      for (size_t done = 0; done < n;) {
        size_t m = std::min(per_piece, n - done);
        wbuf_.resize(m * rec_size_);
        for (size_t j = 0; j < m; ++j) {
          size_t i = done + j;
          uint32_t meta = delta | (tomb ? kTombstoneBit : 0) | (i + 1 == n ? kBatchEndBit : 0);
          EncodeRecord(wbuf_.data() + j * rec_size_, dim, meta, keys[i],
                       tomb ? nullptr : rows + i * row_floats);
        }
        if (kind == kBulk) {
          f->Append(wbuf_.data(), wbuf_.size());
        } else {
          f->WriteAt(start + done * rec_size_, wbuf_.data(), wbuf_.size());
        }
        done += m;
      }
      if (kind == kBulk) {
        f->Sync();
        f->Rename(FilePath(f->file_no(), false));
        SyncDir(cfg_.dir);
        // Reopen through the normal path so reads use the configured path.
        std::string path = f->path();
        const uint32_t crc = f->crc;
        const uint64_t crc_len = f->crc_len;
        bulk.reset();
        bulk = DataFile::Open(path, cfg_.use_mmap);
        if (!bulk) Fail(RS_ERR_IO, "bulk load file vanished: " + path);
        f = bulk.release();
        f->crc = crc;
        f->crc_len = crc_len;
        f->slot = AllocFileSlot();
        files_.Set(f->slot, f);
      } else {
        if (cfg_.fsync) f->Sync();
        f->SetSize(start + bytes);  // committed: now visible to readers
      }
      f->records += n;
      table_seq_ = seq;
      last_seq_->store(seq, std::memory_order_relaxed);
      if (kind == kBulk) {  // presize the hash shards for the keys the direct index does not cover
        size_t hashed = 0;
        for (size_t i = 0; i < n; ++i) hashed += InDirect(keys[i]) ? 0 : 1;
        if (hashed)
          for (auto& s : ssd_) s->Reserve(hashed >> cfg_.shard_bits);
      }
      for (size_t i = 0; i < n; ++i) {
        const uint64_t h = HashKey(keys[i]);
        IndexRecord(keys[i], h, MakeLoc(f->slot, start + i * rec_size_, tomb), f);
      }
      disk_written_.fetch_add(bytes, std::memory_order_relaxed);
    } else {
      last_seq_->store(seq, std::memory_order_relaxed);
    }
    // DRAM tier, after the SSD index (the order admission relies on).
    for (size_t i = 0; i < n; ++i) {
      const uint64_t h = HashKey(keys[i]);
      if (tomb) {
        if (!has_files() && dram_->Find(keys[i], h)) live_rows_.fetch_sub(1);
        dram_->Erase(keys[i], h);
      } else if (cfg_.ssd_tier) {
        if (kind == kBulk) {
          dram_->Erase(keys[i], h);  // no cache churn: drop stale copies only
        } else {
          dram_->ReplaceIfPresent(keys[i], h, rows + i * row_floats);
        }
      } else {
        if (!has_files() && !dram_->Find(keys[i], h)) live_rows_.fetch_add(1);
        dram_->Put(keys[i], h, rows + i * row_floats);
      }
    }
    payload_written_.fetch_add(n * (8 + 4ull * dim), std::memory_order_relaxed);
    epoch_->TryAdvance();
    ReclaimFiles();
  }
  if (has_files()) {
    if (cfg_.compaction == CompactionMode::kSync) {
      while (CompactOnce()) {
      }
    } else if (cfg_.compaction == CompactionMode::kAsync && notify_compactor) {
      notify_compactor();
    }
  }
}

void TableImpl::Upsert(const int64_t* keys, size_t n, const float* rows) {
  Write(keys, n, rows, kPut);
}
void TableImpl::Delete(const int64_t* keys, size_t n) { Write(keys, n, nullptr, kTombstone); }
void TableImpl::BulkLoad(const int64_t* keys, size_t n, const float* rows) {
  Write(keys, n, rows, has_files() ? kBulk : kPut);
}

void TableImpl::Sync() {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (active_) active_->Sync();
}

TableRecord TableImpl::Seal() {
  std::lock_guard<std::mutex> lock(write_mu_);
  TableRecord r;
  r.rows = live_rows_.load();
  r.last_seq = table_seq_;
  if (!has_files()) return r;
  std::vector<char> buf;
  for (uint32_t i = 0; i < file_slots_used_; ++i) {
    DataFile* f = file(i);
    if (!f || f->retired) continue;
    // Bytes past size() are a batch whose write failed: never committed.
    if (f->DiskSize() != f->size()) f->Truncate(f->size());
    if (f->dirty) f->Sync();
    if (f->crc_len != f->size()) {  // unknown (e.g. a torn tail was cut): compute
      buf.resize(1u << 20);
      uint32_t crc = 0;
      for (uint64_t at = 0; at < f->size();) {
        const uint64_t n = std::min<uint64_t>(buf.size(), f->size() - at);
        if (!f->ReadAt(at, n, buf.data())) Fail(RS_ERR_IO, "read " + f->path());
        crc = ExtendCrc32c(crc, buf.data(), n);
        at += n;
      }
      f->crc = crc;
      f->crc_len = f->size();
    }
    r.files.push_back({f->file_no(), f->size(), f->crc});
  }
  std::sort(r.files.begin(), r.files.end(),
            [](const FileRecord& a, const FileRecord& b) { return a.file_no < b.file_no; });
  return r;
}

// A retired file stays reachable through its slot (readers may hold a
// location into it) until the epoch says no reader can; then the slot is
// cleared and reused.
void TableImpl::RetireFile(DataFile* f) {
  f->retired = true;
  retired_files_.emplace_back(f, epoch_->current());
}

void TableImpl::ReclaimFiles() {
  while (!retired_files_.empty() && epoch_->IsSafe(retired_files_.front().second)) {
    DataFile* f = retired_files_.front().first;
    files_.Set(f->slot, nullptr);
    free_file_slots_.push_back(f->slot);
    delete f;
    retired_files_.pop_front();
  }
}

void TableImpl::LoadAllIntoDram() {
  std::vector<char> scratch(rec_size_);
  std::vector<float> row(cfg_.dim);
  auto load = [&](int64_t key, uint64_t loc) {
    if (LocIsTombstone(loc)) return;
    DataFile* f = file(LocSlot(loc));
    const char* rec = f ? f->RecordPtr(LocOffset(loc), rec_size_, scratch.data()) : nullptr;
    RecordView rv;
    if (!rec || !DecodeRecord(rec, cfg_.dim, &rv)) CorruptRecord(key, loc);
    std::memcpy(row.data(), rv.vec, 4ull * cfg_.dim);
    dram_->Put(key, HashKey(key), row.data());
  };
  if (direct_) direct_->ForEach(load);
  for (auto& s : ssd_) s->ForEach(load);
}

// ------------------------------------------------------------------ stats --

TableStats TableImpl::Stats() const {
  TableStats s;
  s.name = cfg_.name;
  s.dim = cfg_.dim;
  s.rows = live_rows_.load();
  s.dram_rows = dram_->rows();
  s.dram_bytes = dram_->bytes();
  s.dram_capacity_bytes = dram_->capacity_bytes();
  s.dram_hits = dram_hits_.load();
  s.dram_misses = dram_misses_.load();
  s.ssd_hits = ssd_hits_.load();
  s.ssd_misses = ssd_misses_.load();
  s.evictions = dram_->evictions();
  s.admissions = dram_->admissions();
  s.live_payload_bytes = s.rows * (8 + 4ull * cfg_.dim);
  s.payload_bytes_written = payload_written_.load();
  s.disk_bytes_written = disk_written_.load() + compaction_written_.load();
  s.write_amplification = s.payload_bytes_written
                              ? static_cast<double>(s.disk_bytes_written) / s.payload_bytes_written
                              : 0.0;
  s.compactions = compactions_.load();
  s.compaction_bytes_written = compaction_written_.load();
  s.corrupt_records = corrupt_records_.load();
  if (has_files()) {
    std::lock_guard<std::mutex> lock(write_mu_);
    s.index_bytes = direct_ ? direct_->bytes() : 0;
    for (const auto& shard : ssd_) s.index_bytes += shard->bytes();
  }
  if (has_files()) {
    std::lock_guard<std::mutex> lock(write_mu_);
    s.recovered_records = recovered_records_;
    s.truncated_bytes = truncated_bytes_;
    for (uint32_t i = 0; i < file_slots_used_; ++i) {
      DataFile* f = file(i);
      if (!f || f->retired) continue;
      s.files++;
      s.disk_bytes += f->size();
    }
  }
  return s;
}

}  // namespace store
}  // namespace rs
