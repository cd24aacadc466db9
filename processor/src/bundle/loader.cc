// Registers the bundle loader with the core at library load (see
// core/input_stage.h): rs_model_open on a directory holding bundle.json ends
// up here.
#include <cstdlib>

#include "api/status.h"
#include "bundle/bundle_stage.h"
#include "bundle/manifest.h"
#include "core/input_stage.h"

namespace rs {
namespace bundle {
namespace {

BundleStage LoadBundle(const std::string& bundle_dir, const std::string& config_json) {
  recstrata::bundle::ServingOptions options;
  if (config_json.find_first_not_of(" \t\r\n") != std::string::npos)
    ParseJson(config_json, &options, /*ignore_unknown=*/true, RS_ERR_INVALID_ARGUMENT,
              "model config (bundle serving options)");
  recstrata::bundle::Manifest manifest = LoadManifest(bundle_dir);
  auto stage = std::make_unique<BundleInputStage>(bundle_dir, std::move(manifest), options);
  BundleStage out;
  out.dense_model_dir = stage->dense_dir();
  out.stage = std::move(stage);
  return out;
}

// Static registrar: runs when librecstrata.so is loaded.
const bool kRegistered = [] {
  RegisterBundleLoader(&LoadBundle);
  return true;
}();

}  // namespace
}  // namespace bundle
}  // namespace rs
