#include "core/tf_protos.h"

#include <map>

#include "base/json_text.h"
#include "base/status.h"
#include "tensorflow/core/protobuf/config.pb.h"
#include "tensorflow/core/protobuf/meta_graph.pb.h"

namespace rs {
namespace {

TensorSpec SpecFrom(const std::string& alias, const tensorflow::TensorInfo& info, bool is_input) {
  TensorSpec spec;
  spec.name = alias;
  if (info.encoding_case() != tensorflow::TensorInfo::kName)
    Fail(RS_ERR_UNIMPLEMENTED, std::string("signature ") + (is_input ? "input" : "output") + " '" + alias +
                                   "' is a sparse/composite tensor, which is not supported");
  spec.tensor_name = info.name();
  spec.dtype = static_cast<int>(info.dtype());
  if (DtypeName(spec.dtype) == std::string("unknown"))
    Fail(RS_ERR_UNIMPLEMENTED, std::string("signature ") + (is_input ? "input" : "output") + " '" + alias +
                                   "' has dtype enum " + std::to_string(spec.dtype) + ", which is not supported");
  if (!info.has_tensor_shape() || info.tensor_shape().unknown_rank()) {
    spec.ndim = -1;
  } else {
    spec.ndim = info.tensor_shape().dim_size();
    for (const auto& d : info.tensor_shape().dim()) spec.shape.push_back(d.size() < 0 ? -1 : d.size());
  }
  return spec;
}

std::shared_ptr<Signature> ParseSignature(const tensorflow::MetaGraphDef& mg, const std::string& name,
                                          const std::string& dir) {
  auto it = mg.signature_def().find(name);
  if (it == mg.signature_def().end()) {
    std::vector<std::string> names;
    for (const auto& kv : mg.signature_def()) names.push_back(kv.first);
    std::sort(names.begin(), names.end());
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    Fail(RS_ERR_NOT_FOUND, "SavedModel " + dir + " has no signature '" + name + "' (signatures: " +
                               (known.empty() ? "none" : known) + ")");
  }
  auto sig = std::make_shared<Signature>();
  sig->name = name;
  for (const auto& kv : it->second.inputs()) sig->inputs.push_back(SpecFrom(kv.first, kv.second, true));
  for (const auto& kv : it->second.outputs()) sig->outputs.push_back(SpecFrom(kv.first, kv.second, false));
  auto by_name = [](const TensorSpec& a, const TensorSpec& b) { return a.name < b.name; };
  std::sort(sig->inputs.begin(), sig->inputs.end(), by_name);
  std::sort(sig->outputs.begin(), sig->outputs.end(), by_name);
  if (sig->outputs.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "signature '" + name + "' has no outputs");
  sig->Finalize();
  return sig;
}

}  // namespace

std::shared_ptr<Signature> SignatureFromMetaGraph(const void* data, size_t size, const std::string& name,
                                                  const std::string& dir) {
  tensorflow::MetaGraphDef mg;
  if (!mg.ParseFromArray(data, static_cast<int>(size)))
    Fail(RS_ERR_CORRUPTION, "could not parse the MetaGraphDef of " + dir);
  return ParseSignature(mg, name, dir);
}

std::string SessionConfigBytes(const ModelConfig& cfg, bool session_pools) {
  tensorflow::ConfigProto config;
  config.set_inter_op_parallelism_threads(cfg.inter_op_threads);
  config.set_intra_op_parallelism_threads(cfg.intra_op_threads);
  config.set_allow_soft_placement(true);
  if (session_pools) {
    for (int i = 0; i < cfg.session_num; ++i)
      config.add_session_inter_op_thread_pool()->set_num_threads(cfg.inter_op_threads);
  } else {
    config.set_use_per_session_threads(cfg.use_per_session_threads);
  }
  if (cfg.bf16)
    config.mutable_graph_options()->mutable_rewrite_options()->set_auto_mixed_precision_onednn_bfloat16(
        tensorflow::RewriterConfig::ON);
  return config.SerializeAsString();
}

std::string RunOptionsWithPool(const TF_Buffer* base, int pool) {
  tensorflow::RunOptions ro;
  if (base != nullptr && !ro.ParseFromArray(base->data, static_cast<int>(base->length)))
    Fail(RS_ERR_INTERNAL, "could not parse the run options");
  ro.set_inter_op_thread_pool(pool);
  return ro.SerializeAsString();
}

std::string FullTraceRunOptions() {
  tensorflow::RunOptions ro;
  ro.set_trace_level(tensorflow::RunOptions::FULL_TRACE);
  ro.set_output_partition_graphs(true);
  return ro.SerializeAsString();
}

std::string OpCountsJson(const TF_Buffer* run_metadata) {
  tensorflow::RunMetadata md;
  if (!md.ParseFromArray(run_metadata->data, static_cast<int>(run_metadata->length)))
    Fail(RS_ERR_INTERNAL, "could not parse RunMetadata");
  std::string out = "{\"partition_graphs\":[";
  for (int p = 0; p < md.partition_graphs_size(); ++p) {
    std::map<std::string, int> ops;
    for (const auto& node : md.partition_graphs(p).node()) ops[node.op()]++;
    if (p) out += ",";
    out += "{\"ops\":{";
    bool first = true;
    for (const auto& kv : ops) {
      if (!first) out += ",";
      first = false;
      AppendJsonString(out, kv.first);
      out += ":" + std::to_string(kv.second);
    }
    out += "}}";
  }
  out += "],\"executed\":{";
  std::map<std::string, int> executed;
  for (const auto& dev : md.step_stats().dev_stats())
    for (const auto& ns : dev.node_stats()) {
      // timeline_label is "name = Op(inputs)"; node_name alone lacks the op.
      const std::string& label = ns.timeline_label();
      size_t eq = label.find(" = "), paren = label.find('(', eq == std::string::npos ? 0 : eq);
      if (eq != std::string::npos && paren != std::string::npos) executed[label.substr(eq + 3, paren - eq - 3)]++;
    }
  bool first = true;
  for (const auto& kv : executed) {
    if (!first) out += ",";
    first = false;
    AppendJsonString(out, kv.first);
    out += ":" + std::to_string(kv.second);
  }
  out += "}}";
  return out;
}

}  // namespace rs
