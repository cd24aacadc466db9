#include "api/composition.h"

#include "bundle/loader.h"
#include "wire/codec.h"

namespace rs {

const ModelDeps& LibraryModelDeps() {
  static const ModelDeps deps = [] {
    ModelDeps d;
    d.bundle_loader = &bundle::LoadBundle;
    d.warmup_decoder = [](const std::string& bytes, const Signature& sig, const WarmupRun& run) {
      DecodedRequest req;
      req.Parse(bytes.data(), bytes.size(), sig);
      run(req.inputs(), req.num_inputs(), req.outputs().data(), req.outputs().size());
    };
    return d;
  }();
  return deps;
}

}  // namespace rs
