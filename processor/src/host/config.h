// The config JSON of rs_host_open (HostConfig in
// processor/proto/recstrata/host/host_config.proto), validated: every error
// is an rs::Error RS_ERR_INVALID_ARGUMENT whose message names the field.
#ifndef RECSTRATA_HOST_CONFIG_H_
#define RECSTRATA_HOST_CONFIG_H_

#include <string>
#include <vector>

#include "host/batcher.h"
#include "host/source.h"

namespace rs::host {

struct ModelSpec {
  std::string name;
  std::string base_path;  // absolute
  VersionPolicy policy;
  std::string config_json;  // for Model::Open: host-wide keys merged under the model's
  BatchingOptions batching;  // max_batch_size <= 1: off
};

struct HostSpec {
  std::vector<ModelSpec> models;
  double poll_seconds = 0;  // 0: no discovery thread
  double retry_seconds = 30;
  int load_nice = 10;
};

HostSpec ParseHostConfig(const char* json);

}  // namespace rs::host

#endif  // RECSTRATA_HOST_CONFIG_H_
