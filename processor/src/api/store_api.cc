// C entry points of the tiered embedding store (recstrata.h, "Tiered
// embedding store"): argument checks and the exception wall over rs::store.
#include <cmath>
#include <cstring>
#include <limits>

#include "base/buffers.h"
#include "base/json_text.h"
#include "base/status.h"
#include "store/store.h"

struct rs_store {
  std::unique_ptr<rs::store::Store> impl;
};

namespace {

rs::store::Table* T(rs_table* t) { return reinterpret_cast<rs::store::Table*>(t); }
const rs::store::Table* T(const rs_table* t) { return reinterpret_cast<const rs::store::Table*>(t); }
rs_table* C(rs::store::Table* t) { return reinterpret_cast<rs_table*>(t); }

void CheckBatch(const void* table, const int64_t* keys, size_t n, const void* data, bool need_data) {
  rs::Check(table != nullptr, RS_ERR_INVALID_ARGUMENT, "table is NULL");
  if (n == 0) return;
  rs::Check(keys != nullptr, RS_ERR_INVALID_ARGUMENT, "keys is NULL");
  rs::Check(!need_data || data != nullptr, RS_ERR_INVALID_ARGUMENT, "rows/out is NULL");
  rs::Check(n <= (std::numeric_limits<size_t>::max() >> 20), RS_ERR_INVALID_ARGUMENT, "n too large");
}

}  // namespace

extern "C" {

RS_API int rs_store_open(const char* dir, const char* options_json, rs_store** out,
                         rs_error** error) noexcept {
  if (out) *out = nullptr;
  RS_API_BEGIN(error);
  rs::Check(out != nullptr, RS_ERR_INVALID_ARGUMENT, "out is NULL");
  auto impl = rs::store::Store::OpenJson(dir ? dir : "", options_json ? options_json : "");
  *out = new rs_store{std::move(impl)};
  RS_API_END(error);
}

RS_API int rs_store_repair(const char* dir, const char* options_json, char** out_report_json,
                           rs_error** error) noexcept {
  if (out_report_json) *out_report_json = nullptr;
  RS_API_BEGIN(error);
  rs::Check(dir != nullptr && dir[0] != '\0', RS_ERR_INVALID_ARGUMENT, "dir is NULL or empty");
  std::string report = rs::store::Store::Repair(dir, options_json ? options_json : "");
  if (out_report_json) *out_report_json = rs::MallocCopy(report);
  RS_API_END(error);
}

RS_API void rs_store_close(rs_store* store) noexcept {
  try {
    delete store;
  } catch (...) {
  }
}

RS_API int rs_store_create_table(rs_store* store, const char* name, int32_t dim,
                                 const char* options_json, rs_table** out, rs_error** error) noexcept {
  if (out) *out = nullptr;
  RS_API_BEGIN(error);
  rs::Check(store != nullptr && name != nullptr, RS_ERR_INVALID_ARGUMENT, "store or name is NULL");
  rs::store::Table* t = store->impl->CreateTable(name, dim, options_json ? options_json : "");
  if (out) *out = C(t);
  RS_API_END(error);
}

RS_API int rs_store_table(rs_store* store, const char* name, rs_table** out, rs_error** error) noexcept {
  if (out) *out = nullptr;
  RS_API_BEGIN(error);
  rs::Check(store != nullptr && name != nullptr && out != nullptr, RS_ERR_INVALID_ARGUMENT,
            "store, name or out is NULL");
  *out = C(store->impl->GetTable(name));
  RS_API_END(error);
}

RS_API int rs_store_table_names_json(rs_store* store, char** out_json, rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  rs::Check(store != nullptr && out_json != nullptr, RS_ERR_INVALID_ARGUMENT, "store or out is NULL");
  std::string j = "[";
  bool first = true;
  for (const std::string& n : store->impl->TableNames()) {
    if (!first) j += ", ";
    first = false;
    rs::AppendJsonString(j, n);
  }
  j += "]";
  *out_json = rs::MallocCopy(j);
  RS_API_END(error);
}

RS_API int32_t rs_table_dim(const rs_table* table) noexcept { return table ? T(table)->dim() : 0; }

RS_API int rs_table_lookup(rs_table* table, const int64_t* keys, size_t n, float* out,
                           uint8_t* found, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  CheckBatch(table, keys, n, out, true);
  T(table)->Lookup(keys, n, out, found);
  RS_API_END(error);
}

RS_API int rs_table_upsert(rs_table* table, const int64_t* keys, size_t n, const float* rows,
                           rs_error** error) noexcept {
  RS_API_BEGIN(error);
  CheckBatch(table, keys, n, rows, true);
  T(table)->Upsert(keys, n, rows);
  RS_API_END(error);
}

RS_API int rs_table_delete(rs_table* table, const int64_t* keys, size_t n, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  CheckBatch(table, keys, n, nullptr, false);
  T(table)->Delete(keys, n);
  RS_API_END(error);
}

RS_API int rs_table_bulk_load(rs_table* table, const int64_t* keys, size_t n, const float* rows,
                              rs_error** error) noexcept {
  RS_API_BEGIN(error);
  CheckBatch(table, keys, n, rows, true);
  T(table)->BulkLoad(keys, n, rows);
  RS_API_END(error);
}

RS_API int rs_store_flush(rs_store* store, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  rs::Check(store != nullptr, RS_ERR_INVALID_ARGUMENT, "store is NULL");
  store->impl->Flush();
  RS_API_END(error);
}

RS_API int rs_store_compact(rs_store* store, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  rs::Check(store != nullptr, RS_ERR_INVALID_ARGUMENT, "store is NULL");
  store->impl->Compact();
  RS_API_END(error);
}

RS_API int rs_store_stats_json(rs_store* store, char** out_json, rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  rs::Check(store != nullptr && out_json != nullptr, RS_ERR_INVALID_ARGUMENT, "store or out is NULL");
  *out_json = rs::MallocCopy(store->impl->StatsJson());
  RS_API_END(error);
}

RS_API int rs_store_remote_pointer(rs_store* store, const char* op, const char* arg, char** out_json,
                                   rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  rs::Check(store != nullptr && op != nullptr && out_json != nullptr, RS_ERR_INVALID_ARGUMENT,
            "store, op or out is NULL");
  *out_json = rs::MallocCopy(store->impl->RemotePointer(op, arg ? arg : ""));
  RS_API_END(error);
}

}  // extern "C"
