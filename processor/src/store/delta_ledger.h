// DeltaLedger: the shared record of the bundle deltas applied to a store that
// many hosts read and write (tiers "dram+redis"), so that each delta is
// written into the shared tier once, by one host, and the others follow.
//
// A ledger describes the store's active key space: the bundle it was bound
// to (the CRC-32C of the bundle.json its export wrote), the newest delta
// fully applied, and a delta some host started (`applying`). Writers take a
// lease per delta; a writer that dies mid-apply leaves `applying` set and
// its lease expires, then any host holding the delta's files re-applies it
// (deltas hold absolute rows, so applying twice is harmless).
//
// The local store keeps this record in a file of its own directory
// (bundle/delta.h, DELTAS_APPLIED) and has no ledger: Store::delta_ledger()
// returns NULL for it.
//
// Threading: every call may come from any thread. Claim, the row writes of
// the claimed delta, Commit and Sync are made while the lock Hold() returns
// is alive (Read and Release need not be).
#ifndef RECSTRATA_STORE_DELTA_LEDGER_H_
#define RECSTRATA_STORE_DELTA_LEDGER_H_

#include <cstdint>
#include <mutex>
#include <string>

namespace rs {
namespace store {

struct DeltaLedgerState {
  std::string space;             // the key space described (the store's active one)
  std::string base_crc32c;       // "" when no export bound the space
  uint64_t applied_sequence = 0;  // newest delta fully applied by some host
  uint64_t applying = 0;         // a delta started and not finished (0: none)
  uint64_t dense_sequence = 0;   // newest applied delta that carried a dense stage
};

enum class DeltaClaim {
  kClaimed,  // the lease is this caller's; the record says applying = seq
  kApplied,  // the record already says applied_sequence >= seq: nothing to write
  kBusy,     // another host holds the lease: try again later
};

class DeltaLedger {
 public:
  virtual ~DeltaLedger() = default;
  // While the returned lock lives the store keeps its active key space (a
  // serving-pointer switch waits), so one delta's rows and its record land
  // in one space.
  virtual std::unique_lock<std::mutex> Hold() = 0;
  // The record of the active space. Throws RS_ERR_IO.
  virtual DeltaLedgerState Read() = 0;
  // Takes the lease on delta `seq` for lease_ms. Throws RS_ERR_FAILED_PRECONDITION
  // when the space is bound to no bundle or to another one (base_crc32c
  // differs), or when the record is not at seq - 1 or later; RS_ERR_IO.
  virtual DeltaClaim Claim(uint64_t seq, const std::string& base_crc32c, int lease_ms,
                           std::string* token) = 0;
  // Records `seq` as applied (and as the newest dense stage when
  // dense_sequence is not 0) and drops the lease, if the lease is still
  // `token`'s. False when it expired and another host took it (that host
  // then writes the same rows and records it). Throws RS_ERR_IO.
  virtual bool Commit(uint64_t seq, uint64_t dense_sequence, const std::string& token) = 0;
  // Drops the lease if it is still `token`'s. Never throws.
  virtual void Release(const std::string& token) = 0;
  // Drops this store's cached copies of the rows other hosts changed (reads
  // their change notices now, not at the next watcher poll). Throws RS_ERR_IO.
  virtual void Sync() = 0;
};

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_DELTA_LEDGER_H_
