// Warmup: the runs every session gets before a model takes traffic, so the
// first real request does not pay for graph optimisation and allocator growth.
//
// Source of the warmup request, in order: none when warmup_runs == 0; the
// config's warmup_file_name (a PredictRequest, decoded by deps.warmup_decoder;
// a bad file fails the open); else generated batch-1 inputs (all ones / empty
// strings), whose rejection by the model does not fail the open but is
// reported as `error` (describe/stats: warmup.error).
#ifndef RECSTRATA_CORE_WARMUP_H_
#define RECSTRATA_CORE_WARMUP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/model_deps.h"
#include "core/signature.h"
#include "recstrata.h"

namespace rs {

// Batch-1 inputs for `sig` (unknown dimensions become 1); owns its storage.
struct GeneratedInputs {
  std::vector<rs_tensor> tensors;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<std::unique_ptr<char[]>> data;
  std::vector<std::unique_ptr<rs_bytes[]>> strings;
};
void GenerateInputs(const Signature& sig, GeneratedInputs& g);

// Runs one request on session `session`. Throws rs::Error.
using SessionRun =
    std::function<void(const rs_tensor* inputs, size_t n, const int* out_idx, size_t n_out, int session)>;

struct WarmupOutcome {
  std::string source;  // "disabled" | "file" | "generated"
  std::string error;   // generated warmup rejected by the model; "" when none
};

// Runs cfg.warmup_runs requests on each of `sessions` sessions. Throws
// rs::Error when the warmup file is missing or invalid.
WarmupOutcome WarmUp(const ModelConfig& cfg, const Signature& sig, size_t sessions,
                     const WarmupDecoder& decode, const SessionRun& run);

}  // namespace rs

#endif  // RECSTRATA_CORE_WARMUP_H_
