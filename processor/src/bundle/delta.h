// Deltas of a served bundle (docs/bundle-format.md, "Deltas"): embedding rows
// changed by training since the previous delta, written by the training
// package to BUNDLE/deltas/<seq>/ and applied here, in sequence order, into
// the bundle's own store in place (Table::Upsert; no second copy of a table).
//
// Contracts
// - Order: delta k is applied only after k-1. A gap (k+2 present, k+1
//   missing), a delta for another base (base_version or the CRC-32C of the
//   base bundle.json differ), a damaged delta (unparsable delta.json, a file
//   missing, of another size or failing its CRC-32C, a key outside its
//   sub-table, an unknown store table or width, a dense stage that does not
//   load, has another signature or fails its warmup) is refused before any
//   row is written: nothing of it reaches the store, later deltas wait
//   behind it, and the error is in status(). Serving continues on the last
//   good state.
// - Dense stage: a delta may carry a new dense SavedModel. It is loaded and
//   warmed up as a second SessionGroup first (the DensePreparer the host
//   sets: core Model::PrepareDense), then the rows are written, then the new
//   stage is published in one atomic step; the store is kept. Between the
//   row writes and that step a request may see new rows with the old dense
//   stage. The marker (or the shared ledger) records the newest applied
//   delta with a dense stage, and a reopened version loads that stage from
//   its delta directory (DenseDir), so a restart serves what was applied.
// - Visibility: each row is replaced atomically (the store's guarantee: a
//   reader sees a row wholly old or wholly new). A delta is NOT atomic across
//   rows: while one is applied (one committed store batch per sub-table,
//   milliseconds for thousands of rows) a request may see some of its rows
//   new and others old. Once Poll returns, every later request sees all of it.
// - A store shared by many hosts (tiers "dram+redis", Store::delta_ledger()
//   is not NULL) keeps no marker file: the record is the key space's ledger
//   in Redis (store/delta_ledger.h), bound by the export to the bundle.json
//   CRC-32C. A delta is written into Redis once: the host that takes its
//   lease writes the rows (each row's change notice tells the other hosts
//   to drop their cached copy) and records it; every other host sees the
//   record, reads the change notices at once and counts the delta as
//   `followed`. Hosts need not all hold the delta's files; a host without
//   them only follows. A writer killed mid-apply leaves `applying` set and
//   other hosts serving a mix of old and new rows until its lease expires
//   (10 s; RECSTRATA_DELTA_LEASE_MS overrides it), when a host holding the
//   files re-applies the delta. A key space bound to another export, or to
//   none, is refused like a delta for another base.
// - Durability and crashes: before the first write of delta k the marker
//   file STORE/DELTAS_APPLIED (proto DeltaApplied, replaced atomically) says
//   {applied_sequence: k-1, applying: k}; after every sub-table's batch is
//   written and the store flushed (fsync) it says {applied_sequence: k}.
//   Applying a delta is idempotent (rows hold absolute values), so a store
//   killed mid-apply is rolled forward when opened: RecoverOnOpen re-applies
//   delta `applying` before anything is served, and the store reopens as a
//   fully applied delta, never a mix. A marker names its base; a marker of
//   another base is an error at open (RS_ERR_CORRUPTION).
// - A store with a marker may have been written after the export's clean
//   close, so it is opened with the store's crash rules instead of
//   "require_clean" (DeltaStoreWritten): a torn tail of the last, unfinished
//   batch is cut, every other bad record is still RS_ERR_CORRUPTION, and the
//   row counts are still checked against bundle.json (deltas only overwrite
//   rows 0 .. rows-1, they never add rows).
//
// Threading: a DeltaApplier is driven by one thread at a time (Poll; the host
// calls it from its serialized discovery passes); Status may be called from
// any thread at once with Poll. Lookups on the store run concurrently with
// an apply (the store's readers take no lock).
#ifndef RECSTRATA_BUNDLE_DELTA_H_
#define RECSTRATA_BUNDLE_DELTA_H_

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "store/store.h"

namespace rs {
namespace bundle {

inline constexpr const char* kDeltaFormat = "recstrata.delta";
inline constexpr uint32_t kDeltaFormatVersion = 1;
inline constexpr const char* kDeltasDir = "deltas";
inline constexpr const char* kDeltaManifest = "delta.json";
inline constexpr const char* kAppliedMarker = "DELTAS_APPLIED";

// One sub-table of the served bundle as the applier sees it.
struct DeltaTarget {
  std::string store_table;
  int64_t rows = 0;
  int32_t dim = 0;
  rs::store::Table* table = nullptr;
};

// Loads and warms up the dense SavedModel in a directory for the served
// model and returns the step that publishes it (which cannot fail). Throws
// rs::Error when the stage cannot be served (the delta is then refused).
using DensePreparer = std::function<std::function<void()>(const std::string& dense_dir)>;

struct DeltaStatus {
  uint64_t applied_sequence = 0;  // newest delta fully in the store
  std::string mode = "local";     // "local" (marker file) or "shared" (the store's ledger)
  uint64_t applied = 0;           // deltas applied by this instance
  uint64_t followed = 0;          // shared: deltas another host applied, followed here
  uint64_t lease_waits = 0;       // shared: polls that found another host applying
  uint64_t leases_lost = 0;       // shared: applies whose lease expired before the record
  uint64_t rows_applied = 0;      // rows written by them
  uint64_t dense_sequence = 0;    // newest applied delta with a dense stage (0: the bundle's)
  uint64_t dense_swaps = 0;       // dense stages published by this instance
  uint64_t refused = 0;           // distinct (delta, reason) refusals
  uint64_t failed = 0;            // applies that failed while writing (I/O)
  uint64_t pending = 0;           // complete deltas on disk newer than applied_sequence
  uint64_t blocked_at = 0;        // 0, or the delta that is refused and blocks the rest
  std::string last_error;         // the newest refusal or failure ("" if none)
  double last_apply_ms = 0;       // duration of the newest apply
  int64_t last_created_unix_ms = 0;  // created_unix_ms of the newest applied delta
  int64_t last_training_step = 0;
  int64_t last_applied_unix_ms = 0;  // wall clock when it became visible
  bool recovered = false;         // the open rolled an interrupted delta forward
};

// True when `store_dir` holds a delta marker (the store may have been written
// since the export closed it: open it with the crash rules).
bool DeltaStoreWritten(const std::string& store_dir);

class DeltaApplier {
 public:
  // bundle_dir: the served version's directory (its deltas/ is scanned);
  // base_version: its version number (the directory name; 0 if the name is
  // not a number: then only the manifest CRC identifies the base).
  DeltaApplier(std::string bundle_dir, std::string store_dir, int64_t base_version,
               rs::store::Store* store, std::vector<DeltaTarget> targets);

  // At open, before serving: reads the marker (refusing one of another base)
  // and re-applies an interrupted delta. Shared: reads the ledger (an
  // interrupted delta is rolled forward by Poll, once its lease expires).
  // Throws rs::Error.
  void RecoverOnOpen();

  // The dense stage directory the version serves after RecoverOnOpen: the
  // one of the newest applied delta with a dense stage, else `bundle_dense`.
  std::string DenseDir(const std::string& bundle_dense) const;

  // Set by the host once the model is open; without it a delta carrying a
  // dense stage is refused (RS_ERR_UNIMPLEMENTED). Not concurrently with Poll.
  void set_dense_preparer(DensePreparer p) { prepare_dense_ = std::move(p); }

  // Applies every pending delta in order; stops at the first refused or
  // failing one. Returns the number applied. Never throws (errors go to
  // Status).
  size_t Poll();

  DeltaStatus Status() const;
  // Status as a JSON object.
  std::string StatusJson() const;

 private:
  struct Loaded;  // a validated delta, rows in memory
  Loaded Validate(uint64_t seq, const std::string& dir) const;  // throws rs::Error
  void Apply(const Loaded& d, const std::function<void()>& publish);  // local; throws rs::Error
  std::function<void()> PrepareDense(const Loaded& d);          // {} without dense; throws
  void WriteRows(const Loaded& d);                              // throws rs::Error
  void Record(const Loaded& d, double ms);                      // status_ after an apply
  size_t PollShared();                                          // Poll with a ledger
  std::map<uint64_t, std::string> ListPending();                // deltas on disk; counts pending
  // Delta `seq` in order, validated, its dense stage loaded; false after a
  // refusal (a gap, damage, a dense stage that cannot serve).
  bool PrepareNext(uint64_t seq, const std::string& dir, Loaded* d, std::function<void()>* publish);
  void Follow(const rs::store::DeltaLedgerState& st);           // another host applied up to st
  void WriteMarker(uint64_t applied, uint64_t applying);  // with dense_seq_
  void Refuse(uint64_t seq, const std::string& why);

  std::string bundle_dir_, store_dir_;
  int64_t base_version_;
  std::string base_crc_;  // hex CRC-32C of bundle.json
  rs::store::Store* store_;
  rs::store::DeltaLedger* ledger_;  // NULL: a local store with its marker file
  std::vector<DeltaTarget> targets_;
  uint64_t applied_ = 0;  // Poll's thread only (copied into status_)
  uint64_t dense_seq_ = 0;       // newest applied delta with a dense stage
  std::string dense_dir_;        // its dense directory ("" for the bundle's own)
  DensePreparer prepare_dense_;
  std::vector<std::pair<uint64_t, std::string>> refusals_;  // counted once each

  mutable std::mutex mu_;  // status_
  DeltaStatus status_;
};

// Hex CRC-32C (8 lowercase digits) of a file's bytes. Throws RS_ERR_IO.
std::string FileCrc32cHex(const std::string& path, uint64_t* size);

}  // namespace bundle
}  // namespace rs

#endif  // RECSTRATA_BUNDLE_DELTA_H_
