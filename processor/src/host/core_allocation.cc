#include "host/core_allocation.h"

#include <google/protobuf/json/json.h>
#include <google/protobuf/struct.pb.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "base/json_text.h"
#include "base/status.h"
#include "host/metrics.h"
#include "sched/core_plan.h"
#include "sched/cpu_list.h"

namespace rs::host {

namespace {

namespace pb = ::recstrata::config;
using google::protobuf::Struct;

constexpr int kMaxSplitParts = 8;  // the library's default cap (core/model.cc)

[[noreturn]] void Bad(rs_status code, const std::string& msg) { Fail(code, "host core allocation: " + msg); }

// The model's merged model_config as a Struct ({} for ""). Malformed JSON is
// left to the load to report: it fails that version, not the host.
bool ParseConfig(const std::string& json, Struct* out) {
  if (json.empty()) return true;
  return google::protobuf::json::JsonStringToMessage(json, out).ok();
}

int SessionNum(const Struct& cfg) {
  auto it = cfg.fields().find("session_num");
  if (it == cfg.fields().end() || !it->second.has_number_value()) return 1;
  double n = it->second.number_value();
  // An invalid count fails the load with the library's message; plan one set.
  return n >= 1 && n <= 256 && n == std::floor(n) ? static_cast<int>(n) : 1;
}

std::string Repeat(const std::string& cpus, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += (i ? ";" : "") + cpus;
  return out;
}

}  // namespace

CoreAllocation AllocateCores(std::vector<ModelSpec>* models, const CoreOptions& options) {
  CoreAllocation out;
  out.mode = options.mode;
  if (options.mode == "off") return out;
  const bool dynamic = options.mode == "dynamic";
  if (options.mode != "static" && !dynamic)
    Bad(RS_ERR_INVALID_ARGUMENT, "mode must be \"off\", \"static\" or \"dynamic\", not \"" + options.mode + "\"");

  const std::vector<int> allowed = AllowedCpus();
  std::vector<int> pool = options.cpus.empty() ? allowed : ParseCpuList(options.cpus, "host config: core_cpus");
  if (pool.empty()) Bad(RS_ERR_INVALID_ARGUMENT, "core_cpus is empty");
  const std::set<int> allowed_set(allowed.begin(), allowed.end());
  for (int c : pool)
    if (!allowed_set.count(c))
      Bad(RS_ERR_INVALID_ARGUMENT, "core_cpus lists cpu " + std::to_string(c) +
                                       ", which this process may not run on (allowed: " + FormatCpuList(allowed) + ")");
  out.cpus = FormatCpuList(pool);

  pb::CorePlanRequest req;
  req.set_mode("static");
  req.set_cpus(out.cpus);
  if (options.target_utilization > 0) req.set_target_utilization(options.target_utilization);
  if (options.min_shared_cores >= 0) req.set_min_shared_cores(options.min_shared_cores);
  std::vector<Struct> configs(models->size());
  std::vector<bool> parsed(models->size()), own_cpusets(models->size());
  for (size_t i = 0; i < models->size(); ++i) {
    ModelSpec& m = (*models)[i];
    pb::ModelDemand d = m.cores;
    parsed[i] = ParseConfig(m.config_json, &configs[i]);
    auto cs = configs[i].fields().find("cpusets");
    if (parsed[i] && cs != configs[i].fields().end()) {
      // The user pinned this model: plan it as fixed on the union of its sets.
      if (!cs->second.has_string_value())
        Bad(RS_ERR_INVALID_ARGUMENT, "model \"" + m.name + "\": model_config.cpusets must be a string like \"0-1;2-3\"");
      if (!d.fixed_cpus().empty())
        Bad(RS_ERR_INVALID_ARGUMENT, "model \"" + m.name + "\" sets both cores.fixed_cpus and model_config.cpusets; keep one");
      std::string text = cs->second.string_value();
      std::replace(text.begin(), text.end(), ';', ',');
      d.set_fixed_cpus(FormatCpuList(ParseCpuList(text, ("host config: model \"" + m.name + "\" model_config.cpusets").c_str())));
      own_cpusets[i] = true;
    }
    *req.add_models() = std::move(d);
  }
  try {
    out.plan = PlanCores(req);  // dynamic mode starts from the static plan of the declared traffic
  } catch (const Error& e) {
    Bad(e.code(), e.what());
  }
  out.request = req;
  if (dynamic) {
    out.request.set_mode("dynamic");
    if (options.hysteresis >= 0) out.request.set_hysteresis(options.hysteresis);
    out.plan.set_mode("dynamic");  // so that the first re-plan may keep it
    std::string sum = out.plan.summary();
    if (sum.rfind("static: ", 0) == 0) sum = sum.substr(8);
    out.plan.set_summary("dynamic (at open, from the declared traffic): " + sum);
  }

  for (size_t i = 0; i < models->size(); ++i) {
    ModelSpec& m = (*models)[i];
    pb::CoreAssignment* a = out.plan.mutable_models(static_cast<int>(i));
    CoreAllocation::Applied ap;
    if (own_cpusets[i]) {
      ap.source = "model_config";
      ap.cpusets = configs[i].fields().at("cpusets").string_value();
      a->set_reason("fixed: model_config sets cpusets (opted out of the allocator)");
      out.applied.push_back(ap);
      continue;
    }
    ap.source = m.cores.fixed_cpus().empty() ? "allocator" : "fixed_cpus";
    if (!parsed[i]) {  // the load will report the malformed model_config
      a->set_reason(a->reason() + "; not applied: model_config is not a JSON object");
      out.applied.push_back(ap);
      continue;
    }
    Struct& cfg = configs[i];
    if (dynamic && ap.source == "allocator") {
      auto io = cfg.fields().find("inter_op_parallelism_threads");
      if (io != cfg.fields().end() && io->second.has_number_value() && io->second.number_value() >= 0)
        Bad(RS_ERR_INVALID_ARGUMENT, "model \"" + m.name + "\": core_allocation \"dynamic\" re-pins only inline sessions, "
            "but its model_config sets inter_op_parallelism_threads >= 0 (pool threads are not re-pinned); "
            "drop it, give the model cores.fixed_cpus, or use \"static\"");
    }
    ap.sessions = SessionNum(cfg);
    ap.cpusets = Repeat(a->cpus(), ap.sessions);
    ap.split_parts = std::min(a->cores(), kMaxSplitParts);
    auto sp = cfg.fields().find("split_parts");
    // A malformed split_parts of the user's stays, for the load to report.
    bool user_bad = sp != cfg.fields().end() && (!sp->second.has_number_value() || !(sp->second.number_value() >= 1));
    if (sp != cfg.fields().end() && !user_bad)
      ap.split_parts = std::min(ap.split_parts, static_cast<int>(sp->second.number_value()));
    if (user_bad) ap.split_parts = 0;
    (*cfg.mutable_fields())["cpusets"].set_string_value(ap.cpusets);
    if (!user_bad) (*cfg.mutable_fields())["split_parts"].set_number_value(ap.split_parts);
    std::string json;
    if (!google::protobuf::json::MessageToJsonString(cfg, &json).ok())
      Bad(RS_ERR_INTERNAL, "model \"" + m.name + "\": model_config cannot be written as JSON");
    m.config_json = std::move(json);
    out.applied.push_back(ap);
  }
  return out;
}

std::string CoreAllocation::StatusJson(const std::vector<std::string>& per_model, const std::string& extra) const {
  std::string o = "{\"mode\":" + JsonString(mode) + ",\"cpus\":" + JsonString(cpus);
  o += ",\"shared_cpus\":" + JsonString(plan.shared_cpus()) + ",\"summary\":" + JsonString(plan.summary());
  o += ",\"models\":[";
  for (int i = 0; i < plan.models_size(); ++i) {
    const pb::CoreAssignment& a = plan.models(i);
    const Applied& ap = applied[static_cast<size_t>(i)];
    char demand[32];
    std::snprintf(demand, sizeof demand, "%.3f", a.demand_cores());
    o += std::string(i ? "," : "") + "{\"name\":" + JsonString(a.name()) + ",\"role\":" + JsonString(a.role());
    o += ",\"cpus\":" + JsonString(a.cpus()) + ",\"cores\":" + std::to_string(a.cores());
    o += std::string(",\"dedicated\":") + (a.dedicated() ? "true" : "false") + ",\"demand_cores\":" + demand;
    o += ",\"reason\":" + JsonString(a.reason()) + ",\"source\":" + JsonString(ap.source);
    o += ",\"cpusets\":" + JsonString(ap.cpusets) + ",\"split_parts\":" + std::to_string(ap.split_parts);
    if (static_cast<size_t>(i) < per_model.size()) o += per_model[static_cast<size_t>(i)];
    o += "}";
  }
  o += "]" + extra + "}";
  return o;
}

std::string CoreAllocation::MetricsText() const {
  std::vector<CoreGauge> gauges;
  for (const auto& a : plan.models())
    gauges.push_back({a.name(), a.role(), a.cpus(), a.cores(), a.demand_cores(), a.dedicated()});
  return RenderCoreMetrics(mode, cpus, plan.shared_cpus(), gauges);
}

LoadedLayout LayoutOf(const Model& model) {
  LoadedLayout out;
  Struct root;
  if (!google::protobuf::json::JsonStringToMessage(model.DescribeJson(), &root).ok()) return out;
  auto split = root.fields().find("batch_split");
  if (split != root.fields().end() && split->second.has_struct_value()) {
    auto parts = split->second.struct_value().fields().find("parts");
    if (parts != split->second.struct_value().fields().end()) out.split_parts = static_cast<int>(parts->second.number_value());
  }
  auto g = root.fields().find("session_group");
  if (g == root.fields().end() || !g->second.has_struct_value()) return out;
  auto s = g->second.struct_value().fields().find("sessions");
  if (s == g->second.struct_value().fields().end()) return out;
  for (const auto& v : s->second.list_value().values()) {
    auto c = v.struct_value().fields().find("cpus");
    out.session_cpus.push_back(c == v.struct_value().fields().end() ? "" : c->second.string_value());
  }
  return out;
}

}  // namespace rs::host
