#include "core/input_stage.h"

#include <mutex>

namespace rs {
namespace {
std::mutex& LoaderMutex() {
  static std::mutex m;
  return m;
}
BundleLoader& LoaderSlot() {
  static BundleLoader loader;
  return loader;
}
}  // namespace

void RegisterBundleLoader(BundleLoader loader) {
  std::lock_guard<std::mutex> lock(LoaderMutex());
  LoaderSlot() = std::move(loader);
}

BundleLoader GetBundleLoader() {
  std::lock_guard<std::mutex> lock(LoaderMutex());
  return LoaderSlot();
}

}  // namespace rs
