// BundleInputStage, hot path: raw request features -> the dense stage's input
// tensors (validate, derive row keys, batched store lookups of the distinct
// keys, combine sub-vectors, pool per example). Allocation-free in the steady
// state: scratch memory is per thread.
#include "bundle/bundle_stage.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "base/status.h"

namespace rs {
namespace bundle {
namespace {

// Per-thread scratch of Transform (reused across calls: no allocation in the
// steady state).
struct Scratch {
  std::vector<uint64_t> ids;       // value ids (uint64)
  std::vector<int32_t> offsets;    // B + 1 CSR offsets of values per example
  std::vector<int64_t> keys;       // [S][n] row keys
  std::vector<float> rows;         // [S] sub-row blocks, concatenated
  std::vector<uint8_t> found;      // [S][n] per unique key
  std::vector<uint8_t> hot_found;  // freq_aware: per unique id, whether the hot table holds it
  std::vector<float> emb;          // one combined embedding (dim)
  std::vector<int64_t> uniq;       // [S][n] unique keys of each sub-table (first nu_j used)
  std::vector<int32_t> index;      // [S][n] value -> its unique key's position
  std::vector<int64_t> slot_key;   // open-addressing table for de-duplication (-1 = empty)
  std::vector<int32_t> slot_pos;
  std::vector<float*> outs;        // Transform: each dense input's data
  std::vector<int64_t> strides;    // ... and its row stride (floats)
  std::vector<BundleInputStage::Segment> segs;  // one feature's output slices
};

// De-duplicates n row keys (all >= 0): uniq receives the distinct keys in first-seen order,
// index[v] the position of keys[v] in uniq. Returns the number of distinct keys. Skewed
// (Zipf) traffic repeats hot ids within a batch, and small compressed sub-tables repeat
// rows constantly, so each distinct row is looked up once.
size_t Dedupe(const int64_t* keys, size_t n, int64_t* uniq, int32_t* index, Scratch& s) {
  size_t cap = 16;
  while (cap < 2 * n) cap <<= 1;
  s.slot_key.assign(cap, -1);
  s.slot_pos.resize(cap);
  const size_t mask = cap - 1;
  size_t nu = 0;
  for (size_t v = 0; v < n; ++v) {
    const int64_t k = keys[v];
    size_t h = (static_cast<uint64_t>(k) * 0x9e3779b97f4a7c15ULL) >> 20 & mask;
    while (s.slot_key[h] != -1 && s.slot_key[h] != k) h = (h + 1) & mask;
    if (s.slot_key[h] == -1) {
      s.slot_key[h] = k;
      s.slot_pos[h] = static_cast<int32_t>(nu);
      uniq[nu++] = k;
    }
    index[v] = s.slot_pos[h];
  }
  return nu;
}
thread_local Scratch tls_scratch;


}  // namespace

void BundleInputStage::Transform(const rs_tensor* inputs, size_t n,
                                 std::vector<TF_Tensor*>& dense_inputs) {
  if (!bound_) Fail(RS_ERR_FAILED_PRECONDITION, "bundle stage used before Bind");
  if (n != public_.inputs.size())
    Fail(RS_ERR_INVALID_ARGUMENT, "bundle: expected " + std::to_string(public_.inputs.size()) +
                                      " inputs, got " + std::to_string(n));
  // One batch size for every input; shapes per declared layout.
  int64_t batch = -1;
  const char* batch_from = nullptr;
  for (size_t i = 0; i < n; ++i) {
    const rs_tensor& t = inputs[i];
    const TensorSpec& spec = public_.inputs[i];
    if (t.ndim != spec.ndim || t.dtype != spec.dtype)
      Fail(RS_ERR_INVALID_ARGUMENT, "input '" + spec.name + "' must be " + DtypeName(spec.dtype) +
                                        " of rank " + std::to_string(spec.ndim));
    if (batch < 0) {
      batch = t.shape[0];
      batch_from = spec.name.c_str();
    } else if (t.shape[0] != batch) {
      Fail(RS_ERR_INVALID_ARGUMENT, "input '" + spec.name + "' has batch size " +
                                        std::to_string(t.shape[0]) + " but '" + batch_from +
                                        "' has " + std::to_string(batch));
    }
  }
  if (batch > INT32_MAX / 2) Fail(RS_ERR_INVALID_ARGUMENT, "batch too large");
  requests_.fetch_add(1, std::memory_order_relaxed);

  // Every dense input tensor first (the caller owns and frees what is pushed,
  // also when a later step fails), then the dense features, then the pooled
  // sparse features written straight into their slices of those tensors.
  dense_inputs.reserve(dense_sources_.size());
  Scratch& scratch = tls_scratch;
  std::vector<float*>& outs = scratch.outs;
  std::vector<int64_t>& strides = scratch.strides;
  outs.resize(dense_sources_.size());
  strides.resize(dense_sources_.size());
  for (size_t k = 0; k < dense_sources_.size(); ++k) {
    const DenseSource& ds = dense_sources_[k];
    int64_t dims[2] = {batch, ds.width};
    const int64_t stride = ds.ndim == 2 ? ds.width : 1;
    const size_t count = static_cast<size_t>(batch) * stride;
    TF_Tensor* t = TF_AllocateTensor(TF_FLOAT, dims, ds.ndim, count * sizeof(float));
    if (!t) Fail(RS_ERR_RESOURCE_EXHAUSTED, "bundle: cannot allocate a dense input tensor");
    dense_inputs.push_back(t);
    outs[k] = static_cast<float*>(TF_TensorData(t));
    strides[k] = stride;
  }
  for (size_t k = 0; k < dense_sources_.size(); ++k) {
    const DenseSource& ds = dense_sources_[k];
    const int64_t stride = strides[k];
    const size_t count = static_cast<size_t>(batch) * stride;
    float* out = outs[k];
    for (const DensePart& p : ds.parts) {
      if (!p.sparse) {
        const rs_tensor& src = inputs[dense_features_[p.index].input];
        const int32_t w = ds.ndim == 2 ? p.width : 1;
        const char* from = static_cast<const char*>(src.data);
        if (w == stride) {
          if (count) std::memcpy(out, from, count * sizeof(float));
        } else {
          for (int64_t b = 0; b < batch; ++b)
            std::memcpy(out + b * stride + p.offset, from + b * w * sizeof(float),
                        w * sizeof(float));
        }
      }
    }
  }
  std::vector<Segment>& segs = scratch.segs;
  for (const auto& fp : features_) {
    const FeatureRt& f = *fp;
    segs.clear();
    for (const FeatureRt::Slice& sl : f.slices)
      segs.push_back({outs[sl.source] + sl.dense_offset, strides[sl.source], sl.first_column,
                      sl.width});
    PoolFeature(f, inputs, batch, segs.data(), segs.size());
  }
}

void BundleInputStage::PoolFeature(const FeatureRt& f, const rs_tensor* inputs, int64_t batch,
                                   const Segment* segs, size_t nseg) {
  const TableRt& table = *f.table;
  const int32_t dim = table.dim;
  const rs_tensor& ids = inputs[f.ids_input];
  const int64_t k = f.multivalued ? ids.shape[1] : 1;
  if (f.multivalued && f.max_values > 0 && k > f.max_values)
    Fail(RS_ERR_INVALID_ARGUMENT, "input '" + f.name + "' has " + std::to_string(k) +
                                      " values per example, the feature allows at most " +
                                      std::to_string(f.max_values));
  if (k > 0 && batch > INT32_MAX / k)
    Fail(RS_ERR_INVALID_ARGUMENT, "input '" + f.name + "' holds more than 2^31 ids");
  Scratch& s = tls_scratch;
  s.offsets.resize(static_cast<size_t>(batch) + 1);
  s.ids.clear();
  const int32_t* lengths = nullptr;
  if (f.multivalued) lengths = static_cast<const int32_t*>(inputs[f.lengths_input].data);
  s.offsets[0] = 0;
  if (!f.multivalued && !f.is_string) {
    // Single-valued int64 ids: one bulk copy (the common case; no per-id push_back).
    s.ids.resize(static_cast<size_t>(batch));
    if (batch) std::memcpy(s.ids.data(), ids.data, static_cast<size_t>(batch) * 8);
    for (int64_t b = 0; b < batch; ++b) s.offsets[b + 1] = static_cast<int32_t>(b + 1);
  }
  for (int64_t b = 0; b < batch && (f.multivalued || f.is_string); ++b) {
    int64_t nb = 1;
    if (lengths) {
      int32_t len;
      std::memcpy(&len, lengths + b, sizeof(len));
      if (len < 0 || len > k)
        Fail(RS_ERR_INVALID_ARGUMENT, "input '" + public_.inputs[f.lengths_input].name + "'[" +
                                          std::to_string(b) + "] = " + std::to_string(len) +
                                          " is outside [0, " + std::to_string(k) + "]");
      nb = len;
    }
    for (int64_t i = 0; i < nb; ++i) {
      const int64_t pos = b * k + i;
      uint64_t u;
      if (f.is_string) {
        const rs_bytes& sb = static_cast<const rs_bytes*>(ids.data)[pos];
        u = Fnv1a64(sb.data, sb.size);
      } else {
        std::memcpy(&u, static_cast<const char*>(ids.data) + pos * 8, 8);
      }
      s.ids.push_back(u);
    }
    s.offsets[b + 1] = static_cast<int32_t>(s.ids.size());
  }
  const size_t nv = s.ids.size();
  f.values.fetch_add(nv, std::memory_order_relaxed);
  for (size_t g = 0; g < nseg; ++g) {
    const Segment& sg = segs[g];
    if (sg.stride == sg.width) {
      std::memset(sg.out, 0, sizeof(float) * static_cast<size_t>(batch) * sg.width);
    } else {
      for (int64_t b = 0; b < batch; ++b)
        std::memset(sg.out + b * sg.stride, 0, sizeof(float) * sg.width);
    }
  }
  if (nv == 0) return;

  // Row keys, [S][nv].
  const size_t S = table.subs.size();
  s.keys.resize(S * nv);
  int64_t tmp[kMaxSubtables];
  for (size_t v = 0; v < nv; ++v) {
    table.scheme.RowKeys(s.ids[v], tmp);
    for (size_t j = 0; j < S; ++j) s.keys[j * nv + v] = tmp[j];
  }
  // Batched lookups of the distinct keys, one per sub-table.
  size_t total = 0;
  for (const auto& st : table.subs) total += nv * st.store_dim;
  s.rows.resize(total);
  s.found.resize(nv);
  s.uniq.resize(S * nv);
  s.index.resize(S * nv);
  float* sub_rows[kMaxSubtables];
  const int32_t* sub_index[kMaxSubtables];
  const bool hot = table.scheme.has_hot_subtable();
  size_t off = 0;
  uint64_t missing = 0;
  for (size_t j = 0; j < S; ++j) {
    const SubTableRt& st = table.subs[j];
    sub_rows[j] = s.rows.data() + off;
    int64_t* uniq = s.uniq.data() + j * nv;
    int32_t* index = s.index.data() + j * nv;
    sub_index[j] = index;
    const size_t nu = Dedupe(s.keys.data() + j * nv, nv, uniq, index, s);
    st.table->Lookup(uniq, nu, sub_rows[j], s.found.data());
    if (st.store_dim != st.dim) {
      // store rows are [served columns | optimizer slots]: keep the first dim
      // columns, packed (row u moves down to u * dim; never overlaps ahead).
      for (size_t u = 1; u < nu; ++u)
        std::memmove(sub_rows[j] + u * st.dim, sub_rows[j] + u * st.store_dim,
                     sizeof(float) * static_cast<size_t>(st.dim));
    }
    if (j == 0 && hot) {
      // The hot table holds rows for the hot ids only: not finding one is the
      // normal case (that id is embedded by the tail), not a missing row.
      s.hot_found.assign(s.found.begin(), s.found.begin() + static_cast<std::ptrdiff_t>(nu));
      off += nv * st.store_dim;
      continue;
    }
    for (size_t u = 0; u < nu; ++u) {
      if (!s.found[u]) {
        ++missing;
        std::fill_n(sub_rows[j] + u * st.dim, st.dim, table.default_value);
      }
    }
    off += nv * st.store_dim;
  }
  if (missing) missing_rows_.fetch_add(missing, std::memory_order_relaxed);

  // Combine the sub-vectors of each value, pool the values of each example.
  s.emb.resize(dim);
  float* e = s.emb.data();
  const SubCombiner comb = table.scheme.combiner();
  // Adds one value's combined vector r[0, dim) into example b's segments.
  auto accumulate = [segs, nseg](const float* r, int64_t b) {
    for (size_t g = 0; g < nseg; ++g) {
      const Segment& sg = segs[g];
      float* o = sg.out + b * sg.stride;
      const float* src = r + sg.from;
      for (int32_t d = 0; d < sg.width; ++d) o[d] += src[d];
    }
  };
  auto divide = [segs, nseg](float div, int64_t b) {
    for (size_t g = 0; g < nseg; ++g) {
      float* o = segs[g].out + b * segs[g].stride;
      for (int32_t d = 0; d < segs[g].width; ++d) o[d] /= div;
    }
  };
  // Combines value v's sub-vectors of sub-tables [first, S) into e.
  auto combine = [&](int32_t v, size_t first) {
    if (comb == SubCombiner::kConcat) {
      int32_t at = 0;
      for (size_t j = first; j < S; ++j) {
        const int32_t sd = table.subs[j].dim;
        std::memcpy(e + at, sub_rows[j] + static_cast<size_t>(sub_index[j][v]) * sd,
                    sd * sizeof(float));
        at += sd;
      }
      return;
    }
    std::memcpy(e, sub_rows[first] + static_cast<size_t>(sub_index[first][v]) * dim,
                dim * sizeof(float));
    for (size_t j = first + 1; j < S; ++j) {
      const float* r = sub_rows[j] + static_cast<size_t>(sub_index[j][v]) * dim;
      if (comb == SubCombiner::kAdd) {
        for (int32_t d = 0; d < dim; ++d) e[d] += r[d];
      } else {
        for (int32_t d = 0; d < dim; ++d) e[d] *= r[d];
      }
    }
  };
  for (int64_t b = 0; b < batch; ++b) {
    const int32_t lo = s.offsets[b], hi = s.offsets[b + 1];
    const int32_t cnt = hi - lo;
    if (cnt == 0) continue;
    // Same operation order as the training layer: sum the values, then divide
    // by n (mean) or sqrt(n) (sqrtn).
    float div = 1.f;
    if (f.pool == Pool::kMean) div = static_cast<float>(cnt);
    else if (f.pool == Pool::kSqrtn) div = std::sqrt(static_cast<float>(cnt));
    if (S == 1) {
      // One sub-table (plain scheme): add its rows straight into the output (same sums, in
      // the same order, as through `e`; saves a copy per value).
      const float* base = sub_rows[0];
      const int32_t* idx = sub_index[0];
      for (int32_t v = lo; v < hi; ++v) accumulate(base + static_cast<size_t>(idx[v]) * dim, b);
      if (f.pool != Pool::kSum) divide(div, b);
      continue;
    }
    for (int32_t v = lo; v < hi; ++v) {
      if (hot && s.hot_found[static_cast<size_t>(sub_index[0][v])]) {
        accumulate(sub_rows[0] + static_cast<size_t>(sub_index[0][v]) * dim, b);
        continue;
      }
      combine(v, hot ? 1 : 0);
      accumulate(e, b);
    }
    if (f.pool != Pool::kSum) divide(div, b);
  }
}

}  // namespace bundle
}  // namespace rs
