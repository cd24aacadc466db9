// BundleInputStage, plan half: compiles a loaded manifest into the runtime
// plan (tables with their key schemes and store sub-tables, features, the
// public signature) and, at Bind, maps every feature onto its slice of the
// dense stage's inputs. Runs once per open; the hot path is bundle_pooling.cc.
#include "bundle/bundle_stage.h"

#include <algorithm>
#include <climits>
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

// The store options of a bundle's tables: the manifest's store spec, overridden
// by the serving options (DeepRec's ev_storage_* names, then bundle_*).
recstrata::store::StoreOptions BundleStoreOptions(const recstrata::bundle::StoreSpec& spec,
                                                  const recstrata::bundle::ServingOptions& opt,
                                                  const std::string& store_dir) {
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

  recstrata::store::StoreOptions o;
  const std::string& fst = opt.feature_store_type();
  if (fst == "cluster_redis") {
    // The tables live in a Redis Cluster; DRAM is a bounded cache over it.
    if (opt.redis_url().empty()) Fail(RS_ERR_INVALID_ARGUMENT, "feature_store_type 'cluster_redis' needs redis_url");
    if (opt.redis_model_name().empty())
      Fail(RS_ERR_INVALID_ARGUMENT, "feature_store_type 'cluster_redis' needs redis_model_name");
    o.set_tiers("dram+redis");
    o.set_redis_url(opt.redis_url());
    if (!opt.redis_password().empty()) o.set_redis_password(opt.redis_password());
    o.set_redis_model(opt.redis_model_name());
    if (!opt.redis_key_space().empty()) o.set_redis_key_space(opt.redis_key_space());
    if (opt.redis_command_timeout_ms()) o.set_redis_command_timeout_ms(opt.redis_command_timeout_ms());
    if (opt.redis_connect_timeout_ms()) o.set_redis_connect_timeout_ms(opt.redis_connect_timeout_ms());
    if (opt.redis_poll_ms()) o.set_redis_poll_ms(opt.redis_poll_ms());
    if (cap) o.set_dram_capacity_bytes(cap);
    if (!policy.empty()) o.set_cache_policy(policy);
    return o;
  }
  if (fst == "redis")
    Fail(RS_ERR_UNIMPLEMENTED, "feature_store_type 'redis' (a standalone Redis) is not supported; use 'cluster_redis'");
  if (!fst.empty() && fst != "memory")
    Fail(RS_ERR_INVALID_ARGUMENT, "feature_store_type must be 'memory' or 'cluster_redis', got '" + fst + "'");
  o.set_create_if_missing(false);
  // A bundle's store must be as the export closed it: the clean-close record
  // is required and every open checks files, sizes and row counts against it.
  // A store that deltas were applied to (bundle/delta.h: its marker exists)
  // may have been killed after the export's close: it opens under the store's
  // crash rules (a torn final batch is cut, other damage is still an error);
  // the row counts are still checked below, and an interrupted delta is rolled
  // forward before serving.
  if (!DeltaStoreWritten(store_dir)) o.set_recovery("require_clean");
  if (!opt.verify().empty()) o.set_verify(opt.verify());  // the store validates it
  o.set_tiers(tiers);
  if (cap) o.set_dram_capacity_bytes(cap);
  if (!policy.empty()) o.set_cache_policy(policy);
  // Read path of the SSD tier. Bundles default to "pread" with "dram+ssd": the data files stay
  // out of the process's address space, so its resident memory is the DRAM tier's budget plus
  // the index, not every table page it ever touched (they stay in the kernel's page cache,
  // where the OS reclaims them). "mmap" copies rows straight out of the mapping (a few percent
  // faster on SSD-tier reads). The store validates the value.
  std::string read_path = opt.bundle_read_path();
  if (read_path.empty() && tiers == "dram+ssd") read_path = "pread";
  if (!read_path.empty()) o.set_read_path(read_path);
  return o;
}

TensorSpec Spec(const std::string& name, int dtype, std::vector<int64_t> shape) {
  TensorSpec s;
  s.name = name;
  s.dtype = dtype;
  s.ndim = static_cast<int32_t>(shape.size());
  s.shape = std::move(shape);
  return s;
}

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
      const bool rows_ok = rt->scheme.RowsOk(static_cast<size_t>(j), st.rows());
      if (!rows_ok || st.dim() != sub_dim)
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
      if (st.store_dim() != 0 && (st.store_dim() < st.dim() || st.store_dim() > 65536))
        BadManifest("table '" + t.name() + "' sub-table " + std::to_string(j) + " has store_dim " +
                    std::to_string(st.store_dim()) + " < dim " + std::to_string(st.dim()));
      s.store_dim = st.store_dim() ? st.store_dim() : st.dim();
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
    const bool remote = options.feature_store_type() == "cluster_redis";
    const std::string store_dir = remote                               ? std::string()
                                  : options.bundle_store_dir().empty() ? JoinInside(bundle_dir_, m.store().dir(), "store")
                                                                       : options.bundle_store_dir();
    const recstrata::store::StoreOptions sopts = BundleStoreOptions(m.store(), options, store_dir);
    try {
      store_ = rs::store::Store::Open(store_dir, sopts);
    } catch (const Error& e) {
      if (e.code() != RS_ERR_NOT_FOUND || remote) throw;
      Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": its store is missing: " + e.what());
    }
    const std::string where = remote ? "redis model '" + sopts.redis_model() + "' (key space '" +
                                           (sopts.redis_key_space().empty() ? "serving pointer" : sopts.redis_key_space()) + "')"
                                     : "the store";
    if (remote && store_->TableNames().empty())
      Fail(RS_ERR_NOT_FOUND, "bundle " + bundle_dir_ + ": " + where +
                                 " holds no tables (export with --redis-url, which publishes the key space)");
    for (auto& t : tables_) {
      for (auto& s : t->subs) {
        rs::store::Table* st = store_->FindTable(s.store_table);
        if (!st)
          Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": " + where + " has no table '" +
                                      s.store_table + "' (table '" + t->name + "')");
        if (st->dim() != s.store_dim)
          Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": store table '" + s.store_table +
                                      "' has dim " + std::to_string(st->dim()) +
                                      ", the manifest says " + std::to_string(s.store_dim));
        const uint64_t rows = st->Stats().rows;
        if (rows != static_cast<uint64_t>(s.rows))
          Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir_ + ": store table '" + s.store_table +
                                      "' has " + std::to_string(rows) + " rows, the manifest says " +
                                      std::to_string(s.rows));
        s.table = st;
      }
    }
    // Deltas: the version number is the directory's name (the host's layout).
    // A Redis-backed bundle's rows are shared by many hosts: its applier
    // writes through the store's ledger, so each delta reaches Redis once
    // and the other hosts follow (bundle/delta.h).
    {
      std::vector<DeltaTarget> targets;
      for (auto& t : tables_)
        for (auto& s : t->subs)
          targets.push_back({s.store_table, s.rows, s.dim, const_cast<rs::store::Table*>(s.table)});
      int64_t version = 0;
      {
        std::string dir = bundle_dir_;
        while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
        const std::string name = dir.substr(dir.find_last_of('/') + 1);
        if (!name.empty() && name.size() < 19 &&
            name.find_first_not_of("0123456789") == std::string::npos)
          version = std::stoll(name);
      }
      deltas_ = std::make_unique<DeltaApplier>(bundle_dir_, store_dir, version, store_.get(),
                                               std::move(targets));
      deltas_->RecoverOnOpen();
      dense_dir_ = deltas_->DenseDir(dense_dir_);  // a dense stage a delta published
    }
  }
}

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

}  // namespace bundle
}  // namespace rs
