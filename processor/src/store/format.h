// On-disk format of the SSD tier (format version kFormatVersion).
//
// A table's data files live in <store>/t<table id>/<file_no, 8 hex>.dat.
// Every file starts with a 64-byte FileHeader and continues with fixed-size
// records of RecordSize(dim) = 16 + 4 * dim bytes, little-endian:
//
//   u32 crc32c   of the 12 + 4*dim bytes that follow
//   u32 meta     bits 0..29 sequence - header.base_seq, bit 30 tombstone,
//                bit 31 last record of its committed batch
//   i64 key
//   f32 vector[dim]   (zeros in a tombstone)
//
// A batch of one Upsert/Delete/BulkLoad shares one sequence number; recovery
// applies a batch only when its last record (bit 31) is present and every
// record of it passes its checksum, so a crash never leaves half a batch.
// Checksums are CRC-32C (Castagnoli) computed by abseil's absl::ComputeCrc32c
// (hardware-accelerated where the CPU has SSE4.2/ARMv8 CRC).
//
// Version 2 (this one) has the same file layout as version 1 and adds the
// MANIFEST's clean_close record (store.proto): per table its rows and every
// data file's size and whole-file CRC-32C, present only while the store is
// closed cleanly. Recovery rules (recovery.cc, docs/store.md "Recovery"):
// with the record any bad record is corruption; without it (a crash) only a
// torn final batch of the newest append file is cut.
#ifndef RECSTRATA_STORE_FORMAT_H_
#define RECSTRATA_STORE_FORMAT_H_

#include <cstdint>
#include <cstring>

#include "absl/crc/crc32c.h"
#include "absl/strings/string_view.h"
#include "store/store.h"

namespace rs {
namespace store {

constexpr char kFileMagic[8] = {'R', 'S', 'S', 'T', 'O', 'R', 'E', '1'};
constexpr uint32_t kFileHeaderSize = 64;
constexpr uint32_t kSeqDeltaBits = 30;
constexpr uint32_t kSeqDeltaMax = (1u << kSeqDeltaBits) - 1;
constexpr uint32_t kTombstoneBit = 1u << 30;
constexpr uint32_t kBatchEndBit = 1u << 31;

enum FileKind : uint32_t {
  kAppendFile = 1,   // written batch by batch; the newest one may have a torn tail
  kSealedFile = 2,   // written whole (compaction output, bulk load) then renamed
};

struct FileHeader {
  char magic[8];
  uint32_t format_version;
  uint32_t kind;
  uint32_t table_id;
  int32_t dim;
  uint64_t file_no;
  uint64_t base_seq;
  uint32_t record_size;
  uint8_t reserved[16];
  uint32_t crc;  // of the 60 bytes before it
};
static_assert(sizeof(FileHeader) == kFileHeaderSize, "header layout");

inline uint32_t Crc32c(const void* data, size_t n) {
  return static_cast<uint32_t>(
      absl::ComputeCrc32c(absl::string_view(static_cast<const char*>(data), n)));
}

inline uint32_t ExtendCrc32c(uint32_t crc, const void* data, size_t n) {
  return static_cast<uint32_t>(absl::ExtendCrc32c(
      absl::crc32c_t{crc}, absl::string_view(static_cast<const char*>(data), n)));
}

inline uint32_t RecordSize(int32_t dim) { return 16u + 4u * static_cast<uint32_t>(dim); }

// Encodes one record into `dst` (RecordSize(dim) bytes). `vec` may be null
// (a tombstone).
inline void EncodeRecord(char* dst, int32_t dim, uint32_t meta, int64_t key, const float* vec) {
  std::memcpy(dst + 4, &meta, 4);
  std::memcpy(dst + 8, &key, 8);
  if (vec) {
    std::memcpy(dst + 16, vec, 4ull * dim);
  } else {
    std::memset(dst + 16, 0, 4ull * dim);
  }
  uint32_t crc = Crc32c(dst + 4, 12 + 4ull * dim);
  std::memcpy(dst, &crc, 4);
}

struct RecordView {
  uint32_t meta;
  int64_t key;
  const char* vec;  // 4 * dim bytes (unaligned)
};
// Decodes and verifies a record; false on checksum mismatch.
inline bool DecodeRecord(const char* src, int32_t dim, RecordView* out) {
  uint32_t crc;
  std::memcpy(&crc, src, 4);
  if (Crc32c(src + 4, 12 + 4ull * dim) != crc) return false;
  std::memcpy(&out->meta, src + 4, 4);
  std::memcpy(&out->key, src + 8, 8);
  out->vec = src + 16;
  return true;
}

// Index value of a record location: bit 63 tombstone, bits 40..55 the file's
// slot in the table's file table, bits 0..39 the byte offset. Never equals
// kEmptyVal / kDeletedVal (bits 56..62 are zero).
constexpr uint64_t kLocTombstone = 1ull << 63;
inline uint64_t MakeLoc(uint32_t slot, uint64_t offset, bool tombstone) {
  return (tombstone ? kLocTombstone : 0) | (static_cast<uint64_t>(slot) << 40) | offset;
}
inline uint32_t LocSlot(uint64_t loc) { return static_cast<uint32_t>((loc >> 40) & 0xffff); }
inline uint64_t LocOffset(uint64_t loc) { return loc & ((1ull << 40) - 1); }
inline bool LocIsTombstone(uint64_t loc) { return (loc & kLocTombstone) != 0; }

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_FORMAT_H_
