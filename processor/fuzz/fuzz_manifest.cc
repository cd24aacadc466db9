// Fuzzes bundle manifest reading (bundle/manifest.h) and the key schemes it
// names (bundle/keys.h): the input is written as bundle.json of a bundle
// directory holding one small file; reading either yields a manifest whose
// every table's key scheme builds, or throws rs::Error.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/status.h"
#include "bundle/keys.h"
#include "bundle/manifest.h"
#include "fuzz_temp_dir.h"

namespace {

const std::string& BundleDir() {
  static const std::string dir = [] {
    std::string d = rs_fuzz::MakeTempDir("manifest");
    std::filesystem::create_directories(d + "/dense/variables");
    std::ofstream(d + "/dense/saved_model.pb") << "0123456789";
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& dir = BundleDir();
  {
    std::ofstream f(dir + "/bundle.json", std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    recstrata::bundle::Manifest m = rs::bundle::LoadManifest(dir);
    for (const auto& t : m.tables()) {
      rs::bundle::KeyScheme s = rs::bundle::KeyScheme::FromProto(t.key_scheme(), "table " + t.name());
      if (s.num_subtables() == 0 || s.num_subtables() > rs::bundle::kMaxSubtables) __builtin_trap();
    }
  } catch (const rs::Error&) {
  }
  return 0;
}
