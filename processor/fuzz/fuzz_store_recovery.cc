// Fuzzes store recovery (store/store.h): a store with two tables is written
// once through the API; each input replaces one of its files (chosen by the
// first byte) with the remaining bytes, then the store is opened and every key
// read. Any bytes must either open and read, or throw rs::Error; never crash,
// hang or read out of bounds. Format-agnostic: it knows no file layout.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "base/status.h"
#include "fuzz_temp_dir.h"
#include "store/store.h"
#include "store/store_options.h"

namespace fs = std::filesystem;

namespace {

struct Pristine {
  std::string dir, work;
  std::vector<std::string> files;  // relative to dir, sorted
  std::vector<std::string> paths;  // the same under work, absolute
  std::vector<std::string> bytes;  // each file's pristine content
  std::vector<std::string> dirs;   // the pristine directories under work, sorted
  recstrata::store::StoreOptions open_options;  // parsed once: the target is recovery, not JSON
};

// Rewrites `path` with `n` bytes (plain POSIX calls: the harness's own cost
// stays small next to the open it measures); false on any I/O error.
bool WriteFile(const std::string& path, const char* data, size_t n) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  size_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, data + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) break;
    done += static_cast<size_t>(w);
  }
  return ::close(fd) == 0 && done == n;
}

// Removes everything under `dir` that is not a pristine file or directory
// (a directory the previous open created goes whole, so the walk stays short).
bool RemoveExtras(const Pristine& p, const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return errno == ENOENT;
  bool ok = true;
  while (const dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    const std::string path = dir + "/" + e->d_name;
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      if (std::binary_search(p.dirs.begin(), p.dirs.end(), path)) {
        ok = RemoveExtras(p, path) && ok;
      } else {
        std::error_code ec;
        fs::remove_all(path, ec);
        ok = !ec && ok;
      }
    } else if (!std::binary_search(p.paths.begin(), p.paths.end(), path)) {
      ok = (::unlink(path.c_str()) == 0 || errno == ENOENT) && ok;
    }
  }
  ::closedir(d);
  return ok;
}

// Puts the work copy back into the pristine state: every pristine file
// rewritten from memory, anything else the previous open created removed.
// Much cheaper than remove_all + a recursive copy, so the fuzzer spends its
// time in the store open.
bool Reset(const Pristine& p) {
  if (!RemoveExtras(p, p.work)) return false;
  for (size_t i = 0; i < p.files.size(); ++i) {
    if (WriteFile(p.paths[i], p.bytes[i].data(), p.bytes[i].size())) continue;
    std::error_code ec;  // the previous open may have removed a directory
    fs::create_directories(fs::path(p.paths[i]).parent_path(), ec);
    if (!WriteFile(p.paths[i], p.bytes[i].data(), p.bytes[i].size())) return false;
  }
  return true;
}

const Pristine& Setup() {
  static const Pristine p = [] {
    const std::string base = rs_fuzz::MakeTempDir("store");
    Pristine p;
    p.dir = base + "/pristine";
    p.work = base + "/work";
    try {
      auto s = rs::store::Store::OpenJson(p.dir, R"({"tiers":"dram+ssd","compaction":"off","durability":"none","shard_bits":0,"dram_capacity_bytes":65536})");
      for (int t = 0; t < 2; ++t) {
        rs::store::Table* table = s->CreateTable("t" + std::to_string(t), 4, "");
        for (int batch = 0; batch < 3; ++batch) {
          std::vector<int64_t> keys;
          std::vector<float> rows;
          for (int k = 0; k < 8; ++k) {
            keys.push_back(batch * 8 + k);
            for (int d = 0; d < 4; ++d) rows.push_back(static_cast<float>(batch * 100 + k * 4 + d));
          }
          table->Upsert(keys.data(), keys.size(), rows.data());
        }
        int64_t del = 3;
        table->Delete(&del, 1);
      }
      s->Flush();
    } catch (const rs::Error& e) {
      std::fprintf(stderr, "fuzz_store_recovery: cannot write the pristine store: %s\n", e.what());
      std::abort();
    }
    for (const auto& e : fs::recursive_directory_iterator(p.dir))
      if (e.is_regular_file()) p.files.push_back(fs::relative(e.path(), p.dir).string());
    std::sort(p.files.begin(), p.files.end());
    for (const std::string& f : p.files) {
      std::ifstream in(p.dir + "/" + f, std::ios::binary);
      p.bytes.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      p.paths.push_back(p.work + "/" + f);  // sorted too: one prefix for all
      const std::string parent = fs::path(p.paths.back()).parent_path().string();
      if (parent != p.work) p.dirs.push_back(parent);
    }
    std::sort(p.dirs.begin(), p.dirs.end());
    p.dirs.erase(std::unique(p.dirs.begin(), p.dirs.end()), p.dirs.end());
    p.open_options = rs::store::ParseJson<recstrata::store::StoreOptions>(
        R"({"create_if_missing":false,"compaction":"off","durability":"none","shard_bits":0,"dram_capacity_bytes":65536})",
        "fuzz options");
    fs::copy(p.dir, p.work, fs::copy_options::recursive);
    // RS_FUZZ_WRITE_SEEDS=<dir>: write one seed per file (its index byte + its
    // pristine bytes), so the corpus always matches the current format.
    if (const char* seeds = std::getenv("RS_FUZZ_WRITE_SEEDS")) {
      fs::create_directories(seeds);
      for (size_t i = 0; i < p.files.size(); ++i) {
        std::ifstream in(p.dir + "/" + p.files[i], std::ios::binary);
        std::ofstream out(std::string(seeds) + "/file" + std::to_string(i), std::ios::binary);
        out.put(static_cast<char>(i));
        out << in.rdbuf();
      }
    }
    return p;
  }();
  return p;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Pristine& p = Setup();
  if (size == 0 || p.files.empty()) return 0;
  // The harness's own file writes retry a signal-interrupted call (EINTR, seen
  // under a busy machine's signals): a harness hiccup is not a finding.
  for (int attempt = 0; !Reset(p); ++attempt) {
    if (attempt == 100) {
      std::fprintf(stderr, "fuzz_store_recovery: cannot restore the pristine store\n");
      std::abort();
    }
  }
  WriteFile(p.paths[data[0] % p.files.size()], reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    auto s = rs::store::Store::Open(p.work, p.open_options);
    std::vector<int64_t> keys(32);
    for (int k = 0; k < 32; ++k) keys[k] = k;
    for (const std::string& name : s->TableNames()) {
      rs::store::Table* t = s->GetTable(name);
      std::vector<float> out(keys.size() * static_cast<size_t>(t->dim()));
      std::vector<uint8_t> found(keys.size());
      t->Lookup(keys.data(), keys.size(), out.data(), found.data());
    }
  } catch (const rs::Error&) {
  }
  return 0;
}
