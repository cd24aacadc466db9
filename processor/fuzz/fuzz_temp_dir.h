// The scratch directory of a fuzz target: $TMPDIR/rs_fuzz_<name>_<pid>
// (TMPDIR unset: /tmp), created empty and removed when the process exits
// normally (libFuzzer's -runs and -max_total_time end with exit()). A crash
// leaves it behind with the reproducer's state.
#ifndef RS_FUZZ_FUZZ_TEMP_DIR_H_
#define RS_FUZZ_FUZZ_TEMP_DIR_H_

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace rs_fuzz {

// Call once per process (from a target's one-time setup).
inline std::string MakeTempDir(const char* name) {
  const char* tmp = std::getenv("TMPDIR");
  const std::string dir =
      std::string(tmp && *tmp ? tmp : "/tmp") + "/rs_fuzz_" + name + "_" + std::to_string(getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  // A plain buffer: the atexit handler may run after the caller's statics are destroyed.
  static char to_remove[4096];
  std::snprintf(to_remove, sizeof to_remove, "%s", dir.c_str());
  std::atexit([] {
    std::error_code ec;
    std::filesystem::remove_all(to_remove, ec);
  });
  return dir;
}

}  // namespace rs_fuzz

#endif  // RS_FUZZ_FUZZ_TEMP_DIR_H_
