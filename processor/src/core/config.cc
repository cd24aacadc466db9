#include "core/config.h"

#include <google/protobuf/json/json.h>

#include <cstdlib>

#include "base/status.h"
#include "core/cpu_features.h"
#include "recstrata/config/model_config.pb.h"

namespace rs {

const char* PolicyName(SessionPolicy p) {
  switch (p) {
    case SessionPolicy::kMod: return "MOD";
    case SessionPolicy::kRoundRobin: return "RR";
    case SessionPolicy::kLeastLoaded: return "LEAST_LOADED";
  }
  return "?";
}

static std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

static std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string::npos ? std::string::npos : pos - start));
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return parts;
}

static int ParseCpu(const std::string& text, const std::string& whole) {
  std::string t = Trim(text);
  if (t.empty() || t.size() > 6 || t.find_first_not_of("0123456789") != std::string::npos)
    Fail(RS_ERR_INVALID_ARGUMENT, "config: malformed cpusets \"" + whole + "\" (expected e.g. \"0-1;2-3\")");
  int v = std::atoi(t.c_str());
  if (v >= CPU_SETSIZE) Fail(RS_ERR_INVALID_ARGUMENT, "config: cpu id " + t + " in cpusets is too large");
  return v;
}

std::vector<cpu_set_t> ParseCpusets(const std::string& text) {
  std::vector<cpu_set_t> sets;
  if (Trim(text).empty()) return sets;
  for (const std::string& group : Split(text, ';')) {
    if (Trim(group).empty()) continue;  // tolerate a trailing ';'
    cpu_set_t set;
    CPU_ZERO(&set);
    for (const std::string& item : Split(group, ',')) {
      size_t dash = item.find('-');
      if (dash == std::string::npos) {
        CPU_SET(ParseCpu(item, text), &set);
      } else {
        int lo = ParseCpu(item.substr(0, dash), text), hi = ParseCpu(item.substr(dash + 1), text);
        if (lo > hi) Fail(RS_ERR_INVALID_ARGUMENT, "config: empty cpu range \"" + Trim(item) + "\" in cpusets");
        for (int c = lo; c <= hi; ++c) CPU_SET(c, &set);
      }
    }
    sets.push_back(set);
  }
  return sets;
}

ModelConfig ParseModelConfig(const char* json) {
  ModelConfig cfg;
  std::string text = json ? Trim(json) : "";
  cfg.raw_json = text;
  if (text.empty()) return cfg;
  recstrata::config::ModelConfig pb;
  google::protobuf::json::ParseOptions options;
  options.ignore_unknown_fields = true;
  auto status = google::protobuf::json::JsonStringToMessage(text, &pb, options);
  if (!status.ok())
    Fail(RS_ERR_INVALID_ARGUMENT, "config: invalid model_config JSON: " + std::string(status.message()));

  if (!pb.signature_name().empty()) cfg.signature_name = pb.signature_name();
  cfg.savedmodel_dir = pb.savedmodel_dir();
  if (pb.has_session_num()) {
    if (pb.session_num() < 1 || pb.session_num() > 256)
      Fail(RS_ERR_INVALID_ARGUMENT, "config: session_num must be in 1..256, got " + std::to_string(pb.session_num()));
    cfg.session_num = pb.session_num();
  }
  const std::string& policy = pb.select_session_policy();
  if (policy.empty() || policy == "MOD") {
    cfg.policy = SessionPolicy::kMod;
  } else if (policy == "RR") {
    cfg.policy = SessionPolicy::kRoundRobin;
  } else if (policy == "LEAST_LOADED") {
    cfg.policy = SessionPolicy::kLeastLoaded;
  } else {
    Fail(RS_ERR_INVALID_ARGUMENT,
         "config: select_session_policy must be \"MOD\", \"RR\" or \"LEAST_LOADED\", got \"" + policy + "\"");
  }
  cfg.use_per_session_threads = pb.use_per_session_threads();
  cfg.cpusets_text = pb.cpusets();
  cfg.cpusets = ParseCpusets(pb.cpusets());
  if (!cfg.cpusets.empty() && static_cast<int>(cfg.cpusets.size()) != cfg.session_num)
    Fail(RS_ERR_INVALID_ARGUMENT, "config: cpusets has " + std::to_string(cfg.cpusets.size()) +
                                      " core sets but session_num is " + std::to_string(cfg.session_num));
  if (pb.has_inter_op_parallelism_threads()) {
    if (pb.inter_op_parallelism_threads() > 1024)
      Fail(RS_ERR_INVALID_ARGUMENT, "config: inter_op_parallelism_threads is too large");
    cfg.inter_op_threads = pb.inter_op_parallelism_threads();
  }
  if (pb.has_intra_op_parallelism_threads()) {
    if (pb.intra_op_parallelism_threads() < 0 || pb.intra_op_parallelism_threads() > 1024)
      Fail(RS_ERR_INVALID_ARGUMENT, "config: intra_op_parallelism_threads must be in 0..1024");
    cfg.intra_op_threads = pb.intra_op_parallelism_threads();
  }
  cfg.warmup_file_name = pb.warmup_file_name();
  if (pb.has_warmup_runs()) {
    if (pb.warmup_runs() < 0 || pb.warmup_runs() > 10000)
      Fail(RS_ERR_INVALID_ARGUMENT, "config: warmup_runs must be in 0..10000");
    cfg.warmup_runs = pb.warmup_runs();
  }
  if (pb.has_split_min_batch()) {
    if (pb.split_min_batch() < 0)
      Fail(RS_ERR_INVALID_ARGUMENT, "config: split_min_batch must be >= 0");
    cfg.split_min_batch = pb.split_min_batch();
  }
  if (pb.has_split_parts()) {
    if (pb.split_parts() < 1 || pb.split_parts() > 64)
      Fail(RS_ERR_INVALID_ARGUMENT, "config: split_parts must be in 1..64");
    cfg.split_parts = pb.split_parts();
  }
  if (!pb.serialize_protocol().empty() && pb.serialize_protocol() != "protobuf")
    Fail(RS_ERR_INVALID_ARGUMENT,
         "config: serialize_protocol \"" + pb.serialize_protocol() + "\" is not supported (only \"protobuf\")");
  if (pb.precision() == "bf16") {
    if (!CpuHasBf16())
      Fail(RS_ERR_FAILED_PRECONDITION,
           "config: precision \"bf16\" needs a CPU with AVX512-BF16 or AMX-BF16, and this one has neither");
    cfg.bf16 = true;
  } else if (!pb.precision().empty() && pb.precision() != "fp32") {
    Fail(RS_ERR_INVALID_ARGUMENT, "config: precision must be \"fp32\" or \"bf16\", got \"" + pb.precision() + "\"");
  }
  if (pb.graph_rewrite() == "on") {
    cfg.graph_rewrite = true;
  } else if (pb.graph_rewrite() == "off") {
    cfg.graph_rewrite = false;
  } else if (!pb.graph_rewrite().empty()) {
    Fail(RS_ERR_INVALID_ARGUMENT,
         "config: graph_rewrite must be \"on\" or \"off\", got \"" + pb.graph_rewrite() + "\"");
  }
  if (!pb.tags().empty()) {
    cfg.tags.clear();
    for (const std::string& t : Split(pb.tags(), ',')) {
      std::string tt = Trim(t);
      if (!tt.empty()) cfg.tags.push_back(tt);
    }
  }
  return cfg;
}

}  // namespace rs
