// A table's admission/eviction state file, written into a snapshot next to
// the store's files (DynamicTable::SaveState / LoadState, tfops/dynamic_table.h):
//   magic "RSDYNST1" | u32 version, width, sketch depth, 0 | u64 sketch width
//   | i64 step | u64 admitted, evicted_cap, evicted_age, updates, lookups,
//   lookup_hits | u16 sketch counters | u64 n | n x (i64 key, last_step, freq)
//   | u64 FNV-1a of everything before it
// in host byte order. Written to
// <path>.tmp, fsynced and renamed, so a reader sees a whole file or none.
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "tfops/dyn_errors.h"
#include "tfops/dynamic_table.h"

namespace rs {
namespace tfops {
namespace {

// FNV-1a 64 over bytes, chained: the state file's checksum.
uint64_t Fnv(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

constexpr char kStateMagic[8] = {'R', 'S', 'D', 'Y', 'N', 'S', 'T', '1'};
constexpr uint32_t kStateVersion = 1;

}  // namespace

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

}  // namespace tfops
}  // namespace rs
