// DataFile: one data file of a table's SSD tier (layout in format.h).
//
// Reads go through a shared read-only mapping ("mmap") or pread ("pread");
// docs/store.md has the measurement behind the default. The file object is
// retired through the EpochDomain when compaction replaces it, so readers
// that still hold its location finish against the old bytes (the file may
// already be unlinked: the open descriptor and mapping keep it alive).
//
// Threading: RecordPtr/size may be called by any thread; Append/Sync/
// Truncate only by the table's writer (under its write mutex); the counters
// `records`/`live` and the crc/dirty/damaged fields are owned by the writer
// as well.
#ifndef RECSTRATA_STORE_DATA_FILE_H_
#define RECSTRATA_STORE_DATA_FILE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "store/format.h"

namespace rs {
namespace store {

class DataFile {
 public:
  // Creates `path` (must not exist) with `header`, synced to disk when
  // `sync`. `map_capacity`: bytes of address space reserved for reads of an
  // append file (ignored for pread).
  static std::unique_ptr<DataFile> Create(const std::string& path, const FileHeader& header,
                                          uint64_t map_capacity, bool use_mmap, bool sync);
  // Opens an existing file and validates its header. Throws RS_ERR_INCOMPATIBLE
  // for another format version, RS_ERR_CORRUPTION for a bad header. A file
  // shorter than a header returns nullptr (a torn creation).
  static std::unique_ptr<DataFile> Open(const std::string& path, bool use_mmap);
  ~DataFile();

  const FileHeader& header() const { return header_; }
  const std::string& path() const { return path_; }
  uint64_t file_no() const { return header_.file_no; }
  uint64_t base_seq() const { return header_.base_seq; }
  uint64_t size() const { return size_.load(std::memory_order_acquire); }
  uint64_t map_capacity() const { return map_len_; }

  // The record at `offset`: a pointer into the mapping, or `scratch` filled
  // by pread (RecordSize bytes). Returns nullptr if the read fails.
  const char* RecordPtr(uint64_t offset, uint32_t record_size, char* scratch) const;
  // Reads [offset, offset + n) with pread, also for mapped files (a scan then
  // leaves no pages mapped into the process). False on a short read.
  bool ReadAt(uint64_t offset, uint64_t n, char* out) const;
  // Starts loading a mapped record into the CPU cache (no-op for pread).
  void Prefetch(uint64_t offset, uint32_t record_size) const {
    if (map_ == nullptr || offset + record_size > map_len_) return;
    for (uint32_t b = 0; b < record_size; b += 64) __builtin_prefetch(map_ + offset + b);
    __builtin_prefetch(map_ + offset + record_size - 1);
  }

  // Writer side.
  void Append(const char* data, size_t n);  // at size(); visible after return
  void WriteAt(uint64_t offset, const char* data, size_t n);  // no size change
  void SetSize(uint64_t n) { size_.store(n, std::memory_order_release); }
  void Sync();
  void Truncate(uint64_t n);
  void Rename(const std::string& new_path);
  uint64_t DiskSize() const;  // the file's length on disk (fstat)
  void MarkForDeletion() { unlink_on_close_ = true; }
  void UnlinkNow();

  uint32_t slot = 0;     // index in the table's file table
  uint64_t records = 0;  // records in the file
  uint64_t live = 0;     // records the index points to
  bool no_compact = false;
  bool retired = false;  // replaced by compaction, awaiting its grace period
  // CRC-32C of the file's bytes [0, crc_len): extended by writes that start
  // at crc_len; crc_len != size() means "unknown" (computed when needed).
  uint32_t crc = 0;
  uint64_t crc_len = 0;
  bool dirty = false;    // written since its last Sync
  bool damaged = false;  // recovery skipped bad records in it ("repair" rewrites it)

 private:
  DataFile() = default;
  void Map(uint64_t len);

  std::string path_;
  FileHeader header_{};
  int fd_ = -1;
  char* map_ = nullptr;
  uint64_t map_len_ = 0;
  bool use_mmap_ = true;
  bool unlink_on_close_ = false;
  std::atomic<uint64_t> size_{0};
};

// Durably records directory changes (file creation, rename, unlink).
void SyncDir(const std::string& dir);

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_DATA_FILE_H_
