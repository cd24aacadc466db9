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
#include <string>
#include <system_error>
#include <vector>

#include "base/status.h"
#include "store/store.h"

namespace fs = std::filesystem;

namespace {

struct Pristine {
  std::string dir, work;
  std::vector<fs::path> files;  // relative to dir, sorted
};

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
  // The harness's own file copies retry a signal-interrupted call (EINTR, seen
  // under a busy machine's signals): a harness hiccup is not a finding.
  for (int attempt = 0;; ++attempt) {
    std::error_code ec;
    fs::remove_all(p.work, ec);
    if (!ec) fs::copy(p.dir, p.work, fs::copy_options::recursive, ec);
    if (!ec) break;
    if (attempt == 100) {
      std::fprintf(stderr, "fuzz_store_recovery: cannot copy the pristine store: %s\n", ec.message().c_str());
      std::abort();
    }
  }
  {
    std::ofstream f(p.work + "/" + p.files[data[0] % p.files.size()].string(), std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data + 1), static_cast<std::streamsize>(size - 1));
  }
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
