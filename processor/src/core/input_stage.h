// Extension point for recstrata model bundles (implemented in src/bundle).
//
// A bundle directory holds a file named `bundle.json` (its manifest) next to a
// dense SavedModel. The public signature of a bundle takes raw features (ids,
// strings, ...); an InputStage turns them into the dense SavedModel's inputs
// (e.g. by looking ids up in the tiered embedding store and pooling them).
//
// CONTRACT between the core (src/core, src/api) and a bundle implementation:
//
//  1. The loader reaches the core through ModelDeps::bundle_loader
//     (core/model_deps.h), filled in by the composition root
//     (api/composition.cc). Without one, opening a bundle directory fails
//     with RS_ERR_UNIMPLEMENTED.
//  2. rs_model_open(dir, config) on a directory containing `bundle.json`
//     calls loader(bundle_dir, config_json). The loader reads its manifest
//     and returns a BundleStage:
//       - dense_model_dir: absolute path of the dense SavedModel to serve
//         (usually a subdirectory named by the manifest);
//       - stage: the InputStage.
//     Errors are reported by throwing rs::Error (base/status.h) with a public
//     code and message; they surface unchanged from rs_model_open.
//  3. The core then opens the dense SavedModel as a SessionGroup (with the
//     same config: session_num, policies, threads, ...) and calls
//     stage->Bind(dense_signature) once, before warmup. Bind may throw
//     rs::Error if the dense model does not fit the manifest.
//  4. Serving: for each rs_model_run / rs_model_predict the core validates the
//     caller's tensors against stage->public_signature() (names, dtypes,
//     ranks, known dims, byte sizes, element counts: everything
//     ValidateInputs in core/tensors.h checks), reorders them into
//     public-signature input order and calls
//       stage->Transform(inputs, n, dense_inputs)
//     where inputs[i] is public_signature().inputs[i] and n == its size.
//     Transform must fill `dense_inputs` (cleared by the caller) with exactly
//     one new TF_Tensor per dense signature input, in dense signature input
//     order; ownership passes to the core, which deletes them after the run
//     (also when Transform throws: the core deletes whatever it holds).
//     The core checks their dtypes and shapes against the dense signature
//     before running TensorFlow. The rs_tensor views (and their data) are
//     borrowed for the call only; do not keep pointers into them, and do not
//     wrap caller memory in the TF_Tensors you return (copy instead).
//  5. Transform, public_signature and StatsJson are called by many threads at
//     once: they must be thread-safe. The stage lives until rs_model_close;
//     it is destroyed after every session of the group is closed.
//  6. Outputs of a bundle model are the dense signature's outputs:
//     public_signature().outputs is ignored by the core (describe/accessors
//     show the dense outputs).
//  7. StatsJson() returns a JSON object (e.g. embedding tier hits); the core
//     embeds it as "bundle" in rs_model_stats_json. DescribeJson() likewise
//     becomes "bundle" in rs_model_describe_json.
#ifndef RECSTRATA_CORE_INPUT_STAGE_H_
#define RECSTRATA_CORE_INPUT_STAGE_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/signature.h"
#include "recstrata.h"
#include "tensorflow/c/c_api.h"

namespace rs {

class InputStage {
 public:
  virtual ~InputStage() = default;

  // Called once after the dense SavedModel is loaded, before warmup.
  virtual void Bind(const Signature& dense_signature) = 0;

  // The raw-feature signature the model exposes (inputs only are used).
  virtual const Signature& public_signature() const = 0;

  // Raw inputs (validated, in public signature order) -> dense inputs (new
  // TF_Tensors in dense signature order). Thread-safe. Throws rs::Error.
  virtual void Transform(const rs_tensor* inputs, size_t n,
                         std::vector<TF_Tensor*>& dense_inputs) = 0;

  // JSON objects embedded in the model's stats / describe output.
  virtual std::string StatsJson() const { return "{}"; }
  virtual std::string DescribeJson() const { return "{}"; }
};

struct BundleStage {
  std::string dense_model_dir;
  std::unique_ptr<InputStage> stage;
};

// loader(bundle_dir, config_json) -> BundleStage. config_json is the text
// given to rs_model_open ("" when none). Throws rs::Error on failure.
using BundleLoader =
    std::function<BundleStage(const std::string& bundle_dir, const std::string& config_json)>;

// Name of the manifest file that marks a bundle directory.
inline constexpr const char* kBundleManifest = "bundle.json";

}  // namespace rs

#endif  // RECSTRATA_CORE_INPUT_STAGE_H_
