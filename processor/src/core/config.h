// Model configuration: the model_config JSON of rs_model_open / DeepRec's
// initialize(), validated and with defaults applied.
#ifndef RECSTRATA_CORE_CONFIG_H_
#define RECSTRATA_CORE_CONFIG_H_

#include <sched.h>

#include <string>
#include <vector>

namespace rs {

enum class SessionPolicy { kMod, kRoundRobin, kLeastLoaded };

const char* PolicyName(SessionPolicy p);

struct ModelConfig {
  std::string signature_name = "serving_default";
  std::string savedmodel_dir;
  int session_num = 1;
  SessionPolicy policy = SessionPolicy::kMod;
  bool use_per_session_threads = false;
  std::string cpusets_text;
  std::vector<cpu_set_t> cpusets;  // empty, or one per session
  int inter_op_threads = -1;       // < 0: inline in the caller's thread
  int intra_op_threads = 1;
  std::string warmup_file_name;
  int warmup_runs = 5;
  int split_min_batch = 64;  // bundles: split calls of >= this many rows (0: never)
  int split_parts = 0;       // parts per split call (0: allowed CPUs, max 8; 1: never)
  std::vector<std::string> tags = {"serve"};
  bool bf16 = false;         // precision "bf16": oneDNN auto mixed precision
  bool graph_rewrite = false;  // graph_rewrite "on": core/graph_rewrite.h at load
  std::string raw_json;  // the text given (for bundle loaders)
};

// Parses `json` (NULL or empty: all defaults). Throws rs::Error
// RS_ERR_INVALID_ARGUMENT with the parser's message on malformed input.
ModelConfig ParseModelConfig(const char* json);

// Parses "0-1;2-3" / "0,2;1,3" into one cpu_set_t per ';' group.
// Throws RS_ERR_INVALID_ARGUMENT on malformed text or cpu ids >= CPU_SETSIZE.
std::vector<cpu_set_t> ParseCpusets(const std::string& text);

}  // namespace rs

#endif  // RECSTRATA_CORE_CONFIG_H_
