// Control entry points of librecstrata_tfops.so for recstrata.training.dynamic
// (ctypes): open/close stores, create tables, snapshot, restore (one
// snapshot or the union of multi-worker shards), stats.
// Every function catches everything and returns 0 on success or -1 with a
// malloc'ed message in *error (release with rsdyn_free).
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "tfops/dynamic_table.h"

#define RSDYN_API extern "C" __attribute__((visibility("default")))

namespace {

char* Dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

void NotNull(const void* p, const char* what) {
  if (!p) throw std::invalid_argument(std::string(what) + " is NULL");
}

template <typename F>
int Wall(char** error, F&& f) noexcept {
  if (error) *error = nullptr;
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    if (error) *error = Dup(e.what());
  } catch (...) {
    if (error) *error = Dup("unknown error");
  }
  return -1;
}

}  // namespace

using namespace rs::tfops;

RSDYN_API void rsdyn_free(char* p) noexcept { std::free(p); }

RSDYN_API int rsdyn_config_size(void) noexcept { return static_cast<int>(sizeof(rsdyn_table_config)); }

RSDYN_API int rsdyn_store_open(const char* id, const char* dir, const char* options_json,
                               char** error) noexcept {
  return Wall(error, [&] {
    NotNull(id, "id"), NotNull(dir, "dir");
    OpenStore(id, dir, options_json ? options_json : "");
  });
}

RSDYN_API int rsdyn_store_close(const char* id, char** error) noexcept {
  return Wall(error, [&] {
    NotNull(id, "id");
    CloseStore(id);
  });
}

RSDYN_API int rsdyn_table_create(const char* store_id, const char* name,
                                 const rsdyn_table_config* cfg, char** error) noexcept {
  return Wall(error, [&] {
    NotNull(store_id, "store_id"), NotNull(name, "name"), NotNull(cfg, "cfg");
    auto s = FindStore(store_id);
    auto t = s->CreateTable(name, *cfg);
    RegisterTable(std::string(store_id) + "/" + name, t);
  });
}

RSDYN_API int rsdyn_store_snapshot(const char* id, const char* out_dir, char** error) noexcept {
  return Wall(error, [&] {
    NotNull(id, "id"), NotNull(out_dir, "out_dir");
    FindStore(id)->Snapshot(out_dir);
  });
}

RSDYN_API int rsdyn_store_restore(const char* id, const char* snap_dir, char** error) noexcept {
  return Wall(error, [&] {
    NotNull(id, "id"), NotNull(snap_dir, "snap_dir");
    FindStore(id)->Restore(snap_dir);
  });
}

RSDYN_API int rsdyn_store_restore_union(const char* id, const char* const* snap_dirs, size_t n,
                                        char** error) noexcept {
  return Wall(error, [&] {
    NotNull(id, "id");
    if (n) NotNull(snap_dirs, "snap_dirs");
    std::vector<std::string> dirs;
    for (size_t i = 0; i < n; ++i) {
      NotNull(snap_dirs[i], "snap_dir");
      dirs.emplace_back(snap_dirs[i]);
    }
    FindStore(id)->RestoreUnion(dirs);
  });
}

RSDYN_API int rsdyn_clone_store(const char* src, const char* dst, char** error) noexcept {
  return Wall(error, [&] {
    NotNull(src, "src"), NotNull(dst, "dst");
    CloneStoreDir(src, dst);
  });
}

RSDYN_API int rsdyn_store_stats_json(const char* id, char** out, char** error) noexcept {
  return Wall(error, [&] {
    NotNull(id, "id"), NotNull(out, "out");
    *out = Dup(FindStore(id)->StatsJson());
  });
}

RSDYN_API int rsdyn_table_lookup(const char* key, const int64_t* keys, size_t n, float* out,
                                 char** error) noexcept {
  return Wall(error, [&] {
    NotNull(key, "key");
    if (n) NotNull(keys, "keys"), NotNull(out, "out");
    FindTable(key)->Lookup(keys, n, out);
  });
}

RSDYN_API int rsdyn_table_evict(const char* key, int64_t* evicted, char** error) noexcept {
  return Wall(error, [&] {
    NotNull(key, "key"), NotNull(evicted, "evicted");
    *evicted = FindTable(key)->Evict();
  });
}
