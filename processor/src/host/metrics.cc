#include "host/metrics.h"

#include <google/protobuf/json/json.h>
#include <google/protobuf/struct.pb.h>

#include <cstdio>

namespace rs::host {

void VersionCounters::Record(bool ok, uint64_t ns) {
  requests.fetch_add(1, std::memory_order_relaxed);
  if (!ok) {
    errors.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  double s = static_cast<double>(ns) * 1e-9;
  size_t b = 0;
  while (b < kLatencyBuckets.size() && s > kLatencyBuckets[b]) ++b;
  buckets[b].fetch_add(1, std::memory_order_relaxed);
  latency_ns_sum.fetch_add(ns, std::memory_order_relaxed);
}

void VersionCounters::RecordBatch(size_t calls) {
  size_t b = 0;
  while (b < kBatchBuckets.size() && static_cast<double>(calls) > kBatchBuckets[b]) ++b;
  batch_buckets[b].fetch_add(1, std::memory_order_relaxed);
  batch_calls_sum.fetch_add(calls, std::memory_order_relaxed);
}

namespace {

std::string Label(const std::string& v) {  // escaped per the exposition format
  std::string o;
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o += c;
  }
  return o;
}

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

void Header(std::string& out, const char* name, const char* type, const char* help) {
  out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

std::string MV(const std::string& model, int64_t version) {
  return "model=\"" + Label(model) + "\",version=\"" + std::to_string(version) + "\"";
}

double Field(const google::protobuf::Struct& s, const char* k) {
  auto it = s.fields().find(k);
  return it == s.fields().end() ? 0 : it->second.number_value();
}

// Tier counters of a bundle's store tables, summed over sub-tables.
struct TierStats {
  std::string labels;
  double rows = 0, dram_rows = 0, dram_bytes = 0, dram_hits = 0, dram_misses = 0, ssd_hits = 0, ssd_misses = 0;
  double remote_hits = 0, remote_misses = 0, remote_errors = 0, remote_corrupt = 0;
};

// The Redis client's counters of a bundle whose store has tiers "dram+redis".
struct RemoteStats {
  std::string labels;
  double commands = 0, round_trips = 0, errors = 0, timeouts = 0, moved = 0, ask = 0, bytes_in = 0, bytes_out = 0,
         switches = 0;
};

std::vector<RemoteStats> RemoteStoreStats(const std::string& model, int64_t version, const std::string& json) {
  std::vector<RemoteStats> out;
  google::protobuf::Struct root;
  if (json.empty() || !google::protobuf::json::JsonStringToMessage(json, &root).ok()) return out;
  auto b = root.fields().find("bundle");
  if (b == root.fields().end() || !b->second.has_struct_value()) return out;
  auto r = b->second.struct_value().fields().find("remote");
  if (r == b->second.struct_value().fields().end() || !r->second.has_struct_value()) return out;
  const auto& st = r->second.struct_value();
  RemoteStats rs;
  rs.labels = MV(model, version);
  rs.commands = Field(st, "commands");
  rs.round_trips = Field(st, "round_trips");
  rs.errors = Field(st, "errors");
  rs.timeouts = Field(st, "timeouts");
  rs.moved = Field(st, "moved");
  rs.ask = Field(st, "ask");
  rs.bytes_in = Field(st, "bytes_in");
  rs.bytes_out = Field(st, "bytes_out");
  rs.switches = Field(st, "switches");
  out.push_back(rs);
  return out;
}

std::vector<TierStats> StoreStats(const std::string& model, int64_t version, const std::string& json) {
  std::vector<TierStats> out;
  google::protobuf::Struct root;
  if (json.empty() || !google::protobuf::json::JsonStringToMessage(json, &root).ok()) return out;
  auto b = root.fields().find("bundle");
  if (b == root.fields().end() || !b->second.has_struct_value()) return out;
  auto tables = b->second.struct_value().fields().find("tables");
  if (tables == b->second.struct_value().fields().end()) return out;
  for (const auto& t : tables->second.list_value().values()) {
    const auto& tf = t.struct_value().fields();
    TierStats ts;
    auto name = tf.find("name");
    ts.labels = MV(model, version) + ",table=\"" + Label(name == tf.end() ? "" : name->second.string_value()) + "\"";
    auto subs = tf.find("subtables");
    if (subs == tf.end()) continue;
    for (const auto& sub : subs->second.list_value().values()) {
      const auto& st = sub.struct_value();
      ts.rows += Field(st, "rows");
      ts.dram_rows += Field(st, "dram_rows");
      ts.dram_bytes += Field(st, "dram_bytes");
      ts.dram_hits += Field(st, "dram_hits");
      ts.dram_misses += Field(st, "dram_misses");
      ts.ssd_hits += Field(st, "ssd_hits");
      ts.ssd_misses += Field(st, "ssd_misses");
      ts.remote_hits += Field(st, "remote_hits");
      ts.remote_misses += Field(st, "remote_misses");
      ts.remote_errors += Field(st, "remote_errors");
      ts.remote_corrupt += Field(st, "remote_corrupt");
    }
    out.push_back(ts);
  }
  return out;
}

}  // namespace

std::string RenderMetrics(const std::vector<ModelMetrics>& models) {
  std::string out;
  Header(out, "rs_host_model_ready", "gauge", "1 when at least one version of the model is serving.");
  for (const auto& m : models) out += "rs_host_model_ready{model=\"" + Label(m.name) + "\"} " + (m.ready ? "1" : "0") + "\n";
  Header(out, "rs_host_loads_total", "counter", "Versions loaded and published.");
  for (const auto& m : models) out += "rs_host_loads_total{model=\"" + Label(m.name) + "\"} " + std::to_string(m.loads) + "\n";
  Header(out, "rs_host_load_failures_total", "counter", "Version loads that failed.");
  for (const auto& m : models)
    out += "rs_host_load_failures_total{model=\"" + Label(m.name) + "\"} " + std::to_string(m.load_failures) + "\n";
  Header(out, "rs_host_revivals_total", "counter", "Draining versions put back into service instead of reloaded.");
  for (const auto& m : models)
    out += "rs_host_revivals_total{model=\"" + Label(m.name) + "\"} " + std::to_string(m.revivals) + "\n";
  Header(out, "rs_host_version_ready", "gauge", "1 while the version is in the serving table.");
  for (const auto& m : models)
    for (const auto& v : m.versions) out += "rs_host_version_ready{" + MV(m.name, v.version) + "} " + (v.ready ? "1" : "0") + "\n";
  Header(out, "rs_host_load_seconds", "gauge", "Time the newest load of the version took (open and warmup).");
  for (const auto& m : models)
    for (const auto& v : m.versions)
      if (v.load_seconds >= 0) out += "rs_host_load_seconds{" + MV(m.name, v.version) + "} " + Num(v.load_seconds) + "\n";
  Header(out, "rs_host_requests_total", "counter", "Calls routed to the version.");
  for (const auto& m : models)
    for (const auto& v : m.versions)
      out += "rs_host_requests_total{" + MV(m.name, v.version) + "} " + std::to_string(v.counters->requests.load()) + "\n";
  Header(out, "rs_host_errors_total", "counter", "Calls routed to the version that failed.");
  for (const auto& m : models)
    for (const auto& v : m.versions)
      out += "rs_host_errors_total{" + MV(m.name, v.version) + "} " + std::to_string(v.counters->errors.load()) + "\n";
  Header(out, "rs_host_request_duration_seconds", "histogram", "Latency of successful calls, in the library.");
  for (const auto& m : models)
    for (const auto& v : m.versions) {
      std::string mv = MV(m.name, v.version);
      uint64_t cum = 0;
      for (size_t b = 0; b <= kLatencyBuckets.size(); ++b) {
        cum += v.counters->buckets[b].load();
        std::string le = b < kLatencyBuckets.size() ? Num(kLatencyBuckets[b]) : "+Inf";
        out += "rs_host_request_duration_seconds_bucket{" + mv + ",le=\"" + le + "\"} " + std::to_string(cum) + "\n";
      }
      out += "rs_host_request_duration_seconds_sum{" + mv + "} " + Num(v.counters->latency_ns_sum.load() * 1e-9) + "\n";
      out += "rs_host_request_duration_seconds_count{" + mv + "} " + std::to_string(cum) + "\n";
    }
  Header(out, "rs_host_batch_size", "histogram", "Calls merged into one model run (versions with dynamic batching).");
  for (const auto& m : models)
    for (const auto& v : m.versions) {
      if (!v.counters->batching) continue;
      std::string mv = MV(m.name, v.version);
      uint64_t cum = 0;
      for (size_t b = 0; b <= kBatchBuckets.size(); ++b) {
        cum += v.counters->batch_buckets[b].load();
        std::string le = b < kBatchBuckets.size() ? Num(kBatchBuckets[b]) : "+Inf";
        out += "rs_host_batch_size_bucket{" + mv + ",le=\"" + le + "\"} " + std::to_string(cum) + "\n";
      }
      out += "rs_host_batch_size_sum{" + mv + "} " + std::to_string(v.counters->batch_calls_sum.load()) + "\n";
      out += "rs_host_batch_size_count{" + mv + "} " + std::to_string(cum) + "\n";
    }
  Header(out, "rs_host_queue_depth", "gauge", "Calls waiting in the dynamic batcher.");
  for (const auto& m : models)
    for (const auto& v : m.versions)
      if (v.counters->batching)
        out += "rs_host_queue_depth{" + MV(m.name, v.version) + "} " + std::to_string(v.counters->queued.load()) + "\n";
  {
    struct DCol {
      const char* name;
      const char* type;
      const char* help;
      double (*get)(const VersionMetrics&);
    };
    const DCol dcols[] = {
        {"rs_host_delta_applied_sequence", "gauge", "Newest delta fully applied to the version's store.",
         [](const VersionMetrics& v) { return double(v.delta_sequence); }},
        {"rs_host_deltas_applied_total", "counter", "Deltas applied by the loaded instance.",
         [](const VersionMetrics& v) { return double(v.deltas_applied); }},
        {"rs_host_deltas_followed_total", "counter",
         "Deltas another host wrote into the shared (Redis) tier, followed by this instance.",
         [](const VersionMetrics& v) { return double(v.deltas_followed); }},
        {"rs_host_delta_rows_applied_total", "counter", "Embedding rows written by applied deltas.",
         [](const VersionMetrics& v) { return double(v.delta_rows); }},
        {"rs_host_deltas_refused_total", "counter", "Deltas refused (gap, other base, damaged, a dense stage that cannot serve).",
         [](const VersionMetrics& v) { return double(v.deltas_refused); }},
        {"rs_host_delta_failures_total", "counter", "Delta applies that failed while writing.",
         [](const VersionMetrics& v) { return double(v.delta_failures); }},
        {"rs_host_deltas_pending", "gauge", "Complete deltas on disk not applied yet.",
         [](const VersionMetrics& v) { return double(v.deltas_pending); }},
        {"rs_host_delta_apply_seconds", "gauge", "Duration of the newest delta apply.",
         [](const VersionMetrics& v) { return v.delta_apply_seconds; }},
    };
    bool any = false;
    for (const auto& m : models)
      for (const auto& v : m.versions) any = any || v.has_deltas;
    if (any)
      for (const auto& c : dcols) {
        Header(out, c.name, c.type, c.help);
        for (const auto& m : models)
          for (const auto& v : m.versions)
            if (v.has_deltas) out += std::string(c.name) + "{" + MV(m.name, v.version) + "} " + Num(c.get(v)) + "\n";
      }
  }
  std::vector<TierStats> tiers;
  for (const auto& m : models)
    for (const auto& v : m.versions)
      for (auto& t : StoreStats(m.name, v.version, v.stats_json)) tiers.push_back(std::move(t));
  if (!tiers.empty()) {
    struct Col {
      const char* name;
      const char* type;
      const char* help;
      double TierStats::*field;
    };
    const Col cols[] = {
        {"rs_host_store_rows", "gauge", "Rows of the bundle's store table.", &TierStats::rows},
        {"rs_host_store_dram_rows", "gauge", "Rows resident in the DRAM tier.", &TierStats::dram_rows},
        {"rs_host_store_dram_bytes", "gauge", "Bytes resident in the DRAM tier.", &TierStats::dram_bytes},
        {"rs_host_store_dram_hits_total", "counter", "Lookups served by the DRAM tier.", &TierStats::dram_hits},
        {"rs_host_store_dram_misses_total", "counter", "Lookups the DRAM tier missed.", &TierStats::dram_misses},
        {"rs_host_store_ssd_hits_total", "counter", "Lookups served by the SSD tier.", &TierStats::ssd_hits},
        {"rs_host_store_ssd_misses_total", "counter", "Lookups the SSD tier missed.", &TierStats::ssd_misses},
        {"rs_host_store_remote_hits_total", "counter", "DRAM misses served by the Redis tier.", &TierStats::remote_hits},
        {"rs_host_store_remote_misses_total", "counter", "DRAM misses the Redis tier does not hold.", &TierStats::remote_misses},
        {"rs_host_store_remote_errors_total", "counter", "DRAM misses the Redis tier could not answer.", &TierStats::remote_errors},
        {"rs_host_store_remote_corrupt_total", "counter", "Damaged values refused from the Redis tier.", &TierStats::remote_corrupt},
    };
    for (const auto& c : cols) {
      Header(out, c.name, c.type, c.help);
      for (const auto& t : tiers) out += std::string(c.name) + "{" + t.labels + "} " + Num(t.*c.field) + "\n";
    }
  }
  std::vector<RemoteStats> remotes;
  for (const auto& m : models)
    for (const auto& v : m.versions)
      for (auto& r : RemoteStoreStats(m.name, v.version, v.stats_json)) remotes.push_back(std::move(r));
  if (!remotes.empty()) {
    struct Col {
      const char* name;
      const char* help;
      double RemoteStats::*field;
    };
    const Col cols[] = {
        {"rs_host_redis_commands_total", "Commands sent to the Redis Cluster.", &RemoteStats::commands},
        {"rs_host_redis_round_trips_total", "Pipelines sent to a Redis node and read back.", &RemoteStats::round_trips},
        {"rs_host_redis_errors_total", "Redis commands that failed.", &RemoteStats::errors},
        {"rs_host_redis_timeouts_total", "Redis connects or replies that failed or timed out.", &RemoteStats::timeouts},
        {"rs_host_redis_moved_total", "MOVED redirections followed.", &RemoteStats::moved},
        {"rs_host_redis_ask_total", "ASK redirections followed.", &RemoteStats::ask},
        {"rs_host_redis_bytes_in_total", "Reply payload bytes read from Redis.", &RemoteStats::bytes_in},
        {"rs_host_redis_bytes_out_total", "Command bytes sent to Redis.", &RemoteStats::bytes_out},
        {"rs_host_redis_key_space_switches_total", "Serving key-space switches followed.", &RemoteStats::switches},
    };
    for (const auto& c : cols) {
      Header(out, c.name, "counter", c.help);
      for (const auto& r : remotes) out += std::string(c.name) + "{" + r.labels + "} " + Num(r.*c.field) + "\n";
    }
  }
  return out;
}

std::string RenderCoreMetrics(const std::string& mode, const std::string& cpus, const std::string& shared_cpus,
                              const std::vector<CoreGauge>& models) {
  std::string out;
  Header(out, "rs_host_core_allocation_info", "gauge", "The core allocator's mode and the CPUs it divides (value 1).");
  out += "rs_host_core_allocation_info{mode=\"" + Label(mode) + "\",cpus=\"" + Label(cpus) + "\",shared_cpus=\"" +
         Label(shared_cpus) + "\"} 1\n";
  if (models.empty()) return out;
  auto M = [](const CoreGauge& g) { return "model=\"" + Label(g.model) + "\""; };
  Header(out, "rs_host_model_cores", "gauge", "Cores the model's sessions run on in the current plan.");
  for (const auto& g : models)
    out += "rs_host_model_cores{" + M(g) + ",role=\"" + Label(g.role) + "\"} " + std::to_string(g.cores) + "\n";
  Header(out, "rs_host_model_demand_cores", "gauge", "Cores the model's declared (static) or last measured (dynamic) load asks for.");
  for (const auto& g : models) out += "rs_host_model_demand_cores{" + M(g) + "} " + Num(g.demand_cores) + "\n";
  Header(out, "rs_host_model_cores_dedicated", "gauge", "1 when no other model runs on the model's cores.");
  for (const auto& g : models) out += "rs_host_model_cores_dedicated{" + M(g) + "} " + (g.dedicated ? "1" : "0") + "\n";
  Header(out, "rs_host_model_cpus_info", "gauge", "The model's CPU list in the current plan (value 1).");
  for (const auto& g : models) out += "rs_host_model_cpus_info{" + M(g) + ",cpus=\"" + Label(g.cpus) + "\"} 1\n";
  return out;
}

std::string RenderReplanMetrics(uint64_t decisions, uint64_t replans, const std::vector<MeasuredGauge>& models) {
  std::string out;
  Header(out, "rs_host_core_decisions_total", "counter", "Dynamic core allocation: re-plan decisions made (kept or changed).");
  out += "rs_host_core_decisions_total " + std::to_string(decisions) + "\n";
  Header(out, "rs_host_core_replans_total", "counter", "Dynamic core allocation: decisions that changed the plan and re-pinned.");
  out += "rs_host_core_replans_total " + std::to_string(replans) + "\n";
  auto M = [](const MeasuredGauge& g) { return "model=\"" + Label(g.model) + "\""; };
  Header(out, "rs_host_model_measured_rps", "gauge", "Requests per second over the last re-plan window.");
  for (const auto& g : models) out += "rs_host_model_measured_rps{" + M(g) + "} " + Num(g.rps) + "\n";
  Header(out, "rs_host_model_measured_cpu_ms_per_request", "gauge",
         "Calling-thread CPU milliseconds per request over the last re-plan window.");
  for (const auto& g : models) out += "rs_host_model_measured_cpu_ms_per_request{" + M(g) + "} " + Num(g.cpu_ms_per_request) + "\n";
  Header(out, "rs_host_model_measured_p99_ms", "gauge", "p99 latency estimate (histogram deltas) over the last re-plan window.");
  for (const auto& g : models) out += "rs_host_model_measured_p99_ms{" + M(g) + "} " + Num(g.p99_ms) + "\n";
  return out;
}

}  // namespace rs::host
