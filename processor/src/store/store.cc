// StoreImpl: the store directory — MANIFEST, process lock, tables,
// background compaction. Its options are parsed and resolved by
// store/store_options.h, its stats written as JSON by store/stats_json.h.
//
// Layout: <dir>/MANIFEST (JSON of recstrata.store.Manifest, replaced
// atomically), <dir>/LOCK (flock: one process at a time), <dir>/t<id>/ data
// files of table <id> (format.h).
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "base/status.h"
#include "google/protobuf/json/json.h"
#include "recstrata/store/store.pb.h"
#include "store/data_file.h"
#include "store/remote_store.h"
#include "store/stats_json.h"
#include "store/store_options.h"
#include "store/table.h"

namespace rs {
namespace store {
namespace {

namespace pb = ::recstrata::store;

std::string ToJson(const google::protobuf::Message& msg) {
  std::string out;
  google::protobuf::json::PrintOptions opts;
  opts.add_whitespace = true;
  opts.preserve_proto_field_names = true;
  auto st = google::protobuf::json::MessageToJsonString(msg, &out, opts);
  if (!st.ok()) Fail(RS_ERR_INTERNAL, "manifest to JSON: " + std::string(st.message()));
  return out;
}

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

void WriteFileAtomic(const std::string& dir, const std::string& name, const std::string& data) {
  std::string tmp = dir + "/" + name + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Fail(RS_ERR_IO, "create " + tmp + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      ::close(fd);
      Fail(RS_ERR_IO, "write " + tmp + ": " + std::strerror(errno));
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    ::close(fd);
    Fail(RS_ERR_IO, "fsync " + tmp + ": " + std::strerror(errno));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), (dir + "/" + name).c_str()) != 0) {
    Fail(RS_ERR_IO, "rename " + tmp + ": " + std::strerror(errno));
  }
  SyncDir(dir);
}

}  // namespace

namespace {

class StoreImpl final : public Store {
 public:
  StoreImpl(std::string dir, pb::StoreOptions given) : dir_(std::move(dir)) {
    if (!dir_.empty()) {
      try {
        OpenDir(given);
      } catch (...) {
        tables_.clear();
        if (lock_fd_ >= 0) ::close(lock_fd_);  // a failed open releases the lock
        throw;
      }
    } else {
      options_ = given;
      cfg_ = ResolveOptions(options_);
      if (cfg_.ssd_tier) {
        Fail(RS_ERR_INVALID_ARGUMENT, "tiers \"dram+ssd\" needs a store directory");
      }
    }
    if (!dir_.empty() && cfg_.compaction == CompactionMode::kAsync) {
      compactor_ = std::thread([this] { CompactorLoop(); });
    }
  }

  ~StoreImpl() override {
    {
      std::lock_guard<std::mutex> lock(cmu_);
      stop_ = true;
    }
    ccv_.notify_all();
    if (compactor_.joinable()) compactor_.join();
    if (!dir_.empty()) {
      try {
        RecordCleanClose();
      } catch (...) {
        // Without the record the next open applies the crash rules.
      }
    }
    tables_.clear();
    if (lock_fd_ >= 0) ::close(lock_fd_);
  }

  Table* CreateTable(const std::string& name, int32_t dim, const std::string& options_json) override {
    if (name.empty() || name.size() > 256) Fail(RS_ERR_INVALID_ARGUMENT, "table name must be 1..256 bytes");
    if (dim <= 0 || dim > 65536) Fail(RS_ERR_INVALID_ARGUMENT, "table dim must be in 1..65536");
    pb::TableOptions topts = ParseJson<pb::TableOptions>(options_json, "table options");
    if (topts.default_value_size() != 0 && topts.default_value_size() != dim) {
      Fail(RS_ERR_INVALID_ARGUMENT, "default_value must have dim (" + std::to_string(dim) +
                                        ") values, got " + std::to_string(topts.default_value_size()));
    }
    if (topts.dense_keys() > (uint64_t{1} << 36))
      Fail(RS_ERR_INVALID_ARGUMENT, "dense_keys must be at most 2^36 (8 bytes of memory each)");
    std::lock_guard<std::mutex> lock(mu_);
    if (tables_.count(name)) Fail(RS_ERR_ALREADY_EXISTS, "table '" + name + "' already exists");
    pb::TableEntry entry;
    entry.set_name(name);
    entry.set_id(manifest_.next_table_id());
    entry.set_dim(dim);
    *entry.mutable_options() = topts;
    std::unique_ptr<TableImpl> t = MakeTable(entry);
    std::vector<DroppedData> ignored;
    t->Recover(nullptr, &ignored);  // creates the folder (an old one of a dropped id is reused)
    if (!dir_.empty()) {
      pb::Manifest next = manifest_;
      next.clear_clean_close();
      clean_.store(false);
      *next.add_tables() = entry;
      next.set_next_table_id(entry.id() + 1);
      WriteFileAtomic(dir_, "MANIFEST", ToJson(next));
      manifest_ = next;
    } else {
      manifest_.set_next_table_id(entry.id() + 1);
    }
    Table* raw = t.get();
    tables_[name] = std::move(t);
    return raw;
  }

  Table* GetTable(const std::string& name) override {
    Table* t = FindTable(name);
    if (!t) Fail(RS_ERR_NOT_FOUND, "no table '" + name + "' in store " + dir_);
    return t;
  }
  Table* FindTable(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tables_.find(name);
    return it == tables_.end() ? nullptr : it->second.get();
  }
  std::vector<std::string> TableNames() const override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> names;
    for (auto& kv : tables_) names.push_back(kv.first);
    return names;
  }

  void Flush() override {
    for (TableImpl* t : Tables()) t->Sync();
  }
  void Compact() override {
    for (TableImpl* t : Tables()) {
      while (t->CompactOnce()) {
      }
    }
  }

  StoreStats Stats() const override {
    StoreStats s;
    s.dir = dir_;
    s.tiers = cfg_.ssd_tier ? "dram+ssd" : "dram";
    s.last_sequence = last_seq_.load();
    s.recovery = recovery_mode_;
    s.dropped = dropped_;
    for (TableImpl* t : Tables()) s.tables.push_back(t->Stats());
    return s;
  }

  std::string StatsJson() const override { return StoreStatsJson(Stats()); }

 private:
  void OpenDir(const pb::StoreOptions& given) {
    bool create = !given.has_create_if_missing() || given.create_if_missing();
    struct stat st;
    if (::stat(dir_.c_str(), &st) != 0) {
      if (!create) Fail(RS_ERR_NOT_FOUND, "store directory " + dir_ + " does not exist");
      if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) {
        Fail(RS_ERR_IO, "mkdir " + dir_ + ": " + std::strerror(errno));
      }
    } else if (!S_ISDIR(st.st_mode)) {
      Fail(RS_ERR_INVALID_ARGUMENT, dir_ + " is not a directory");
    }
    lock_fd_ = ::open((dir_ + "/LOCK").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (lock_fd_ < 0) Fail(RS_ERR_IO, "open " + dir_ + "/LOCK: " + std::strerror(errno));
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      Fail(RS_ERR_FAILED_PRECONDITION, "store " + dir_ + " is open in another process");
    }
    std::string text;
    bool exists = ReadFile(dir_ + "/MANIFEST", &text);
    if (exists) {
      google::protobuf::json::ParseOptions popts;
      popts.ignore_unknown_fields = true;  // a newer minor version may add fields
      auto st2 = google::protobuf::json::JsonStringToMessage(text, &manifest_, popts);
      if (!st2.ok()) Fail(RS_ERR_CORRUPTION, "MANIFEST of " + dir_ + " is unreadable: " + std::string(st2.message()));
      if (manifest_.format_version() != kFormatVersion) {
        Fail(RS_ERR_INCOMPATIBLE,
             "store " + dir_ + " has format version " + std::to_string(manifest_.format_version()) +
                 ", this library reads version " + std::to_string(kFormatVersion) +
                 (manifest_.format_version() == 1
                      ? " (version 1 has no clean-close record, so a damaged newest file could "
                        "not be told from a torn tail; export or rewrite the store with this "
                        "version)"
                      : ""));
      }
    } else {
      if (!create) Fail(RS_ERR_NOT_FOUND, "no store in " + dir_ + " (MANIFEST missing)");
      manifest_.set_format_version(kFormatVersion);
      manifest_.set_next_table_id(1);
    }
    pb::StoreOptions merged = manifest_.options();
    merged.MergeFrom(given);
    merged.clear_create_if_missing();
    cfg_ = ResolveOptions(merged);
    merged.clear_recovery();  // per open, never recorded
    merged.clear_verify();
    options_ = merged;
    // The clean-close record, decoded per table id. "repair" drops it from
    // the MANIFEST before touching any file (and reads it only for reports).
    const bool had_record = manifest_.has_clean_close();
    if ((cfg_.require_clean || cfg_.verify_full) && !had_record) {
      Fail(RS_ERR_CORRUPTION,
           "store " + dir_ + (exists ? " was not closed cleanly after its last change (its MANIFEST "
                                       "has no clean-close record); `recstrata store-repair " +
                                           dir_ + "` checks it and records one"
                                     : " has no MANIFEST"));
    }
    std::map<uint32_t, TableRecord> records;
    uint64_t recorded_seq = 0;
    if (had_record) {
      recorded_seq = manifest_.clean_close().last_sequence();
      for (const pb::TableState& ts : manifest_.clean_close().tables()) {
        TableRecord& r = records[ts.id()];
        r.rows = ts.rows();
        r.last_seq = ts.last_sequence();
        for (const pb::FileState& fs : ts.files()) r.files.push_back({fs.file_no(), fs.size(), fs.crc32c()});
      }
    }
    recovery_mode_ = !exists ? "new" : cfg_.repair ? "repair" : had_record ? "clean" : "crash";
    bool rewrite = !exists || manifest_.options().SerializeAsString() != merged.SerializeAsString();
    if (cfg_.repair && had_record) {
      manifest_.clear_clean_close();
      rewrite = true;
    }
    if (rewrite) {
      *manifest_.mutable_options() = merged;
      WriteFileAtomic(dir_, "MANIFEST", ToJson(manifest_));
    }
    clean_.store(manifest_.has_clean_close());
    uint64_t max_seq = recorded_seq;
    for (const pb::TableEntry& e : manifest_.tables()) {
      std::unique_ptr<TableImpl> t = MakeTable(e);
      const TableRecord empty;
      const TableRecord* rec = nullptr;
      if (had_record) {
        auto it = records.find(e.id());
        rec = it == records.end() ? &empty : &it->second;
      }
      max_seq = std::max(max_seq, t->Recover(rec, &dropped_));
      tables_[e.name()] = std::move(t);
    }
    last_seq_.store(max_seq);
    if (cfg_.repair) {
      for (auto& kv : tables_) kv.second->RewriteDamaged();
    }
    opened_ = true;
  }

  // Removes the clean-close record before the first change to a data file.
  void MarkChanged() {
    if (!clean_.load(std::memory_order_acquire)) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (!clean_.load(std::memory_order_relaxed)) return;
    pb::Manifest next = manifest_;
    next.clear_clean_close();
    WriteFileAtomic(dir_, "MANIFEST", ToJson(next));
    manifest_ = next;
    clean_.store(false, std::memory_order_release);
  }

  // Close: every file synced, then the record of files, sizes, CRCs, rows.
  void RecordCleanClose() {
    if (!opened_ || clean_.load()) return;  // unchanged since a clean open
    pb::CleanClose cc;
    cc.set_last_sequence(last_seq_.load());
    // Tables are sealed without mu_ held: a table's writer holds its write lock
    // while it takes mu_ (MarkChanged), so sealing (which takes the write lock)
    // under mu_ would invert that order.
    std::vector<std::pair<uint32_t, TableImpl*>> sealing;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const pb::TableEntry& e : manifest_.tables()) {
        auto it = tables_.find(e.name());
        if (it == tables_.end()) return;
        sealing.emplace_back(e.id(), it->second.get());
      }
    }
    std::vector<TableRecord> records;
    for (const auto& [id, table] : sealing) records.push_back(table->Seal());
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < sealing.size(); ++i) {
      const TableRecord& r = records[i];
      pb::TableState* ts = cc.add_tables();
      ts->set_id(sealing[i].first);
      ts->set_rows(r.rows);
      ts->set_last_sequence(r.last_seq);
      for (const FileRecord& f : r.files) {
        pb::FileState* fs = ts->add_files();
        fs->set_file_no(f.file_no);
        fs->set_size(f.size);
        fs->set_crc32c(f.crc);
      }
    }
    SyncDir(dir_);
    pb::Manifest next = manifest_;
    *next.mutable_clean_close() = cc;
    WriteFileAtomic(dir_, "MANIFEST", ToJson(next));
    manifest_ = next;
    clean_.store(true);
  }

  std::unique_ptr<TableImpl> MakeTable(const pb::TableEntry& e) {
    TableConfig c;
    c.id = e.id();
    c.name = e.name();
    c.dim = e.dim();
    if (c.dim <= 0 || c.dim > 65536) Fail(RS_ERR_CORRUPTION, "MANIFEST: bad dim for table " + c.name);
    c.default_value.assign(e.options().default_value().begin(), e.options().default_value().end());
    if (!c.default_value.empty() && c.default_value.size() != static_cast<size_t>(c.dim)) {
      Fail(RS_ERR_CORRUPTION, "MANIFEST: bad default_value for table " + c.name);
    }
    c.dir = dir_.empty() ? "" : dir_ + "/t" + std::to_string(e.id());
    static_cast<TierOptions&>(c) = cfg_;
    if (e.options().has_dram_capacity_bytes()) c.dram_capacity_bytes = e.options().dram_capacity_bytes();
    c.dense_keys = e.options().dense_keys();
    if (c.dense_keys > (uint64_t{1} << 36))
      Fail(RS_ERR_CORRUPTION, "MANIFEST: dense_keys of table " + c.name + " is implausible");
    std::unique_ptr<TableImpl> t(new TableImpl(std::move(c), &epoch_, &last_seq_));
    t->before_change = [this] { MarkChanged(); };
    t->notify_compactor = [this] {
      {
        std::lock_guard<std::mutex> lock(cmu_);
        pending_ = true;
      }
      ccv_.notify_one();
    };
    return t;
  }

  std::vector<TableImpl*> Tables() const {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<TableImpl*> v;
    for (auto& kv : tables_) v.push_back(kv.second.get());
    return v;
  }

  void CompactorLoop() {
    // Background compaction yields the CPU to readers and writers: on a
    // machine with few cores it must not show up in lookup tail latency.
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 19);
    std::unique_lock<std::mutex> lock(cmu_);
    while (!stop_) {
      ccv_.wait_for(lock, std::chrono::seconds(1), [this] { return stop_ || pending_; });
      if (stop_) break;
      pending_ = false;
      lock.unlock();
      for (TableImpl* t : Tables()) {
        try {
          while (!StopRequested() && t->CompactOnce()) {
          }
        } catch (...) {
          // An I/O failure leaves the files as they were; the next round
          // retries. Readers and writers are unaffected.
        }
      }
      lock.lock();
    }
  }
  bool StopRequested() {
    std::lock_guard<std::mutex> lock(cmu_);
    return stop_;
  }

  std::string dir_;
  pb::StoreOptions options_;
  ResolvedOptions cfg_;
  pb::Manifest manifest_;
  int lock_fd_ = -1;
  bool opened_ = false;
  std::atomic<bool> clean_{false};  // the MANIFEST holds a valid clean-close record
  std::string recovery_mode_ = "new";
  std::vector<DroppedData> dropped_;
  EpochDomain epoch_;
  std::atomic<uint64_t> last_seq_{0};
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<TableImpl>> tables_;
  std::mutex cmu_;
  std::condition_variable ccv_;
  bool stop_ = false, pending_ = false;
  std::thread compactor_;
};

}  // namespace

std::unique_ptr<Store> Store::Open(const std::string& dir, const pb::StoreOptions& options) {
  if (options.has_tiers() && options.tiers() == "dram+redis") return OpenRemoteStore(dir, options);
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return std::unique_ptr<Store>(new StoreImpl(d, options));
}

std::unique_ptr<Store> Store::OpenJson(const std::string& dir, const std::string& options_json) {
  return Open(dir, ParseJson<pb::StoreOptions>(options_json, "store options"));
}

std::string Store::Repair(const std::string& dir, const std::string& options_json) {
  pb::StoreOptions given = ParseJson<pb::StoreOptions>(options_json, "store options");
  if (dir.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "repair needs a store directory");
  given.set_recovery("repair");
  given.set_create_if_missing(false);
  std::unique_ptr<Store> s = Open(dir, given);
  std::string report = s->StatsJson();
  s.reset();  // the close records the repaired state as a clean close
  return report;
}

}  // namespace store
}  // namespace rs
