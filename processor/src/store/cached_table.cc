#include "store/cached_table.h"

#include <algorithm>
#include <cstring>

#include "base/status.h"
#include "store/hash_index.h"

namespace rs {
namespace store {
namespace {
constexpr size_t kChunk = 16384;  // keys per backing-tier call
}

CachedTable::CachedTable(CachedTableConfig cfg, EpochDomain* epoch, std::unique_ptr<BackingTier> tier,
                         std::function<uint64_t()> generation)
    : cfg_(std::move(cfg)), epoch_(epoch), tier_(std::move(tier)), generation_(std::move(generation)) {
  if (cfg_.default_value.empty()) cfg_.default_value.assign(cfg_.dim, 0.0f);
  // A bounded cache always (capacity 0 would mean "unbounded" to DramTier).
  dram_.reset(new DramTier(cfg_.dim, cfg_.shard_bits, std::max<uint64_t>(cfg_.dram_capacity_bytes, 1),
                           cfg_.policy, epoch_));
}

void CachedTable::Lookup(const int64_t* keys, size_t n, float* out, uint8_t* found) const {
  if (n == 0) return;
  if (keys == nullptr || out == nullptr) Fail(RS_ERR_INVALID_ARGUMENT, "lookup: null keys or out");
  const int32_t dim = cfg_.dim;
  const size_t row_bytes = 4ull * dim;
  thread_local std::vector<uint32_t> misses;
  thread_local std::vector<int64_t> mkeys;
  thread_local std::vector<float> mrows;
  thread_local std::vector<uint8_t> mstate;
  misses.clear();
  const uint64_t gen = Generation();  // before any tier read
  {
    EpochGuard guard(*epoch_);
    uint64_t rnd = DramTier::RandomSeed();
    for (size_t i = 0; i < n; ++i) {
      const uint64_t h = HashKey(keys[i]);
      const float* row = dram_->Find(keys[i], h, &rnd);
      if (row) {
        std::memcpy(out + i * dim, row, row_bytes);
        if (found) found[i] = 1;
      } else {
        misses.push_back(static_cast<uint32_t>(i));
      }
    }
  }
  dram_hits_.fetch_add(n - misses.size(), std::memory_order_relaxed);
  if (misses.empty()) return;
  dram_misses_.fetch_add(misses.size(), std::memory_order_relaxed);
  uint64_t hits = 0, absent = 0, failed = 0, corrupt = 0;
  std::string error;
  for (size_t base = 0; base < misses.size(); base += kChunk) {
    const size_t m = std::min(kChunk, misses.size() - base);
    mkeys.resize(m);
    mrows.resize(m * static_cast<size_t>(dim));
    mstate.assign(m, kRowFailed);
    for (size_t j = 0; j < m; ++j) mkeys[j] = keys[misses[base + j]];
    tier_->Read(mkeys.data(), m, mrows.data(), mstate.data(), &error);
    for (size_t j = 0; j < m; ++j) {
      const uint32_t i = misses[base + j];
      float* dst = out + static_cast<size_t>(i) * dim;
      switch (mstate[j]) {
        case kRowPresent: {
          std::memcpy(dst, mrows.data() + j * dim, row_bytes);
          if (found) found[i] = 1;
          ++hits;
          const uint64_t h = HashKey(mkeys[j]);
          dram_->AdmitIf(mkeys[j], h, dst, [&] { return Generation() == gen; });
          break;
        }
        case kRowAbsent:
          std::memcpy(dst, cfg_.default_value.data(), row_bytes);
          if (found) found[i] = 0;
          ++absent;
          break;
        case kRowCorrupt:
          ++corrupt;
          break;
        default:
          ++failed;
      }
    }
  }
  if (hits) remote_hits_.fetch_add(hits, std::memory_order_relaxed);
  if (absent) remote_misses_.fetch_add(absent, std::memory_order_relaxed);
  if (failed) remote_errors_.fetch_add(failed, std::memory_order_relaxed);
  if (corrupt) remote_corrupt_.fetch_add(corrupt, std::memory_order_relaxed);
  epoch_->TryAdvance();
  if (corrupt) {
    failed_lookups_.fetch_add(1, std::memory_order_relaxed);
    Fail(RS_ERR_CORRUPTION, "table '" + cfg_.name + "': " + error);
  }
  if (failed) {
    failed_lookups_.fetch_add(1, std::memory_order_relaxed);
    Fail(RS_ERR_IO, "table '" + cfg_.name + "': " + std::to_string(failed) + " of " +
                        std::to_string(n) + " keys missed the DRAM cache and the remote tier "
                        "could not be read: " + error);
  }
}

void CachedTable::Write(const int64_t* keys, size_t n, const float* rows, bool bulk) {
  if (n == 0) return;
  if (keys == nullptr || rows == nullptr) Fail(RS_ERR_INVALID_ARGUMENT, "write: null keys or rows");
  const size_t dim = static_cast<size_t>(cfg_.dim);
  // Bumped before and after: a reader that read the tier around this write
  // does not admit what it read (AdmitIf compares generations).
  write_gen_.fetch_add(1, std::memory_order_acq_rel);
  int64_t fresh = 0;
  try {
    for (size_t base = 0; base < n; base += kChunk) {
      const size_t m = std::min(kChunk, n - base);
      fresh += static_cast<int64_t>(tier_->Write(keys + base, m, rows + base * dim));
    }
  } catch (...) {
    for (size_t i = 0; i < n; ++i) dram_->Erase(keys[i], HashKey(keys[i]));
    write_gen_.fetch_add(1, std::memory_order_acq_rel);
    epoch_->TryAdvance();
    try {
      if (fresh) {
        rows_.fetch_add(static_cast<uint64_t>(fresh), std::memory_order_relaxed);
        if (on_rows_changed) on_rows_changed(fresh);
      }
      if (on_written) on_written(keys, n);
    } catch (...) {
    }
    throw;
  }
  for (size_t i = 0; i < n; ++i) {
    const uint64_t h = HashKey(keys[i]);
    if (bulk) dram_->Erase(keys[i], h);
    else dram_->ReplaceIfPresent(keys[i], h, rows + i * dim);
  }
  write_gen_.fetch_add(1, std::memory_order_acq_rel);
  payload_written_.fetch_add(n * (8 + 4 * dim), std::memory_order_relaxed);
  epoch_->TryAdvance();
  if (fresh) {
    rows_.fetch_add(static_cast<uint64_t>(fresh), std::memory_order_relaxed);
    if (on_rows_changed) on_rows_changed(fresh);
  }
  if (on_written) on_written(keys, n);
}

void CachedTable::Upsert(const int64_t* keys, size_t n, const float* rows) { Write(keys, n, rows, false); }
void CachedTable::BulkLoad(const int64_t* keys, size_t n, const float* rows) { Write(keys, n, rows, true); }

void CachedTable::Delete(const int64_t* keys, size_t n) {
  if (n == 0) return;
  if (keys == nullptr) Fail(RS_ERR_INVALID_ARGUMENT, "delete: null keys");
  std::vector<int64_t> uniq(keys, keys + n);
  std::sort(uniq.begin(), uniq.end());
  uniq.erase(std::unique(uniq.begin(), uniq.end()), uniq.end());
  write_gen_.fetch_add(1, std::memory_order_acq_rel);
  uint64_t gone = 0;
  try {
    for (size_t base = 0; base < uniq.size(); base += kChunk)
      gone += tier_->Erase(uniq.data() + base, std::min(kChunk, uniq.size() - base));
  } catch (...) {
    for (int64_t k : uniq) dram_->Erase(k, HashKey(k));
    write_gen_.fetch_add(1, std::memory_order_acq_rel);
    throw;
  }
  for (int64_t k : uniq) dram_->Erase(k, HashKey(k));
  write_gen_.fetch_add(1, std::memory_order_acq_rel);
  epoch_->TryAdvance();
  if (gone) {
    uint64_t cur = rows_.load();
    rows_.store(cur >= gone ? cur - gone : 0, std::memory_order_relaxed);
    if (on_rows_changed) on_rows_changed(-static_cast<int64_t>(gone));
  }
  if (on_written) on_written(uniq.data(), uniq.size());
}

void CachedTable::Forget(const int64_t* keys, size_t n) {
  write_gen_.fetch_add(1, std::memory_order_acq_rel);
  for (size_t i = 0; i < n; ++i) dram_->Erase(keys[i], HashKey(keys[i]));
  write_gen_.fetch_add(1, std::memory_order_acq_rel);
  epoch_->TryAdvance();
}

void CachedTable::Invalidate() {
  dram_->Clear();
  epoch_->TryAdvance();
}

TableStats CachedTable::Stats() const {
  TableStats s;
  s.name = cfg_.name;
  s.dim = cfg_.dim;
  s.rows = rows_.load();
  s.dram_rows = dram_->rows();
  s.dram_bytes = dram_->bytes();
  s.dram_capacity_bytes = dram_->capacity_bytes();
  s.dram_hits = dram_hits_.load();
  s.dram_misses = dram_misses_.load();
  s.evictions = dram_->evictions();
  s.admissions = dram_->admissions();
  s.live_payload_bytes = s.rows * (8 + 4ull * cfg_.dim);
  s.payload_bytes_written = payload_written_.load();
  s.remote_hits = remote_hits_.load();
  s.remote_misses = remote_misses_.load();
  s.remote_errors = remote_errors_.load();
  s.remote_corrupt = remote_corrupt_.load();
  s.failed_lookups = failed_lookups_.load();
  return s;
}

}  // namespace store
}  // namespace rs
