// C entry points of the bundle component: internal test hooks declared at the
// end of the models section of recstrata.h (rs_bundle_*).
#include <cstring>

#include "base/status.h"
#include "bundle/keys.h"
#include "bundle/manifest.h"
#include "recstrata.h"
#include "store/format.h"

extern "C" {

RS_API int rs_bundle_row_keys(const char* scheme_json, const int64_t* ids, size_t n,
                              int64_t* out_keys, size_t out_capacity,
                              size_t* out_num_subtables, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  if (!scheme_json) rs::Fail(RS_ERR_INVALID_ARGUMENT, "scheme_json is NULL");
  if (n && !ids) rs::Fail(RS_ERR_INVALID_ARGUMENT, "ids is NULL");
  recstrata::bundle::KeyScheme proto;
  rs::bundle::ParseJson(scheme_json, &proto, false, RS_ERR_INVALID_ARGUMENT, "key scheme JSON");
  const auto scheme = rs::bundle::KeyScheme::FromProto(proto, "key scheme");
  const size_t S = scheme.num_subtables();
  if (out_num_subtables) *out_num_subtables = S;
  if (n > SIZE_MAX / (S ? S : 1) || out_capacity < n * S)
    rs::Fail(RS_ERR_OUT_OF_RANGE, "out_keys holds " + std::to_string(out_capacity) +
                                      " keys, " + std::to_string(n * S) + " are needed");
  if (n && !out_keys) rs::Fail(RS_ERR_INVALID_ARGUMENT, "out_keys is NULL");
  for (size_t i = 0; i < n; ++i) {
    uint64_t u;
    std::memcpy(&u, ids + i, 8);
    scheme.RowKeys(u, out_keys + i * S);
  }
  RS_API_END(error);
}

RS_API int rs_bundle_string_ids(const rs_bytes* strings, size_t n, int64_t* out_ids,
                                rs_error** error) noexcept {
  RS_API_BEGIN(error);
  if (n && (!strings || !out_ids)) rs::Fail(RS_ERR_INVALID_ARGUMENT, "NULL buffer");
  for (size_t i = 0; i < n; ++i) {
    if (strings[i].size && !strings[i].data)
      rs::Fail(RS_ERR_INVALID_ARGUMENT, "string " + std::to_string(i) + " has NULL data");
    const uint64_t h = rs::bundle::Fnv1a64(strings[i].data, strings[i].size);
    std::memcpy(out_ids + i, &h, 8);
  }
  RS_API_END(error);
}

RS_API int rs_crc32c(const void* data, size_t size, uint32_t crc, uint32_t* out,
                     rs_error** error) noexcept {
  RS_API_BEGIN(error);
  if (!out) rs::Fail(RS_ERR_INVALID_ARGUMENT, "out is NULL");
  if (size && !data) rs::Fail(RS_ERR_INVALID_ARGUMENT, "data is NULL");
  *out = size ? rs::store::ExtendCrc32c(crc, data, size) : crc;
  RS_API_END(error);
}

}  // extern "C"
