#include "host/loader.h"

#include <chrono>
#include <exception>
#include <new>

namespace rs::host {

LoadResult VersionLoader::Load(const std::string& path, const std::string& config_json) const {
  LoadResult r;
  auto t0 = std::chrono::steady_clock::now();
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
  r.load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

}  // namespace rs::host
