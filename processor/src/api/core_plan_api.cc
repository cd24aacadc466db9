// C entry point of the core allocator (sched/core_plan.h): JSON in, JSON out.
#include <google/protobuf/util/json_util.h>

#include <string>

#include "base/buffers.h"
#include "base/status.h"
#include "sched/core_plan.h"

extern "C" {

RS_API int rs_core_plan_json(const char* request_json, char** out_plan_json, rs_error** error) noexcept {
  RS_API_BEGIN(error);
  rs::Check(request_json != nullptr && out_plan_json != nullptr, RS_ERR_INVALID_ARGUMENT,
            "rs_core_plan_json: request_json and out_plan_json must not be NULL");
  *out_plan_json = nullptr;
  recstrata::config::CorePlanRequest request;
  google::protobuf::json::ParseOptions parse;
  auto st = google::protobuf::json::JsonStringToMessage(request_json, &request, parse);
  if (!st.ok()) rs::Fail(RS_ERR_INVALID_ARGUMENT, "core plan request: " + std::string(st.message()));
  recstrata::config::CorePlan plan = rs::PlanCores(request);
  std::string text;
  google::protobuf::json::PrintOptions print;
  print.preserve_proto_field_names = true;
  print.always_print_fields_with_no_presence = true;
  st = google::protobuf::json::MessageToJsonString(plan, &text, print);
  if (!st.ok()) rs::Fail(RS_ERR_INTERNAL, "core plan to JSON: " + std::string(st.message()));
  *out_plan_json = rs::MallocCopy(text);
  RS_API_END(error);
}

}  // extern "C"
