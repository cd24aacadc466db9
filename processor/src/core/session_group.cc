#include "core/session_group.h"

#include <dirent.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <set>

#include "api/status.h"
#include "tensorflow/core/protobuf/config.pb.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"

namespace rs {

int StatusFromTF(int tf_code) {
  switch (tf_code) {
    case TF_OK: return RS_OK;
    case TF_INVALID_ARGUMENT: return RS_ERR_INVALID_ARGUMENT;
    case TF_NOT_FOUND: return RS_ERR_NOT_FOUND;
    case TF_ALREADY_EXISTS: return RS_ERR_ALREADY_EXISTS;
    case TF_FAILED_PRECONDITION: return RS_ERR_FAILED_PRECONDITION;
    case TF_OUT_OF_RANGE: return RS_ERR_OUT_OF_RANGE;
    case TF_RESOURCE_EXHAUSTED: return RS_ERR_RESOURCE_EXHAUSTED;
    case TF_UNIMPLEMENTED: return RS_ERR_UNIMPLEMENTED;
    case TF_DATA_LOSS: return RS_ERR_CORRUPTION;
    default: return RS_ERR_INTERNAL;
  }
}

namespace {

struct StatusHolder {
  TF_Status* s = TF_NewStatus();
  ~StatusHolder() { TF_DeleteStatus(s); }
  bool ok() const { return TF_GetCode(s) == TF_OK; }
  [[noreturn]] void Throw(const std::string& what) const {
    Fail(static_cast<rs_status>(StatusFromTF(TF_GetCode(s))), what + ": " + TF_Message(s));
  }
};

// Thread ids of this process (for pinning the pool threads a session creates).
std::set<int> ProcessThreads() {
  std::set<int> tids;
  DIR* d = opendir("/proc/self/task");
  if (!d) return tids;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] >= '0' && e->d_name[0] <= '9') tids.insert(std::atoi(e->d_name));
  }
  closedir(d);
  return tids;
}

std::string ThreadName(int tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string name;
  std::getline(f, name);
  return name;
}

std::string CpusText(const cpu_set_t& set) {
  std::string out;
  for (int c = 0; c < CPU_SETSIZE; ++c) {
    if (!CPU_ISSET(c, &set)) continue;
    int e = c;
    while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, &set)) ++e;
    if (!out.empty()) out += ",";
    out += e == c ? std::to_string(c) : std::to_string(c) + "-" + std::to_string(e);
    c = e;
  }
  return out;
}

// Parses "op:index" (or "op", index 0) into a graph output.
TF_Output ResolveOutput(TF_Graph* graph, const std::string& tensor_name) {
  std::string op = tensor_name;
  int index = 0;
  size_t colon = tensor_name.rfind(':');
  if (colon != std::string::npos) {
    op = tensor_name.substr(0, colon);
    index = std::atoi(tensor_name.c_str() + colon + 1);
  }
  TF_Operation* oper = TF_GraphOperationByName(graph, op.c_str());
  if (oper == nullptr) Fail(RS_ERR_NOT_FOUND, "SavedModel graph has no operation '" + op + "'");
  if (index < 0 || index >= TF_OperationNumOutputs(oper))
    Fail(RS_ERR_NOT_FOUND, "SavedModel graph has no tensor '" + tensor_name + "'");
  return TF_Output{oper, index};
}

TensorSpec SpecFrom(const std::string& alias, const tensorflow::TensorInfo& info, bool is_input) {
  TensorSpec spec;
  spec.name = alias;
  if (info.encoding_case() != tensorflow::TensorInfo::kName)
    Fail(RS_ERR_UNIMPLEMENTED, std::string("signature ") + (is_input ? "input" : "output") + " '" + alias +
                                   "' is a sparse/composite tensor, which is not supported");
  spec.tensor_name = info.name();
  spec.dtype = static_cast<int>(info.dtype());
  if (DtypeName(spec.dtype) == std::string("unknown"))
    Fail(RS_ERR_UNIMPLEMENTED, std::string("signature ") + (is_input ? "input" : "output") + " '" + alias +
                                   "' has dtype enum " + std::to_string(spec.dtype) + ", which is not supported");
  if (!info.has_tensor_shape() || info.tensor_shape().unknown_rank()) {
    spec.ndim = -1;
  } else {
    spec.ndim = info.tensor_shape().dim_size();
    for (const auto& d : info.tensor_shape().dim()) spec.shape.push_back(d.size() < 0 ? -1 : d.size());
  }
  return spec;
}

std::shared_ptr<Signature> ParseSignature(const tensorflow::MetaGraphDef& mg, const std::string& name,
                                          const std::string& dir) {
  auto it = mg.signature_def().find(name);
  if (it == mg.signature_def().end()) {
    std::vector<std::string> names;
    for (const auto& kv : mg.signature_def()) names.push_back(kv.first);
    std::sort(names.begin(), names.end());
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    Fail(RS_ERR_NOT_FOUND, "SavedModel " + dir + " has no signature '" + name + "' (signatures: " +
                               (known.empty() ? "none" : known) + ")");
  }
  auto sig = std::make_shared<Signature>();
  sig->name = name;
  for (const auto& kv : it->second.inputs()) sig->inputs.push_back(SpecFrom(kv.first, kv.second, true));
  for (const auto& kv : it->second.outputs()) sig->outputs.push_back(SpecFrom(kv.first, kv.second, false));
  auto by_name = [](const TensorSpec& a, const TensorSpec& b) { return a.name < b.name; };
  std::sort(sig->inputs.begin(), sig->inputs.end(), by_name);
  std::sort(sig->outputs.begin(), sig->outputs.end(), by_name);
  if (sig->outputs.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "signature '" + name + "' has no outputs");
  sig->Finalize();
  return sig;
}

uint64_t Mix64(uint64_t x) {  // splitmix64 finalizer
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// A per-thread hash for MOD. DeepRec hashes std::thread::id; on glibc that is
// a pthread_t address whose low bits are the same for every thread, so
// "hash mod N" can send every thread to one session. We mix the kernel tid.
uint64_t ThreadHash() {
  thread_local uint64_t h = Mix64(static_cast<uint64_t>(syscall(SYS_gettid)));
  return h;
}

}  // namespace

SessionGroup::SessionGroup(const std::string& dir, const ModelConfig& cfg) : cfg_(cfg) {
  sessions_.reserve(cfg.session_num);
  try {
    for (int i = 0; i < cfg.session_num; ++i) LoadSession(dir, cfg, i);
  } catch (...) {
    for (auto& s : sessions_) {
      StatusHolder st;
      if (s->session) {
        TF_CloseSession(s->session, st.s);
        TF_DeleteSession(s->session, st.s);
      }
      if (s->graph) TF_DeleteGraph(s->graph);
    }
    sessions_.clear();
    throw;
  }
}

SessionGroup::~SessionGroup() {
  for (auto& s : sessions_) {
    StatusHolder st;
    if (s->session) {
      TF_CloseSession(s->session, st.s);
      TF_DeleteSession(s->session, st.s);
    }
    if (s->graph) TF_DeleteGraph(s->graph);
  }
}

void SessionGroup::LoadSession(const std::string& dir, const ModelConfig& cfg, int index) {
  auto sess = std::make_unique<Session>();
  if (!cfg.cpusets.empty()) {
    sess->has_cpus = true;
    sess->cpus = cfg.cpusets[index];
    sess->cpus_text = CpusText(sess->cpus);
    cpu_set_t allowed, usable;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0) {
      CPU_AND(&usable, &allowed, &sess->cpus);
      if (CPU_COUNT(&usable) == 0)
        Fail(RS_ERR_INVALID_ARGUMENT, "config: cpuset \"" + sess->cpus_text + "\" of session " +
                                          std::to_string(index) + " has no CPU this process may run on (allowed: " +
                                          CpusText(allowed) + ")");
    }
    // Inline sessions run ops in the caller's thread: pin that thread during Run.
    sess->pin_caller = cfg.inter_op_threads < 0;
  }

  tensorflow::ConfigProto config;
  config.set_inter_op_parallelism_threads(cfg.inter_op_threads);
  config.set_intra_op_parallelism_threads(cfg.intra_op_threads);
  config.set_use_per_session_threads(cfg.use_per_session_threads);
  config.set_allow_soft_placement(true);
  std::string config_bytes = config.SerializeAsString();

  StatusHolder st;
  TF_SessionOptions* opts = TF_NewSessionOptions();
  TF_SetConfig(opts, config_bytes.data(), config_bytes.size(), st.s);
  if (!st.ok()) {
    TF_DeleteSessionOptions(opts);
    st.Throw("invalid session config");
  }
  std::vector<const char*> tags;
  for (const auto& t : cfg.tags) tags.push_back(t.c_str());
  std::set<int> threads_before;
  if (sess->has_cpus && !sess->pin_caller) threads_before = ProcessThreads();

  sess->graph = TF_NewGraph();
  TF_Buffer* meta = TF_NewBuffer();
  sess->session = TF_LoadSessionFromSavedModel(opts, nullptr, dir.c_str(), tags.data(),
                                               static_cast<int>(tags.size()), sess->graph, meta, st.s);
  TF_DeleteSessionOptions(opts);
  Session* raw = sess.get();
  sessions_.push_back(std::move(sess));  // owned from here on (cleanup on throw)
  if (!st.ok()) {
    TF_DeleteBuffer(meta);
    st.Throw("could not load SavedModel " + dir);
  }
  if (index == 0) {
    tensorflow::MetaGraphDef mg;
    bool parsed = mg.ParseFromArray(meta->data, static_cast<int>(meta->length));
    TF_DeleteBuffer(meta);
    if (!parsed) Fail(RS_ERR_CORRUPTION, "could not parse the MetaGraphDef of " + dir);
    signature_ = ParseSignature(mg, cfg.signature_name, dir);
  } else {
    TF_DeleteBuffer(meta);
  }
  for (const TensorSpec& s : signature_->inputs) raw->inputs.push_back(ResolveOutput(raw->graph, s.tensor_name));
  for (const TensorSpec& s : signature_->outputs) raw->outputs.push_back(ResolveOutput(raw->graph, s.tensor_name));

  if (raw->has_cpus && !raw->pin_caller) {
    // Pooled session: pin the threads TF created for this session. Per-session
    // inter-op pool threads are named "tf_Compute"; other new threads belong
    // to process-wide pools (created with the first session) and get the
    // union of every session's core set.
    cpu_set_t all;
    CPU_ZERO(&all);
    for (const cpu_set_t& c : cfg.cpusets) CPU_OR(&all, &all, &c);
    for (int tid : ProcessThreads()) {
      if (threads_before.count(tid)) continue;
      bool own = ThreadName(tid).rfind("tf_Compute", 0) == 0 && cfg.use_per_session_threads;
      const cpu_set_t& set = own ? raw->cpus : all;
      if (sched_setaffinity(tid, sizeof(cpu_set_t), &set) == 0 && own) raw->pinned_threads.push_back(tid);
    }
  }
}

int SessionGroup::Select() {
  const size_t n = sessions_.size();
  if (n == 1) return 0;
  switch (cfg_.policy) {
    case SessionPolicy::kMod:
      return static_cast<int>(ThreadHash() % n);
    case SessionPolicy::kRoundRobin:
      return static_cast<int>(rr_.fetch_add(1, std::memory_order_relaxed) % n);
    case SessionPolicy::kLeastLoaded: {
      // Fewest in-flight calls. Ties go to the calling thread's own (MOD)
      // session first, then onwards in index order: a lone caller keeps one
      // session and its warm caches. Breaking ties round robin instead made
      // a single caller alternate between sessions, and each switch evicted
      // the other session's weights from cache: +50 us per call at batch 1
      // on the Criteo-shaped benchmark model (docs/processor.md).
      size_t start = ThreadHash() % n;
      int best = static_cast<int>(start);
      int64_t best_load = sessions_[start]->in_flight.load(std::memory_order_relaxed);
      for (size_t k = 1; k < n && best_load > 0; ++k) {
        size_t i = (start + k) % n;
        int64_t load = sessions_[i]->in_flight.load(std::memory_order_relaxed);
        if (load < best_load) {
          best_load = load;
          best = static_cast<int>(i);
        }
      }
      return best;
    }
  }
  return 0;
}

namespace {
// Sets the calling thread's affinity for the duration of a scope.
class AffinityScope {
 public:
  AffinityScope(bool active, const cpu_set_t& set) : active_(active) {
    if (!active_) return;
    active_ = pthread_getaffinity_np(pthread_self(), sizeof(old_), &old_) == 0 &&
              pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), &set) == 0;
  }
  ~AffinityScope() {
    if (active_) pthread_setaffinity_np(pthread_self(), sizeof(old_), &old_);
  }

 private:
  bool active_;
  cpu_set_t old_;
};

struct InFlight {
  std::atomic<int64_t>& c;
  explicit InFlight(std::atomic<int64_t>& counter) : c(counter) { c.fetch_add(1, std::memory_order_relaxed); }
  ~InFlight() { c.fetch_sub(1, std::memory_order_relaxed); }
};
}  // namespace

void SessionGroup::Run(int s, TF_Tensor* const* inputs, const int* out_idx, size_t n_out, TF_Tensor** outputs,
                       const TF_Buffer* run_options, TF_Buffer* run_metadata) {
  Session& sess = *sessions_[s];
  InFlight guard(sess.in_flight);
  sess.calls.fetch_add(1, std::memory_order_relaxed);
  constexpr size_t kStack = 32;
  TF_Output outs_stack[kStack];
  std::unique_ptr<TF_Output[]> outs_heap;
  TF_Output* outs = outs_stack;
  if (n_out > kStack) {
    outs_heap.reset(new TF_Output[n_out]);
    outs = outs_heap.get();
  }
  for (size_t k = 0; k < n_out; ++k) {
    outs[k] = sess.outputs[out_idx[k]];
    outputs[k] = nullptr;
  }
  StatusHolder st;
  {
    AffinityScope pin(sess.pin_caller, sess.cpus);
    TF_SessionRun(sess.session, run_options, sess.inputs.data(), inputs, static_cast<int>(sess.inputs.size()),
                  outs, outputs, static_cast<int>(n_out), nullptr, 0, run_metadata, st.s);
  }
  if (!st.ok()) {
    for (size_t k = 0; k < n_out; ++k) {
      if (outputs[k]) TF_DeleteTensor(outputs[k]);
      outputs[k] = nullptr;
    }
    st.Throw("TensorFlow run failed");
  }
}

std::string SessionGroup::StatsJson() const {
  std::string out = "{\"policy\":\"";
  out += PolicyName(cfg_.policy);
  out += "\",\"sessions\":[";
  for (size_t i = 0; i < sessions_.size(); ++i) {
    const Session& s = *sessions_[i];
    if (i) out += ",";
    out += "{\"index\":" + std::to_string(i) + ",\"calls\":" + std::to_string(s.calls.load()) +
           ",\"in_flight\":" + std::to_string(s.in_flight.load()) + "}";
  }
  out += "]}";
  return out;
}

std::string SessionGroup::LayoutJson() const {
  std::string out = "{\"session_num\":" + std::to_string(sessions_.size());
  out += ",\"select_session_policy\":\"" + std::string(PolicyName(cfg_.policy)) + "\"";
  out += ",\"inter_op_parallelism_threads\":" + std::to_string(cfg_.inter_op_threads);
  out += ",\"intra_op_parallelism_threads\":" + std::to_string(cfg_.intra_op_threads);
  out += ",\"use_per_session_threads\":" + std::string(cfg_.use_per_session_threads ? "true" : "false");
  out += ",\"sessions\":[";
  for (size_t i = 0; i < sessions_.size(); ++i) {
    const Session& s = *sessions_[i];
    if (i) out += ",";
    out += "{\"index\":" + std::to_string(i) + ",\"cpus\":";
    AppendJsonString(out, s.cpus_text);
    out += ",\"affinity\":\"";
    out += !s.has_cpus ? "none" : (s.pin_caller ? "caller_thread_during_run" : "pool_threads");
    out += "\",\"pinned_threads\":" + std::to_string(s.pinned_threads.size()) + "}";
  }
  out += "]}";
  return out;
}

}  // namespace rs
