// FileSlots: a table's data files by slot number, read without locks.
//
// Records are located by (slot, offset), so a reader turns a slot into its
// DataFile* on every SSD read; that lookup is two acquire loads and never
// blocks. The table is allocated in chunks of kChunk slots on first use, so a
// table with a handful of files costs one small chunk instead of a 512 KiB
// array zeroed at every open (an open of a small store is then dominated by
// its files, not by this table).
//
// Thread safety: Get is safe from any thread at any time. Set may be called
// concurrently with Get and with other Sets (a chunk is published with a
// compare-exchange); ownership of the DataFile objects stays with the caller.
#ifndef RECSTRATA_STORE_FILE_SLOTS_H_
#define RECSTRATA_STORE_FILE_SLOTS_H_

#include <atomic>
#include <cstdint>

namespace rs {
namespace store {

class DataFile;

class FileSlots {
 public:
  static constexpr uint32_t kChunk = 1u << 10;
  static constexpr uint32_t kChunks = 64;
  static constexpr uint32_t kMaxSlots = kChunk * kChunks;

  FileSlots() = default;
  ~FileSlots() {
    for (auto& c : chunks_) delete[] c.load(std::memory_order_relaxed);
  }
  FileSlots(const FileSlots&) = delete;
  FileSlots& operator=(const FileSlots&) = delete;

  // The file in `slot`, or nullptr. `slot` < kMaxSlots.
  DataFile* Get(uint32_t slot) const {
    const std::atomic<DataFile*>* c = chunks_[slot / kChunk].load(std::memory_order_acquire);
    return c ? c[slot % kChunk].load(std::memory_order_acquire) : nullptr;
  }

  // Publishes `f` (or nullptr) in `slot` < kMaxSlots; throws std::bad_alloc
  // if a new chunk cannot be allocated.
  void Set(uint32_t slot, DataFile* f) {
    std::atomic<std::atomic<DataFile*>*>& cell = chunks_[slot / kChunk];
    std::atomic<DataFile*>* c = cell.load(std::memory_order_acquire);
    if (!c) {
      if (!f) return;  // clearing a slot of a chunk never allocated
      auto* fresh = new std::atomic<DataFile*>[kChunk]();  // value-initialized: all null
      if (cell.compare_exchange_strong(c, fresh, std::memory_order_acq_rel)) c = fresh;
      else delete[] fresh;  // another Set published first; c is its chunk
    }
    c[slot % kChunk].store(f, std::memory_order_release);
  }

 private:
  std::atomic<std::atomic<DataFile*>*> chunks_[kChunks] = {};
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_FILE_SLOTS_H_
