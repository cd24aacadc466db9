// RemoteStore: tiers "dram+redis" (remote_store.h). Tables are CachedTables
// over RedisTiers; their list, dims and row counts live in the key space's
// metadata hash; a watcher thread follows the model's serving pointer.
#include "store/remote_store.h"

#include <chrono>
#include <cstring>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "base/json_text.h"
#include "base/status.h"
#include "google/protobuf/json/json.h"
#include "store/cached_table.h"
#include "store/redis_cluster.h"
#include "store/redis_ledger.h"
#include "store/redis_tier.h"
#include "store/stats_json.h"

namespace rs {
namespace store {
namespace {

namespace pb = ::recstrata::store;

void CheckName(const std::string& what, const std::string& v) {
  if (v.find_first_of("{}") != std::string::npos || v.size() > 256)
    Fail(RS_ERR_INVALID_ARGUMENT, what + " '" + v + "' must be at most 256 bytes without '{' or '}'");
}

std::string GlobEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

struct TableMeta {
  int32_t dim = 0;
  uint64_t rows = 0;
  std::vector<float> default_value;
};

const char* kPublish =
    "local s = redis.call('HGET', KEYS[1], 'serving')\n"
    "if s and s ~= ARGV[1] then redis.call('HSET', KEYS[1], 'backup', s) end\n"
    "redis.call('HSET', KEYS[1], 'serving', ARGV[1])\n"
    "return 1\n";
const char* kRollback =
    "local s = redis.call('HGET', KEYS[1], 'serving')\n"
    "local b = redis.call('HGET', KEYS[1], 'backup')\n"
    "if not b or not s then return redis.error_reply('no backup key space to roll back to') end\n"
    "redis.call('HSET', KEYS[1], 'serving', b, 'backup', s)\n"
    "return 1\n";

class RemoteStore final : public Store {
 public:
  RemoteStore(const std::string& dir, const pb::StoreOptions& o) {
    auto bad = [](const std::string& m) { Fail(RS_ERR_INVALID_ARGUMENT, "store options: " + m); };
    if (!dir.empty()) bad("tiers \"dram+redis\" keeps no files: the directory must be \"\"");
    if (!o.has_redis_url() || o.redis_url().empty()) bad("tiers \"dram+redis\" needs redis_url");
    if (!o.has_redis_model() || o.redis_model().empty()) bad("tiers \"dram+redis\" needs redis_model");
    model_ = o.redis_model();
    CheckName("redis_model", model_);
    if (o.has_redis_key_space()) CheckName("redis_key_space", o.redis_key_space());
    url_ = o.redis_url();
    if (o.has_dram_capacity_bytes()) cfg_.dram_capacity_bytes = o.dram_capacity_bytes();
    if (o.has_cache_policy()) {
      if (o.cache_policy() == "lfu") cfg_.policy = CachePolicy::kLfu;
      else if (o.cache_policy() == "lru") cfg_.policy = CachePolicy::kLru;
      else bad("cache_policy must be \"lfu\" or \"lru\"");
    }
    if (o.has_shard_bits()) {
      if (o.shard_bits() > 10) bad("shard_bits must be <= 10");
      cfg_.shard_bits = static_cast<int>(o.shard_bits());
    }
    RedisCluster::Options co;
    co.seeds = RedisCluster::ParseSeeds(url_);
    co.password = o.redis_password();
    auto ms = [&](bool has, uint32_t v, int def, const char* name) {
      if (!has) return def;
      if (v == 0 || v > 600000) bad(std::string(name) + " must be in 1..600000");
      return static_cast<int>(v);
    };
    co.connect_timeout_ms = ms(o.has_redis_connect_timeout_ms(), o.redis_connect_timeout_ms(), 200, "redis_connect_timeout_ms");
    co.command_timeout_ms = ms(o.has_redis_command_timeout_ms(), o.redis_command_timeout_ms(), 200, "redis_command_timeout_ms");
    co.down_ms = ms(o.has_redis_down_ms(), o.redis_down_ms(), 1000, "redis_down_ms");
    poll_ms_ = ms(o.has_redis_poll_ms(), o.redis_poll_ms(), 500, "redis_poll_ms");
    cluster_.reset(new RedisCluster(co));
    follow_ = o.redis_key_space().empty();
    std::string space = follow_ ? PointerField("serving") : o.redis_key_space();
    if (!space.empty()) {
      std::map<std::string, TableMeta> meta = LoadMeta(space);
      changes_id_ = LastChangeId(space);
      space_.Set(space);
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& kv : meta) AddTableLocked(kv.first, kv.second);
    }
    ledger_.reset(new RedisDeltaLedger(
        cluster_.get(), model_, [this] { return *space_.space(); }, &poll_mu_, [this] {
          std::lock_guard<std::mutex> lock(mu_);  // poll_mu_ is held (DeltaLedger::Hold)
          ReadChangesLocked(*space_.space());
        }));
    if (follow_) watcher_ = std::thread([this] { WatchLoop(); });
  }

  ~RemoteStore() override {
    {
      std::lock_guard<std::mutex> lock(wmu_);
      stop_ = true;
    }
    wcv_.notify_all();
    if (watcher_.joinable()) watcher_.join();
  }

  Table* CreateTable(const std::string& name, int32_t dim, const std::string& options_json) override {
    if (name.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "table name must be 1..256 bytes");
    CheckName("table name", name);
    if (dim <= 0 || dim > 65536) Fail(RS_ERR_INVALID_ARGUMENT, "table dim must be in 1..65536");
    pb::TableOptions topts;
    if (!options_json.empty()) {
      auto st = google::protobuf::json::JsonStringToMessage(options_json, &topts, google::protobuf::json::ParseOptions());
      if (!st.ok()) Fail(RS_ERR_INVALID_ARGUMENT, "table options: " + std::string(st.message()));
    }
    if (topts.default_value_size() != 0 && topts.default_value_size() != dim)
      Fail(RS_ERR_INVALID_ARGUMENT, "default_value must have dim (" + std::to_string(dim) + ") values");
    std::shared_ptr<const std::string> space = space_.space();
    if (space->empty())
      Fail(RS_ERR_FAILED_PRECONDITION, "redis model '" + model_ +
                                           "' has no serving key space yet: open with redis_key_space to create tables");
    std::lock_guard<std::mutex> lock(mu_);
    if (tables_.count(name)) Fail(RS_ERR_ALREADY_EXISTS, "table '" + name + "' already exists");
    const std::string meta = redis_keys::Meta(model_, *space);
    RedisReply r = cluster_->Command({"HSETNX", meta, name + "#dim", std::to_string(dim)});
    if (r.integer == 0)
      Fail(RS_ERR_ALREADY_EXISTS, "table '" + name + "' already exists in redis key space '" + *space + "'");
    TableMeta m;
    m.dim = dim;
    m.default_value.assign(topts.default_value().begin(), topts.default_value().end());
    std::vector<std::string> hset = {"HSET", meta, name + "#rows", "0"};
    if (!m.default_value.empty()) {
      hset.push_back(name + "#default");
      hset.push_back(std::string(reinterpret_cast<const char*>(m.default_value.data()), 4ull * dim));
    }
    cluster_->Command(hset);
    return AddTableLocked(name, m);
  }

  Table* GetTable(const std::string& name) override {
    Table* t = FindTable(name);
    if (!t) Fail(RS_ERR_NOT_FOUND, "no table '" + name + "' in redis model '" + model_ + "' key space '" + *space_.space() + "'");
    return t;
  }
  Table* FindTable(const std::string& name) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = tables_.find(name);
    return it == tables_.end() ? nullptr : it->second.get();
  }
  std::vector<std::string> TableNames() const override {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> v;
    for (auto& kv : tables_) v.push_back(kv.first);
    return v;
  }
  void Flush() override {}    // every acknowledged write is in Redis already
  void Compact() override {}  // nothing to compact

  StoreStats Stats() const override {
    StoreStats s;
    s.tiers = "dram+redis";
    s.recovery = "remote";
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto& kv : tables_) s.tables.push_back(kv.second->Stats());
    }
    RedisClusterStats c = cluster_->Stats();
    std::string j = "{\"url\": " + JsonString(url_) + ", \"model\": " + JsonString(model_) +
                    ", \"key_space\": " + JsonString(*space_.space()) +
                    ", \"follow_pointer\": " + (follow_ ? "true" : "false");
    auto kv = [&](const char* k, uint64_t v) { j += std::string(", \"") + k + "\": " + std::to_string(v); };
    kv("switches", switches_.load());
    kv("switch_failures", switch_failures_.load());
    kv("poll_errors", poll_errors_.load());
    kv("changed_keys_dropped", changes_seen_.load());
    kv("commands", c.commands);
    kv("round_trips", c.round_trips);
    kv("errors", c.errors);
    kv("timeouts", c.timeouts);
    kv("fast_failures", c.fast_failures);
    kv("moved", c.moved);
    kv("ask", c.ask);
    kv("slot_map_loads", c.refreshes);
    kv("bytes_out", c.bytes_out);
    kv("bytes_in", c.bytes_in);
    kv("nodes", c.nodes);
    {
      std::lock_guard<std::mutex> lock(emu_);
      j += ", \"last_error\": " + JsonString(last_error_);
    }
    j += "}";
    s.remote_json = j;
    return s;
  }
  std::string StatsJson() const override { return StoreStatsJson(Stats()); }
  DeltaLedger* delta_ledger() override { return ledger_.get(); }

  std::string RemotePointer(const std::string& op, const std::string& arg) override {
    const std::string ptr = redis_keys::Pointer(model_);
    if (op == "get") {
      // nothing to change
    } else if (op == "publish") {
      std::shared_ptr<const std::string> space = space_.space();
      if (space->empty()) Fail(RS_ERR_FAILED_PRECONDITION, "publish: this store has no key space");
      RedisReply e = cluster_->Command({"EXISTS", redis_keys::Meta(model_, *space)});
      if (e.integer == 0)
        Fail(RS_ERR_FAILED_PRECONDITION, "publish: key space '" + *space + "' holds no tables");
      cluster_->Command({"EVAL", kPublish, "1", ptr, *space}, 3);
    } else if (op == "rollback") {
      try {
        cluster_->Command({"EVAL", kRollback, "1", ptr}, 3);
      } catch (const Error& e) {
        if (std::string(e.what()).find("no backup key space") != std::string::npos)
          Fail(RS_ERR_FAILED_PRECONDITION, "rollback: model '" + model_ + "' has no backup key space");
        throw;
      }
    } else if (op == "drop") {
      Drop(arg);
    } else if (op == "bind_base") {
      std::shared_ptr<const std::string> space = space_.space();
      if (space->empty()) Fail(RS_ERR_FAILED_PRECONDITION, "bind_base: this store has no key space");
      RedisDeltaLedger::Bind(cluster_.get(), model_, *space, arg);
    } else {
      Fail(RS_ERR_INVALID_ARGUMENT,
           "serving pointer op must be get, publish, rollback, drop or bind_base; got '" + op + "'");
    }
    if (follow_ && (op == "publish" || op == "rollback")) PollOnce();
    const std::string serving = PointerField("serving"), backup = PointerField("backup");
    return "{\"serving\": " + JsonString(serving) + ", \"backup\": " + JsonString(backup) +
           ", \"active\": " + JsonString(*space_.space()) + "}";
  }

 private:
  std::string PointerField(const char* field) {
    RedisReply r = cluster_->Command({"HGET", redis_keys::Pointer(model_), field});
    return r.kind == RedisReply::kString ? r.str : "";
  }

  std::map<std::string, TableMeta> LoadMeta(const std::string& space) {
    RedisReply r = cluster_->Command({"HGETALL", redis_keys::Meta(model_, space)});
    std::map<std::string, TableMeta> out;
    for (size_t i = 0; i + 1 < r.elements.size(); i += 2) {
      const std::string& f = r.elements[i].str;
      const std::string& v = r.elements[i + 1].str;
      size_t h = f.rfind('#');
      if (h == std::string::npos) continue;
      std::string name = f.substr(0, h), what = f.substr(h + 1);
      TableMeta& m = out[name];
      if (what == "dim") m.dim = std::atoi(v.c_str());
      else if (what == "rows") m.rows = std::strtoull(v.c_str(), nullptr, 10);
      else if (what == "default") {
        m.default_value.resize(v.size() / 4);
        std::memcpy(m.default_value.data(), v.data(), m.default_value.size() * 4);
      }
    }
    for (auto& kv : out) {
      TableMeta& m = kv.second;
      if (m.dim <= 0 || m.dim > 65536 || (!m.default_value.empty() && m.default_value.size() != static_cast<size_t>(m.dim)))
        Fail(RS_ERR_CORRUPTION, "redis metadata " + redis_keys::Meta(model_, space) + ": table '" + kv.first +
                                    "' has a bad dim or default value");
    }
    return out;
  }

  Table* AddTableLocked(const std::string& name, const TableMeta& m) {
    CachedTableConfig c = cfg_;
    c.name = name;
    c.dim = m.dim;
    c.default_value = m.default_value;
    std::unique_ptr<BackingTier> tier(new RedisTier(cluster_.get(), &space_, model_, name, m.dim));
    std::unique_ptr<CachedTable> t(
        new CachedTable(std::move(c), &epoch_, std::move(tier), [this] { return space_.generation(); }));
    t->set_rows(m.rows);
    t->on_rows_changed = [this, name](int64_t d) {
      cluster_->Command({"HINCRBY", redis_keys::Meta(model_, *space_.space()), name + "#rows", std::to_string(d)});
    };
    t->on_written = [this, name](const int64_t* keys, size_t n) {
      // The change notice every other host's watcher reads to drop its cached copies.
      const std::string stream = redis_keys::Changes(model_, *space_.space());
      for (size_t base = 0; base < n; base += 16384) {
        const size_t m = std::min<size_t>(16384, n - base);
        try {
          cluster_->Command({"XADD", stream, "MAXLEN", "~", "10000", "*", "table", name, "keys",
                             std::string(reinterpret_cast<const char*>(keys + base), 8 * m)});
        } catch (const Error& e) {
          Fail(RS_ERR_IO, std::string("rows written, but their change notice failed (other hosts keep "
                                      "serving their cached copies until evicted): ") + e.what());
        }
      }
    };
    CachedTable* raw = t.get();
    tables_[name] = std::move(t);
    return raw;
  }

  void Note(const std::string& e) {
    std::lock_guard<std::mutex> lock(emu_);
    last_error_ = e;
  }

  // Follows the serving pointer once: a new space replaces the active one
  // if every table this store has is there with the same dim.
  void PollOnce() {
    std::lock_guard<std::mutex> plock(poll_mu_);
    const std::string serving = PointerField("serving");
    std::shared_ptr<const std::string> cur = space_.space();
    if (serving.empty()) return;
    std::map<std::string, TableMeta> meta = LoadMeta(serving);
    std::lock_guard<std::mutex> lock(mu_);
    if (serving == *cur) {
      for (auto& kv : meta) {
        auto it = tables_.find(kv.first);
        if (it != tables_.end()) it->second->set_rows(kv.second.rows);
      }
      ReadChangesLocked(serving);
      return;
    }
    for (auto& kv : tables_) {
      auto it = meta.find(kv.first);
      if (it == meta.end() || it->second.dim != kv.second->dim()) {
        switch_failures_.fetch_add(1);
        Note("serving key space '" + serving + "' lacks table '" + kv.first + "' with dim " +
             std::to_string(kv.second->dim()) + "; still serving '" + *cur + "'");
        return;
      }
    }
    changes_id_ = LastChangeId(serving);
    space_.Set(serving);
    for (auto& kv : meta) {
      auto it = tables_.find(kv.first);
      if (it == tables_.end()) {
        AddTableLocked(kv.first, kv.second);
      } else {
        it->second->Invalidate();
        it->second->set_rows(kv.second.rows);
      }
    }
    switches_.fetch_add(1);
  }

  // The id of the newest change notice of a space ("0-0" if none).
  std::string LastChangeId(const std::string& space) {
    RedisReply r = cluster_->Command({"XREVRANGE", redis_keys::Changes(model_, space), "+", "-", "COUNT", "1"});
    if (r.kind == RedisReply::kArray && !r.elements.empty() && !r.elements[0].elements.empty())
      return r.elements[0].elements[0].str;
    return "0-0";
  }

  // Drops the cached copies of keys other hosts changed since the last poll
  // (poll_mu_ and mu_ held).
  void ReadChangesLocked(const std::string& space) {
    const std::string stream = redis_keys::Changes(model_, space);
    for (int round = 0; round < 100; ++round) {
      RedisReply r = cluster_->Command({"XREAD", "COUNT", "1000", "STREAMS", stream, changes_id_}, 4);
      if (r.kind != RedisReply::kArray || r.elements.empty()) return;
      const RedisReply& entries = r.elements[0].elements.size() == 2 ? r.elements[0].elements[1] : RedisReply();
      if (entries.elements.empty()) return;
      for (const RedisReply& e : entries.elements) {
        if (e.elements.size() != 2) continue;
        changes_id_ = e.elements[0].str;
        const RedisReply& f = e.elements[1];
        std::string table, keys;
        for (size_t i = 0; i + 1 < f.elements.size(); i += 2) {
          if (f.elements[i].str == "table") table = f.elements[i + 1].str;
          else if (f.elements[i].str == "keys") keys = f.elements[i + 1].str;
        }
        auto it = tables_.find(table);
        if (it == tables_.end() || keys.size() % 8) continue;
        std::vector<int64_t> k(keys.size() / 8);
        std::memcpy(k.data(), keys.data(), keys.size());
        it->second->Forget(k.data(), k.size());
        changes_seen_.fetch_add(k.size());
      }
      if (entries.elements.size() < 1000) return;
    }
  }

  void WatchLoop() {
    std::unique_lock<std::mutex> lock(wmu_);
    while (!stop_) {
      wcv_.wait_for(lock, std::chrono::milliseconds(poll_ms_), [this] { return stop_; });
      if (stop_) break;
      lock.unlock();
      try {
        PollOnce();
      } catch (const std::exception& e) {
        poll_errors_.fetch_add(1);
        Note(std::string("serving pointer poll: ") + e.what());
      } catch (...) {
        poll_errors_.fetch_add(1);
      }
      lock.lock();
    }
  }

  void Drop(const std::string& space) {
    if (space.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "drop: name the key space");
    CheckName("redis_key_space", space);
    if (space == PointerField("serving") || space == PointerField("backup") || space == *space_.space())
      Fail(RS_ERR_FAILED_PRECONDITION, "drop: key space '" + space + "' is serving, backup or open here");
    const std::string pattern = GlobEscape(redis_keys::RowPrefix(model_, space)) + "*";
    for (const std::string& node : cluster_->Masters()) {
      std::string cursor = "0";
      do {
        RedisReply r = cluster_->CommandOn(node, {"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
        if (r.kind != RedisReply::kArray || r.elements.size() != 2) Fail(RS_ERR_IO, "drop: bad SCAN reply from " + node);
        cursor = r.elements[0].str;
        std::vector<std::vector<std::string>> cmds;
        for (const RedisReply& k : r.elements[1].elements) cmds.push_back({"UNLINK", k.str});
        std::vector<RedisReply> rep;
        cluster_->Exec(cmds, &rep);
        for (const RedisReply& x : rep)
          if (x.kind == RedisReply::kError) Fail(RS_ERR_IO, "drop: " + x.str);
      } while (cursor != "0");
    }
    cluster_->Command({"UNLINK", redis_keys::Meta(model_, space)});
    cluster_->Command({"UNLINK", redis_keys::Changes(model_, space)});
    cluster_->Command({"UNLINK", redis_keys::DeltaRecord(model_, space)});
    cluster_->Command({"UNLINK", redis_keys::DeltaLease(model_, space)});
  }

  std::string model_, url_;
  CachedTableConfig cfg_;
  int poll_ms_ = 500;
  bool follow_ = true;
  std::unique_ptr<RedisCluster> cluster_;
  RedisKeySpace space_;
  EpochDomain epoch_;
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<CachedTable>> tables_;
  std::mutex poll_mu_;
  std::atomic<uint64_t> switches_{0}, switch_failures_{0}, poll_errors_{0}, changes_seen_{0};
  std::string changes_id_ = "0-0";  // last change notice read (poll_mu_)
  mutable std::mutex emu_;
  std::string last_error_;
  std::mutex wmu_;
  std::condition_variable wcv_;
  bool stop_ = false;
  std::thread watcher_;
  std::unique_ptr<RedisDeltaLedger> ledger_;  // uses the members above
};

}  // namespace

std::unique_ptr<Store> OpenRemoteStore(const std::string& dir, const pb::StoreOptions& options) {
  return std::unique_ptr<Store>(new RemoteStore(dir, options));
}

}  // namespace store
}  // namespace rs
