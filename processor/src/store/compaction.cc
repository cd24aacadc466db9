// Compaction: rewrites the live records of a data file whose stale share
// (records the index no longer points to) passed the threshold, then drops
// the file. Runs in the writer's thread ("sync") or the store's background
// thread ("async"); never blocks readers:
//   1. pick a victim under the write mutex;
//   2. without the write mutex, copy the records the index still points to
//      into <no>.tmp, fsync it, rename it to <no>.dat, fsync the directory;
//   3. under the write mutex, swing each index entry that still points into
//      the victim to the copy (entries rewritten meanwhile are left alone),
//      unlink the victim and retire it: readers holding an old location keep
//      reading the old bytes until they leave their epoch.
// A tombstone is dropped instead of copied when no other file holds a record
// older than it (every file's base_seq is the smallest sequence it holds).
// A crash between 2 and 3 leaves both files; recovery resolves the duplicate
// records by sequence number. RewriteDamaged ("repair") runs the same copy on
// files recovery found damaged, leaving their bad records behind.
#include <algorithm>
#include <cstring>

#include "base/status.h"
#include "store/table.h"

namespace rs {
namespace store {

bool TableImpl::CompactOnce() {
  if (!has_files()) return false;
  std::lock_guard<std::mutex> clock(compact_mu_);
  DataFile* victim = nullptr;
  uint64_t min_other_seq = ~0ull;
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    double best = -1;
    for (uint32_t i = 0; i < file_slots_used_; ++i) {
      DataFile* f = file(i);
      if (!f || f->retired || f == active_ || f->no_compact || f->records == 0) continue;
      double stale = 1.0 - static_cast<double>(f->live) / static_cast<double>(f->records);
      if (stale >= cfg_.stale_ratio && stale > best) {
        best = stale;
        victim = f;
      }
    }
    if (!victim) return false;
    for (uint32_t i = 0; i < file_slots_used_; ++i) {
      DataFile* f = file(i);
      if (f && !f->retired && f != victim) min_other_seq = std::min(min_other_seq, f->base_seq());
    }
  }
  return CompactFile(victim, min_other_seq);
}

void TableImpl::RewriteDamaged() {
  if (!has_files()) return;
  std::lock_guard<std::mutex> clock(compact_mu_);
  for (;;) {
    DataFile* victim = nullptr;
    uint64_t min_other_seq = ~0ull;
    {
      std::lock_guard<std::mutex> lock(write_mu_);
      for (uint32_t i = 0; i < file_slots_used_ && !victim; ++i) {
        DataFile* f = file(i);
        if (f && !f->retired && f->damaged) victim = f;
      }
      if (!victim) return;
      for (uint32_t i = 0; i < file_slots_used_; ++i) {
        DataFile* f = file(i);
        if (f && !f->retired && f != victim) min_other_seq = std::min(min_other_seq, f->base_seq());
      }
    }
    CompactFile(victim, min_other_seq);
  }
}

// Copies the live records of `victim` into a new sealed file and retires it.
// Caller holds compact_mu_. A damaged victim's bad records are left behind
// and the file is renamed to *.corrupt instead of unlinked.
bool TableImpl::CompactFile(DataFile* victim, uint64_t min_other_seq) {
  if (before_change) before_change();

  // 2. Copy what the index still points to (the victim cannot be retired by
  // anyone else: only compaction retires files and we hold compact_mu_).
  struct Moved {
    int64_t key;
    uint64_t old_loc;
    uint64_t seq;
    uint32_t meta_flags;
    uint64_t src_off;
  };
  std::vector<Moved> keep, drop;
  const uint64_t size = victim->size();
  std::vector<char> scratch(rec_size_);
  {
    EpochGuard guard(*epoch_);
    for (uint64_t off = kFileHeaderSize; off + rec_size_ <= size; off += rec_size_) {
      const char* rec = victim->RecordPtr(off, rec_size_, scratch.data());
      RecordView rv;
      if (!rec || !DecodeRecord(rec, cfg_.dim, &rv)) {
        if (victim->damaged) continue;  // reported by recovery; not indexed
        // Leave a damaged file alone: copying would hide the damage, dropping
        // it could resurrect older rows. Reads of that record report it.
        corrupt_records_.fetch_add(1);
        std::lock_guard<std::mutex> lock(write_mu_);
        victim->no_compact = true;
        return true;
      }
      const bool tomb = (rv.meta & kTombstoneBit) != 0;
      const uint64_t loc = MakeLoc(victim->slot, off, tomb);
      const uint64_t h = HashKey(rv.key);
      if (IndexFind(rv.key, h) != loc) continue;  // stale
      const uint64_t seq = victim->base_seq() + (rv.meta & kSeqDeltaMax);
      Moved m{rv.key, loc, seq, rv.meta & kTombstoneBit, off};
      if (tomb && seq < min_other_seq) {
        drop.push_back(m);
      } else {
        keep.push_back(m);
      }
    }
  }

  std::unique_ptr<DataFile> out;
  uint64_t out_no = 0, out_crc_len = 0;
  uint32_t out_crc = 0;
  if (!keep.empty()) {
    uint64_t base = ~0ull, top = 0;
    for (auto& m : keep) {
      base = std::min(base, m.seq);
      top = std::max(top, m.seq);
    }
    if (top - base > kSeqDeltaMax) {  // cannot encode; leave the file as is
      std::lock_guard<std::mutex> lock(write_mu_);
      victim->no_compact = true;
      if (victim->damaged) {
        victim->damaged = false;
        Fail(RS_ERR_CORRUPTION, "repair: cannot rewrite damaged file " + victim->path() +
                                    " (its live records span more than 2^30 sequence numbers)");
      }
      return true;
    }
    {
      std::lock_guard<std::mutex> lock(write_mu_);
      out_no = next_file_no_++;
    }
    FileHeader hd{};
    hd.format_version = kFormatVersion;
    hd.kind = kSealedFile;
    hd.table_id = cfg_.id;
    hd.dim = cfg_.dim;
    hd.file_no = out_no;
    hd.base_seq = base;
    hd.record_size = rec_size_;
    std::string tmp = FilePath(out_no, true);
    {
      auto w = DataFile::Create(tmp, hd, 0, false, false);
      std::vector<char> buf;
      const size_t per_piece = std::max<size_t>(1, (4u << 20) / rec_size_);
      for (size_t done = 0; done < keep.size();) {
        size_t m = std::min(per_piece, keep.size() - done);
        buf.resize(m * rec_size_);
        for (size_t j = 0; j < m; ++j) {
          const Moved& mv = keep[done + j];
          const char* rec = victim->RecordPtr(mv.src_off, rec_size_, scratch.data());
          RecordView rv;
          if (!rec || !DecodeRecord(rec, cfg_.dim, &rv)) {
            Fail(RS_ERR_CORRUPTION, "compaction: record changed under us in " + victim->path());
          }
          uint32_t meta = static_cast<uint32_t>(mv.seq - base) | mv.meta_flags | kBatchEndBit;
          char* dst = buf.data() + j * rec_size_;
          std::memcpy(dst + 16, rv.vec, 4ull * cfg_.dim);
          EncodeRecord(dst, cfg_.dim, meta, mv.key,
                       mv.meta_flags ? nullptr : reinterpret_cast<const float*>(dst + 16));
        }
        w->Append(buf.data(), buf.size());
        done += m;
      }
      w->Sync();
      w->Rename(FilePath(out_no, false));
      out_crc = w->crc;
      out_crc_len = w->crc_len;
    }
    SyncDir(cfg_.dir);
    out = DataFile::Open(FilePath(out_no, false), cfg_.use_mmap);
    if (!out) Fail(RS_ERR_IO, "compaction output vanished");
    out->records = keep.size();
    out->crc = out_crc;
    out->crc_len = out_crc_len;
  }

  // 3. Swing the index under the write mutex.
  {
    std::lock_guard<std::mutex> lock(write_mu_);
    DataFile* o = nullptr;
    if (out) {
      o = out.release();
      o->slot = AllocFileSlot();
      files_.Set(o->slot, o);
      for (size_t i = 0; i < keep.size(); ++i) {
        const Moved& m = keep[i];
        const uint64_t h = HashKey(m.key);
        if (IndexFind(m.key, h) != m.old_loc) continue;  // rewritten meanwhile
        uint64_t loc = MakeLoc(o->slot, kFileHeaderSize + i * rec_size_, m.meta_flags != 0);
        IndexUpsert(m.key, h, loc);
        o->live++;
        victim->live--;
      }
      compaction_written_.fetch_add(o->size(), std::memory_order_relaxed);
    }
    for (const Moved& m : drop) {
      const uint64_t h = HashKey(m.key);
      if (IndexFind(m.key, h) == m.old_loc) IndexErase(m.key, h);
    }
    if (victim->damaged) {
      victim->Rename(victim->path() + ".corrupt");  // kept for inspection, ignored by the store
    } else {
      victim->UnlinkNow();
    }
    RetireFile(victim);
    compactions_.fetch_add(1, std::memory_order_relaxed);
    epoch_->TryAdvance();
    ReclaimFiles();
  }
  SyncDir(cfg_.dir);
  return true;
}

}  // namespace store
}  // namespace rs

