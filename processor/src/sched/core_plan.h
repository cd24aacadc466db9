// Core allocator: divides a machine's CPUs between the models of one host.
//
// The rule is the one the seed system's cost model used: each baseline model
// gets a dedicated core set sized to its load, and the experiment (A/B)
// models share whatever the baselines leave. Sizing: a model that receives
// `rps` requests per second costing `cpu_ms` of one core each keeps
// rps * cpu_ms / 1000 cores busy; it is given that divided by the target
// utilization, rounded up, and never less than its floor. Static mode sizes
// from declared traffic; dynamic mode from measured traffic, keeping the plan
// in force while every change is within the hysteresis. docs/cost-model.md.
//
// Threading: PlanCores is a pure function (it reads the process affinity
// only when the request names no CPUs) and may be called from any thread.
#ifndef RECSTRATA_SCHED_CORE_PLAN_H_
#define RECSTRATA_SCHED_CORE_PLAN_H_

#include "recstrata/config/core_plan.pb.h"

namespace rs {

// Throws rs::Error: RS_ERR_INVALID_ARGUMENT for a malformed request (unknown
// mode or role, duplicate names, negative loads, fixed CPUs outside the
// pool), RS_ERR_FAILED_PRECONDITION when the floors do not fit the CPUs.
recstrata::config::CorePlan PlanCores(const recstrata::config::CorePlanRequest& request);

}  // namespace rs

#endif  // RECSTRATA_SCHED_CORE_PLAN_H_
