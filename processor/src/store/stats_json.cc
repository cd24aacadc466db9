#include "store/stats_json.h"

#include <cmath>
#include <cstdio>

#include "base/json_text.h"

namespace rs {
namespace store {
namespace {

void AppendKV(std::string& s, const char* k, uint64_t v, bool comma = true) {
  s += "\"";
  s += k;
  s += "\": ";
  s += std::to_string(v);
  if (comma) s += ", ";
}

}  // namespace

std::string StoreStatsJson(const StoreStats& s) {
  std::string j = "{\"dir\": " + JsonString(s.dir) + ", \"tiers\": " + JsonString(s.tiers) + ", ";
  AppendKV(j, "format_version", s.format_version);
  AppendKV(j, "last_sequence", s.last_sequence);
  j += "\"recovery\": \"" + s.recovery + "\", \"dropped\": [";
  for (size_t i = 0; i < s.dropped.size(); ++i) {
    const DroppedData& d = s.dropped[i];
    if (i) j += ", ";
    j += "{\"table\": " + JsonString(d.table) + ", \"file\": " + JsonString(d.file) + ", ";
    AppendKV(j, "offset", d.offset);
    AppendKV(j, "bytes", d.bytes);
    AppendKV(j, "records", d.records);
    j += "\"reason\": \"" + d.reason + "\"}";
  }
  j += "], \"tables\": {";
  bool first = true;
  for (const TableStats& t : s.tables) {
    if (!first) j += ", ";
    first = false;
    j += JsonString(t.name) + ": {";
    AppendKV(j, "dim", static_cast<uint64_t>(t.dim));
    AppendKV(j, "rows", t.rows);
    AppendKV(j, "dram_rows", t.dram_rows);
    AppendKV(j, "dram_bytes", t.dram_bytes);
    AppendKV(j, "dram_capacity_bytes", t.dram_capacity_bytes);
    AppendKV(j, "dram_hits", t.dram_hits);
    AppendKV(j, "dram_misses", t.dram_misses);
    AppendKV(j, "ssd_hits", t.ssd_hits);
    AppendKV(j, "ssd_misses", t.ssd_misses);
    AppendKV(j, "evictions", t.evictions);
    AppendKV(j, "admissions", t.admissions);
    AppendKV(j, "files", t.files);
    AppendKV(j, "disk_bytes", t.disk_bytes);
    AppendKV(j, "live_payload_bytes", t.live_payload_bytes);
    AppendKV(j, "payload_bytes_written", t.payload_bytes_written);
    AppendKV(j, "disk_bytes_written", t.disk_bytes_written);
    char wa[64];
    std::snprintf(wa, sizeof(wa), "\"write_amplification\": %.6g, ",
                  std::isfinite(t.write_amplification) ? t.write_amplification : 0.0);
    j += wa;
    AppendKV(j, "compactions", t.compactions);
    AppendKV(j, "compaction_bytes_written", t.compaction_bytes_written);
    AppendKV(j, "corrupt_records", t.corrupt_records);
    AppendKV(j, "index_bytes", t.index_bytes);
    AppendKV(j, "recovered_records", t.recovered_records);
    AppendKV(j, "truncated_bytes", t.truncated_bytes);
    AppendKV(j, "remote_hits", t.remote_hits);
    AppendKV(j, "remote_misses", t.remote_misses);
    AppendKV(j, "remote_errors", t.remote_errors);
    AppendKV(j, "remote_corrupt", t.remote_corrupt);
    AppendKV(j, "failed_lookups", t.failed_lookups, false);
    j += "}";
  }
  j += "}";
  if (!s.remote_json.empty()) j += ", \"remote\": " + s.remote_json;
  j += "}";
  return j;
}

}  // namespace store
}  // namespace rs
