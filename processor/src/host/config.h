// The config JSON of rs_host_open (HostConfig in
// processor/proto/recstrata/host/host_config.proto), validated: every error
// is an rs::Error RS_ERR_INVALID_ARGUMENT whose message names the field.
#ifndef RECSTRATA_HOST_CONFIG_H_
#define RECSTRATA_HOST_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "host/batcher.h"
#include "host/source.h"
#include "recstrata/config/core_plan.pb.h"

namespace rs::host {

struct ModelSpec {
  std::string name;
  std::string base_path;  // absolute
  VersionPolicy policy;
  std::string config_json;  // for Model::Open: host-wide keys merged under the model's
  BatchingOptions batching;  // max_batch_size <= 1: off
  // The model as the core allocator sees it (name set; p99_ms unused).
  recstrata::config::ModelDemand cores;
};

// HostConfig's allocator fields (host/core_allocation.h).
struct CoreOptions {
  std::string mode = "off";  // "off" | "static" | "dynamic"
  std::string cpus;          // "": the process affinity
  double target_utilization = 0;  // 0: the allocator's default
  int min_shared_cores = -1;      // < 0: the allocator's default
  // Dynamic mode (host/core_replanner.h).
  int64_t replan_interval_ms = 1000;  // 0: no re-plan thread
  double hysteresis = -1;             // < 0: the allocator's default
};

struct HostSpec {
  std::vector<ModelSpec> models;
  double poll_seconds = 0;  // 0: no discovery thread
  double retry_seconds = 30;
  int load_nice = 10;
  CoreOptions cores;
};

HostSpec ParseHostConfig(const char* json);

}  // namespace rs::host

#endif  // RECSTRATA_HOST_CONFIG_H_
