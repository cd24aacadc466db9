// The InputStage of a recstrata bundle (core/input_stage.h): raw request
// features -> the dense SavedModel's inputs.
//
// Per request and sparse feature: validate the ids (int64 or string, [B] or
// padded [B, k] plus int32 lengths [B]), turn string ids into int64 ids
// (FNV-1a 64), derive row keys with the table's key scheme (bundle/keys.h),
// look the rows up through the tiered store in one batch per sub-table,
// combine sub-vectors (add / multiply / concat), and pool the values of each
// example with the feature's combiner (sum / mean / sqrtn; no values: zeros)
// straight into the dense input tensor. Dense features are copied through.
//
// One store per model: the stage owns the rs::store::Store of the bundle and
// every session of the SessionGroup shares it (the stage is shared).
// Thread-safety: Transform, StatsJson, DescribeJson and public_signature may
// run on any number of threads at once (scratch memory is thread-local,
// counters are atomic, store lookups are lock-free for readers).
#ifndef RECSTRATA_BUNDLE_BUNDLE_STAGE_H_
#define RECSTRATA_BUNDLE_BUNDLE_STAGE_H_

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "bundle/delta.h"
#include "bundle/keys.h"
#include "core/input_stage.h"
#include "recstrata/bundle/manifest.pb.h"
#include "store/store.h"

namespace rs {
namespace bundle {

class BundleInputStage final : public InputStage {
 public:
  // Builds the stage of a loaded manifest: validates tables, key schemes and
  // features, opens the store and checks that it holds every sub-table.
  BundleInputStage(const std::string& bundle_dir, recstrata::bundle::Manifest manifest,
                   const recstrata::bundle::ServingOptions& options);
  ~BundleInputStage() override;

  void Bind(const Signature& dense_signature) override;
  const Signature& public_signature() const override { return public_; }
  void Transform(const rs_tensor* inputs, size_t n,
                 std::vector<TF_Tensor*>& dense_inputs) override;
  std::string StatsJson() const override;
  std::string DescribeJson() const override;

  // Exposed for the loader: the dense SavedModel directory (absolute).
  const std::string& dense_dir() const { return dense_dir_; }

  // The bundle's deltas (bundle/delta.h): NULL for a bundle without tables.
  // Created at open, after an interrupted delta was rolled forward; the host
  // drives Poll from its discovery passes.
  DeltaApplier* deltas() const { return deltas_.get(); }

  // Where PoolFeature writes one slice: columns [from, from + width) of example
  // b's pooled vector go to out[b * stride + 0 .. width).
  struct Segment {
    float* out;
    int64_t stride;
    int32_t from;
    int32_t width;
  };

 private:
  struct SubTableRt {
    const rs::store::Table* table = nullptr;
    std::string store_table;
    int64_t rows = 0;
    int32_t dim = 0;
    int32_t store_dim = 0;  // the store table's row width (>= dim)
  };
  struct TableRt {
    std::string name;
    int32_t dim = 0;
    KeyScheme scheme;
    std::vector<SubTableRt> subs;
    float default_value = 0.f;
  };
  enum class Pool { kSum, kMean, kSqrtn };
  struct FeatureRt {
    std::string name;
    bool is_string = false;
    bool multivalued = false;
    int32_t max_values = 0;
    Pool pool = Pool::kSum;
    const TableRt* table = nullptr;
    int ids_input = -1;       // index in public_.inputs
    int lengths_input = -1;   // multivalued only
    // Where the pooled [B, dim] vector goes: column slices of it, each into a
    // dense input (one slice covering every column in format version 1).
    struct Slice {
      int32_t first_column = 0;
      int32_t width = 0;
      std::string dense_input;
      int32_t dense_offset = 0;
      size_t source = 0;  // index in dense_sources_ (set by Bind)
    };
    std::vector<Slice> slices;
    mutable std::atomic<uint64_t> values{0};  // ids looked up
  };
  struct DenseFeatureRt {
    std::string name;
    int32_t width = 0;  // 0: [B]
    int input = -1;
    std::string dense_input;
    int32_t dense_offset = 0;
  };
  // One feature's share of a dense stage input: columns [offset, offset+width).
  struct DensePart {
    bool sparse = false;
    size_t index = 0;  // into features_ or dense_features_
    int32_t offset = 0;
    int32_t width = 0;
    size_t slice = 0;  // sparse: which of the feature's slices
  };
  // What feeds one dense stage input ([B, width], or [B] when ndim == 1).
  struct DenseSource {
    std::vector<DensePart> parts;
    int32_t width = 0;
    int32_t ndim = 2;
  };

  // Pools feature f for every example into its segments (zeros for no values).
  void PoolFeature(const FeatureRt& f, const rs_tensor* inputs, int64_t batch,
                   const Segment* segs, size_t nseg);

  std::string bundle_dir_;
  std::string dense_dir_;
  recstrata::bundle::Manifest manifest_;
  std::unique_ptr<rs::store::Store> store_;
  std::unique_ptr<DeltaApplier> deltas_;  // after store_: destroyed first
  std::vector<std::unique_ptr<TableRt>> tables_;
  std::vector<std::unique_ptr<FeatureRt>> features_;
  std::vector<DenseFeatureRt> dense_features_;
  Signature public_;
  std::vector<DenseSource> dense_sources_;  // per dense signature input
  bool bound_ = false;
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> missing_rows_{0};
};

}  // namespace bundle
}  // namespace rs

#endif  // RECSTRATA_BUNDLE_BUNDLE_STAGE_H_
