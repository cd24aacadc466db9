#include "host/loader.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <exception>
#include <new>
#include <system_error>
#include <thread>

#include "core/config.h"

namespace rs::host {

namespace {

// True when every TF op of a model opened with `config_json` runs in the
// calling thread (false for a malformed config: the open reports it).
bool RunsInline(const std::string& config_json) {
  try {
    ModelConfig c = ParseModelConfig(config_json.c_str());
    return c.inter_op_threads < 0 && c.intra_op_threads == 1 && !c.use_per_session_threads;
  } catch (...) {
    return false;
  }
}

}  // namespace

LoadResult VersionLoader::Open(const std::string& path, const std::string& config_json) const {
  LoadResult r;
  try {
    r.model = Model::Open(path.c_str(), config_json.c_str(), deps_);
  } catch (const Error& e) {
    r.status = {e.code(), e.what()};
  } catch (const std::bad_alloc&) {
    r.status = {RS_ERR_RESOURCE_EXHAUSTED, "out of memory"};
  } catch (const std::exception& e) {
    r.status = {RS_ERR_INTERNAL, e.what()};
  } catch (...) {
    r.status = {RS_ERR_INTERNAL, "unknown exception"};
  }
  return r;
}

LoadResult VersionLoader::Load(const std::string& path, const std::string& config_json) const {
  auto t0 = std::chrono::steady_clock::now();
  LoadResult r;
  bool lowered = false;
  if (nice_ > 0 && RunsInline(config_json)) {
    try {
      std::thread t([&] {
        pid_t tid = static_cast<pid_t>(syscall(SYS_gettid));
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, tid);
        lowered = errno == 0 && setpriority(PRIO_PROCESS, tid, cur + nice_ > 19 ? 19 : cur + nice_) == 0;
        r = Open(path, config_json);
      });
      t.join();
    } catch (const std::system_error&) {  // no thread: load here, at normal priority
      r = Open(path, config_json);
    }
  } else {
    r = Open(path, config_json);
  }
  r.lowered = lowered;
  r.load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace rs::host
