// Recovery: rebuilds a table's SSD index from its data files at open.
//
// Files are applied in file_no order; a record replaces the indexed one
// when its sequence number is >= (later file order breaks ties, which is
// what a compaction output duplicating its victim after a crash needs).
// Records are applied a committed batch at a time (bit 31 of meta closes a
// batch).
//
// What is damage depends on how the store was left (docs/store.md):
//  * clean close (the MANIFEST's clean_close record): the files, their sizes
//    and the table's row count must match the record (with verify "full"
//    their whole-file CRC-32C too), and every record must pass its
//    checksum. Nothing can be torn.
//  * crash (no record): only the newest append file may end in a torn final
//    batch: complete valid records of one unfinished batch, all-zero record
//    slots (blocks a power loss never wrote) and a partial record at the end
//    of the file. That tail is cut. A damaged record that is neither (a
//    flipped bit), or any valid record of another batch after it, is
//    corruption, as is any bad record elsewhere.
// Corruption fails the open with RS_ERR_CORRUPTION naming file and offset.
// skip_corrupt_records skips bad records (not rewritten); recovery "repair"
// skips them, quarantines files with a bad header and marks damaged files
// for RewriteDamaged. Everything left out is reported in *dropped.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include "base/status.h"
#include "store/table.h"

namespace rs {
namespace store {
namespace {

bool AllZero(const char* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != 0) return false;
  return true;
}

uint64_t FileBytes(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

}  // namespace

uint64_t TableImpl::Recover(const TableRecord* clean, std::vector<DroppedData>* dropped) {
  if (!has_files()) return 0;
  std::lock_guard<std::mutex> lock(write_mu_);
  if (::mkdir(cfg_.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    Fail(RS_ERR_IO, "mkdir " + cfg_.dir + ": " + std::strerror(errno));
  }
  const bool lenient = cfg_.repair || cfg_.skip_corrupt;  // bad records skipped, not fatal
  auto corrupt = [&](const std::string& what) {
    Fail(RS_ERR_CORRUPTION, "table '" + cfg_.name + "': " + what);
  };
  auto drop = [&](const std::string& file, uint64_t off, uint64_t bytes, uint64_t records,
                  const char* reason) {
    dropped->push_back({cfg_.name, file, off, bytes, records, reason});
  };
  auto quarantine = [&](const std::string& path) {
    ::rename(path.c_str(), (path + ".corrupt").c_str());
  };

  std::vector<std::pair<uint64_t, std::string>> names;
  DIR* d = ::opendir(cfg_.dir.c_str());
  if (!d) Fail(RS_ERR_IO, "opendir " + cfg_.dir + ": " + std::strerror(errno));
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.size() == 12 && n.compare(8, 4, ".tmp") == 0) {
      ::unlink((cfg_.dir + "/" + n).c_str());  // an unfinished bulk load / compaction
    } else if (n.size() == 12 && n.compare(8, 4, ".dat") == 0) {
      char* end = nullptr;
      uint64_t no = std::strtoull(n.substr(0, 8).c_str(), &end, 16);
      names.emplace_back(no, cfg_.dir + "/" + n);
    }
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());

  std::map<uint64_t, FileRecord> expect;  // clean close: files not seen yet
  if (clean)
    for (const FileRecord& r : clean->files) expect[r.file_no] = r;

  std::vector<std::unique_ptr<DataFile>> opened;
  std::vector<const FileRecord*> records_of;  // parallel to `opened`
  std::vector<FileRecord> seen;
  seen.reserve(names.size());
  uint64_t tail_no = 0;
  for (auto& nm : names) {
    next_file_no_ = std::max(next_file_no_, nm.first + 1);
    const FileRecord* rec = nullptr;
    auto it = expect.find(nm.first);
    if (it != expect.end()) {
      seen.push_back(it->second);
      rec = &seen.back();
      expect.erase(it);
    } else if (clean && !cfg_.repair) {
      corrupt("data file " + nm.second + " is not in the MANIFEST's clean-close record");
    }
    std::unique_ptr<DataFile> f;
    try {
      f = DataFile::Open(nm.second, cfg_.use_mmap);
    } catch (const Error& e) {
      if (!cfg_.repair || e.code() != RS_ERR_CORRUPTION) throw;
      const uint64_t bytes = FileBytes(nm.second);
      drop(nm.second, 0, bytes, bytes > kFileHeaderSize ? (bytes - kFileHeaderSize) / rec_size_ : 0,
           "bad header");
      quarantine(nm.second);
      continue;
    }
    if (!f) {  // shorter than a header
      if (clean && !cfg_.repair) {
        corrupt("data file " + nm.second + " is shorter than its header (at offset 0; the "
                "clean close recorded " + std::to_string(rec ? rec->size : 0) + " bytes)");
      }
      if (rec) drop(nm.second, 0, rec->size, 0, "size");
      ::unlink(nm.second.c_str());  // after a crash: a creation cut short
      continue;
    }
    if (f->header().dim != cfg_.dim || f->header().record_size != rec_size_ ||
        f->header().table_id != cfg_.id || f->file_no() != nm.first) {
      if (!cfg_.repair) {
        corrupt("data file " + nm.second + " does not belong to it (dim/id/record size/file "
                "number in its header at offset 0)");
      }
      drop(nm.second, 0, f->size(), (f->size() - kFileHeaderSize) / rec_size_, "foreign");
      f.reset();
      quarantine(nm.second);
      continue;
    }
    if (rec && rec->size != f->size()) {
      if (!cfg_.repair) {
        corrupt("data file " + nm.second + " is " + std::to_string(f->size()) +
                " bytes, the clean close recorded " + std::to_string(rec->size) +
                " (differs from offset " + std::to_string(std::min(rec->size, f->size())) + ")");
      }
      if (f->size() < rec->size) {
        drop(nm.second, f->size(), rec->size - f->size(), (rec->size - f->size()) / rec_size_,
             "size");
      }
      rec = nullptr;  // its CRC no longer applies
    }
    if (f->header().kind == kAppendFile) tail_no = nm.first;
    opened.push_back(std::move(f));
    records_of.push_back(rec);
  }
  for (const auto& kv : expect) {
    const std::string path = FilePath(kv.first, false);
    if (!cfg_.repair) corrupt("data file " + path + " (recorded at clean close) is missing");
    drop(path, 0, kv.second.size,
         kv.second.size > kFileHeaderSize ? (kv.second.size - kFileHeaderSize) / rec_size_ : 0,
         "missing");
  }

  uint64_t max_seq = 0, skipped = 0;
  struct Pending {
    int64_t key;
    uint64_t seq;
    uint64_t loc;
  };
  std::vector<Pending> batch;
  auto apply = [&](DataFile* f) {
    for (const Pending& p : batch) {
      const uint64_t h = HashKey(p.key);
      const uint64_t old = IndexFind(p.key, h);
      if (old != kEmptyVal && SeqOfLoc(old) > p.seq) continue;  // older than indexed
      IndexRecord(p.key, h, p.loc, f);
      max_seq = std::max(max_seq, p.seq);
    }
    recovered_records_ += batch.size();
    batch.clear();
  };
  for (size_t fi = 0; fi < opened.size(); ++fi) {
    DataFile* f = opened[fi].release();
    const FileRecord* rec = records_of[fi];
    f->slot = AllocFileSlot();
    files_.Set(f->slot, f);
    const bool is_tail = !clean && f->header().kind == kAppendFile && f->file_no() == tail_no;
    const uint64_t size = f->size();
    uint64_t off = kFileHeaderSize, batch_start = off;
    uint64_t cut = 0;  // offset to truncate the tail at (0 = none)
    uint64_t last_batch_seq = 0;  // of the last complete batch in this file
    // Whole-file CRC, extended block by block while scanning (the blocks
    // cover the file contiguously from the header on): to compare with the
    // record (verify "full"; ~15% of an open's time) or to know it at close.
    const bool want_crc = rec == nullptr || cfg_.verify_full;
    const FileHeader& hd = f->header();
    uint32_t fcrc = ExtendCrc32c(0, &hd, sizeof(hd));
    uint64_t fcrc_len = kFileHeaderSize;
    // The scan reads ~1 MiB blocks with pread in both read paths: few system
    // calls, and with mmap no page of the file gets mapped into the process
    // (its resident memory then counts only the records served later).
    // (A small file gets a block of its own size: a table of many small files
    // opens without zeroing 1 MiB per file.)
    const uint64_t recs = std::min<uint64_t>(std::max<uint64_t>(1, (1u << 20) / rec_size_),
                                             size / rec_size_ + 1);
    const uint64_t block_cap = recs * rec_size_;
    std::vector<char> block(block_cap);
    uint64_t block_off = 0, block_len = 0;
    auto record_at = [&](uint64_t at) -> const char* {
      if (at + rec_size_ > size) return nullptr;
      if (at < block_off || at + rec_size_ > block_off + block_len) {
        block_off = at;
        block_len = std::min(block_cap, (size - at) / rec_size_ * rec_size_);
        if (!f->ReadAt(at, block_len, block.data())) {
          block_len = 0;
          return nullptr;
        }
        if (want_crc && at == fcrc_len) {
          fcrc = ExtendCrc32c(fcrc, block.data(), block_len);
          fcrc_len += block_len;
        }
      }
      return block.data() + (at - block_off);
    };
    // Crash only: is [at, size) the torn remainder of one unfinished batch?
    auto torn_from = [&](uint64_t at) {
      std::vector<char> r(rec_size_);
      uint64_t seq = batch.empty() ? 0 : batch.front().seq;
      for (uint64_t o = at; o < size; o += rec_size_) {
        if (o + rec_size_ > size) return true;  // a partial record at the end
        if (!f->ReadAt(o, rec_size_, r.data())) return false;
        if (AllZero(r.data(), rec_size_)) continue;  // a block never written
        RecordView v;
        if (o == at || !DecodeRecord(r.data(), cfg_.dim, &v)) return false;  // damage
        const uint64_t s = f->base_seq() + (v.meta & kSeqDeltaMax);
        if (seq == 0 && s > last_batch_seq) seq = s;
        if (s != seq) return false;  // a record of another batch follows
      }
      return true;
    };
    batch.clear();
    for (; off < size; off += rec_size_) {
      const char* r = record_at(off);
      RecordView rv;
      if (r == nullptr || !DecodeRecord(r, cfg_.dim, &rv)) {
        if (is_tail && torn_from(off)) {
          cut = batch_start;
          break;
        }
        corrupt_records_.fetch_add(1);
        const bool partial = off + rec_size_ > size;
        if (!lenient) {
          corrupt(std::string(partial ? "partial record" : "corrupt record") + " in " + f->path() +
                  " at offset " + std::to_string(off) +
                  (is_tail ? " (not a torn final batch: damaged bytes or later records follow)"
                           : clean ? " (the store was closed cleanly)" : ""));
        }
        ++skipped;
        f->damaged = true;
        drop(f->path(), off, partial ? size - off : rec_size_, partial ? 0 : 1, "checksum");
        if (partial) break;
        continue;
      }
      uint64_t seq = f->base_seq() + (rv.meta & kSeqDeltaMax);
      batch.push_back({rv.key, seq, MakeLoc(f->slot, off, rv.meta & kTombstoneBit)});
      f->records++;
      if (rv.meta & kBatchEndBit) {
        last_batch_seq = seq;
        apply(f);
        batch_start = off + rec_size_;
      }
    }
    if (cut == 0 && !batch.empty()) {  // records after the last batch end
      if (is_tail) {
        cut = batch_start;
      } else if (!lenient) {
        corrupt("unterminated batch in " + f->path() + " at offset " + std::to_string(batch_start));
      } else {
        apply(f);  // salvage: their batch end was damaged
      }
    }
    if (cut != 0) {
      // Records of the dropped batch were counted; uncount them.
      f->records -= batch.size();
      batch.clear();
      drop(f->path(), cut, size - cut, (size - cut) / rec_size_, "torn tail");
      truncated_bytes_ += size - cut;
      f->Truncate(cut);
    } else if (want_crc && fcrc_len == size) {
      if (rec && !f->damaged && !cfg_.repair && fcrc != rec->crc) {
        corrupt("data file " + f->path() + " fails its whole-file CRC-32C (recorded at clean "
                "close; from offset 0) although every record passes its own: it was replaced");
      }
      f->crc = fcrc;
      f->crc_len = size;
    } else if (rec && !f->damaged) {
      f->crc = rec->crc;  // not recomputed: carried from the record
      f->crc_len = size;
    }
    max_seq = std::max(max_seq, f->base_seq());
  }
  table_seq_ = max_seq;
  if (clean && !cfg_.repair && skipped == 0) {
    if (live_rows_.load() != clean->rows) {
      corrupt("the data files hold " + std::to_string(live_rows_.load()) +
              " rows, the clean close recorded " + std::to_string(clean->rows));
    }
    if (max_seq > clean->last_seq) {
      corrupt("a record has sequence " + std::to_string(max_seq) + ", past the " +
              std::to_string(clean->last_seq) + " recorded at clean close");
    }
  }
  if (clean) table_seq_ = std::max(table_seq_, clean->last_seq);
  if (!cfg_.ssd_tier) LoadAllIntoDram();
  return table_seq_;
}

}  // namespace store
}  // namespace rs
