// The bundle loader (core/input_stage.h's BundleLoader): manifest + serving
// options -> the bundle's input stage. Handed to the core by the composition
// root (api/composition.cc).
#include <cstdlib>

#include "bundle/loader.h"

#include "base/status.h"
#include "bundle/bundle_stage.h"
#include "bundle/manifest.h"
#include "core/input_stage.h"

namespace rs {
namespace bundle {
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

}  // namespace bundle
}  // namespace rs
