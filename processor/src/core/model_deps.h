// What Model::Open needs from the layers above the core. The core includes
// nothing above itself; the composition root (api/composition.h) fills this in
// with the bundle loader (src/bundle) and the warmup-file decoder (src/wire).
#ifndef RECSTRATA_CORE_MODEL_DEPS_H_
#define RECSTRATA_CORE_MODEL_DEPS_H_

#include <cstddef>
#include <functional>
#include <string>

#include "core/input_stage.h"
#include "core/signature.h"
#include "recstrata.h"

namespace rs {

// Runs one warmup request: inputs in any order (names as in the signature),
// out_idx/n_out the requested outputs (n_out == 0: all). Throws rs::Error.
using WarmupRun = std::function<void(const rs_tensor* inputs, size_t n, const int* out_idx, size_t n_out)>;

// Decodes the bytes of a warmup file against `sig` and calls `run` once with
// the decoded request (whose storage lives only during the call). Throws
// rs::Error when the bytes are not a valid request for `sig`.
using WarmupDecoder =
    std::function<void(const std::string& bytes, const Signature& sig, const WarmupRun& run)>;

struct ModelDeps {
  BundleLoader bundle_loader;    // empty: bundle directories are refused (RS_ERR_UNIMPLEMENTED)
  WarmupDecoder warmup_decoder;  // empty: a warmup_file_name is refused (RS_ERR_UNIMPLEMENTED)
};

}  // namespace rs

#endif  // RECSTRATA_CORE_MODEL_DEPS_H_
