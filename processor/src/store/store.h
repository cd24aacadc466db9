// rs::store — the tiered embedding store, internal C++ interface.
//
// This is the contract other processor components (bundle, core) program
// against; the C entry points in store_api.cc are a thin wall over it. It is
// kept stable: new functionality is added, nothing changes meaning.
//
// Model
//   A Store is a directory holding a MANIFEST (tables, dims, tier config,
//   format version) and, per table, append-only data files of checksummed
//   records. A Table holds fixed-dimension float32 rows keyed by int64 ids.
//   Rows live in a DRAM tier (a sharded, lock-free-read hash cache) over an
//   optional SSD hash tier (data files + in-memory index key -> location).
//   tiers "dram": every row is held in DRAM; the data files only make writes
//     durable (reopen reloads them). With an empty `dir` nothing touches disk.
//   tiers "dram+ssd": DRAM is a byte-capped cache (LFU default, or LRU) that
//     admits rows read from the SSD tier; reads that miss go to the files.
//
// Errors
//   Every function reports failure by throwing rs::Error (base/status.h) with
//   a public status code: RS_ERR_INVALID_ARGUMENT, RS_ERR_NOT_FOUND,
//   RS_ERR_ALREADY_EXISTS, RS_ERR_IO, RS_ERR_CORRUPTION (a checksum mismatch:
//   a corrupt vector is never returned), RS_ERR_INCOMPATIBLE (written by an
//   incompatible format version), RS_ERR_FAILED_PRECONDITION (store locked by
//   another process). Nothing aborts the process.
//
// Threading
//   Table::Lookup and Table::Stats may run on any number of threads at once,
//   concurrently with writes. Readers never block on writers or compaction:
//   they take no lock (an epoch guard keeps retired memory and files alive
//   until every reader that could see them has left). A reader sees each row
//   wholly before or wholly after a concurrent write, never a mix.
//   Upsert / Delete / BulkLoad / Store::Flush / Store::Compact / CreateTable
//   may be called from any thread; writes to one table are serialized
//   internally (one committed batch at a time).
//   Store's destructor must not overlap any other call on the store or its
//   tables. Table pointers are owned by the Store and valid until it is
//   destroyed.
//
// Inputs are borrowed for the duration of a call; nothing keeps a caller
// pointer.
#ifndef RECSTRATA_STORE_STORE_H_
#define RECSTRATA_STORE_STORE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "recstrata/store/store.pb.h"
#include "store/delta_ledger.h"

namespace rs {
namespace store {

// On-disk format version written into the MANIFEST and every data file
// header. A store written by another version is refused (RS_ERR_INCOMPATIBLE).
// Version 2 added the clean-close record (recovery can tell a torn tail from
// damage); version 1 stores are refused, never recovered under weaker rules.
constexpr uint32_t kFormatVersion = 2;

// Something recovery left out: a bad record, a torn tail, a damaged file.
// Outside "repair" only torn tails (never acknowledged) are dropped.
struct DroppedData {
  std::string table;
  std::string file;       // path
  uint64_t offset = 0;    // first byte dropped
  uint64_t bytes = 0;
  uint64_t records = 0;   // whole records in the range
  std::string reason;     // "checksum", "torn tail", "bad header", "missing", "size", "foreign"
};

// Counters of one table. Monotonic counters count since the store was opened.
struct TableStats {
  std::string name;
  int32_t dim = 0;
  uint64_t rows = 0;              // live keys
  uint64_t dram_rows = 0;         // rows resident in the DRAM tier
  uint64_t dram_bytes = 0;        // bytes charged to the DRAM tier
  uint64_t dram_capacity_bytes = 0;  // 0 = unbounded
  uint64_t dram_hits = 0;
  uint64_t dram_misses = 0;
  uint64_t ssd_hits = 0;          // DRAM misses found in the SSD tier
  uint64_t ssd_misses = 0;        // keys absent from every tier
  uint64_t evictions = 0;
  uint64_t admissions = 0;
  uint64_t files = 0;             // data files on disk
  uint64_t disk_bytes = 0;        // bytes of those files
  uint64_t live_payload_bytes = 0;  // rows * (8 + 4 * dim): key + vector
  uint64_t payload_bytes_written = 0;  // user payload accepted by writes
  uint64_t disk_bytes_written = 0;     // bytes written to data files (incl. compaction)
  double write_amplification = 0;      // disk_bytes_written / payload_bytes_written
  uint64_t compactions = 0;            // files compacted
  uint64_t compaction_bytes_written = 0;
  uint64_t corrupt_records = 0;        // checksum failures seen (recovery + reads)
  uint64_t recovered_records = 0;      // records applied when the store was opened
  uint64_t truncated_bytes = 0;        // torn tail bytes cut off at open
  uint64_t index_bytes = 0;            // memory of the SSD-tier index (direct + hash)
  // Tiers "dram+redis" (0 otherwise): DRAM misses the remote tier served,
  // did not hold (default vector), could not answer (down / timeout) or
  // answered with a damaged value; lookups that failed for either reason.
  uint64_t remote_hits = 0;
  uint64_t remote_misses = 0;
  uint64_t remote_errors = 0;
  uint64_t remote_corrupt = 0;
  uint64_t failed_lookups = 0;
};

struct StoreStats {
  std::string dir;
  std::string tiers;                   // "dram" | "dram+ssd"
  uint32_t format_version = kFormatVersion;
  uint64_t last_sequence = 0;          // sequence of the last committed batch
  // How the open found the store: "new", "clean" (closed cleanly: every bad
  // record was corruption), "crash" (a torn tail was allowed), "repair".
  std::string recovery;
  std::vector<DroppedData> dropped;    // what the open left out
  std::vector<TableStats> tables;
  // Tiers "dram+redis": the client's counters as a JSON object (round
  // trips, bytes, errors, redirections, the active key space); "" otherwise.
  std::string remote_json;
};

// A table of fixed-dimension float32 rows keyed by int64 ids.
class Table {
 public:
  virtual ~Table() = default;

  virtual const std::string& name() const = 0;
  virtual int32_t dim() const = 0;

  // Looks up n keys. `out` receives n * dim floats (row-major, caller
  // allocated); a missing key gets the table's default vector (zeros unless
  // configured). `found` (n bytes, may be nullptr) receives 1 for present
  // keys and 0 for missing ones. Thread-safe, lock-free for readers; this is
  // the hot path (batched, prefetched, no per-key allocation).
  // Throws RS_ERR_CORRUPTION if an SSD record fails its checksum.
  virtual void Lookup(const int64_t* keys, size_t n, float* out,
                      uint8_t* found) const = 0;

  // Inserts or overwrites n rows (n * dim floats) as one committed batch:
  // with durability on, the batch survives kill -9 / power loss once this
  // returns, and a crash never leaves part of a batch applied. A key given
  // twice takes its last row.
  virtual void Upsert(const int64_t* keys, size_t n, const float* rows) = 0;

  // Deletes n keys as one committed batch; absent keys are ignored.
  virtual void Delete(const int64_t* keys, size_t n) = 0;

  // Loads n rows as one committed batch through large sequential writes
  // (for exporting a trained model): no per-row fsync, no DRAM cache churn
  // in "dram+ssd" mode (rows are not admitted; stale cached copies are
  // dropped). Semantically an Upsert of the whole batch.
  virtual void BulkLoad(const int64_t* keys, size_t n, const float* rows) = 0;

  virtual TableStats Stats() const = 0;
};

class Store {
 public:
  // Opens (or creates) the store at `dir` ("" = a volatile in-memory store).
  // `options`: the StoreOptions of store.proto (documented in docs/store.md);
  // unset fields take the value recorded in the MANIFEST, else the default.
  // Bad values are RS_ERR_INVALID_ARGUMENT. Damage is RS_ERR_CORRUPTION
  // naming the file and offset, unless recovery is "repair" (then valid
  // records are kept, damaged files are rewritten without the bad ones, and
  // Stats().dropped says what went).
  static std::unique_ptr<Store> Open(const std::string& dir,
                                     const ::recstrata::store::StoreOptions& options);
  // The same with the options as JSON text ("" = none), as rs_store_open
  // takes them. Unknown keys are RS_ERR_INVALID_ARGUMENT.
  static std::unique_ptr<Store> OpenJson(const std::string& dir, const std::string& options_json);
  // Opens `dir` with recovery "repair", closes it and returns the stats JSON
  // of that open ("dropped" lists everything left out). Not for a store
  // that is open (RS_ERR_FAILED_PRECONDITION).
  static std::string Repair(const std::string& dir, const std::string& options_json);

  // Waits for background compaction to stop, syncs every data file and
  // records the clean close in the MANIFEST, then releases everything.
  virtual ~Store() = default;

  // Creates a table; RS_ERR_ALREADY_EXISTS if the name is taken.
  // `options_json`: "" or a JSON object: default_value (list of dim floats),
  // dram_capacity_bytes (overrides the store's value for this table).
  virtual Table* CreateTable(const std::string& name, int32_t dim,
                             const std::string& options_json) = 0;
  // The table called `name`; throws RS_ERR_NOT_FOUND if absent.
  virtual Table* GetTable(const std::string& name) = 0;
  // The table called `name`, or nullptr.
  virtual Table* FindTable(const std::string& name) = 0;
  virtual std::vector<std::string> TableNames() const = 0;

  // Makes every committed write durable (fsync), also with durability off.
  virtual void Flush() = 0;
  // Compacts, now and in the calling thread, every data file whose stale
  // share passes the threshold.
  virtual void Compact() = 0;

  virtual StoreStats Stats() const = 0;

  // Tiers "dram+redis" only (RS_ERR_FAILED_PRECONDITION otherwise): the
  // model's serving pointer. op "get"; "publish" (this store's key space
  // becomes `serving`, the old serving one `backup`); "rollback" (serving
  // and backup swap); "drop" (deletes the rows and metadata of key space
  // `arg`, refused for the serving or backup space); "bind_base" (binds this
  // store's key space to the bundle whose bundle.json has CRC-32C `arg`, 8
  // hex digits: the export does it, deltas of that bundle are then applied
  // to the space once, delta_ledger.h). Returns the pointer as
  // JSON {"serving": ..., "backup": ..., "active": <space this store reads>}.
  virtual std::string RemotePointer(const std::string& op, const std::string& arg) {
    Fail(RS_ERR_FAILED_PRECONDITION, "store: the serving pointer needs tiers \"dram+redis\"");
  }
  // Stats as a JSON object (the format rs_store_stats_json returns).
  virtual std::string StatsJson() const = 0;

  // The shared record of bundle deltas applied to this store (delta_ledger.h)
  // when many hosts write it (tiers "dram+redis"); NULL for a local store,
  // whose deltas are recorded in its own directory. Owned by the store.
  virtual DeltaLedger* delta_ledger() { return nullptr; }
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_STORE_H_
