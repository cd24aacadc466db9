// Model::TraceJson: one generated request with FULL_TRACE, reported as the op
// types of the executed graph (after Grappler / oneDNN rewrites).
#include <memory>
#include <string>

#include "core/model.h"
#include "core/tf_protos.h"
#include "core/warmup.h"

namespace rs {

std::string Model::TraceJson() {
  const std::string ro_bytes = FullTraceRunOptions();
  std::unique_ptr<TF_Buffer, decltype(&TF_DeleteBuffer)> opts(
      TF_NewBufferFromString(ro_bytes.data(), ro_bytes.size()), &TF_DeleteBuffer);
  std::unique_ptr<TF_Buffer, decltype(&TF_DeleteBuffer)> meta(TF_NewBuffer(), &TF_DeleteBuffer);
  GeneratedInputs g;
  GenerateInputs(*public_sig_, g);
  Run(g.tensors.data(), g.tensors.size(), nullptr, 0, 0, opts.get(), meta.get());
  return OpCountsJson(meta.get());
}

}  // namespace rs
