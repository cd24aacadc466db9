#include "tfops/dynamic_table.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

namespace rs {
namespace tfops {
namespace {

[[noreturn]] void Fail(const std::string& msg) { throw DynError(msg); }

void Check(int rc, rs_error* err, const std::string& what) {
  if (rc == RS_OK) return;
  std::string msg = what + ": " + (err ? rs_error_message(err) : "error " + std::to_string(rc));
  if (err) rs_error_free(err);
  Fail(msg);
}

// Runs an rs_* call that reports into `err`, then checks it (the call must be
// sequenced before `err` is read).
template <typename F>
void CheckCall(F&& call, rs_error*& err, const std::string& what) {
  err = nullptr;
  const int rc = call();
  Check(rc, err, what);
}

// FNV-1a 64 over bytes, chained: the state file's checksum.
uint64_t Fnv(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void MakeDirs(const std::string& p) {
  if (p.empty() || IsDir(p)) return;
  auto slash = p.find_last_of('/');
  if (slash != std::string::npos && slash > 0) MakeDirs(p.substr(0, slash));
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST)
    Fail("mkdir " + p + ": " + std::strerror(errno));
}

std::vector<std::string> ListDir(const std::string& p) {
  std::vector<std::string> out;
  DIR* d = ::opendir(p.c_str());
  if (!d) Fail("cannot list " + p + ": " + std::strerror(errno));
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void RemoveTree(const std::string& p) {
  struct stat st;
  if (::lstat(p.c_str(), &st) != 0) return;
  if (S_ISDIR(st.st_mode)) {
    for (const auto& n : ListDir(p)) RemoveTree(p + "/" + n);
    if (::rmdir(p.c_str()) != 0) Fail("rmdir " + p + ": " + std::strerror(errno));
  } else if (::unlink(p.c_str()) != 0) {
    Fail("unlink " + p + ": " + std::strerror(errno));
  }
}

void CopyFile(const std::string& src, const std::string& dst) {
  int in = ::open(src.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) Fail("open " + src + ": " + std::strerror(errno));
  int out = ::open(dst.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (out < 0) {
    ::close(in);
    Fail("create " + dst + ": " + std::strerror(errno));
  }
  std::vector<char> buf(1 << 20);
  bool ok = true;
  for (;;) {
    ssize_t r = ::read(in, buf.data(), buf.size());
    if (r < 0) { ok = false; break; }
    if (r == 0) break;
    for (ssize_t off = 0; off < r;) {
      ssize_t w = ::write(out, buf.data() + off, static_cast<size_t>(r - off));
      if (w <= 0) { ok = false; break; }
      off += w;
    }
    if (!ok) break;
  }
  if (ok && ::fsync(out) != 0) ok = false;
  ::close(in);
  if (::close(out) != 0) ok = false;
  if (!ok) Fail("copy " + src + " -> " + dst + " failed: " + std::strerror(errno));
}

void SyncPath(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void CloneTree(const std::string& src, const std::string& dst) {
  MakeDirs(dst);
  for (const auto& n : ListDir(src)) {
    const std::string s = src + "/" + n, d = dst + "/" + n;
    if (IsDir(s)) {
      CloneTree(s, d);
    } else if (n == "LOCK") {
      continue;
    } else if (n == "MANIFEST") {
      CopyFile(s, d);
    } else if (::link(s.c_str(), d.c_str()) != 0) {
      if (errno == EXDEV || errno == EPERM || errno == EMLINK) CopyFile(s, d);
      else Fail("link " + s + " -> " + d + ": " + std::strerror(errno));
    }
  }
  SyncPath(dst);
}

std::mutex g_mu;
std::map<std::string, std::shared_ptr<DynamicStore>> g_stores;
std::map<std::string, std::shared_ptr<DynamicTable>> g_tables;

constexpr char kStateMagic[8] = {'R', 'S', 'D', 'Y', 'N', 'S', 'T', '1'};
constexpr uint32_t kStateVersion = 1;

}  // namespace

void CloneStoreDir(const std::string& src, const std::string& dst) {
  if (!IsDir(src)) Fail("store snapshot " + src + " is missing");
  struct stat st;
  if (::stat((src + "/MANIFEST").c_str(), &st) != 0) Fail("store snapshot " + src + " has no MANIFEST");
  CloneTree(src, dst);
}

// ----------------------------------------------------------------------------- table

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

void DynamicTable::SaveState(const std::string& path) {
  std::lock_guard<std::mutex> g(mu_);
  if (pending_count_) Fail(name_ + ": snapshot in the middle of a step");
  std::vector<char> buf;
  auto put = [&buf](const void* p, size_t n) {
    buf.insert(buf.end(), static_cast<const char*>(p), static_cast<const char*>(p) + n);
  };
  put(kStateMagic, 8);
  const uint32_t hdr[4] = {kStateVersion, static_cast<uint32_t>(cfg_.width),
                           sketch_.depth(), 0};
  put(hdr, sizeof(hdr));
  const uint64_t sw = sketch_.width();
  put(&sw, 8);
  const int64_t st[1] = {stats_.step};
  put(st, 8);
  const uint64_t cnt[6] = {stats_.admitted, stats_.evicted_cap, stats_.evicted_age, stats_.updates,
                           stats_.lookups, stats_.lookup_hits};
  put(cnt, sizeof(cnt));
  if (!sketch_.empty()) put(sketch_.counters().data(), sketch_.counters().size() * 2);
  std::vector<int64_t> keys;
  keys.reserve(meta_.size());
  for (const auto& kv : meta_) keys.push_back(kv.first);
  std::sort(keys.begin(), keys.end());
  const uint64_t nm = keys.size();
  put(&nm, 8);
  for (int64_t k : keys) {
    const RowMeta& m = meta_[k];
    const int64_t e[3] = {k, m.last_step, static_cast<int64_t>(m.freq)};
    put(e, sizeof(e));
  }
  const uint64_t sum = Fnv(0xcbf29ce484222325ULL, buf.data(), buf.size());
  put(&sum, 8);
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Fail("create " + tmp + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < buf.size()) {
    ssize_t w = ::write(fd, buf.data() + off, buf.size() - off);
    if (w <= 0) {
      ::close(fd);
      Fail("write " + tmp + ": " + std::strerror(errno));
    }
    off += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) Fail("sync " + tmp + ": " + std::strerror(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0) Fail("rename " + tmp + ": " + std::strerror(errno));
}

void DynamicTable::LoadState(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(name_ + ": state file " + path + ": " + std::strerror(errno));
  std::vector<char> buf;
  char tmp[1 << 16];
  for (;;) {
    ssize_t r = ::read(fd, tmp, sizeof(tmp));
    if (r < 0) {
      ::close(fd);
      Fail("read " + path + ": " + std::strerror(errno));
    }
    if (r == 0) break;
    buf.insert(buf.end(), tmp, tmp + r);
  }
  ::close(fd);
  auto corrupt = [&](const std::string& why) { Fail(name_ + ": state file " + path + " is damaged: " + why); };
  if (buf.size() < 8 + 16 + 8 + 8 + 48 + 8 + 8) corrupt("too short");
  uint64_t sum;
  std::memcpy(&sum, buf.data() + buf.size() - 8, 8);
  if (Fnv(0xcbf29ce484222325ULL, buf.data(), buf.size() - 8) != sum) corrupt("checksum mismatch");
  if (std::memcmp(buf.data(), kStateMagic, 8) != 0) corrupt("bad magic");
  size_t pos = 8;
  auto get = [&](void* p, size_t n) {
    if (pos + n > buf.size() - 8) corrupt("truncated");
    std::memcpy(p, buf.data() + pos, n);
    pos += n;
  };
  uint32_t hdr[4];
  get(hdr, sizeof(hdr));
  if (hdr[0] != kStateVersion) corrupt("version " + std::to_string(hdr[0]));
  if (hdr[1] != static_cast<uint32_t>(cfg_.width) || hdr[2] != sketch_.depth())
    Fail(name_ + ": state file " + path + " was written for another table shape (width " +
         std::to_string(hdr[1]) + ", sketch depth " + std::to_string(hdr[2]) + ")");
  uint64_t sw;
  get(&sw, 8);
  if (sw != sketch_.width()) Fail(name_ + ": state file " + path + " has another sketch width");
  TableStats s;
  get(&s.step, 8);
  uint64_t cnt[6];
  get(cnt, sizeof(cnt));
  s.admitted = cnt[0], s.evicted_cap = cnt[1], s.evicted_age = cnt[2], s.updates = cnt[3];
  s.lookups = cnt[4], s.lookup_hits = cnt[5];
  CountMinSketch sk(sketch_.depth(), sketch_.width());
  if (!sk.empty()) get(sk.counters().data(), sk.counters().size() * 2);
  uint64_t nm;
  get(&nm, 8);
  if (nm > (buf.size() - pos) / 24) corrupt("row count");
  std::unordered_map<int64_t, RowMeta> meta;
  meta.reserve(nm);
  for (uint64_t i = 0; i < nm; ++i) {
    int64_t e[3];
    get(e, sizeof(e));
    meta[e[0]] = RowMeta{e[1], static_cast<uint64_t>(e[2])};
  }
  if (pos != buf.size() - 8) corrupt("trailing bytes");
  std::lock_guard<std::mutex> g(mu_);
  stats_ = s;
  sketch_ = std::move(sk);
  meta_ = std::move(meta);
  for (auto& p : pending_) p = Pending();
  pending_count_ = 0;
}

// ----------------------------------------------------------------------------- store

DynamicStore::DynamicStore(std::string dir, std::string options_json)
    : dir_(std::move(dir)), options_(std::move(options_json)) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  OpenLocked();
}

DynamicStore::~DynamicStore() {
  if (store_) rs_store_close(store_);
}

void DynamicStore::OpenLocked() {
  rs_error* err = nullptr;
  MakeDirs(dir_);
  CheckCall([&] { return rs_store_open(dir_.c_str(), options_.c_str(), &store_, &err); }, err, "dynamic store " + dir_);
  for (auto& kv : tables_) {
    rs_table* t = nullptr;
    CheckCall([&] { return rs_store_table(store_, kv.first.c_str(), &t, &err); }, err,
          "dynamic store " + dir_ + ": table " + kv.first);
    if (rs_table_dim(t) != kv.second->row_dim())
      Fail("dynamic store " + dir_ + ": table " + kv.first + " has rows of " +
           std::to_string(rs_table_dim(t)) + " floats, expected " + std::to_string(kv.second->row_dim()));
    kv.second->Bind(t);
  }
}

std::shared_ptr<DynamicTable> DynamicStore::CreateTable(const std::string& name,
                                                        const rsdyn_table_config& cfg) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (!store_) Fail("dynamic store " + dir_ + " is closed");
  if (tables_.count(name)) Fail("dynamic store " + dir_ + ": table " + name + " exists");
  auto t = std::make_shared<DynamicTable>(name, this, cfg);
  rs_error* err = nullptr;
  rs_table* h = nullptr;
  if (rs_store_table(store_, name.c_str(), &h, nullptr) != RS_OK) {
    std::string opts = "{\"dram_capacity_bytes\": " + std::to_string(cfg.dram_capacity_bytes) + "}";
    CheckCall([&] { return rs_store_create_table(store_, name.c_str(), t->row_dim(),
                                cfg.dram_capacity_bytes > 0 ? opts.c_str() : nullptr, &h, &err); }, err, "dynamic store " + dir_ + ": create table " + name);
  } else if (rs_table_dim(h) != t->row_dim()) {
    Fail("dynamic store " + dir_ + ": table " + name + " exists with another row width");
  }
  t->Bind(h);
  tables_[name] = t;
  return t;
}

void DynamicStore::Snapshot(const std::string& out_dir) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (!store_) Fail("dynamic store " + dir_ + " is closed");
  const std::string tmp = out_dir + ".part";
  RemoveTree(tmp);
  MakeDirs(tmp + "/state");
  for (auto& kv : tables_) kv.second->SaveState(tmp + "/state/" + kv.first + ".bin");
  rs_store_close(store_);  // clean close: the MANIFEST records files and sizes
  store_ = nullptr;
  for (auto& kv : tables_) kv.second->Bind(nullptr);
  std::string failure;
  try {
    CloneStoreDir(dir_, tmp + "/store");
    SyncPath(tmp);
  } catch (const DynError& e) {
    failure = e.what();
  }
  OpenLocked();
  if (!failure.empty()) Fail(failure);
  RemoveTree(out_dir);
  if (::rename(tmp.c_str(), out_dir.c_str()) != 0) Fail("rename " + tmp + ": " + std::strerror(errno));
  auto slash = out_dir.find_last_of('/');
  if (slash != std::string::npos) SyncPath(out_dir.substr(0, slash));
}

void DynamicStore::Restore(const std::string& snap_dir) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (!IsDir(snap_dir + "/store") || !IsDir(snap_dir + "/state"))
    Fail("dynamic snapshot " + snap_dir + " is missing or incomplete (no store/ or state/)");
  for (auto& kv : tables_) {
    struct stat st;
    if (::stat((snap_dir + "/state/" + kv.first + ".bin").c_str(), &st) != 0)
      Fail("dynamic snapshot " + snap_dir + " has no state of table " + kv.first);
  }
  if (store_) rs_store_close(store_);
  store_ = nullptr;
  for (auto& kv : tables_) kv.second->Bind(nullptr);
  RemoveTree(dir_);
  CloneStoreDir(snap_dir + "/store", dir_);
  OpenLocked();
  for (auto& kv : tables_) kv.second->LoadState(snap_dir + "/state/" + kv.first + ".bin");
}

void DynamicStore::Close() {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (store_) rs_store_close(store_);
  store_ = nullptr;
  for (auto& kv : tables_) kv.second->Bind(nullptr);
}

std::string DynamicStore::StatsJson() {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::string out = "{\"dir\": \"" + dir_ + "\", \"tables\": {";
  bool first = true;
  for (auto& kv : tables_) {
    TableStats s = kv.second->Stats();
    char b[512];
    std::snprintf(b, sizeof(b),
                  "%s\"%s\": {\"step\": %lld, \"rows\": %llu, \"admitted\": %llu, "
                  "\"evicted_cap\": %llu, \"evicted_age\": %llu, \"updates\": %llu, "
                  "\"lookups\": %llu, \"lookup_hits\": %llu}",
                  first ? "" : ", ", kv.first.c_str(), static_cast<long long>(s.step),
                  static_cast<unsigned long long>(s.rows), static_cast<unsigned long long>(s.admitted),
                  static_cast<unsigned long long>(s.evicted_cap),
                  static_cast<unsigned long long>(s.evicted_age),
                  static_cast<unsigned long long>(s.updates),
                  static_cast<unsigned long long>(s.lookups),
                  static_cast<unsigned long long>(s.lookup_hits));
    out += b;
    first = false;
  }
  out += "}, \"store\": ";
  char* js = nullptr;
  if (store_ && rs_store_stats_json(store_, &js, nullptr) == RS_OK && js) {
    out += js;
    rs_free(js);
  } else {
    out += "null";
  }
  return out + "}";
}

// ----------------------------------------------------------------------------- registry

std::shared_ptr<DynamicStore> OpenStore(const std::string& id, const std::string& dir,
                                        const std::string& options_json) {
  std::lock_guard<std::mutex> g(g_mu);
  if (g_stores.count(id)) Fail("dynamic store id " + id + " is already open");
  auto s = std::make_shared<DynamicStore>(dir, options_json);
  g_stores[id] = s;
  return s;
}

std::shared_ptr<DynamicStore> FindStore(const std::string& id) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = g_stores.find(id);
  if (it == g_stores.end()) Fail("no open dynamic store " + id);
  return it->second;
}

std::shared_ptr<DynamicTable> FindTable(const std::string& key) {
  std::lock_guard<std::mutex> g(g_mu);
  auto it = g_tables.find(key);
  if (it == g_tables.end()) Fail("no dynamic table " + key + " (its store is not open in this process)");
  return it->second;
}

void RegisterTable(const std::string& key, std::shared_ptr<DynamicTable> t) {
  std::lock_guard<std::mutex> g(g_mu);
  g_tables[key] = std::move(t);
}

void CloseStore(const std::string& id) {
  std::shared_ptr<DynamicStore> s;
  {
    std::lock_guard<std::mutex> g(g_mu);
    auto it = g_stores.find(id);
    if (it == g_stores.end()) return;
    s = it->second;
    g_stores.erase(it);
    const std::string prefix = id + "/";
    for (auto t = g_tables.begin(); t != g_tables.end();) {
      if (t->first.compare(0, prefix.size(), prefix) == 0) t = g_tables.erase(t);
      else ++t;
    }
  }
  s->Close();
}

}  // namespace tfops
}  // namespace rs
