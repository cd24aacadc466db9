// DynamicTable: lookups, the step's apply (merge, Adagrad, admission) and
// eviction (tfops/dynamic_table.h). The state file is in
// tfops/dynamic_table_state.cc.
#include "tfops/dynamic_table.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tfops/dyn_errors.h"

namespace rs {
namespace tfops {

DynamicTable::DynamicTable(std::string name, DynamicStore* store, const rsdyn_table_config& cfg)
    : name_(std::move(name)), store_(store), cfg_(cfg) {
  if (cfg_.width < 1 || cfg_.width > 32768) Fail(name_ + ": width must be in [1, 32768]");
  if (cfg_.num_replicas < 1 || cfg_.num_replicas > 4096) Fail(name_ + ": num_replicas must be in [1, 4096]");
  if (cfg_.admit_threshold > 1) {
    if (cfg_.sketch_depth < 1 || cfg_.sketch_depth > 16) Fail(name_ + ": sketch_depth must be in [1, 16]");
    if (cfg_.sketch_width < 64 || (cfg_.sketch_width & (cfg_.sketch_width - 1)))
      Fail(name_ + ": sketch_width must be a power of two >= 64");
    if (cfg_.admit_threshold > 0xffff) Fail(name_ + ": admit_threshold must be <= 65535");
    sketch_ = CountMinSketch(static_cast<uint32_t>(cfg_.sketch_depth),
                             static_cast<uint64_t>(cfg_.sketch_width));
  }
  if (cfg_.max_rows < 0 || cfg_.ttl_steps < 0) Fail(name_ + ": max_rows and ttl_steps must be >= 0");
  if (cfg_.evict_every_steps < 1) cfg_.evict_every_steps = 1;
  if (!(cfg_.age_scale_steps > 0)) cfg_.age_scale_steps = 1000;
  if (!(cfg_.learning_rate > 0) || !(cfg_.initial_accumulator >= 0) || !(cfg_.epsilon >= 0))
    Fail(name_ + ": bad optimizer settings");
  pending_.resize(static_cast<size_t>(cfg_.num_replicas));
}

void DynamicTable::InitRow(int64_t key, float* row) const {
  const int32_t w = cfg_.width;
  // Box-Muller on two uniforms from splitmix64 of (seed, key, column).
  for (int32_t c = 0; c < w; ++c) {
    uint64_t h1 = Mix64(static_cast<uint64_t>(key) ^ (static_cast<uint64_t>(c) << 48),
                        static_cast<uint64_t>(cfg_.seed) * 2 + 1);
    uint64_t h2 = Mix64(h1, static_cast<uint64_t>(cfg_.seed) * 2 + 2);
    double u1 = (static_cast<double>(h1 >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = static_cast<double>(h2 >> 11) * (1.0 / 9007199254740992.0);
    double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
    row[c] = static_cast<float>(z * cfg_.init_stddev);
  }
  for (int32_t c = 0; c < w; ++c) row[w + c] = static_cast<float>(cfg_.initial_accumulator);
}

void DynamicTable::Lookup(const int64_t* keys, size_t n, float* out) {
  std::shared_lock<std::shared_mutex> lock(store_->mu());
  if (!table_) Fail(name_ + ": the dynamic store is closed");
  const int32_t w = cfg_.width, d = row_dim();
  thread_local std::vector<float> buf;
  thread_local std::vector<uint8_t> found;
  buf.resize(n * static_cast<size_t>(d));
  found.resize(n);
  rs_error* err = nullptr;
  CheckCall([&] { return rs_table_lookup(table_, keys, n, buf.data(), found.data(), &err); }, err, name_ + ": lookup");
  uint64_t hits = 0;
  for (size_t i = 0; i < n; ++i) {
    if (found[i]) {
      std::memcpy(out + i * w, buf.data() + i * d, sizeof(float) * w);
      ++hits;
    } else {
      std::memset(out + i * w, 0, sizeof(float) * w);
    }
  }
  std::lock_guard<std::mutex> g(mu_);
  stats_.lookups += n;
  stats_.lookup_hits += hits;
}

void DynamicTable::ClearPending() {
  std::lock_guard<std::mutex> g(mu_);
  for (auto& p : pending_) p = Pending();
  pending_count_ = 0;
}

int64_t DynamicTable::Contribute(int replica, const int64_t* keys, const int64_t* counts,
                                 const float* grads, size_t n) {
  std::shared_lock<std::shared_mutex> lock(store_->mu());
  if (!table_) Fail(name_ + ": the dynamic store is closed");
  std::lock_guard<std::mutex> g(mu_);
  if (replica < 0 || replica >= cfg_.num_replicas)
    Fail(name_ + ": replica " + std::to_string(replica) + " out of range (num_replicas " +
         std::to_string(cfg_.num_replicas) + ")");
  Pending& p = pending_[static_cast<size_t>(replica)];
  if (p.present)
    Fail(name_ + ": replica " + std::to_string(replica) +
         " contributed twice to one step (a step of another replica is missing)");
  p.present = true;
  p.keys.assign(keys, keys + n);
  p.counts.assign(counts, counts + n);
  p.grads.assign(grads, grads + n * static_cast<size_t>(cfg_.width));
  if (++pending_count_ < cfg_.num_replicas) return -1;
  try {
    ApplyLocked();
  } catch (...) {
    for (auto& q : pending_) q = Pending();
    pending_count_ = 0;
    throw;
  }
  for (auto& q : pending_) q = Pending();
  pending_count_ = 0;
  return stats_.step;
}

void DynamicTable::ApplyLocked() {
  const int32_t w = cfg_.width, d = row_dim();
  // 1. merge the replicas' contributions (replica order, first-seen key order)
  std::unordered_map<int64_t, size_t> slot;
  std::vector<int64_t> keys;
  std::vector<uint64_t> counts;
  std::vector<float> grads;
  for (const auto& p : pending_) {
    for (size_t i = 0; i < p.keys.size(); ++i) {
      auto it = slot.emplace(p.keys[i], keys.size());
      if (it.second) {
        keys.push_back(p.keys[i]);
        counts.push_back(0);
        grads.resize(grads.size() + w, 0.0f);
      }
      const size_t s = it.first->second;
      counts[s] += p.counts[i] > 0 ? static_cast<uint64_t>(p.counts[i]) : 0;
      float* g = grads.data() + s * w;
      const float* src = p.grads.data() + i * w;
      for (int32_t c = 0; c < w; ++c) g[c] += src[c];
    }
  }
  const int64_t step = ++stats_.step;
  // 2. ids with real occurrences only (padding has count 0)
  std::vector<int64_t> live_keys;
  std::vector<size_t> live_slot;
  for (size_t s = 0; s < keys.size(); ++s)
    if (counts[s] > 0) live_keys.push_back(keys[s]), live_slot.push_back(s);
  const size_t n = live_keys.size();
  std::vector<float> rows(n * d);
  std::vector<uint8_t> found(n);
  rs_error* err = nullptr;
  if (n) CheckCall([&] { return rs_table_lookup(table_, live_keys.data(), n, rows.data(), found.data(), &err); }, err,
               name_ + ": lookup");
  std::vector<int64_t> out_keys;
  std::vector<float> out_rows;
  out_keys.reserve(n);
  out_rows.reserve(n * d);
  const float lr = static_cast<float>(cfg_.learning_rate), eps = static_cast<float>(cfg_.epsilon);
  for (size_t i = 0; i < n; ++i) {
    const int64_t key = live_keys[i];
    const size_t s = live_slot[i];
    const uint32_t est = sketch_.empty() ? 0 : sketch_.Add(key, counts[s]);
    float* row = rows.data() + i * d;
    if (found[i]) {
      // Adagrad (Keras' formula): acc += g^2; w -= lr * g / sqrt(acc + eps)
      const float* g = grads.data() + s * w;
      for (int32_t c = 0; c < w; ++c) {
        float acc = row[w + c] + g[c] * g[c];
        row[w + c] = acc;
        row[c] -= lr * g[c] / std::sqrt(acc + eps);
      }
      RowMeta& m = meta_[key];
      m.last_step = step;
      m.freq += 1;
      ++stats_.updates;
    } else {
      const bool admit = cfg_.admit_threshold <= 1 || est >= static_cast<uint64_t>(cfg_.admit_threshold);
      if (!admit) continue;
      InitRow(key, row);
      meta_[key] = RowMeta{step, 1};
      ++stats_.admitted;
    }
    out_keys.push_back(key);
    out_rows.insert(out_rows.end(), row, row + d);
  }
  if (!out_keys.empty())
    CheckCall([&] { return rs_table_upsert(table_, out_keys.data(), out_keys.size(), out_rows.data(), &err); }, err,
          name_ + ": upsert");
  EvictLocked(cfg_.ttl_steps > 0 && step % cfg_.evict_every_steps == 0);
}

int64_t DynamicTable::EvictLocked(bool age_pass) {
  const int64_t step = stats_.step;
  std::vector<int64_t> victims;
  if (age_pass && cfg_.ttl_steps > 0) {
    for (const auto& kv : meta_)
      if (step - kv.second.last_step > cfg_.ttl_steps) victims.push_back(kv.first);
    stats_.evicted_age += victims.size();
  }
  const size_t live = meta_.size() - victims.size();
  if (cfg_.max_rows > 0 && live > static_cast<size_t>(cfg_.max_rows)) {
    std::sort(victims.begin(), victims.end());
    const size_t target = static_cast<size_t>(cfg_.max_rows) * 9 / 10;
    struct Cand { double score; int64_t last; int64_t key; };
    std::vector<Cand> cand;
    cand.reserve(live);
    for (const auto& kv : meta_) {
      if (age_pass && std::binary_search(victims.begin(), victims.end(), kv.first)) continue;
      const double age = static_cast<double>(step - kv.second.last_step);
      cand.push_back({static_cast<double>(kv.second.freq) / (1.0 + age / cfg_.age_scale_steps),
                      kv.second.last_step, kv.first});
    }
    const size_t drop = live - target;
    auto less = [](const Cand& a, const Cand& b) {
      if (a.score != b.score) return a.score < b.score;
      if (a.last != b.last) return a.last < b.last;
      return a.key < b.key;
    };
    std::nth_element(cand.begin(), cand.begin() + static_cast<long>(drop), cand.end(), less);
    for (size_t i = 0; i < drop; ++i) victims.push_back(cand[i].key);
    stats_.evicted_cap += drop;
  }
  if (victims.empty()) return 0;
  std::sort(victims.begin(), victims.end());
  rs_error* err = nullptr;
  CheckCall([&] { return rs_table_delete(table_, victims.data(), victims.size(), &err); }, err, name_ + ": evict");
  for (int64_t k : victims) meta_.erase(k);
  return static_cast<int64_t>(victims.size());
}

int64_t DynamicTable::Evict() {
  std::shared_lock<std::shared_mutex> lock(store_->mu());
  if (!table_) Fail(name_ + ": the dynamic store is closed");
  std::lock_guard<std::mutex> g(mu_);
  return EvictLocked(true);
}

TableStats DynamicTable::Stats() {
  std::lock_guard<std::mutex> g(mu_);
  TableStats s = stats_;
  s.rows = meta_.size();
  return s;
}

}  // namespace tfops
}  // namespace rs
