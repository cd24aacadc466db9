#include "bundle/bundle_stage.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "base/status.h"
#include "bundle/manifest.h"

namespace rs {
namespace bundle {
namespace {

[[noreturn]] void BadManifest(const std::string& what) {
  Fail(RS_ERR_INVALID_ARGUMENT, "bundle manifest: " + what);
}

std::string StoreOptionsJson(const recstrata::bundle::StoreSpec& spec,
                             const recstrata::bundle::ServingOptions& opt) {
  std::string tiers = spec.tiers().empty() ? "dram" : spec.tiers();
  if (!opt.ev_storage_type().empty()) {
    if (opt.ev_storage_type() == "DRAM") tiers = "dram";
    else if (opt.ev_storage_type() == "DRAM+SSDHASH" || opt.ev_storage_type() == "DRAM_SSDHASH")
      tiers = "dram+ssd";
    else
      Fail(RS_ERR_INVALID_ARGUMENT, "ev_storage_type must be DRAM or DRAM+SSDHASH, got '" +
                                        opt.ev_storage_type() + "'");
  }
  if (!opt.bundle_store_tiers().empty()) tiers = opt.bundle_store_tiers();
  if (tiers != "dram" && tiers != "dram+ssd")
    Fail(RS_ERR_INVALID_ARGUMENT, "bundle store tiers must be 'dram' or 'dram+ssd', got '" +
                                      tiers + "'");
  uint64_t cap = spec.dram_capacity_bytes();
  if (opt.ev_storage_size()) cap = opt.ev_storage_size();
  if (opt.bundle_dram_capacity_bytes()) cap = opt.bundle_dram_capacity_bytes();
  std::string policy = spec.cache_policy();
  if (!opt.bundle_cache_policy().empty()) policy = opt.bundle_cache_policy();

  // A bundle's store must be as the export closed it: the clean-close record
  // is required and every open checks files, sizes and row counts against it.
  std::string json = "{\"create_if_missing\":false,\"recovery\":\"require_clean\",\"tiers\":";
  AppendJsonString(json, tiers);
  if (cap) json += ",\"dram_capacity_bytes\":" + std::to_string(cap);
  if (!policy.empty()) {
    json += ",\"cache_policy\":";
    AppendJsonString(json, policy);
  }
  // Read path of the SSD tier. Bundles default to "pread" with "dram+ssd": the data files stay
  // out of the process's address space, so its resident memory is the DRAM tier's budget plus
  // the index, not every table page it ever touched (they stay in the kernel's page cache,
  // where the OS reclaims them). "mmap" copies rows straight out of the mapping (a few percent
  // faster on SSD-tier reads). The store validates the value.
  std::string read_path = opt.bundle_read_path();
  if (read_path.empty() && tiers == "dram+ssd") read_path = "pread";
  if (!read_path.empty()) {
    json += ",\"read_path\":";
    AppendJsonString(json, read_path);
  }
  if (!opt.verify().empty()) {  // the store validates the value
    json += ",\"verify\":";
    AppendJsonString(json, opt.verify());
  }
  json += "}";
  return json;
}

TensorSpec Spec(const std::string& name, int dtype, std::vector<int64_t> shape) {
  TensorSpec s;
  s.name = name;
  s.dtype = dtype;
  s.ndim = static_cast<int32_t>(shape.size());
  s.shape = std::move(shape);
  return s;
}

// Per-thread scratch of Transform (reused across calls: no allocation in the
// steady state).
struct Scratch {
  std::vector<uint64_t> ids;       // value ids (uint64)
  std::vector<int32_t> offsets;    // B + 1 CSR offsets of values per example
  std::vector<int64_t> keys;       // [S][n] row keys
  std::vector<float> rows;         // [S] sub-row blocks, concatenated
  std::vector<uint8_t> found;      // [S][n] per unique key
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

BundleInputStage::BundleInputStage(const std::string& bundle_dir,
                                   recstrata::bundle::Manifest manifest,
                                   const recstrata::bundle::ServingOptions& options)
    : bundle_dir_(bundle_dir), manifest_(std::move(manifest)) {
  const auto& m = manifest_;
  {
    std::string dense = JoinInside(bundle_dir_, m.dense().dir(), "dense stage");
    char* real = ::realpath(dense.c_str(), nullptr);
    if (!real)
      Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": dense stage directory '" +
                                  m.dense().dir() + "' is missing");
    dense_dir_ = real;
    std::free(real);
  }

  // Tables and key schemes.
  std::map<std::string, TableRt*> by_name;
  for (const auto& t : m.tables()) {
    const std::string ctx = "bundle manifest: table '" + t.name() + "'";
    if (t.name().empty()) BadManifest("a table has no name");
    if (by_name.count(t.name())) BadManifest("table '" + t.name() + "' is declared twice");
    if (t.dim() <= 0 || t.dim() > 65536) BadManifest("table '" + t.name() + "' has dim " +
                                                     std::to_string(t.dim()));
    auto rt = std::make_unique<TableRt>();
    rt->name = t.name();
    rt->dim = t.dim();
    rt->scheme = KeyScheme::FromProto(t.key_scheme(), ctx);
    rt->default_value = t.default_value();
    const std::vector<int32_t> sub_dims = rt->scheme.SubtableDims(t.dim());
    if (static_cast<size_t>(t.subtables_size()) != rt->scheme.num_subtables())
      BadManifest("table '" + t.name() + "' lists " + std::to_string(t.subtables_size()) +
                  " sub-tables, its key scheme has " +
                  std::to_string(rt->scheme.num_subtables()));
    for (int j = 0; j < t.subtables_size(); ++j) {
      const auto& st = t.subtables(j);
      const int32_t sub_dim = sub_dims[j];
      if (st.rows() != rt->scheme.subtable_rows()[j] || st.dim() != sub_dim)
        BadManifest("table '" + t.name() + "' sub-table " + std::to_string(j) + " is [" +
                    std::to_string(st.rows()) + ", " + std::to_string(st.dim()) +
                    "], its key scheme needs [" +
                    std::to_string(rt->scheme.subtable_rows()[j]) + ", " +
                    std::to_string(sub_dim) + "]");
      if (st.store_table().empty()) BadManifest("table '" + t.name() + "' sub-table has no store table");
      SubTableRt s;
      s.store_table = st.store_table();
      s.rows = st.rows();
      s.dim = st.dim();
      rt->subs.push_back(s);
    }
    by_name[t.name()] = rt.get();
    tables_.push_back(std::move(rt));
  }

  // Public signature: sparse features (ids, lengths), then dense features.
  std::set<std::string> names;
  auto claim = [&](const std::string& n) {
    if (n.empty()) BadManifest("an input has no name");
    if (!names.insert(n).second) BadManifest("input name '" + n + "' is used twice");
  };
  public_.name = m.signature_name().empty() ? "serving_default" : m.signature_name();
  for (const auto& f : m.sparse_features()) {
    auto rt = std::make_unique<FeatureRt>();
    rt->name = f.name();
    claim(f.name());
    if (f.id_type() == "int64") rt->is_string = false;
    else if (f.id_type() == "string") rt->is_string = true;
    else BadManifest("feature '" + f.name() + "' has id_type '" + f.id_type() +
                     "' (int64 or string)");
    auto it = by_name.find(f.table());
    if (it == by_name.end())
      BadManifest("feature '" + f.name() + "' uses unknown table '" + f.table() + "'");
    rt->table = it->second;
    if (f.combiner() == "sum" || f.combiner().empty()) rt->pool = Pool::kSum;
    else if (f.combiner() == "mean") rt->pool = Pool::kMean;
    else if (f.combiner() == "sqrtn") rt->pool = Pool::kSqrtn;
    else BadManifest("feature '" + f.name() + "' has combiner '" + f.combiner() +
                     "' (sum, mean or sqrtn)");
    if (f.slices_size() == 0) {
      if (f.dense_input().empty()) BadManifest("feature '" + f.name() + "' feeds no dense input");
      FeatureRt::Slice sl;
      sl.first_column = 0;
      sl.width = rt->table->dim;
      sl.dense_input = f.dense_input();
      sl.dense_offset = f.dense_offset();
      rt->slices.push_back(std::move(sl));
    } else {
      if (m.format_version() < 2)
        BadManifest("feature '" + f.name() + "' has slices, which need format version 2");
      // The slices must cover columns [0, dim) exactly once.
      std::vector<char> used(static_cast<size_t>(rt->table->dim), 0);
      for (const auto& ps : f.slices()) {
        if (ps.dense_input().empty())
          BadManifest("feature '" + f.name() + "' has a slice that feeds no dense input");
        if (ps.width() <= 0 || ps.first_column() < 0 ||
            ps.first_column() > rt->table->dim - ps.width())
          BadManifest("feature '" + f.name() + "' has a slice [" +
                      std::to_string(ps.first_column()) + ", +" + std::to_string(ps.width()) +
                      ") outside its table's " + std::to_string(rt->table->dim) + " columns");
        for (int32_t c = ps.first_column(); c < ps.first_column() + ps.width(); ++c) {
          if (used[c]) BadManifest("feature '" + f.name() + "' has overlapping slices");
          used[c] = 1;
        }
        FeatureRt::Slice sl;
        sl.first_column = ps.first_column();
        sl.width = ps.width();
        sl.dense_input = ps.dense_input();
        sl.dense_offset = ps.dense_offset();
        rt->slices.push_back(std::move(sl));
      }
      if (std::find(used.begin(), used.end(), 0) != used.end())
        BadManifest("feature '" + f.name() + "': its slices do not cover all " +
                    std::to_string(rt->table->dim) + " columns of its table");
    }
    for (const auto& sl : rt->slices)
      if (sl.dense_offset < 0) BadManifest("feature '" + f.name() + "' has dense_offset < 0");
    rt->multivalued = f.multivalued();
    rt->max_values = f.max_values();
    if (rt->max_values < 0) BadManifest("feature '" + f.name() + "' has max_values < 0");
    const int dt = rt->is_string ? RS_DT_STRING : RS_DT_INT64;
    rt->ids_input = static_cast<int>(public_.inputs.size());
    if (rt->multivalued) {
      public_.inputs.push_back(Spec(f.name(), dt, {-1, -1}));
      const std::string len = f.lengths_input().empty() ? f.name() + "_lengths" : f.lengths_input();
      claim(len);
      rt->lengths_input = static_cast<int>(public_.inputs.size());
      public_.inputs.push_back(Spec(len, RS_DT_INT32, {-1}));
    } else {
      public_.inputs.push_back(Spec(f.name(), dt, {-1}));
    }
    features_.push_back(std::move(rt));
  }
  for (const auto& d : m.dense_features()) {
    claim(d.name());
    if (d.dtype() != "float32" && !d.dtype().empty())
      BadManifest("dense feature '" + d.name() + "' has dtype '" + d.dtype() + "' (float32)");
    if (d.width() < 0) BadManifest("dense feature '" + d.name() + "' has width < 0");
    if (d.dense_input().empty()) BadManifest("dense feature '" + d.name() + "' feeds no dense input");
    DenseFeatureRt rt;
    rt.name = d.name();
    rt.width = d.width();
    rt.input = static_cast<int>(public_.inputs.size());
    rt.dense_input = d.dense_input();
    rt.dense_offset = d.dense_offset();
    if (rt.dense_offset < 0 || (rt.width == 0 && rt.dense_offset != 0))
      BadManifest("dense feature '" + d.name() + "' has a bad dense_offset");
    public_.inputs.push_back(d.width() ? Spec(d.name(), RS_DT_FLOAT, {-1, d.width()})
                                       : Spec(d.name(), RS_DT_FLOAT, {-1}));
    dense_features_.push_back(std::move(rt));
  }
  if (public_.inputs.empty()) BadManifest("the bundle declares no inputs");
  for (const auto& o : m.outputs()) {
    TensorSpec s;
    s.name = o.name();
    s.dtype = RS_DT_FLOAT;
    s.ndim = o.shape_size();
    s.shape.assign(o.shape().begin(), o.shape().end());
    public_.outputs.push_back(std::move(s));
  }
  public_.Finalize();

  // The store: one per model, shared by every session.
  if (!tables_.empty()) {
    const std::string store_dir = options.bundle_store_dir().empty()
                                      ? JoinInside(bundle_dir_, m.store().dir(), "store")
                                      : options.bundle_store_dir();
    try {
      store_ = rs::store::Store::Open(store_dir, StoreOptionsJson(m.store(), options));
    } catch (const Error& e) {
      if (e.code() != RS_ERR_NOT_FOUND) throw;
      Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": its store is missing: " + e.what());
    }
    for (auto& t : tables_) {
      for (auto& s : t->subs) {
        rs::store::Table* st = store_->FindTable(s.store_table);
        if (!st)
          Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": the store has no table '" +
                                      s.store_table + "' (table '" + t->name + "')");
        if (st->dim() != s.dim)
          Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": store table '" + s.store_table +
                                      "' has dim " + std::to_string(st->dim()) +
                                      ", the manifest says " + std::to_string(s.dim));
        const uint64_t rows = st->Stats().rows;
        if (rows != static_cast<uint64_t>(s.rows))
          Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": store table '" + s.store_table +
                                      "' has " + std::to_string(rows) + " rows, the manifest says " +
                                      std::to_string(s.rows));
        s.table = st;
      }
    }
  }
}

BundleInputStage::~BundleInputStage() = default;

void BundleInputStage::Bind(const Signature& dense) {
  // dense input name -> the features feeding it
  std::map<std::string, std::vector<DensePart>> parts;
  std::map<std::string, std::string> first_feeder;
  for (size_t i = 0; i < features_.size(); ++i) {
    const FeatureRt& f = *features_[i];
    for (size_t k = 0; k < f.slices.size(); ++k) {
      const FeatureRt::Slice& sl = f.slices[k];
      parts[sl.dense_input].push_back({true, i, sl.dense_offset, sl.width, k});
      first_feeder.emplace(sl.dense_input, "sparse feature '" + f.name + "'");
    }
  }
  for (size_t i = 0; i < dense_features_.size(); ++i) {
    const DenseFeatureRt& d = dense_features_[i];
    parts[d.dense_input].push_back({false, i, d.dense_offset, d.width});
    first_feeder.emplace(d.dense_input, "dense feature '" + d.name + "'");
  }
  // A feature feeding an input the dense stage lacks is the clearer error: check it first.
  for (const auto& kv : parts) {
    bool known = false;
    for (const auto& in : dense.inputs) known = known || in.name == kv.first;
    if (!known)
      Fail(RS_ERR_INVALID_ARGUMENT, "bundle " + bundle_dir_ + ": the dense stage has no input '" +
                                        kv.first + "' (fed by " + first_feeder[kv.first] + ")");
  }
  dense_sources_.clear();
  for (const auto& in : dense.inputs) {
    auto it = parts.find(in.name);
    if (it == parts.end())
      Fail(RS_ERR_INVALID_ARGUMENT, "bundle " + bundle_dir_ + ": dense stage input '" + in.name +
                                        "' is fed by no feature of the manifest");
    DenseSource ds;
    ds.parts = it->second;
    std::sort(ds.parts.begin(), ds.parts.end(),
              [](const DensePart& a, const DensePart& b) { return a.offset < b.offset; });
    const std::string who = first_feeder[in.name];
    if (ds.parts.size() == 1 && ds.parts[0].width == 0) {
      ds.ndim = 1;  // a [B] dense feature
      ds.width = 0;
    } else {
      int32_t next = 0;
      for (const DensePart& p : ds.parts) {
        if (p.width == 0 || p.offset != next)
          Fail(RS_ERR_INVALID_ARGUMENT,
               "bundle manifest: the features feeding dense input '" + in.name +
                   "' do not tile its columns (gap or overlap at column " +
                   std::to_string(std::min(p.offset, next)) + ")");
        next = p.offset + p.width;
      }
      ds.width = next;
      ds.ndim = 2;
    }
    if (in.dtype != RS_DT_FLOAT)
      Fail(RS_ERR_INVALID_ARGUMENT, "bundle: dense stage input '" + in.name + "' is " +
                                        DtypeName(in.dtype) + ", " + who + " gives float");
    bool shape_ok = in.ndim == -1 || in.ndim == ds.ndim;
    if (shape_ok && in.ndim == 2 && in.shape[1] != -1 && in.shape[1] != ds.width) shape_ok = false;
    if (!shape_ok)
      Fail(RS_ERR_INVALID_ARGUMENT, "bundle: dense stage input '" + in.name +
                                        "' does not take the [B" +
                                        (ds.ndim == 2 ? ", " + std::to_string(ds.width) : "") +
                                        "] tensor of " + who);
    for (const DensePart& p : ds.parts)
      if (p.sparse) features_[p.index]->slices[p.slice].source = dense_sources_.size();
    dense_sources_.push_back(std::move(ds));
    parts.erase(it);
  }
  if (!parts.empty())
    Fail(RS_ERR_INVALID_ARGUMENT, "bundle " + bundle_dir_ + ": the dense stage has no input '" +
                                      parts.begin()->first + "'");
  bound_ = true;
}

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
  int64_t tmp[64];
  for (size_t v = 0; v < nv; ++v) {
    table.scheme.RowKeys(s.ids[v], tmp);
    for (size_t j = 0; j < S; ++j) s.keys[j * nv + v] = tmp[j];
  }
  // Batched lookups of the distinct keys, one per sub-table.
  size_t total = 0;
  for (const auto& st : table.subs) total += nv * st.dim;
  s.rows.resize(total);
  s.found.resize(nv);
  s.uniq.resize(S * nv);
  s.index.resize(S * nv);
  float* sub_rows[64];
  const int32_t* sub_index[64];
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
    for (size_t u = 0; u < nu; ++u) {
      if (!s.found[u]) {
        ++missing;
        std::fill_n(sub_rows[j] + u * st.dim, st.dim, table.default_value);
      }
    }
    off += nv * st.dim;
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
      if (comb == SubCombiner::kConcat) {
        int32_t at = 0;
        for (size_t j = 0; j < S; ++j) {
          const int32_t sd = table.subs[j].dim;
          std::memcpy(e + at, sub_rows[j] + static_cast<size_t>(sub_index[j][v]) * sd,
                      sd * sizeof(float));
          at += sd;
        }
      } else {
        std::memcpy(e, sub_rows[0] + static_cast<size_t>(sub_index[0][v]) * dim,
                    dim * sizeof(float));
        for (size_t j = 1; j < S; ++j) {
          const float* r = sub_rows[j] + static_cast<size_t>(sub_index[j][v]) * dim;
          if (comb == SubCombiner::kAdd) {
            for (int32_t d = 0; d < dim; ++d) e[d] += r[d];
          } else {
            for (int32_t d = 0; d < dim; ++d) e[d] *= r[d];
          }
        }
      }
      accumulate(e, b);
    }
    if (f.pool != Pool::kSum) divide(div, b);
  }
}

std::string BundleInputStage::StatsJson() const {
  std::string j = "{\"requests\":" + std::to_string(requests_.load()) +
                  ",\"missing_rows\":" + std::to_string(missing_rows_.load()) + ",\"features\":[";
  for (size_t i = 0; i < features_.size(); ++i) {
    if (i) j += ",";
    j += "{\"name\":";
    AppendJsonString(j, features_[i]->name);
    j += ",\"values\":" + std::to_string(features_[i]->values.load()) + "}";
  }
  j += "],\"tables\":[";
  uint64_t tot_dram = 0, tot_ssd = 0, tot_miss = 0;
  for (size_t i = 0; i < tables_.size(); ++i) {
    const TableRt& t = *tables_[i];
    if (i) j += ",";
    j += "{\"name\":";
    AppendJsonString(j, t.name);
    j += ",\"subtables\":[";
    uint64_t dh = 0, sh = 0, ms = 0;
    for (size_t s = 0; s < t.subs.size(); ++s) {
      const auto st = t.subs[s].table->Stats();
      if (s) j += ",";
      j += "{\"store_table\":";
      AppendJsonString(j, t.subs[s].store_table);
      j += ",\"rows\":" + std::to_string(st.rows) + ",\"dram_rows\":" + std::to_string(st.dram_rows) +
           ",\"dram_bytes\":" + std::to_string(st.dram_bytes) +
           ",\"dram_hits\":" + std::to_string(st.dram_hits) +
           ",\"dram_misses\":" + std::to_string(st.dram_misses) +
           ",\"ssd_hits\":" + std::to_string(st.ssd_hits) +
           ",\"ssd_misses\":" + std::to_string(st.ssd_misses) + "}";
      dh += st.dram_hits;
      sh += st.ssd_hits;
      ms += st.ssd_misses;
    }
    j += "],\"dram_hits\":" + std::to_string(dh) + ",\"ssd_hits\":" + std::to_string(sh) +
         ",\"missing\":" + std::to_string(ms) + "}";
    tot_dram += dh;
    tot_ssd += sh;
    tot_miss += ms;
  }
  const double all = static_cast<double>(tot_dram + tot_ssd + tot_miss);
  j += "],\"dram_hits\":" + std::to_string(tot_dram) + ",\"ssd_hits\":" + std::to_string(tot_ssd) +
       ",\"dram_hit_rate\":" + std::to_string(all > 0 ? tot_dram / all : 0.0) + "}";
  return j;
}

std::string BundleInputStage::DescribeJson() const {
  std::string j = "{\"dir\":";
  AppendJsonString(j, bundle_dir_);
  j += ",\"format_version\":" + std::to_string(manifest_.format_version()) + ",\"features\":[";
  for (size_t i = 0; i < features_.size(); ++i) {
    const FeatureRt& f = *features_[i];
    if (i) j += ",";
    j += "{\"name\":";
    AppendJsonString(j, f.name);
    j += ",\"id_type\":";
    AppendJsonString(j, f.is_string ? "string" : "int64");
    j += ",\"layout\":";
    AppendJsonString(j, f.multivalued ? "padded[B,k]+lengths[B]" : "[B]");
    if (f.multivalued) {
      j += ",\"lengths_input\":";
      AppendJsonString(j, public_.inputs[f.lengths_input].name);
    }
    j += ",\"table\":";
    AppendJsonString(j, f.table->name);
    j += ",\"dim\":" + std::to_string(f.table->dim) + "}";
  }
  j += "],\"tables\":[";
  for (size_t i = 0; i < tables_.size(); ++i) {
    const TableRt& t = *tables_[i];
    if (i) j += ",";
    j += "{\"name\":";
    AppendJsonString(j, t.name);
    j += ",\"scheme\":";
    AppendJsonString(j, manifest_.tables(static_cast<int>(i)).key_scheme().kind());
    j += ",\"subtable_rows\":[";
    for (size_t s = 0; s < t.subs.size(); ++s) {
      if (s) j += ",";
      j += std::to_string(t.subs[s].rows);
    }
    j += "]}";
  }
  j += "]}";
  return j;
}

}  // namespace bundle
}  // namespace rs
