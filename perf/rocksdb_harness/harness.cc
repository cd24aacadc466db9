// Native benchmark driver for perf/bench_store.py: the same C++ loop, threads
// and timers drive either RocksDB (MultiGet, the fair native peer) or
// recstrata's store through its public C API, so the two are compared
// like for like.
//
//   harness --engine rocksdb|recstrata --db DIR --dim D --keys K.bin --rows R.bin
//           --batches zipf=Z.bin,uniform=U.bin --batch 1024 --threads T
//           --cache_bytes C --passes P --writer_batches 256
//
// Binary inputs are raw little-endian arrays written by numpy (.tofile()).
// Prints one JSON object on stdout: load time, disk bytes, and per workload
// keys/s, per-batch p50/p99 (microseconds), plus the Zipf reads again while
// one writer thread overwrites random keys.
#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "recstrata.h"
#ifdef RS_HAVE_ROCKSDB
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/slice.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;

template <class T>
std::vector<T> ReadArray(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(2);
  }
  size_t n = static_cast<size_t>(in.tellg()) / sizeof(T);
  std::vector<T> v(n);
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), n * sizeof(T));
  return v;
}

uint64_t DirBytes(const std::string& dir) {
  uint64_t total = 0;
  DIR* d = opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    std::string p = dir + "/" + n;
    struct stat st;
    if (stat(p.c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) total += DirBytes(p);
    else total += static_cast<uint64_t>(st.st_size);
  }
  closedir(d);
  return total;
}

// The engine interface the loops drive.
class Engine {
 public:
  virtual ~Engine() = default;
  virtual void Load(const int64_t* keys, size_t n, const float* rows) = 0;
  virtual void Get(const int64_t* keys, size_t n, float* out) = 0;  // thread-safe
  virtual void Put(const int64_t* keys, size_t n, const float* rows) = 0;
  virtual std::string Stats() { return "{}"; }
};

class Recstrata : public Engine {
 public:
  Recstrata(const std::string& dir, int dim, uint64_t cache_bytes, const std::string& extra)
      : dim_(dim) {
    std::string opts = "{\"tiers\": \"" + std::string(cache_bytes ? "dram+ssd" : "dram") +
                       "\", \"dram_capacity_bytes\": " + std::to_string(cache_bytes ? cache_bytes : 1) +
                       ", \"durability\": \"none\"" + extra + "}";
    Check(rs_store_open(dir.c_str(), opts.c_str(), &store_, &err_), "open");
    Check(rs_store_create_table(store_, "t", dim, nullptr, &table_, &err_), "create_table");
  }
  ~Recstrata() override { rs_store_close(store_); }
  void Load(const int64_t* keys, size_t n, const float* rows) override {
    Check(rs_table_bulk_load(table_, keys, n, rows, &err_), "bulk_load");
  }
  void Get(const int64_t* keys, size_t n, float* out) override {
    thread_local std::vector<uint8_t> found;
    found.resize(n);
    rs_error* e = nullptr;
    Check(rs_table_lookup(table_, keys, n, out, found.data(), &e), "lookup", e);
  }
  void Put(const int64_t* keys, size_t n, const float* rows) override {
    rs_error* e = nullptr;
    Check(rs_table_upsert(table_, keys, n, rows, &e), "upsert", e);
  }
  std::string Stats() override {
    char* j = nullptr;
    if (rs_store_stats_json(store_, &j, nullptr) != RS_OK) return "{}";
    std::string s(j);
    rs_free(j);
    return s;
  }

 private:
  void Check(int rc, const char* what, rs_error* e = nullptr) {
    if (rc == RS_OK) return;
    std::fprintf(stderr, "recstrata %s failed: %s\n", what, rs_error_message(e ? e : err_));
    std::exit(3);
  }
  int dim_;
  rs_store* store_ = nullptr;
  rs_table* table_ = nullptr;
  rs_error* err_ = nullptr;
};

#ifdef RS_HAVE_ROCKSDB
class RocksDB : public Engine {
 public:
  RocksDB(const std::string& dir, int dim, uint64_t cache_bytes) : dim_(dim) {
    rocksdb::Options o;
    o.create_if_missing = true;
    o.compression = rocksdb::kNoCompression;  // float payloads do not compress
    o.IncreaseParallelism(2);
    rocksdb::BlockBasedTableOptions t;
    t.block_cache = rocksdb::NewLRUCache(cache_bytes ? cache_bytes : (8u << 20));
    t.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
    t.cache_index_and_filter_blocks = false;
    o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(t));
    rocksdb::DB* db = nullptr;
    auto st = rocksdb::DB::Open(o, dir, &db);
    if (!st.ok()) {
      std::fprintf(stderr, "rocksdb open: %s\n", st.ToString().c_str());
      std::exit(3);
    }
    db_.reset(db);
  }
  void Load(const int64_t* keys, size_t n, const float* rows) override {
    rocksdb::WriteOptions w;
    w.disableWAL = true;  // bulk load: the fastest plain path
    for (size_t i = 0; i < n;) {
      rocksdb::WriteBatch b;
      for (size_t j = 0; j < 10000 && i < n; ++j, ++i) {
        b.Put(rocksdb::Slice(reinterpret_cast<const char*>(&keys[i]), 8),
              rocksdb::Slice(reinterpret_cast<const char*>(rows + i * dim_), 4 * dim_));
      }
      db_->Write(w, &b);
    }
    db_->Flush(rocksdb::FlushOptions());
    db_->CompactRange(rocksdb::CompactRangeOptions(), nullptr, nullptr);
  }
  void Get(const int64_t* keys, size_t n, float* out) override {
    thread_local std::vector<rocksdb::Slice> ks;
    thread_local std::vector<rocksdb::PinnableSlice> vs;
    thread_local std::vector<rocksdb::Status> ss;
    ks.resize(n);
    vs.resize(n);
    ss.resize(n);
    for (size_t i = 0; i < n; ++i) ks[i] = rocksdb::Slice(reinterpret_cast<const char*>(&keys[i]), 8);
    db_->MultiGet(rocksdb::ReadOptions(), db_->DefaultColumnFamily(), n, ks.data(), vs.data(),
                  ss.data());
    for (size_t i = 0; i < n; ++i) {
      if (ss[i].ok() && vs[i].size() == 4u * dim_) {
        std::memcpy(out + i * dim_, vs[i].data(), 4 * dim_);
      } else {
        std::memset(out + i * dim_, 0, 4 * dim_);
      }
      vs[i].Reset();
    }
  }
  void Put(const int64_t* keys, size_t n, const float* rows) override {
    rocksdb::WriteBatch b;
    for (size_t i = 0; i < n; ++i) {
      b.Put(rocksdb::Slice(reinterpret_cast<const char*>(&keys[i]), 8),
            rocksdb::Slice(reinterpret_cast<const char*>(rows + i * dim_), 4 * dim_));
    }
    db_->Write(rocksdb::WriteOptions(), &b);
  }

 private:
  int dim_;
  std::unique_ptr<rocksdb::DB> db_;
};
#endif

struct Result {
  double keys_per_s = 0, p50_us = 0, p99_us = 0;
  uint64_t batches = 0;
};

double Pct(std::vector<double>& v, double q) {
  if (v.empty()) return 0;
  size_t i = std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + i, v.end());
  return v[i];
}

// Threads split the batches; each runs `passes` passes over its share.
Result RunReads(Engine& e, const std::vector<int64_t>& batches, size_t bs, int threads, int passes,
                int dim, std::atomic<bool>* writer_stop) {
  size_t nb = batches.size() / bs;
  std::vector<std::vector<double>> lat(threads);
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      std::vector<float> out(bs * dim);
      for (int p = 0; p < passes; ++p) {
        for (size_t b = t; b < nb; b += threads) {
          auto s = Clock::now();
          e.Get(&batches[b * bs], bs, out.data());
          lat[t].push_back(std::chrono::duration<double, std::micro>(Clock::now() - s).count());
        }
      }
    });
  }
  for (auto& th : ts) th.join();
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  if (writer_stop) writer_stop->store(true);
  std::vector<double> all;
  for (auto& l : lat) all.insert(all.end(), l.begin(), l.end());
  Result r;
  r.batches = all.size();
  r.keys_per_s = all.size() * bs / secs;
  r.p50_us = Pct(all, 0.5);
  r.p99_us = Pct(all, 0.99);
  return r;
}

std::string Json(const Result& r) {
  char b[256];
  std::snprintf(b, sizeof(b),
                "{\"keys_per_s\": %.1f, \"p50_us\": %.2f, \"p99_us\": %.2f, \"batches\": %llu}",
                r.keys_per_s, r.p50_us, r.p99_us, static_cast<unsigned long long>(r.batches));
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> a;
  for (int i = 1; i + 1 < argc; i += 2) a[std::string(argv[i]).substr(2)] = argv[i + 1];
  const std::string engine = a["engine"];
  const int dim = std::atoi(a["dim"].c_str());
  const size_t bs = std::strtoull(a.count("batch") ? a["batch"].c_str() : "1024", nullptr, 10);
  const int threads = std::atoi(a.count("threads") ? a["threads"].c_str() : "1");
  const int passes = std::atoi(a.count("passes") ? a["passes"].c_str() : "1");
  const uint64_t cache = std::strtoull(a.count("cache_bytes") ? a["cache_bytes"].c_str() : "0", nullptr, 10);
  const size_t wbs = std::strtoull(a.count("writer_batches") ? a["writer_batches"].c_str() : "256", nullptr, 10);
  const std::string extra = a.count("recstrata_options") ? ", " + a["recstrata_options"] : "";

  auto keys = ReadArray<int64_t>(a["keys"]);
  auto rows = ReadArray<float>(a["rows"]);
  std::unique_ptr<Engine> e;
  if (engine == "recstrata") {
    e.reset(new Recstrata(a["db"], dim, cache, extra));
  } else if (engine == "rocksdb") {
#ifdef RS_HAVE_ROCKSDB
    e.reset(new RocksDB(a["db"], dim, cache));
#else
    std::fprintf(stderr, "built without RocksDB\n");
    return 4;
#endif
  } else {
    std::fprintf(stderr, "unknown engine\n");
    return 2;
  }
  auto t0 = Clock::now();
  e->Load(keys.data(), keys.size(), rows.data());
  double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::string out = "{\"engine\": \"" + engine + "\", \"threads\": " + std::to_string(threads) +
                    ", \"load_s\": " + std::to_string(load_s) +
                    ", \"load_rows_per_s\": " + std::to_string(keys.size() / load_s) +
                    ", \"disk_bytes\": " + std::to_string(DirBytes(a["db"]));

  // Workloads: name=file pairs.
  std::string spec = a["batches"];
  std::vector<int64_t> zipf;
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string item = spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? spec.size() : comma + 1;
    std::string name = item.substr(0, item.find('='));
    auto b = ReadArray<int64_t>(item.substr(item.find('=') + 1));
    RunReads(*e, b, bs, threads, 1, dim, nullptr);  // warm the caches
    Result r = RunReads(*e, b, bs, threads, passes, dim, nullptr);
    out += ", \"" + name + "\": " + Json(r);
    if (name == "zipf") zipf = std::move(b);
  }
  if (!zipf.empty()) {
    // Zipf reads again while one writer overwrites random keys (batches of
    // `wbs` keys, 1 ms apart).
    std::atomic<bool> stop{false};
    std::atomic<uint64_t> written{0};
    std::thread writer([&] {
      std::mt19937_64 rng(7);
      std::vector<int64_t> wk(wbs);
      std::vector<float> wr(wbs * dim);
      while (!stop.load()) {
        for (size_t i = 0; i < wbs; ++i) {
          size_t j = rng() % keys.size();
          wk[i] = keys[j];
          std::memcpy(&wr[i * dim], &rows[j * dim], 4 * dim);
        }
        e->Put(wk.data(), wbs, wr.data());
        written += wbs;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    });
    Result r = RunReads(*e, zipf, bs, threads, passes, dim, &stop);
    writer.join();
    out += ", \"zipf_with_writer\": " + Json(r) + ", \"rows_written\": " + std::to_string(written.load());
  }
  out += ", \"stats\": " + e->Stats() + "}";
  std::printf("%s\n", out.c_str());
  return 0;
}
