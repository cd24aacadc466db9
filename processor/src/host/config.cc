#include "host/config.h"

#include <google/protobuf/json/json.h>
#include <google/protobuf/struct.pb.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "base/status.h"
#include "recstrata/host/host_config.pb.h"

namespace rs::host {

namespace {

[[noreturn]] void Bad(const std::string& msg) { Fail(RS_ERR_INVALID_ARGUMENT, "host config: " + msg); }

std::string MergedConfig(const google::protobuf::Struct& base, const google::protobuf::Struct& own) {
  google::protobuf::Struct merged = base;
  for (const auto& [k, v] : own.fields()) (*merged.mutable_fields())[k] = v;
  if (merged.fields().empty()) return "";
  std::string out;
  auto st = google::protobuf::json::MessageToJsonString(merged, &out);
  if (!st.ok()) Bad("model_config cannot be written as JSON: " + std::string(st.message()));
  return out;
}

// Removes "model_config" from `obj` (absent: an empty object). Not an
// object: an error naming `where`.
google::protobuf::Struct TakeModelConfig(google::protobuf::Struct* obj, const std::string& where) {
  google::protobuf::Struct out;
  auto it = obj->mutable_fields()->find("model_config");
  if (it == obj->mutable_fields()->end()) return out;
  if (it->second.has_struct_value()) {
    out = it->second.struct_value();
  } else if (!it->second.has_null_value()) {
    Bad(where + ".model_config must be a JSON object");
  }
  obj->mutable_fields()->erase(it);
  return out;
}

}  // namespace

HostSpec ParseHostConfig(const char* json) {
  if (json == nullptr || *json == '\0') Bad("config JSON is empty (it must list \"models\")");
  google::protobuf::Struct root;
  auto st = google::protobuf::json::JsonStringToMessage(json, &root);
  if (!st.ok()) Bad("not a JSON object: " + std::string(st.message()));
  google::protobuf::Struct base_config = TakeModelConfig(&root, "config");
  std::vector<google::protobuf::Struct> model_configs;
  auto models = root.mutable_fields()->find("models");
  if (models != root.mutable_fields()->end() && models->second.has_list_value()) {
    auto* list = models->second.mutable_list_value();
    for (int i = 0; i < list->values_size(); ++i) {
      auto* v = list->mutable_values(i);
      if (!v->has_struct_value()) Bad("models[" + std::to_string(i) + "] must be a JSON object");
      model_configs.push_back(TakeModelConfig(v->mutable_struct_value(), "models[" + std::to_string(i) + "]"));
    }
  }
  std::string rest;
  st = google::protobuf::json::MessageToJsonString(root, &rest);
  if (!st.ok()) Bad(std::string(st.message()));
  recstrata::host::HostConfig pb;
  st = google::protobuf::json::JsonStringToMessage(rest, &pb);
  if (!st.ok()) Bad(std::string(st.message()));
  HostSpec spec;
  if (!std::isfinite(pb.poll_interval_seconds()) || pb.poll_interval_seconds() < 0)
    Bad("poll_interval_seconds must be >= 0");
  spec.poll_seconds = pb.poll_interval_seconds();
  if (pb.has_retry_seconds()) {
    if (!std::isfinite(pb.retry_seconds()) || pb.retry_seconds() < 0) Bad("retry_seconds must be >= 0");
    spec.retry_seconds = pb.retry_seconds();
  }
  if (pb.has_load_nice()) {
    if (pb.load_nice() < 0 || pb.load_nice() > 19) Bad("load_nice must be in 0..19");
    spec.load_nice = pb.load_nice();
  }
  const std::string& alloc = pb.core_allocation();
  if (!alloc.empty() && alloc != "off" && alloc != "static" && alloc != "dynamic")
    Bad("core_allocation must be \"off\", \"static\" or \"dynamic\", not \"" + alloc + "\"");
  if (alloc != "dynamic" && (pb.has_core_replan_interval_ms() || pb.has_core_hysteresis()))
    Bad(std::string(pb.has_core_replan_interval_ms() ? "core_replan_interval_ms" : "core_hysteresis") +
        " is only used with core_allocation \"dynamic\"");
  if (pb.has_core_replan_interval_ms()) {
    uint32_t ms = pb.core_replan_interval_ms();
    if (ms != 0 && (ms < 10 || ms > 3600000)) Bad("core_replan_interval_ms must be 0 (no re-plan thread) or 10..3600000");
    spec.cores.replan_interval_ms = ms;
  }
  if (pb.has_core_hysteresis()) {
    double h = pb.core_hysteresis();
    if (!(h >= 0 && h <= 10)) Bad("core_hysteresis must be in 0..10");
    spec.cores.hysteresis = h;
  }
  spec.cores.mode = alloc.empty() ? "off" : alloc;
  spec.cores.cpus = pb.core_cpus();
  if (pb.has_core_target_utilization()) {
    double u = pb.core_target_utilization();
    if (!(u > 0 && u <= 1)) Bad("core_target_utilization must be in (0, 1]");
    spec.cores.target_utilization = u;
  }
  if (pb.has_min_shared_cores()) {
    if (pb.min_shared_cores() < 0) Bad("min_shared_cores must be >= 0");
    spec.cores.min_shared_cores = pb.min_shared_cores();
  }
  if (pb.models().empty()) Bad("\"models\" is empty: list at least one {name, base_path}");
  std::set<std::string> names;
  for (int i = 0; i < pb.models_size(); ++i) {
    const auto& m = pb.models(i);
    if (m.name().empty() || m.name().find_first_of("/:") != std::string::npos)
      Bad("model name must be non-empty without '/' or ':': \"" + m.name() + "\"");
    if (!names.insert(m.name()).second) Bad("model \"" + m.name() + "\" is listed twice");
    if (m.base_path().empty()) Bad("model \"" + m.name() + "\" has no base_path");
    ModelSpec ms;
    ms.name = m.name();
    std::error_code ec;
    auto abs = std::filesystem::absolute(m.base_path(), ec);
    ms.base_path = ec ? m.base_path() : abs.lexically_normal().string();
    ms.policy = PolicyFromProto(m.version_policy(), m.name());
    ms.config_json = MergedConfig(base_config, model_configs[i]);
    const auto& b = m.has_batching() ? m.batching() : pb.batching();
    if (b.max_batch_size() > (1u << 20)) Bad("model \"" + m.name() + "\": batching.max_batch_size is too large");
    if (b.max_queue_delay_us() > 10000000u)
      Bad("model \"" + m.name() + "\": batching.max_queue_delay_us is over 10 s");
    ms.batching.max_batch_size = b.max_batch_size() > 1 ? static_cast<int>(b.max_batch_size()) : 0;
    ms.batching.max_queue_delay_us = b.max_queue_delay_us();
    const auto& c = m.cores();
    const std::string where = "model \"" + m.name() + "\": cores.";
    if (!c.role().empty() && c.role() != "baseline" && c.role() != "experiment")
      Bad(where + "role must be \"baseline\" or \"experiment\", not \"" + c.role() + "\"");
    if (!(c.requests_per_second() >= 0) || !std::isfinite(c.requests_per_second()))
      Bad(where + "requests_per_second must be finite and >= 0");
    if (!(c.cpu_ms_per_request() >= 0) || !std::isfinite(c.cpu_ms_per_request()))
      Bad(where + "cpu_ms_per_request must be finite and >= 0");
    if (!(c.latency_target_ms() >= 0) || !std::isfinite(c.latency_target_ms()))
      Bad(where + "latency_target_ms must be finite and >= 0");
    if (c.has_min_cores() && c.min_cores() < 1) Bad(where + "min_cores must be >= 1");
    ms.cores.set_name(m.name());
    ms.cores.set_role(c.role().empty() ? "experiment" : c.role());
    ms.cores.set_requests_per_second(c.requests_per_second());
    ms.cores.set_cpu_ms_per_request(c.cpu_ms_per_request());
    ms.cores.set_latency_target_ms(c.latency_target_ms());
    if (c.has_min_cores()) ms.cores.set_min_cores(c.min_cores());
    ms.cores.set_fixed_cpus(c.fixed_cpus());
    spec.models.push_back(std::move(ms));
  }
  return spec;
}

}  // namespace rs::host
