// DynamicStore (one rs_store directory with its dynamic tables: open,
// snapshot, restore, close) and the process-wide registry of stores and
// tables (tfops/dynamic_table.h).
#include <errno.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>

#include "tfops/dyn_errors.h"
#include "tfops/dynamic_table.h"
#include "tfops/store_files.h"

namespace rs {
namespace tfops {
namespace {

std::mutex g_mu;
std::map<std::string, std::shared_ptr<DynamicStore>> g_stores;
std::map<std::string, std::shared_ptr<DynamicTable>> g_tables;

}  // namespace

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

void DynamicStore::CheckSnapshotLocked(const std::string& snap_dir) {
  if (!IsDir(snap_dir + "/store") || !IsDir(snap_dir + "/state"))
    Fail("dynamic snapshot " + snap_dir + " is missing or incomplete (no store/ or state/)");
  for (auto& kv : tables_) {
    struct stat st;
    if (::stat((snap_dir + "/state/" + kv.first + ".bin").c_str(), &st) != 0)
      Fail("dynamic snapshot " + snap_dir + " has no state of table " + kv.first);
  }
}

void DynamicStore::Restore(const std::string& snap_dir) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  CheckSnapshotLocked(snap_dir);
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
