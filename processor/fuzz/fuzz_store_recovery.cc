// Fuzzes store recovery (store/store.h): a store with two tables is written
// once through the API; each input replaces one of its files (chosen by the
// first byte) with the remaining bytes, then the store is opened and every key
// read. Any bytes must either open and read, or throw rs::Error; never crash,
// hang or read out of bounds. Format-agnostic: it knows no file layout.
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#include "base/status.h"
#include "store/store.h"

namespace fs = std::filesystem;

namespace {

struct Pristine {
  std::string dir, work;
  std::vector<fs::path> files;     // relative to dir, sorted
  std::vector<std::string> bytes;  // each file's pristine content
};

// Rewrites `path` with `n` bytes; false on any I/O error.
bool WriteFile(const std::string& path, const char* data, size_t n) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data, static_cast<std::streamsize>(n));
  return static_cast<bool>(f);
}

// Puts the work copy back into the pristine state: every pristine file
// rewritten from memory, anything else the previous open created removed.
// Much cheaper than remove_all + a recursive copy (the store open itself is
// what the target measures), so the fuzzer runs several times faster.
bool Reset(const Pristine& p) {
  std::error_code ec;
  std::vector<fs::path> extra;
  for (auto it = fs::recursive_directory_iterator(p.work, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const fs::path rel = fs::relative(it->path(), p.work, ec);
    if (!std::binary_search(p.files.begin(), p.files.end(), rel)) extra.push_back(it->path());
  }
  if (ec) return false;
  for (const fs::path& e : extra) fs::remove(e, ec);
  for (size_t i = 0; i < p.files.size(); ++i) {
    const fs::path path = fs::path(p.work) / p.files[i];
    fs::create_directories(path.parent_path(), ec);
    if (!WriteFile(path.string(), p.bytes[i].data(), p.bytes[i].size())) return false;
  }
  return true;
}

const Pristine& Setup() {
  static const Pristine p = [] {
    const char* tmp = std::getenv("TMPDIR");
    const std::string base = std::string(tmp && *tmp ? tmp : "/tmp") + "/rs_fuzz_store_" + std::to_string(getpid());
    Pristine p;
    p.dir = base + "/pristine";
    p.work = base + "/work";
    fs::remove_all(base);
    fs::create_directories(base);
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
      if (e.is_regular_file()) p.files.push_back(fs::relative(e.path(), p.dir));
    std::sort(p.files.begin(), p.files.end());
    for (const fs::path& f : p.files) {
      std::ifstream in(p.dir + "/" + f.string(), std::ios::binary);
      p.bytes.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    fs::copy(p.dir, p.work, fs::copy_options::recursive);
    // RS_FUZZ_WRITE_SEEDS=<dir>: write one seed per file (its index byte + its
    // pristine bytes), so the corpus always matches the current format.
    if (const char* seeds = std::getenv("RS_FUZZ_WRITE_SEEDS")) {
      fs::create_directories(seeds);
      for (size_t i = 0; i < p.files.size(); ++i) {
        std::ifstream in(p.dir + "/" + p.files[i].string(), std::ios::binary);
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
  WriteFile(p.work + "/" + p.files[data[0] % p.files.size()].string(),
            reinterpret_cast<const char*>(data + 1), size - 1);
  try {
    auto s = rs::store::Store::OpenJson(p.work, R"({"create_if_missing":false,"compaction":"off","durability":"none","shard_bits":0,"dram_capacity_bytes":65536})");
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
