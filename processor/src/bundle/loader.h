// The bundle loader: a bundle directory + the model config text -> the dense
// SavedModel's directory and the bundle's input stage (core/input_stage.h).
// Handed to the core by the composition root (api/composition.cc).
#ifndef RECSTRATA_BUNDLE_LOADER_H_
#define RECSTRATA_BUNDLE_LOADER_H_

#include <string>

#include "core/input_stage.h"

namespace rs {
namespace bundle {

// Throws rs::Error (RS_ERR_CORRUPTION, RS_ERR_INVALID_ARGUMENT, ...).
BundleStage LoadBundle(const std::string& bundle_dir, const std::string& config_json);

}  // namespace bundle
}  // namespace rs

#endif  // RECSTRATA_BUNDLE_LOADER_H_
