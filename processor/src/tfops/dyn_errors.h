// How the dynamic-table code reports failures: a DynError
// (tfops/dynamic_table.h) with a message, which the ops and the rsdyn_* calls
// turn into a TensorFlow status or an error string. Internal to tfops.
#ifndef RECSTRATA_TFOPS_DYN_ERRORS_H_
#define RECSTRATA_TFOPS_DYN_ERRORS_H_

#include <string>

#include "recstrata.h"
#include "tfops/dynamic_table.h"

namespace rs {
namespace tfops {

[[noreturn]] inline void Fail(const std::string& msg) { throw DynError(msg); }

// Throws unless rc is RS_OK; frees `err`.
inline void Check(int rc, rs_error* err, const std::string& what) {
  if (rc == RS_OK) return;
  std::string msg = what + ": " + (err ? rs_error_message(err) : "error " + std::to_string(rc));
  if (err) rs_error_free(err);
  Fail(msg);
}

// Runs an rs_* call that reports into `err`, then checks it (the call must be
// sequenced before `err` is read).
template <typename F>
void CheckCall(F&& call, rs_error*& err, const std::string& what) {
  err = nullptr;
  const int rc = call();
  Check(rc, err, what);
}

}  // namespace tfops
}  // namespace rs

#endif  // RECSTRATA_TFOPS_DYN_ERRORS_H_
