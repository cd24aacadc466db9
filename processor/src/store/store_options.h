// The local store's options (recstrata.store.StoreOptions, TableOptions;
// store.proto): JSON parsing and the store options' resolution to the tiers' settings, defaults
// applied and every value checked (docs/store.md "Options"). Used by the
// store directory (store/store.cc) at open.
#ifndef RECSTRATA_STORE_STORE_OPTIONS_H_
#define RECSTRATA_STORE_STORE_OPTIONS_H_

#include <string>

#include "base/status.h"
#include "google/protobuf/json/json.h"
#include "recstrata/store/store.pb.h"
#include "store/table.h"

namespace rs {
namespace store {

// `json` parsed as a Msg (empty: the defaults); RS_ERR_INVALID_ARGUMENT
// "<what>: <parser's message>" if it does not parse (unknown fields
// included: protobuf's default ParseOptions).
template <class Msg>
Msg ParseJson(const std::string& json, const char* what) {
  Msg msg;
  if (json.empty()) return msg;
  google::protobuf::json::ParseOptions opts;
  auto st = google::protobuf::json::JsonStringToMessage(json, &msg, opts);
  if (!st.ok()) {
    Fail(RS_ERR_INVALID_ARGUMENT, std::string(what) + ": " + std::string(st.message()));
  }
  return msg;
}

// Effective options with defaults applied and values validated.
struct ResolvedOptions : TierOptions {
  bool create_if_missing = true;
  bool require_clean = false;  // recovery "require_clean"
};

// Throws RS_ERR_INVALID_ARGUMENT "store options: ..." for a bad value, and
// for redis_* options (they belong to tiers "dram+redis", store/remote_store.h).
ResolvedOptions ResolveOptions(const ::recstrata::store::StoreOptions& o);

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_STORE_OPTIONS_H_
