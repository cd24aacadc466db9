// C entry points of the Model host section of recstrata.h: exception walls
// over rs::host::Manager (host/manager.h). The host gets the library's model
// dependencies from the composition root, like rs_model_open.
#include <time.h>

#include <chrono>
#include <memory>
#include <string>

#include "api/composition.h"
#include "api/model_calls.h"
#include "base/buffers.h"
#include "base/status.h"
#include "host/config.h"
#include "host/manager.h"

struct rs_host {
  std::unique_ptr<rs::host::Manager> impl;
};

struct rs_lease {
  std::shared_ptr<rs::host::Servable> servable;
};

namespace {

rs::host::Manager& Need(rs_host* host) {
  if (host == nullptr || !host->impl) rs::Fail(RS_ERR_INVALID_ARGUMENT, "host is NULL");
  return *host->impl;
}

rs::host::Servable& Need(rs_lease* lease) {
  if (lease == nullptr || !lease->servable) rs::Fail(RS_ERR_INVALID_ARGUMENT, "lease is NULL");
  return *lease->servable;
}

template <typename T>
void NeedOut(T* out, const char* what) {
  if (out == nullptr) rs::Fail(RS_ERR_INVALID_ARGUMENT, std::string(what) + " is NULL");
}

uint64_t ThreadCpuNs() {
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return 0;
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

// Runs `call` on a version (through its batcher when it has one) and records
// it in the version's counters: wall time of successful calls, and the
// calling thread's CPU time of every call (a batch leader's includes its
// followers' rows; work on other threads, e.g. bundle split workers, is not
// seen).
template <typename F>
void Counted(rs::host::Servable& s, F&& call) {
  auto t0 = std::chrono::steady_clock::now();
  const uint64_t cpu0 = ThreadCpuNs();
  auto cpu = [&] {
    uint64_t c = ThreadCpuNs();
    if (c > cpu0) s.counters().cpu_ns_sum.fetch_add(c - cpu0, std::memory_order_relaxed);
  };
  try {
    rs::Runner runner;
    if (rs::host::Batcher* b = s.batcher())
      runner = [b](const rs_tensor* in, size_t n, const int* idx, size_t n_out) { return b->Run(in, n, idx, n_out); };
    call(s.model(), runner);
  } catch (...) {
    cpu();
    s.counters().Record(false, 0);
    throw;
  }
  cpu();
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
  s.counters().Record(true, static_cast<uint64_t>(ns));
}

}  // namespace

extern "C" {

RS_API int rs_host_open(const char* config_json, rs_host** out, rs_error** error) noexcept {
  if (out) *out = nullptr;
  RS_API_BEGIN(error);
  NeedOut(out, "out");
  auto h = std::make_unique<rs_host>();
  h->impl = std::make_unique<rs::host::Manager>(rs::host::ParseHostConfig(config_json), rs::LibraryModelDeps());
  *out = h.release();
  RS_API_END(error);
}

RS_API void rs_host_close(rs_host* host) noexcept {
  try {
    delete host;
  } catch (...) {
  }
}

RS_API int rs_host_shutdown(rs_host* host, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  Need(host).Shutdown();
  RS_API_END(error);
}

RS_API int rs_host_reload(rs_host* host, const char* model, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  Need(host).Reload(model);
  RS_API_END(error);
}

RS_API int rs_host_set_policy(rs_host* host, const char* model, const char* policy_json, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  rs::host::Manager& m = Need(host);
  if (model == nullptr) rs::Fail(RS_ERR_INVALID_ARGUMENT, "model name is NULL");
  m.SetPolicy(model, policy_json);
  RS_API_END(error);
}

RS_API int rs_host_pin(rs_host* host, const char* model, int64_t version, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  rs::host::Manager& m = Need(host);
  if (model == nullptr) rs::Fail(RS_ERR_INVALID_ARGUMENT, "model name is NULL");
  m.Pin(model, version);
  RS_API_END(error);
}

RS_API int rs_host_run(rs_host* host, const char* model, int64_t version, const rs_tensor* inputs, size_t n_inputs,
                       const char* const* output_names, size_t n_outputs, rs_result** out, int64_t* out_version,
                       rs_error** error) noexcept {
  if (out) *out = nullptr;
  if (out_version) *out_version = 0;
  RS_API_BEGIN(error);
  rs::host::Manager& h = Need(host);
  NeedOut(out, "out");
  std::shared_ptr<rs::host::Servable> s = h.Acquire(model, version);
  Counted(*s, [&](rs::Model& m, const rs::Runner& run) {
    *out = rs::RunNamed(m, inputs, n_inputs, output_names, n_outputs, run).release();
  });
  if (out_version) *out_version = s->version();
  RS_API_END(error);
}

RS_API int rs_host_predict(rs_host* host, const char* model, int64_t version, const void* request,
                           size_t request_size, void** out_response, size_t* out_size, int64_t* out_version,
                           rs_error** error) noexcept {
  if (out_response) *out_response = nullptr;
  if (out_size) *out_size = 0;
  if (out_version) *out_version = 0;
  RS_API_BEGIN(error);
  rs::host::Manager& h = Need(host);
  NeedOut(out_response, "out_response");
  NeedOut(out_size, "out_size");
  std::shared_ptr<rs::host::Servable> s = h.Acquire(model, version);
  Counted(*s, [&](rs::Model& m, const rs::Runner& run) {
    rs::PredictWire(m, request, request_size, out_response, out_size, run);
  });
  if (out_version) *out_version = s->version();
  RS_API_END(error);
}

RS_API int rs_host_acquire(rs_host* host, const char* model, int64_t version, rs_lease** out, rs_error** error) noexcept {
  if (out) *out = nullptr;
  RS_API_BEGIN(error);
  rs::host::Manager& h = Need(host);
  NeedOut(out, "out");
  auto lease = std::make_unique<rs_lease>();
  lease->servable = h.Acquire(model, version);
  *out = lease.release();
  RS_API_END(error);
}

RS_API int64_t rs_lease_version(const rs_lease* lease) noexcept {
  return lease && lease->servable ? lease->servable->version() : 0;
}

RS_API int rs_lease_run(rs_lease* lease, const rs_tensor* inputs, size_t n_inputs, const char* const* output_names,
                        size_t n_outputs, rs_result** out, rs_error** error) noexcept {
  if (out) *out = nullptr;
  RS_API_BEGIN(error);
  rs::host::Servable& s = Need(lease);
  NeedOut(out, "out");
  Counted(s, [&](rs::Model& m, const rs::Runner& run) {
    *out = rs::RunNamed(m, inputs, n_inputs, output_names, n_outputs, run).release();
  });
  RS_API_END(error);
}

RS_API int rs_lease_describe_json(const rs_lease* lease, char** out_json, rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  if (lease == nullptr || !lease->servable) rs::Fail(RS_ERR_INVALID_ARGUMENT, "lease is NULL");
  NeedOut(out_json, "out_json");
  *out_json = rs::MallocCopy(lease->servable->model().DescribeJson());
  RS_API_END(error);
}

RS_API int rs_lease_predict(rs_lease* lease, const void* request, size_t request_size, void** out_response,
                            size_t* out_size, rs_error** error) noexcept {
  if (out_response) *out_response = nullptr;
  if (out_size) *out_size = 0;
  RS_API_BEGIN(error);
  rs::host::Servable& s = Need(lease);
  NeedOut(out_response, "out_response");
  NeedOut(out_size, "out_size");
  Counted(s, [&](rs::Model& m, const rs::Runner& run) {
    rs::PredictWire(m, request, request_size, out_response, out_size, run);
  });
  RS_API_END(error);
}

RS_API void rs_lease_release(rs_lease* lease) noexcept {
  try {
    delete lease;
  } catch (...) {
  }
}

RS_API int rs_host_status_json(rs_host* host, char** out_json, rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  rs::host::Manager& h = Need(host);
  NeedOut(out_json, "out_json");
  *out_json = rs::MallocCopy(h.StatusJson());
  RS_API_END(error);
}

RS_API int rs_host_metrics_text(rs_host* host, char** out_text, rs_error** error) noexcept {
  if (out_text) *out_text = nullptr;
  RS_API_BEGIN(error);
  rs::host::Manager& h = Need(host);
  NeedOut(out_text, "out_text");
  *out_text = rs::MallocCopy(h.MetricsText());
  RS_API_END(error);
}

RS_API int rs_host_replan_cores(rs_host* host, char** out_json, rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  std::string decision = Need(host).ReplanCores();
  if (out_json) *out_json = rs::MallocCopy(decision);
  RS_API_END(error);
}

RS_API int rs_host_force_core_plan(rs_host* host, const char* plan_json, char** out_json, rs_error** error) noexcept {
  if (out_json) *out_json = nullptr;
  RS_API_BEGIN(error);
  std::string decision = Need(host).ForceCorePlan(plan_json);
  if (out_json) *out_json = rs::MallocCopy(decision);
  RS_API_END(error);
}

}  // extern "C"
