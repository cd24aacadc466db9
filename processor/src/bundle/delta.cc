// Delta apply (bundle/delta.h): discovery, validation, in-place upserts, the
// applied marker, roll-forward at open. The pass over a shared (Redis) store
// is in delta_shared.cc.
#include "bundle/delta.h"
#include "bundle/delta_internal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "base/json_text.h"
#include "base/status.h"
#include "bundle/manifest.h"
#include "google/protobuf/util/json_util.h"
#include "recstrata/bundle/manifest.pb.h"
#include "store/format.h"

namespace rs {
namespace bundle {
namespace fs = std::filesystem;

namespace {

std::string Hex8(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "%08x", v);
  return b;
}

bool ReadAll(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return static_cast<bool>(in) || in.eof();
}

void SyncPath(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) Fail(RS_ERR_IO, "open " + path + ": " + std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) Fail(RS_ERR_IO, "fsync " + path + ": " + std::strerror(err));
}

void WriteAtomic(const std::string& dir, const std::string& name, const std::string& data) {
  const std::string tmp = dir + "/." + name + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) Fail(RS_ERR_IO, "create " + tmp + ": " + std::strerror(errno));
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) Fail(RS_ERR_IO, "write " + tmp);
  }
  SyncPath(tmp, O_RDONLY);
  if (::rename(tmp.c_str(), (dir + "/" + name).c_str()) != 0)
    Fail(RS_ERR_IO, "rename " + tmp + ": " + std::strerror(errno));
  SyncPath(dir, O_RDONLY | O_DIRECTORY);
}

bool ParseSeq(const std::string& name, uint64_t* out) {
  if (name.empty() || name.size() > 18 || name[0] == '0') return false;
  for (char c : name)
    if (c < '0' || c > '9') return false;
  *out = std::strtoull(name.c_str(), nullptr, 10);
  return *out > 0;
}

// Test hook (tests/test_delta_crash.py): milliseconds to sleep after each
// sub-table batch of an apply, so a test can kill the process mid-apply.
int TestDelayMs() {
  const char* v = std::getenv("RECSTRATA_TEST_DELTA_TABLE_DELAY_MS");
  return v ? std::atoi(v) : 0;
}

}  // namespace

std::map<uint64_t, std::string> ListDeltas(const std::string& bundle_dir) {
  std::map<uint64_t, std::string> out;
  std::error_code ec;
  fs::directory_iterator it(bundle_dir + "/" + kDeltasDir, ec), end;
  if (ec) return out;
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    uint64_t seq;
    std::error_code ec2;
    if (!ParseSeq(it->path().filename().string(), &seq) || !it->is_directory(ec2)) continue;
    if (fs::is_regular_file(it->path() / kDeltaManifest, ec2)) out[seq] = it->path().string();
  }
  return out;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FileCrc32cHex(const std::string& path, uint64_t* size) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(RS_ERR_IO, "open " + path + ": " + std::strerror(errno));
  std::vector<char> buf(1 << 20);
  uint32_t crc = 0;
  uint64_t total = 0;
  while (true) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      Fail(RS_ERR_IO, "read " + path + ": " + std::strerror(err));
    }
    if (n == 0) break;
    crc = rs::store::ExtendCrc32c(crc, buf.data(), static_cast<size_t>(n));
    total += static_cast<uint64_t>(n);
  }
  ::close(fd);
  if (size) *size = total;
  return Hex8(crc);
}

bool DeltaStoreWritten(const std::string& store_dir) {
  struct stat st;
  return ::stat((store_dir + "/" + kAppliedMarker).c_str(), &st) == 0;
}

DeltaApplier::DeltaApplier(std::string bundle_dir, std::string store_dir, int64_t base_version,
                           rs::store::Store* store, std::vector<DeltaTarget> targets)
    : bundle_dir_(std::move(bundle_dir)),
      store_dir_(std::move(store_dir)),
      base_version_(base_version),
      store_(store),
      ledger_(store->delta_ledger()),
      targets_(std::move(targets)) {
  base_crc_ = FileCrc32cHex(bundle_dir_ + "/bundle.json", nullptr);
  if (ledger_) status_.mode = "shared";
}

void DeltaApplier::RecoverOnOpen() {
  // The dense stage the version serves: that of delta `seq` (validated, so a
  // damaged or missing one fails the open instead of serving the old stage
  // with the rows the deltas wrote).
  auto load_dense = [&](uint64_t seq, const char* record) {
    if (seq == 0) return;
    auto all = ListDeltas(bundle_dir_);
    auto it = all.find(seq);
    if (it == all.end())
      Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": " + record + " says delta " + std::to_string(seq) +
                                  " changed the dense stage, and that delta is not on disk");
    try {
      Loaded d = Validate(seq, it->second);
      if (d.dense_dir.empty()) Fail(RS_ERR_CORRUPTION, "it carries no dense stage");
      dense_dir_ = d.dense_dir;
    } catch (const Error& e) {
      Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": " + record + " says delta " + std::to_string(seq) +
                                  " changed the dense stage, and it cannot be read: " + e.what());
    }
    dense_seq_ = seq;
  };
  if (ledger_) {
    const rs::store::DeltaLedgerState st = ledger_->Read();
    if (st.base_crc32c == base_crc_) {
      applied_ = st.applied_sequence;
      load_dense(st.dense_sequence, "the shared key space's delta ledger");
    }
    std::lock_guard<std::mutex> lk(mu_);
    status_.applied_sequence = applied_;
    status_.dense_sequence = dense_seq_;
    return;
  }
  const std::string path = store_dir_ + "/" + kAppliedMarker;
  std::string text;
  if (!DeltaStoreWritten(store_dir_)) return;
  if (!ReadAll(path, &text)) Fail(RS_ERR_IO, "cannot read " + path);
  recstrata::bundle::DeltaApplied m;
  ParseJson(text, &m, false, RS_ERR_CORRUPTION, "delta marker " + path + " is damaged");
  if (m.base_manifest_crc32c() != base_crc_)
    Fail(RS_ERR_CORRUPTION, "delta marker " + path + " belongs to another base (bundle.json CRC-32C " +
                                m.base_manifest_crc32c() + ", this bundle's is " + base_crc_ +
                                "): the store holds deltas of another export");
  applied_ = m.applied_sequence();
  load_dense(m.dense_sequence(), "the delta marker");
  if (m.applying() > m.applied_sequence()) {
    // Killed mid-apply: the store may hold part of delta `applying`. Roll it forward.
    const uint64_t seq = m.applying();
    auto all = ListDeltas(bundle_dir_);
    auto it = all.find(seq);
    if (it == all.end())
      Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": delta " + std::to_string(seq) +
                                  " was being applied when the store was last written and is gone "
                                  "from disk; the store may hold part of it");
    Loaded d;
    try {
      d = Validate(seq, it->second);
    } catch (const Error& e) {
      Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": delta " + std::to_string(seq) +
                                  " was being applied when the store was last written and cannot "
                                  "be re-applied: " + e.what());
    }
    // Nothing serves yet: a dense stage is published by the open itself (DenseDir).
    std::function<void()> publish;
    if (!d.dense_dir.empty()) publish = [this, seq, dir = d.dense_dir] { dense_seq_ = seq; dense_dir_ = dir; };
    Apply(d, publish);
    std::lock_guard<std::mutex> lk(mu_);
    status_.recovered = true;
  }
  std::lock_guard<std::mutex> lk(mu_);
  status_.applied_sequence = applied_;
  status_.dense_sequence = dense_seq_;
}

std::string DeltaApplier::DenseDir(const std::string& bundle_dense) const {
  return dense_dir_.empty() ? bundle_dense : dense_dir_;
}

DeltaApplier::Loaded DeltaApplier::Validate(uint64_t seq, const std::string& dir) const {
  const std::string mpath = dir + "/" + kDeltaManifest;
  std::string text;
  if (!ReadAll(mpath, &text)) Fail(RS_ERR_IO, "cannot read " + mpath);
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    Fail(RS_ERR_CORRUPTION, mpath + " is empty");
  recstrata::bundle::Delta m;
  ParseJson(text, &m, false, RS_ERR_CORRUPTION, "delta manifest " + mpath + " is damaged");
  if (m.format() != kDeltaFormat)
    Fail(RS_ERR_CORRUPTION, mpath + ": format is '" + m.format() + "', expected '" + kDeltaFormat + "'");
  if (m.format_version() == 0 || m.format_version() > kDeltaFormatVersion)
    Fail(RS_ERR_INCOMPATIBLE, mpath + " has delta format version " +
                                  std::to_string(m.format_version()) + "; this library reads 1");
  if (m.sequence() != seq)
    Fail(RS_ERR_CORRUPTION, mpath + " says sequence " + std::to_string(m.sequence()) +
                                " but lies in directory " + std::to_string(seq));
  if (base_version_ > 0 && m.base_version() != base_version_)
    Fail(RS_ERR_FAILED_PRECONDITION, "delta " + std::to_string(seq) + " is for base version " +
                                         std::to_string(m.base_version()) + ", this is version " +
                                         std::to_string(base_version_));
  if (m.base_manifest_crc32c() != base_crc_)
    Fail(RS_ERR_FAILED_PRECONDITION, "delta " + std::to_string(seq) +
                                         " is for another export of this version (base bundle.json "
                                         "CRC-32C " + m.base_manifest_crc32c() + ", this one's is " +
                                         base_crc_ + ")");
  Loaded d;
  if (!m.dense().dir().empty() || m.dense_files_size() > 0) {
    const std::string ctx = "delta " + std::to_string(seq) + " dense stage";
    if (m.dense().dir().empty()) Fail(RS_ERR_CORRUPTION, ctx + ": dense_files without a dense dir");
    d.dense_dir = JoinInside(dir, m.dense().dir(), "delta dense dir");
    const std::string prefix = m.dense().dir() + "/";
    bool graph = false;
    for (const auto& f : m.dense_files()) {
      if (f.path().compare(0, prefix.size(), prefix) != 0)
        Fail(RS_ERR_CORRUPTION, ctx + ": file " + f.path() + " lies outside " + m.dense().dir());
      const std::string fpath = JoinInside(dir, f.path(), "delta dense file");
      struct stat st;
      if (::stat(fpath.c_str(), &st) != 0) Fail(RS_ERR_CORRUPTION, ctx + ": " + f.path() + " is missing");
      if (static_cast<uint64_t>(st.st_size) != f.size())
        Fail(RS_ERR_CORRUPTION, ctx + ": " + f.path() + " is " + std::to_string(st.st_size) +
                                    " bytes, the delta says " + std::to_string(f.size()));
      uint64_t size = 0;
      const std::string crc = FileCrc32cHex(fpath, &size);
      if (f.crc32c().empty() || crc != f.crc32c())
        Fail(RS_ERR_CORRUPTION, ctx + ": " + f.path() + " fails its checksum (CRC-32C " + crc +
                                    ", the delta says '" + f.crc32c() + "')");
      graph = graph || f.path() == prefix + "saved_model.pb";
    }
    if (!graph) Fail(RS_ERR_CORRUPTION, ctx + " lists no " + prefix + "saved_model.pb");
  }
  d.seq = seq;
  d.created_unix_ms = m.created_unix_ms();
  d.training_step = m.training_step();
  std::vector<std::string> seen;
  for (const auto& t : m.tables()) {
    const std::string ctx = "delta " + std::to_string(seq) + " table '" + t.store_table() + "'";
    auto tg = std::find_if(targets_.begin(), targets_.end(),
                           [&](const DeltaTarget& x) { return x.store_table == t.store_table(); });
    if (tg == targets_.end()) Fail(RS_ERR_CORRUPTION, ctx + ": the bundle has no such store table");
    if (std::find(seen.begin(), seen.end(), t.store_table()) != seen.end())
      Fail(RS_ERR_CORRUPTION, ctx + " is listed twice");
    seen.push_back(t.store_table());
    if (t.dim() != tg->dim)
      Fail(RS_ERR_CORRUPTION, ctx + " has dim " + std::to_string(t.dim()) + ", the store table " +
                                  std::to_string(tg->dim));
    if (t.rows() < 0 || t.rows() > tg->rows)
      Fail(RS_ERR_CORRUPTION, ctx + " has " + std::to_string(t.rows()) + " rows");
    const uint64_t want = static_cast<uint64_t>(t.rows()) * (8u + 4u * static_cast<uint64_t>(t.dim()));
    if (t.size() != want)
      Fail(RS_ERR_CORRUPTION, ctx + ": size " + std::to_string(t.size()) + " does not match " +
                                  std::to_string(t.rows()) + " rows of dim " + std::to_string(t.dim()));
    const std::string fpath = JoinInside(dir, t.file(), "delta file");
    std::string bytes;
    struct stat st;
    if (::stat(fpath.c_str(), &st) != 0) Fail(RS_ERR_CORRUPTION, ctx + ": " + t.file() + " is missing");
    if (static_cast<uint64_t>(st.st_size) != want)
      Fail(RS_ERR_CORRUPTION, ctx + ": " + t.file() + " is " + std::to_string(st.st_size) +
                                  " bytes, the delta says " + std::to_string(want));
    if (!ReadAll(fpath, &bytes) || bytes.size() != want)
      Fail(RS_ERR_IO, ctx + ": cannot read " + fpath);
    const std::string crc = Hex8(rs::store::Crc32c(bytes.data(), bytes.size()));
    if (crc != t.crc32c())
      Fail(RS_ERR_CORRUPTION, ctx + ": " + t.file() + " fails its checksum (CRC-32C " + crc +
                                  ", the delta says " + t.crc32c() + ")");
    Loaded::Part p;
    p.table = tg->table;
    const size_t n = static_cast<size_t>(t.rows());
    p.keys.resize(n);
    p.rows.resize(n * static_cast<size_t>(t.dim()));
    std::memcpy(p.keys.data(), bytes.data(), n * 8);
    std::memcpy(p.rows.data(), bytes.data() + n * 8, p.rows.size() * 4);
    for (int64_t k : p.keys)
      if (k < 0 || k >= tg->rows)
        Fail(RS_ERR_CORRUPTION, ctx + ": row key " + std::to_string(k) + " is outside 0.." +
                                    std::to_string(tg->rows - 1));
    d.rows += n;
    d.parts.push_back(std::move(p));
  }
  return d;
}

void DeltaApplier::WriteMarker(uint64_t applied, uint64_t applying) {
  recstrata::bundle::DeltaApplied m;
  m.set_applied_sequence(applied);
  m.set_applying(applying);
  m.set_dense_sequence(dense_seq_);
  m.set_base_version(base_version_);
  m.set_base_manifest_crc32c(base_crc_);
  std::string text;
  google::protobuf::json::PrintOptions opts;
  opts.preserve_proto_field_names = true;
  auto st = google::protobuf::json::MessageToJsonString(m, &text, opts);
  if (!st.ok()) Fail(RS_ERR_INTERNAL, "delta marker to JSON: " + std::string(st.message()));
  WriteAtomic(store_dir_, kAppliedMarker, text + "\n");
}

void DeltaApplier::WriteRows(const Loaded& d) {
  const int delay = TestDelayMs();
  for (const auto& p : d.parts) {
    if (!p.keys.empty()) p.table->Upsert(p.keys.data(), p.keys.size(), p.rows.data());
    if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  }
}

void DeltaApplier::Record(const Loaded& d, double ms) {
  applied_ = d.seq;
  std::lock_guard<std::mutex> lk(mu_);
  status_.applied_sequence = applied_;
  ++status_.applied;
  status_.rows_applied += d.rows;
  status_.last_apply_ms = ms;
  status_.last_created_unix_ms = d.created_unix_ms;
  status_.last_training_step = d.training_step;
  status_.last_applied_unix_ms = NowUnixMs();
  status_.blocked_at = 0;
  status_.dense_sequence = dense_seq_;
  if (status_.pending) --status_.pending;
}

std::function<void()> DeltaApplier::PrepareDense(const Loaded& d) {
  if (d.dense_dir.empty()) return {};
  if (!prepare_dense_)
    Fail(RS_ERR_UNIMPLEMENTED, "delta " + std::to_string(d.seq) + " changes the dense stage, which only "
                               "a host (rs_host) swaps; publish a full version instead");
  std::function<void()> publish = prepare_dense_(d.dense_dir);
  return [this, publish, seq = d.seq, dir = d.dense_dir] {
    publish();
    dense_seq_ = seq;
    dense_dir_ = dir;
    std::lock_guard<std::mutex> lk(mu_);
    ++status_.dense_swaps;
  };
}

void DeltaApplier::Apply(const Loaded& d, const std::function<void()>& publish) {
  const auto t0 = std::chrono::steady_clock::now();
  WriteMarker(applied_, d.seq);  // before the first row: a crash from here on rolls forward
  WriteRows(d);
  store_->Flush();            // every batch durable ...
  if (publish) publish();     // the new dense stage serves (dense_seq_ = d.seq)
  WriteMarker(d.seq, 0);      // ... then the marker says so
  Record(d, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
}

std::map<uint64_t, std::string> DeltaApplier::ListPending() {
  auto all = ListDeltas(bundle_dir_);
  uint64_t pending = 0;
  for (const auto& kv : all) pending += kv.first > applied_;
  std::lock_guard<std::mutex> lk(mu_);
  status_.pending = pending;
  return all;
}

bool DeltaApplier::PrepareNext(uint64_t seq, const std::string& dir, Loaded* d,
                               std::function<void()>* publish) {
  if (seq != applied_ + 1) {
    Refuse(seq, "delta " + std::to_string(seq) + " does not follow the last applied delta " +
                    std::to_string(applied_) + " (delta " + std::to_string(applied_ + 1) +
                    " is missing: a gap in the sequence); waiting for it");
    return false;
  }
  try {
    *d = Validate(seq, dir);
    *publish = PrepareDense(*d);  // loaded and warmed before any row is written
  } catch (const Error& e) {
    Refuse(seq, "delta " + std::to_string(seq) + " refused: " + e.what());
    return false;
  }
  return true;
}

void DeltaApplier::Refuse(uint64_t seq, const std::string& why) {
  std::lock_guard<std::mutex> lk(mu_);
  status_.last_error = why;
  status_.blocked_at = seq;
  auto key = std::make_pair(seq, why);
  if (std::find(refusals_.begin(), refusals_.end(), key) == refusals_.end()) {
    refusals_.push_back(key);
    ++status_.refused;
  }
}

size_t DeltaApplier::Poll() {
  if (ledger_) {
    try {
      return PollShared();
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lk(mu_);
      ++status_.failed;
      status_.last_error = std::string("delta pass on the shared tier failed: ") + e.what();
      return 0;
    }
  }
  size_t n = 0;
  try {
    for (const auto& [seq, dir] : ListPending()) {
      if (seq <= applied_) continue;
      Loaded d;
      std::function<void()> publish;
      if (!PrepareNext(seq, dir, &d, &publish)) break;
      try {
        Apply(d, publish);
      } catch (const Error& e) {
        std::lock_guard<std::mutex> lk(mu_);
        ++status_.failed;
        status_.last_error = "delta " + std::to_string(seq) + " failed while applying (the store " +
                             "may hold part of it; it is re-applied on the next pass and at the "
                             "next open): " + e.what();
        status_.blocked_at = seq;
        break;
      }
      ++n;
    }
  } catch (const std::exception& e) {
    std::lock_guard<std::mutex> lk(mu_);
    ++status_.failed;
    status_.last_error = std::string("delta discovery failed: ") + e.what();
  }
  return n;
}

DeltaStatus DeltaApplier::Status() const {
  std::lock_guard<std::mutex> lk(mu_);
  return status_;
}

std::string DeltaApplier::StatusJson() const {
  DeltaStatus s = Status();
  std::string o = "{\"mode\":";
  AppendJsonString(o, s.mode);
  o += ",\"applied_sequence\":" + std::to_string(s.applied_sequence);
  o += ",\"applied\":" + std::to_string(s.applied);
  o += ",\"followed\":" + std::to_string(s.followed);
  o += ",\"lease_waits\":" + std::to_string(s.lease_waits);
  o += ",\"leases_lost\":" + std::to_string(s.leases_lost);
  o += ",\"rows_applied\":" + std::to_string(s.rows_applied);
  o += ",\"dense_sequence\":" + std::to_string(s.dense_sequence);
  o += ",\"dense_swaps\":" + std::to_string(s.dense_swaps);
  o += ",\"refused\":" + std::to_string(s.refused);
  o += ",\"failed\":" + std::to_string(s.failed);
  o += ",\"pending\":" + std::to_string(s.pending);
  o += ",\"blocked_at\":" + std::to_string(s.blocked_at);
  o += ",\"last_error\":";
  AppendJsonString(o, s.last_error);
  char ms[32];
  std::snprintf(ms, sizeof ms, "%.3f", s.last_apply_ms);
  o += ",\"last_apply_ms\":" + std::string(ms);
  o += ",\"last_created_unix_ms\":" + std::to_string(s.last_created_unix_ms);
  o += ",\"last_training_step\":" + std::to_string(s.last_training_step);
  o += ",\"last_applied_unix_ms\":" + std::to_string(s.last_applied_unix_ms);
  o += std::string(",\"recovered\":") + (s.recovered ? "true" : "false") + "}";
  return o;
}

}  // namespace bundle
}  // namespace rs
