// The host's core allocator (docs/host.md "Cores"): turns the host config's
// per-model core specs into a CorePlanRequest, plans it with PlanCores
// (sched/core_plan.h, the seed's rule) and rewrites each model's
// model_config so that every version it loads runs on its assignment:
// `cpusets` (the model's CPU set once per session) and `split_parts` (at
// most its cores, at most 8). A model whose model_config sets `cpusets`
// itself is left as it is and planned as fixed on those CPUs.
//
// Threading: AllocateCores is a pure function of its arguments and the
// process affinity; a CoreAllocation is immutable once built (read from any
// thread).
#ifndef RECSTRATA_HOST_CORE_ALLOCATION_H_
#define RECSTRATA_HOST_CORE_ALLOCATION_H_

#include <string>
#include <vector>

#include "core/model.h"
#include "host/config.h"
#include "recstrata/config/core_plan.pb.h"

namespace rs::host {

struct CoreAllocation {
  std::string mode = "off";  // "off" | "static" | "dynamic"
  std::string cpus;          // the CPUs divided ("" when off)
  recstrata::config::CorePlan plan;  // empty when off
  // What the plan was computed from (the models' declared demands, fixed
  // CPUs, options); dynamic mode re-plans it with measured traffic.
  recstrata::config::CorePlanRequest request;
  struct Applied {           // per plan model, same order
    std::string cpusets;     // what the model's sessions get ("1;1")
    int split_parts = 0;     // 0: not set by the allocator
    std::string source;      // "allocator" | "fixed_cpus" | "model_config"
    int sessions = 1;        // session_num of the model's config
  };
  std::vector<Applied> applied;

  // {"mode", "cpus", "shared_cpus", "summary", "models": [{"name", "role",
  //  "cpus", "cores", "dedicated", "demand_cores", "reason", "source",
  //  "cpusets", "split_parts" <per_model[i]>}] <extra>}: per_model[i] and
  // extra are appended verbatim (",\"key\":value..." or "").
  std::string StatusJson(const std::vector<std::string>& per_model = {}, const std::string& extra = "") const;
  // Prometheus gauges (host/metrics.h RenderCoreMetrics).
  std::string MetricsText() const;
};

// Plans `options` over `models` and rewrites their config_json (static
// mode, and dynamic mode's plan at open; "off" changes nothing). In dynamic
// mode a model the allocator places whose model_config runs ops on
// inter-op pools (inter_op_parallelism_threads >= 0) is refused: only
// inline sessions can be re-pinned. Throws rs::Error: RS_ERR_INVALID_ARGUMENT
// (core_cpus malformed or outside the process affinity, fixed_cpus and
// model_config cpusets both set, a malformed cpusets, a spec the allocator
// rejects), RS_ERR_FAILED_PRECONDITION (the floors do not fit the CPUs);
// messages start with "host core allocation:".
CoreAllocation AllocateCores(std::vector<ModelSpec>* models, const CoreOptions& options);

// Where a loaded model runs, as it reports it (Model::DescribeJson): the
// core set of each session ("" for a session without one) and, for a
// bundle, the row ranges a split call is cut into (0: not a bundle).
struct LoadedLayout {
  std::vector<std::string> session_cpus;
  int split_parts = 0;
};
LoadedLayout LayoutOf(const Model& model);

}  // namespace rs::host

#endif  // RECSTRATA_HOST_CORE_ALLOCATION_H_
