#include "core/model.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>

#include "base/json_text.h"
#include "base/status.h"
#include "core/tensors.h"
#include "core/warmup.h"

namespace rs {

namespace {

using Clock = std::chrono::steady_clock;

bool IsDir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool IsFile(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void NoopDeallocator(void*, size_t, void*) {}

// Per-thread scratch so the hot path does not allocate: vectors, and a
// 64-byte aligned staging block into which misaligned inputs are copied
// (one memcpy each, no allocator call) and then lent to TensorFlow like
// aligned caller buffers.
struct Scratch {
  std::vector<const rs_tensor*> ordered;
  std::vector<rs_tensor> staged;
  std::vector<std::pair<const char*, const char*>> borrowed;
  char* stage = nullptr;
  size_t stage_cap = 0;
  ~Scratch() { std::free(stage); }
  char* Stage(size_t bytes) {
    if (bytes > stage_cap) {
      size_t cap = std::max<size_t>(bytes, 2 * stage_cap);
      cap = (cap + 63) / 64 * 64;
      char* p = static_cast<char*>(std::aligned_alloc(64, cap));
      if (p == nullptr) throw std::bad_alloc();
      std::free(stage);
      stage = p;
      stage_cap = cap;
    }
    return stage;
  }
};
thread_local Scratch tls_scratch;

inline bool Aligned64(const void* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; }

// A call splits only if no two calls overlapped within this window (2 ms).
constexpr int64_t kSplitQuietNs = 2'000'000;

}  // namespace

std::unique_ptr<Model> Model::Open(const char* model_dir, const char* config_json,
                                   const ModelDeps& deps) {
  auto t0 = Clock::now();
  std::unique_ptr<Model> m(new Model());
  m->cfg_ = ParseModelConfig(config_json);
  std::string dir = model_dir && *model_dir ? model_dir : m->cfg_.savedmodel_dir;
  if (dir.empty())
    Fail(RS_ERR_INVALID_ARGUMENT, "no model directory: pass model_dir or set savedmodel_dir in the config");
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (!IsDir(dir)) Fail(RS_ERR_NOT_FOUND, "model directory " + dir + " does not exist");
  m->model_path_ = dir;

  if (IsFile(dir + "/" + kBundleManifest)) {
    const BundleLoader& loader = deps.bundle_loader;
    if (!loader)
      Fail(RS_ERR_UNIMPLEMENTED, dir + " is a recstrata bundle (has " + kBundleManifest +
                                     "), but this library has no bundle support registered");
    BundleStage bs = loader(dir, m->cfg_.raw_json);
    if (!bs.stage) Fail(RS_ERR_INTERNAL, "bundle loader returned no input stage");
    m->stage_ = std::move(bs.stage);
    m->dense_dir_ = std::make_shared<const std::string>(bs.dense_model_dir);
  } else {
    m->dense_dir_ = std::make_shared<const std::string>(dir);
    if (!IsFile(dir + "/saved_model.pb") && !IsFile(dir + "/saved_model.pbtxt"))
      Fail(RS_ERR_NOT_FOUND, dir + " is not a SavedModel directory (no saved_model.pb)");
  }

  m->warmup_decoder_ = deps.warmup_decoder;
  m->group_ = std::make_shared<SessionGroup>(*m->dense_dir_, m->cfg_);
  const auto& dense = m->group_->signature();
  if (m->stage_) {
    m->stage_->Bind(*dense);
    auto pub = std::make_shared<Signature>();
    pub->name = dense->name;
    pub->inputs = m->stage_->public_signature().inputs;
    pub->outputs = dense->outputs;
    pub->Finalize();
    m->public_sig_ = pub;
  } else {
    m->public_sig_ = dense;
  }
  for (size_t i = 0; i < m->public_sig_->outputs.size(); ++i) m->all_outputs_.push_back(static_cast<int>(i));
  if (m->stage_ && m->cfg_.split_min_batch > 0) {
    int parts = m->cfg_.split_parts;
    if (parts == 0) {
      cpu_set_t allowed;
      parts = sched_getaffinity(0, sizeof(allowed), &allowed) == 0 ? CPU_COUNT(&allowed) : 1;
      parts = std::min(parts, 8);
    }
    if (parts > 1) {
      m->split_parts_ = parts;
      m->split_pool_ = std::make_unique<SplitPool>(parts - 1);
    }
  }
  m->load_ms_ = MsSince(t0);
  auto t1 = Clock::now();
  WarmupOutcome w = WarmUp(m->cfg_, *m->public_sig_, m->group_->size(), deps.warmup_decoder,
                           [&](const rs_tensor* in, size_t n, const int* out_idx, size_t n_out, int s) {
                             m->Run(in, n, out_idx, n_out, s);
                           });
  m->warmup_source_ = std::move(w.source);
  m->warmup_error_ = std::move(w.error);
  m->warmup_ms_ = MsSince(t1);
  // Warmup runs are not requests: start the counters at zero (per-session
  // call counts keep them, so warmup coverage stays visible).
  m->stats_.requests = 0;
  m->stats_.errors = 0;
  m->stats_.total_ns = 0;
  m->stats_.max_ns = 0;
  for (auto& b : m->stats_.buckets) b = 0;
  return m;
}

Model::~Model() {
  group_.reset();  // sessions first, then the stage they were fed by
  stage_.reset();
}

std::function<void()> Model::PrepareDense(const std::string& dense_dir) {
  if (!stage_) Fail(RS_ERR_FAILED_PRECONDITION, "only a bundle's dense stage can be replaced");
  auto g = std::make_shared<SessionGroup>(dense_dir, cfg_);
  const std::shared_ptr<SessionGroup> cur = Group();
  const std::string want = cur->signature()->ToJson(), got = g->signature()->ToJson();
  if (got != want)
    Fail(RS_ERR_INVALID_ARGUMENT, "the dense stage in " + dense_dir +
                                      " has another signature than the served one: " + got + " vs " + want);
  WarmupOutcome w = WarmUp(cfg_, *public_sig_, g->size(), warmup_decoder_,
                           [&](const rs_tensor* in, size_t n, const int* out_idx, size_t n_out, int s) {
                             RunOn(*g, false, in, n, out_idx, n_out, s, nullptr, nullptr);
                           });
  if (!w.error.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "the dense stage in " + dense_dir + " failed its warmup: " + w.error);
  auto dir = std::make_shared<const std::string>(dense_dir);
  return [this, g, dir]() {
    std::lock_guard<std::mutex> lk(cpus_mu_);
    if (!cpus_override_.empty()) {
      try {
        g->SetCpus(cpus_override_);  // the same config as the served group, which took them
      } catch (...) {
      }
    }
    std::atomic_store(&group_, g);
    std::atomic_store(&dense_dir_, dir);
    dense_swaps_.fetch_add(1, std::memory_order_relaxed);
  };
}

void Model::SetSessionCpus(const cpu_set_t& cpus) {
  std::lock_guard<std::mutex> lk(cpus_mu_);
  Group()->SetCpus({cpus});
  cpus_override_.assign(1, cpus);
}

std::unique_ptr<rs_result> Model::Run(const rs_tensor* inputs, size_t n, const int* out_idx, size_t n_out,
                                      int session, const TF_Buffer* run_options, TF_Buffer* run_metadata) {
  return RunOn(*Group(), true, inputs, n, out_idx, n_out, session, run_options, run_metadata);
}

std::unique_ptr<rs_result> Model::RunOn(SessionGroup& g, bool count, const rs_tensor* inputs, size_t n,
                                        const int* out_idx, size_t n_out, int session,
                                        const TF_Buffer* run_options, TF_Buffer* run_metadata) {
  auto t0 = Clock::now();
  // Calls in flight, and when calls last overlapped: batch splitting only
  // uses idle capacity, so it stays off while callers overlap (and for
  // kSplitQuietNs after), not just at the instants one caller is between calls.
  struct Active {
    Model& m;
    explicit Active(Model& model) : m(model) {
      if (m.active_calls_.fetch_add(1, std::memory_order_acq_rel) > 0) m.MarkOverlap();
    }
    ~Active() {
      if (m.active_calls_.fetch_sub(1, std::memory_order_acq_rel) > 1) m.MarkOverlap();
    }
  } active(*this);
  try {
    const Signature& sig = *public_sig_;
    Scratch& sc = tls_scratch;
    OrderInputs(sig, inputs, n, sc.ordered);
    if (n_out == 0) {
      out_idx = all_outputs_.data();
      n_out = all_outputs_.size();
    }
    for (size_t k = 0; k < n_out; ++k)
      if (out_idx[k] < 0 || static_cast<size_t>(out_idx[k]) >= sig.outputs.size())
        Fail(RS_ERR_OUT_OF_RANGE, "output index out of range");

    if (stage_) {
      sc.staged.resize(sc.ordered.size());
      for (size_t i = 0; i < sc.ordered.size(); ++i) sc.staged[i] = *sc.ordered[i];
      auto result = std::make_unique<rs_result>();
      result->signature = public_sig_;
      result->output_index.assign(out_idx, out_idx + n_out);
      result->tensors.assign(n_out, nullptr);
      // Split only a call that has the model to itself, has one batch size
      // across its inputs (else the stage reports the mismatch) and is large.
      int64_t batch = -1;
      bool split = split_pool_ && session < 0 && !run_options && !run_metadata &&
                   active_calls_.load(std::memory_order_acquire) == 1 &&
                   NowNs() - last_overlap_ns_.load(std::memory_order_relaxed) > kSplitQuietNs;
      for (size_t i = 0; split && i < sc.staged.size(); ++i) {
        const rs_tensor& t = sc.staged[i];
        if (t.ndim < 1 || (batch >= 0 && t.shape[0] != batch)) split = false;
        else batch = t.shape[0];
      }
      if (split && batch >= cfg_.split_min_batch &&
          batch / std::max<int64_t>(16, cfg_.split_min_batch / 2) >= 2) {
        try {
          RunSplit(g, sc.staged, batch, out_idx, n_out, result->tensors.data());
        } catch (const Error&) {
          // Rerun unsplit, so that an error names rows as the caller numbers them.
          for (TF_Tensor*& t : result->tensors) {
            if (t) TF_DeleteTensor(t);
            t = nullptr;
          }
          RunStaged(g, sc.staged.data(), sc.staged.size(), out_idx, n_out, g.Select(),
                    result->tensors.data(), nullptr, nullptr);
        }
      } else {
        RunStaged(g, sc.staged.data(), sc.staged.size(), out_idx, n_out,
                  session >= 0 ? session : g.Select(), result->tensors.data(), run_options,
                  run_metadata);
      }
      result->Finish();
      if (count) stats_.Record(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
      return result;
    }
    TensorList in;
    sc.borrowed.clear();
    {
      in.v.reserve(sc.ordered.size());
      size_t stage_bytes = 0;
      for (const rs_tensor* t : sc.ordered)
        if (t->dtype != RS_DT_STRING && t->byte_size > 0 && !Aligned64(t->data))
          stage_bytes += (t->byte_size + 63) / 64 * 64;
      char* stage = stage_bytes ? sc.Stage(stage_bytes) : nullptr;
      if (stage_bytes) sc.borrowed.emplace_back(stage, stage + stage_bytes);
      for (const rs_tensor* t : sc.ordered) {
        if (t->dtype == RS_DT_STRING || t->byte_size == 0) {
          bool borrowed = false;
          in.v.push_back(ToTFTensor(*t, &borrowed));
          continue;
        }
        void* data = const_cast<void*>(t->data);
        if (Aligned64(data)) {
          const char* b = static_cast<const char*>(data);
          sc.borrowed.emplace_back(b, b + t->byte_size);
        } else {
          std::memcpy(stage, data, t->byte_size);
          data = stage;
          stage += (t->byte_size + 63) / 64 * 64;
        }
        TF_Tensor* tt = TF_NewTensor(static_cast<TF_DataType>(t->dtype), t->shape, t->ndim, data, t->byte_size,
                                     NoopDeallocator, nullptr);
        if (tt == nullptr) Fail(RS_ERR_INTERNAL, "TensorFlow could not create an input tensor");
        in.v.push_back(tt);
      }
    }

    auto result = std::make_unique<rs_result>();
    result->signature = public_sig_;
    result->output_index.assign(out_idx, out_idx + n_out);
    result->tensors.assign(n_out, nullptr);
    int s = session >= 0 ? session : g.Select();
    g.Run(s, in.v.data(), out_idx, n_out, result->tensors.data(), run_options, run_metadata);

    // TF may forward an input buffer into an output (e.g. Identity): an
    // output aliasing borrowed memory (caller buffers, or this thread's
    // staging block, which the next call overwrites) is copied before return.
    if (!sc.borrowed.empty()) {
      for (TF_Tensor*& t : result->tensors) {
        const char* p = static_cast<const char*>(TF_TensorData(t));
        const char* e = p + TF_TensorByteSize(t);
        for (const auto& r : sc.borrowed) {
          if (p < r.second && e > r.first) {
            TF_Tensor* copy = CopyTFTensor(t);
            TF_DeleteTensor(t);
            t = copy;
            break;
          }
        }
      }
    }
    result->Finish();
    if (count) stats_.Record(static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
    return result;
  } catch (...) {
    if (count) stats_.errors.fetch_add(1, std::memory_order_relaxed);
    throw;
  }
}

std::string Model::DescribeJson() const {
  std::string out = "{\"model_path\":";
  AppendJsonString(out, model_path_);
  out += ",\"savedmodel_dir\":";
  AppendJsonString(out, *std::atomic_load(&dense_dir_));
  out += ",\"kind\":\"";
  out += stage_ ? "bundle" : "savedmodel";
  out += "\",\"signature\":" + public_sig_->ToJson();
  const std::shared_ptr<SessionGroup> g = Group();
  if (stage_) out += ",\"dense_signature\":" + g->signature()->ToJson();
  out += ",\"session_group\":" + g->LayoutJson();
  out += ",\"graph_rewrite\":" + g->rewrite_json();
  out += ",\"warmup\":{\"source\":";
  AppendJsonString(out, warmup_source_);
  out += ",\"runs_per_session\":" + std::to_string(cfg_.warmup_runs);
  out += ",\"error\":";
  if (warmup_error_.empty()) out += "null"; else AppendJsonString(out, warmup_error_);
  char buf[96];
  std::snprintf(buf, sizeof buf, ",\"ms\":%.1f},\"load_ms\":%.1f", warmup_ms_, load_ms_);
  out += buf;
  if (stage_) {
    out += ",\"batch_split\":{\"min_batch\":" + std::to_string(split_pool_ ? cfg_.split_min_batch : 0) +
           ",\"parts\":" + std::to_string(split_parts_) + "}";
    out += ",\"bundle\":" + stage_->DescribeJson();
  }
  out += "}";
  return out;
}

std::string Model::StatsJson() const {
  std::string out = "{" + stats_.JsonFields();
  out += ",\"session_group\":" + Group()->StatsJson();
  if (stage_) out += ",\"split_calls\":" + std::to_string(split_calls_.load());
  if (stage_) out += ",\"dense_swaps\":" + std::to_string(dense_swaps_.load());
  if (stage_) out += ",\"bundle\":" + stage_->StatsJson();
  out += "}";
  return out;
}


}  // namespace rs
