// The loader: opens (and, through Model::Open, warms every session of) one
// model version; knows nothing of versions, policies or traffic. The model
// dependencies come from the composition root (api/composition.h), handed
// down through the host's constructor. Thread-safe (no mutable state).
//
// Loader priority: with the inline session config (inter-op < 0, intra-op 1,
// no per-session pools: every TF op runs in the calling thread) the whole
// open and warmup run on a short-lived loader thread whose nice value is
// raised by `nice` (Linux: per thread), so a reload yields the CPU to
// serving threads. Pooled configs load at normal priority: TF creates its
// pools during the load and they would inherit the priority for good.
#ifndef RECSTRATA_HOST_LOADER_H_
#define RECSTRATA_HOST_LOADER_H_

#include <memory>
#include <string>

#include "base/status.h"
#include "core/model.h"
#include "core/model_deps.h"

namespace rs::host {

// A load failure as the library reported it (code RS_OK: no failure).
struct LoadError {
  rs_status code = RS_OK;
  std::string message;
  bool ok() const { return code == RS_OK; }
};

struct LoadResult {
  std::unique_ptr<Model> model;  // set on success
  LoadError status;              // the library's code and message on failure
  double load_ms = 0;
  bool lowered = false;  // ran on a loader thread at raised nice
};

class VersionLoader {
 public:
  explicit VersionLoader(ModelDeps deps, int nice = 10) : deps_(std::move(deps)), nice_(nice) {}
  // Never throws: failures are in the result.
  LoadResult Load(const std::string& path, const std::string& config_json) const;

 private:
  LoadResult Open(const std::string& path, const std::string& config_json) const;
  ModelDeps deps_;
  int nice_;
};

}  // namespace rs::host

#endif  // RECSTRATA_HOST_LOADER_H_
