// Composition root: the one place that wires the layers together. The core
// knows nothing above itself; here it is handed the bundle loader (src/bundle)
// and the decoder of warmup files (src/wire).
#ifndef RECSTRATA_API_COMPOSITION_H_
#define RECSTRATA_API_COMPOSITION_H_

#include "core/model_deps.h"

namespace rs {

// The dependencies every model of this library is opened with. Thread-safe.
const ModelDeps& LibraryModelDeps();

}  // namespace rs

#endif  // RECSTRATA_API_COMPOSITION_H_
