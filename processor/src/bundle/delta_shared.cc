// DeltaApplier over a store many hosts share (bundle/delta.h, "A store shared
// by many hosts"): follow the key space's ledger, or claim a delta's lease,
// write its rows once and commit.
#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "base/status.h"
#include "bundle/delta.h"
#include "bundle/delta_internal.h"

namespace rs {
namespace bundle {
namespace {

// How long a shared apply's lease lasts (a writer that dies holds the delta
// back this long). Deltas apply in milliseconds; the margin is for a slow
// Redis node.
int LeaseMs() {
  const char* v = std::getenv("RECSTRATA_DELTA_LEASE_MS");
  const int ms = v ? std::atoi(v) : 0;
  return ms > 0 ? ms : 10000;
}

}  // namespace

void DeltaApplier::Follow(const rs::store::DeltaLedgerState& st) {
  {
    auto hold = ledger_->Hold();
    ledger_->Sync();  // this host's cached copies of the rows written are dropped now
  }
  // The dense stage another host published with a delta is published here
  // too, from this host's copy of the delta (rows are shared, dense stages
  // are per host).
  std::string dense_error;
  if (st.dense_sequence > dense_seq_) {
    auto all = ListDeltas(bundle_dir_);
    auto it = all.find(st.dense_sequence);
    try {
      if (it == all.end())
        Fail(RS_ERR_NOT_FOUND, "its files are not on this host");
      Loaded d = Validate(st.dense_sequence, it->second);
      std::function<void()> publish = PrepareDense(d);
      if (publish) publish();
    } catch (const Error& e) {
      dense_error = "delta " + std::to_string(st.dense_sequence) + " changed the dense stage (applied by "
                    "another host) and this host cannot serve it, so it serves the previous dense stage "
                    "with the new rows: " + e.what();
    }
  }
  std::lock_guard<std::mutex> lk(mu_);
  const uint64_t seq = st.applied_sequence;
  status_.followed += seq - applied_;
  status_.pending -= std::min<uint64_t>(status_.pending, seq - applied_);
  applied_ = seq;
  status_.applied_sequence = seq;
  status_.dense_sequence = dense_seq_;
  status_.last_applied_unix_ms = NowUnixMs();
  status_.blocked_at = 0;
  if (!dense_error.empty()) {
    status_.last_error = dense_error;
    ++status_.failed;
  }
}

size_t DeltaApplier::PollShared() {
  size_t n = 0;
  // Planning, validation and dense loads run without the hold; a delta's
  // claim, rows, dense publish and commit run under it (the store keeps its
  // key space meanwhile, so the rows and the record land in one space).
  const rs::store::DeltaLedgerState st = ledger_->Read();
  auto all = ListPending();
  if (st.base_crc32c == base_crc_ && st.applied_sequence > applied_) Follow(st);
  for (const auto& [seq, dir] : all) {
    if (seq <= applied_) continue;
    const auto t0 = std::chrono::steady_clock::now();
    Loaded d;
    std::function<void()> publish;
    if (!PrepareNext(seq, dir, &d, &publish)) break;
    std::string token;
    rs::store::DeltaClaim claim;
    std::unique_lock<std::mutex> hold = ledger_->Hold();
    try {
      claim = ledger_->Claim(seq, base_crc_, LeaseMs(), &token);
    } catch (const Error& e) {
      if (e.code() != RS_ERR_FAILED_PRECONDITION) throw;
      Refuse(seq, "delta " + std::to_string(seq) + " refused: " + e.what());
      break;
    }
    if (claim == rs::store::DeltaClaim::kApplied) {  // another host was quicker
      hold.unlock();
      Follow(ledger_->Read());
      continue;
    }
    if (claim == rs::store::DeltaClaim::kBusy) {  // another host is writing it, or died doing so
      std::lock_guard<std::mutex> lk(mu_);
      ++status_.lease_waits;
      break;
    }
    try {
      WriteRows(d);
    } catch (const Error& e) {
      ledger_->Release(token);
      std::lock_guard<std::mutex> lk(mu_);
      ++status_.failed;
      status_.last_error = "delta " + std::to_string(seq) + " failed while applying (the shared tier " +
                           "may hold part of it; it is re-applied on the next pass): " + e.what();
      status_.blocked_at = seq;
      break;
    }
    if (publish) publish();  // this host's dense stage (each host swaps its own)
    if (!ledger_->Commit(seq, publish ? seq : 0, token)) {
      // The lease expired mid-apply and another host took it: it writes the
      // same rows and records the delta; follow it once it has.
      {
        std::lock_guard<std::mutex> lk(mu_);
        ++status_.leases_lost;
      }
      hold.unlock();
      const rs::store::DeltaLedgerState now = ledger_->Read();
      if (now.applied_sequence >= seq) Follow(now);
      break;
    }
    Record(d, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    ++n;
  }
  return n;
}

}  // namespace bundle
}  // namespace rs
