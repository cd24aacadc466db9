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

#include "base/json_text.h"
#include "base/status.h"
#include "core/graph_rewrite.h"
#include "core/rewritten_savedmodel.h"
#include "core/tf_protos.h"

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

SessionGroup::Loaded::~Loaded() {
  StatusHolder st;
  if (session) {
    TF_CloseSession(session, st.s);
    TF_DeleteSession(session, st.s);
  }
  if (graph) TF_DeleteGraph(graph);
}

SessionGroup::SessionGroup(const std::string& dir, const ModelConfig& cfg) : cfg_(cfg) {
  // Each logical session: its core set, and its own inter-op pool when the
  // config asks for per-session threads with a real (non-inline) pool.
  session_pools_ = cfg.use_per_session_threads && cfg.inter_op_threads >= 0 && cfg.session_num > 1;
  cpu_set_t allowed;
  bool have_allowed = sched_getaffinity(0, sizeof(allowed), &allowed) == 0;
  for (int i = 0; i < cfg.session_num; ++i) {
    auto sess = std::make_unique<Session>();
    if (!cfg.cpusets.empty()) {
      sess->has_cpus = true;
      auto set = std::make_shared<CpuSet>();
      set->set = cfg.cpusets[i];
      set->text = CpusText(set->set);
      cpu_set_t usable;
      if (have_allowed) {
        CPU_AND(&usable, &allowed, &set->set);
        if (CPU_COUNT(&usable) == 0)
          Fail(RS_ERR_INVALID_ARGUMENT, "config: cpuset \"" + set->text + "\" of session " + std::to_string(i) +
                                            " has no CPU this process may run on (allowed: " + CpusText(allowed) + ")");
      }
      sess->cpus = std::move(set);
      // Inline sessions run ops in the caller's thread: pin that thread during Run.
      sess->pin_caller = cfg.inter_op_threads < 0;
    }
    if (session_pools_) {
      sess->pool = i;
      sess->run_options = RunOptionsWithPool(nullptr, i);
    }
    sessions_.push_back(std::move(sess));
  }
  Load(dir, cfg);
}

SessionGroup::~SessionGroup() = default;

bool SessionGroup::LoadFrom(const std::string& dir, const ModelConfig& cfg, TF_Buffer* meta, std::string* error) {
  const std::string config_bytes = SessionConfigBytes(cfg, session_pools_);
  StatusHolder st;
  std::unique_ptr<TF_SessionOptions, decltype(&TF_DeleteSessionOptions)> opts(TF_NewSessionOptions(),
                                                                               &TF_DeleteSessionOptions);
  TF_SetConfig(opts.get(), config_bytes.data(), config_bytes.size(), st.s);
  if (!st.ok()) st.Throw("invalid session config");
  std::vector<const char*> tags;
  for (const auto& t : cfg.tags) tags.push_back(t.c_str());
  loaded_.graph = TF_NewGraph();
  loaded_.session = TF_LoadSessionFromSavedModel(opts.get(), nullptr, dir.c_str(), tags.data(),
                                                 static_cast<int>(tags.size()), loaded_.graph, meta, st.s);
  if (st.ok()) return true;
  *error = std::string(TF_Message(st.s));
  last_load_code_ = TF_GetCode(st.s);
  if (loaded_.session) {
    StatusHolder close;
    TF_CloseSession(loaded_.session, close.s);
    TF_DeleteSession(loaded_.session, close.s);
    loaded_.session = nullptr;
  }
  TF_DeleteGraph(loaded_.graph);
  loaded_.graph = nullptr;
  return false;
}

void SessionGroup::Load(const std::string& dir, const ModelConfig& cfg) {
  bool pin_pools = !cfg.cpusets.empty() && cfg.inter_op_threads >= 0;
  std::set<int> threads_before;
  if (pin_pools) threads_before = ProcessThreads();

  std::unique_ptr<TF_Buffer, decltype(&TF_DeleteBuffer)> meta(TF_NewBuffer(), &TF_DeleteBuffer);
  std::string error;
  bool loaded = false;
  if (cfg.graph_rewrite) {
    GraphRewriteReport report;
    std::unique_ptr<RewrittenSavedModel> rewritten;
    try {
      rewritten = RewrittenSavedModel::Make(dir, cfg.signature_name, &report);
    } catch (const Error& e) {
      report.note = std::string("not rewritten: ") + e.what();
    }
    if (rewritten) {
      loaded = LoadFrom(rewritten->path(), cfg, meta.get(), &error);
      if (!loaded) report.note = "the rewritten graph did not load, loaded unchanged: " + error;
    }
    rewrite_json_ = report.ToJson(loaded);
  } else {
    rewrite_json_ = "{\"applied\":false,\"note\":\"off\"}";
  }
  if (!loaded) {
    TF_DeleteBuffer(meta.release());
    meta.reset(TF_NewBuffer());
    if (!LoadFrom(dir, cfg, meta.get(), &error))
      Fail(static_cast<rs_status>(StatusFromTF(last_load_code_)), "could not load SavedModel " + dir + ": " + error);
  }
  signature_ = SignatureFromMetaGraph(meta->data, meta->length, cfg.signature_name, dir);
  meta.reset();
  for (const TensorSpec& s : signature_->inputs) loaded_.inputs.push_back(ResolveOutput(loaded_.graph, s.tensor_name));
  for (const TensorSpec& s : signature_->outputs) loaded_.outputs.push_back(ResolveOutput(loaded_.graph, s.tensor_name));
  if (pin_pools) PinPoolThreads(threads_before);
}

void SessionGroup::PinPoolThreads(const std::set<int>& threads_before) {
  // The threads TF created while loading: with one pool per logical session,
  // pool i's threads are named "tf_Compute<i>" (TF names a session pool after
  // its index) and get session i's core set. Every other new thread belongs
  // to a pool all sessions use and gets the union of their core sets.
  cpu_set_t all;
  CPU_ZERO(&all);
  for (const auto& s : sessions_)
    if (s->cpus) CPU_OR(&all, &all, &s->cpus->set);
  for (int tid : ProcessThreads()) {
    if (threads_before.count(tid)) continue;
    std::string name = ThreadName(tid);
    Session* own = nullptr;
    if (session_pools_ && name.rfind("tf_Compute", 0) == 0 && name.size() > 10) {
      int i = std::atoi(name.c_str() + 10);
      if (i >= 0 && i < static_cast<int>(sessions_.size())) own = sessions_[i].get();
    }
    const cpu_set_t& set = own && own->cpus ? own->cpus->set : all;
    if (sched_setaffinity(tid, sizeof(cpu_set_t), &set) == 0 && own) own->pinned_threads.push_back(tid);
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
  AffinityScope(bool active, const cpu_set_t* set) : active_(active) {
    if (!active_) return;
    active_ = pthread_getaffinity_np(pthread_self(), sizeof(old_), &old_) == 0 &&
              pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), set) == 0;
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
  const Loaded& ld = loaded_;
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
    outs[k] = ld.outputs[out_idx[k]];
    outputs[k] = nullptr;
  }
  // The session's own inter-op pool is chosen by RunOptions; a caller's
  // options (tracing) are merged with that choice.
  std::string merged;
  TF_Buffer pool_options{};
  if (sess.pool >= 0) {
    if (run_options != nullptr) {
      merged = RunOptionsWithPool(run_options, sess.pool);
    }
    const std::string& bytes = run_options != nullptr ? merged : sess.run_options;
    pool_options.data = bytes.data();
    pool_options.length = bytes.size();
    run_options = &pool_options;
  }
  StatusHolder st;
  {
    // The set in force when the run starts; SetCpus may publish another meanwhile.
    const std::shared_ptr<const CpuSet> cpus = sess.pin_caller ? std::atomic_load(&sess.cpus) : nullptr;
    AffinityScope pin(cpus != nullptr, cpus ? &cpus->set : nullptr);
    TF_SessionRun(ld.session, run_options, ld.inputs.data(), inputs, static_cast<int>(ld.inputs.size()),
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

void SessionGroup::SetCpus(const std::vector<cpu_set_t>& per_session) {
  if (per_session.size() != 1 && per_session.size() != sessions_.size())
    Fail(RS_ERR_INVALID_ARGUMENT, "SetCpus: " + std::to_string(per_session.size()) + " core sets for " +
                                      std::to_string(sessions_.size()) + " sessions");
  cpu_set_t allowed;
  bool have_allowed = sched_getaffinity(0, sizeof(allowed), &allowed) == 0;
  std::vector<std::shared_ptr<const CpuSet>> next;
  for (size_t i = 0; i < sessions_.size(); ++i) {
    if (!sessions_[i]->pin_caller)
      Fail(RS_ERR_FAILED_PRECONDITION,
           "session " + std::to_string(i) + " cannot be re-pinned at run time: " +
               (sessions_[i]->has_cpus ? "its ops run on inter-op pool threads (inter_op_parallelism_threads >= 0)"
                                       : "it was loaded without a cpuset"));
    auto set = std::make_shared<CpuSet>();
    set->set = per_session[per_session.size() == 1 ? 0 : i];
    set->text = CpusText(set->set);
    cpu_set_t usable;
    if (have_allowed) {
      CPU_AND(&usable, &allowed, &set->set);
      if (CPU_COUNT(&usable) == 0)
        Fail(RS_ERR_INVALID_ARGUMENT, "SetCpus: cpuset \"" + set->text + "\" has no CPU this process may run on");
    }
    next.push_back(std::move(set));
  }
  for (size_t i = 0; i < sessions_.size(); ++i) std::atomic_store(&sessions_[i]->cpus, next[i]);
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
  // One loaded graph and variable set, whatever session_num is.
  out += ",\"loaded_copies\":1,\"inter_op_pools\":\"";
  out += session_pools_ ? "one per session" : (cfg_.inter_op_threads < 0 ? "inline in the caller" : (cfg_.use_per_session_threads ? "one for the group" : "process-wide"));
  out += "\"";
  out += ",\"sessions\":[";
  for (size_t i = 0; i < sessions_.size(); ++i) {
    const Session& s = *sessions_[i];
    if (i) out += ",";
    out += "{\"index\":" + std::to_string(i) + ",\"cpus\":";
    const std::shared_ptr<const CpuSet> cpus = std::atomic_load(&s.cpus);
    AppendJsonString(out, cpus ? cpus->text : std::string());
    out += ",\"affinity\":\"";
    out += !s.has_cpus ? "none" : (s.pin_caller ? "caller_thread_during_run" : "pool_threads");
    out += "\",\"pinned_threads\":" + std::to_string(s.pinned_threads.size());
    out += ",\"inter_op_pool\":" + std::to_string(s.pool) + "}";
  }
  out += "]}";
  return out;
}

}  // namespace rs
