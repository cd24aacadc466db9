// Shared by the two halves of the delta applier (delta.cc: local pass,
// validation, marker; delta_shared.cc: the pass over a shared store). Not
// part of the bundle layer's interface.
#ifndef RECSTRATA_BUNDLE_DELTA_INTERNAL_H_
#define RECSTRATA_BUNDLE_DELTA_INTERNAL_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "bundle/delta.h"

namespace rs {
namespace bundle {

// Complete deltas on disk: seq -> directory (a delta is complete once its
// delta.json exists; hidden temporaries and other names are ignored).
std::map<uint64_t, std::string> ListDeltas(const std::string& bundle_dir);
int64_t NowUnixMs();

// A validated delta, rows in memory.
struct DeltaApplier::Loaded {
  uint64_t seq = 0;
  int64_t created_unix_ms = 0, training_step = 0;
  struct Part {
    rs::store::Table* table = nullptr;
    std::vector<int64_t> keys;
    std::vector<float> rows;
  };
  std::vector<Part> parts;
  uint64_t rows = 0;
  std::string dense_dir;  // absolute; "" when the delta keeps the dense stage
};

}  // namespace bundle
}  // namespace rs

#endif  // RECSTRATA_BUNDLE_DELTA_INTERNAL_H_
