// BundleInputStage, reporting half: lifetime and the stats/describe JSON.
// The plan is built in bundle_plan.cc, requests run through bundle_pooling.cc.
#include "bundle/bundle_stage.h"

#include <string>

#include "base/json_text.h"
#include "base/status.h"

namespace rs {
namespace bundle {

BundleInputStage::~BundleInputStage() = default;

std::string BundleInputStage::StatsJson() const {
  std::string j = "{\"requests\":" + std::to_string(requests_.load()) +
                  ",\"missing_rows\":" + std::to_string(missing_rows_.load()) + ",\"features\":[";
  for (size_t i = 0; i < features_.size(); ++i) {
    if (i) j += ",";
    j += "{\"name\":";
    AppendJsonString(j, features_[i]->name);
    j += ",\"values\":" + std::to_string(features_[i]->values.load()) + "}";
  }
  j += "],\"tables\":[";
  uint64_t tot_dram = 0, tot_ssd = 0, tot_remote = 0, tot_miss = 0;
  for (size_t i = 0; i < tables_.size(); ++i) {
    const TableRt& t = *tables_[i];
    if (i) j += ",";
    j += "{\"name\":";
    AppendJsonString(j, t.name);
    j += ",\"subtables\":[";
    uint64_t dh = 0, sh = 0, rh = 0, ms = 0;
    for (size_t s = 0; s < t.subs.size(); ++s) {
      const auto st = t.subs[s].table->Stats();
      if (s) j += ",";
      j += "{\"store_table\":";
      AppendJsonString(j, t.subs[s].store_table);
      j += ",\"rows\":" + std::to_string(st.rows) + ",\"dram_rows\":" + std::to_string(st.dram_rows) +
           ",\"dram_bytes\":" + std::to_string(st.dram_bytes) +
           ",\"dram_hits\":" + std::to_string(st.dram_hits) +
           ",\"dram_misses\":" + std::to_string(st.dram_misses) +
           ",\"ssd_hits\":" + std::to_string(st.ssd_hits) +
           ",\"ssd_misses\":" + std::to_string(st.ssd_misses) +
           ",\"remote_hits\":" + std::to_string(st.remote_hits) +
           ",\"remote_misses\":" + std::to_string(st.remote_misses) +
           ",\"remote_errors\":" + std::to_string(st.remote_errors) +
           ",\"remote_corrupt\":" + std::to_string(st.remote_corrupt) + "}";
      dh += st.dram_hits;
      sh += st.ssd_hits;
      rh += st.remote_hits;
      ms += st.ssd_misses + st.remote_misses;
    }
    j += "],\"dram_hits\":" + std::to_string(dh) + ",\"ssd_hits\":" + std::to_string(sh) +
         ",\"remote_hits\":" + std::to_string(rh) + ",\"missing\":" + std::to_string(ms) + "}";
    tot_dram += dh;
    tot_ssd += sh;
    tot_remote += rh;
    tot_miss += ms;
  }
  const double all = static_cast<double>(tot_dram + tot_ssd + tot_remote + tot_miss);
  j += "],\"dram_hits\":" + std::to_string(tot_dram) + ",\"ssd_hits\":" + std::to_string(tot_ssd) +
       ",\"remote_hits\":" + std::to_string(tot_remote) +
       ",\"dram_hit_rate\":" + std::to_string(all > 0 ? tot_dram / all : 0.0);
  // Tiers "dram+redis": the Redis client's counters (round trips, bytes, errors, key space).
  if (store_) {
    const std::string remote = store_->Stats().remote_json;
    if (!remote.empty()) j += ",\"remote\":" + remote;
  }
  j += "}";
  return j;
}

std::string BundleInputStage::DescribeJson() const {
  std::string j = "{\"dir\":";
  AppendJsonString(j, bundle_dir_);
  j += ",\"format_version\":" + std::to_string(manifest_.format_version()) + ",\"features\":[";
  for (size_t i = 0; i < features_.size(); ++i) {
    const FeatureRt& f = *features_[i];
    if (i) j += ",";
    j += "{\"name\":";
    AppendJsonString(j, f.name);
    j += ",\"id_type\":";
    AppendJsonString(j, f.is_string ? "string" : "int64");
    j += ",\"layout\":";
    AppendJsonString(j, f.multivalued ? "padded[B,k]+lengths[B]" : "[B]");
    if (f.multivalued) {
      j += ",\"lengths_input\":";
      AppendJsonString(j, public_.inputs[f.lengths_input].name);
    }
    j += ",\"table\":";
    AppendJsonString(j, f.table->name);
    j += ",\"dim\":" + std::to_string(f.table->dim) + "}";
  }
  j += "],\"tables\":[";
  for (size_t i = 0; i < tables_.size(); ++i) {
    const TableRt& t = *tables_[i];
    if (i) j += ",";
    j += "{\"name\":";
    AppendJsonString(j, t.name);
    j += ",\"scheme\":";
    AppendJsonString(j, manifest_.tables(static_cast<int>(i)).key_scheme().kind());
    j += ",\"subtable_rows\":[";
    for (size_t s = 0; s < t.subs.size(); ++s) {
      if (s) j += ",";
      j += std::to_string(t.subs[s].rows);
    }
    j += "]}";
  }
  j += "]}";
  return j;
}

}  // namespace bundle
}  // namespace rs
