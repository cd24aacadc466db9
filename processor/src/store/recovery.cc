// Recovery: rebuilds a table's SSD index from its data files at open.
//
// Files are applied in file_no order; a record replaces the indexed one
// when its sequence number is >= (later file order breaks ties, which is
// what a compaction output duplicating its victim after a crash needs).
// Records are applied a committed batch at a time (bit 31 of meta closes a
// batch). In the newest append file, the first torn or corrupt record, or a
// batch without its closing record, ends the log: the file is truncated
// there (that batch was never acknowledged as committed). Anywhere else a
// checksum mismatch is corruption: open fails with RS_ERR_CORRUPTION unless
// skip_corrupt_records is set (then the record is skipped and counted).
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "base/status.h"
#include "store/table.h"

namespace rs {
namespace store {

uint64_t TableImpl::Recover() {
  if (!has_files()) return 0;
  std::lock_guard<std::mutex> lock(write_mu_);
  if (::mkdir(cfg_.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    Fail(RS_ERR_IO, "mkdir " + cfg_.dir + ": " + std::strerror(errno));
  }
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

  std::vector<std::unique_ptr<DataFile>> opened;
  uint64_t tail_no = 0;
  for (auto& nm : names) {
    auto f = DataFile::Open(nm.second, cfg_.use_mmap);
    next_file_no_ = std::max(next_file_no_, nm.first + 1);
    if (!f) {  // shorter than a header: a creation cut short by a crash
      ::unlink(nm.second.c_str());
      continue;
    }
    if (f->header().dim != cfg_.dim || f->header().record_size != rec_size_ ||
        f->header().table_id != cfg_.id || f->file_no() != nm.first) {
      Fail(RS_ERR_CORRUPTION, "data file " + nm.second + " does not belong to table '" +
                                  cfg_.name + "' (dim/id/record size mismatch)");
    }
    if (f->header().kind == kAppendFile) tail_no = nm.first;
    opened.push_back(std::move(f));
  }

  uint64_t max_seq = 0;
  struct Pending {
    int64_t key;
    uint64_t seq;
    uint64_t loc;
  };
  std::vector<Pending> batch;
  for (auto& up : opened) {
    DataFile* f = up.release();
    f->slot = AllocFileSlot();
    files_[f->slot].store(f, std::memory_order_release);
    const bool is_tail = f->header().kind == kAppendFile && f->file_no() == tail_no;
    const uint64_t size = f->size();
    uint64_t off = kFileHeaderSize, batch_start = off;
    uint64_t cut = 0;  // offset to truncate the tail at (0 = none)
    // The scan reads ~1 MiB blocks with pread in both read paths: few system
    // calls, and with mmap no page of the file gets mapped into the process
    // (its resident memory then counts only the records served later).
    const uint64_t block_cap = std::max<uint64_t>(1, (1u << 20) / rec_size_) * rec_size_;
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
      }
      return block.data() + (at - block_off);
    };
    batch.clear();
    for (; off < size; off += rec_size_) {
      const char* rec = record_at(off);
      RecordView rv;
      if (rec == nullptr || !DecodeRecord(rec, cfg_.dim, &rv)) {
        if (is_tail) {
          cut = batch_start;
          break;
        }
        corrupt_records_.fetch_add(1);
        if (!cfg_.skip_corrupt) {
          Fail(RS_ERR_CORRUPTION, "table '" + cfg_.name + "': corrupt record in " + f->path() +
                                      " at offset " + std::to_string(off));
        }
        continue;
      }
      uint64_t seq = f->base_seq() + (rv.meta & kSeqDeltaMax);
      batch.push_back({rv.key, seq, MakeLoc(f->slot, off, rv.meta & kTombstoneBit)});
      f->records++;
      if (rv.meta & kBatchEndBit) {
        for (const Pending& p : batch) {
          const uint64_t h = HashKey(p.key);
          const uint64_t old = IndexFind(p.key, h);
          if (old != kEmptyVal && SeqOfLoc(old) > p.seq) continue;  // older than indexed
          IndexRecord(p.key, h, p.loc, f);
          max_seq = std::max(max_seq, p.seq);
        }
        recovered_records_ += batch.size();
        batch.clear();
        batch_start = off + rec_size_;
      }
    }
    if (cut == 0 && !batch.empty()) {  // a batch without its closing record
      if (is_tail) {
        cut = batch_start;
      } else if (!cfg_.skip_corrupt) {
        Fail(RS_ERR_CORRUPTION, "table '" + cfg_.name + "': unterminated batch in sealed file " +
                                    f->path());
      }
    }
    if (cut != 0) {
      // Records of the dropped batch were counted; uncount them.
      f->records -= batch.size();
      truncated_bytes_ += size - cut;
      f->Truncate(cut);
    }
    max_seq = std::max(max_seq, f->base_seq());
  }
  if (!cfg_.ssd_tier) LoadAllIntoDram();
  return max_seq;
}

}  // namespace store
}  // namespace rs
