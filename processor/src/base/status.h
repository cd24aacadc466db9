// Internal error plumbing shared by every component.
//
// Components report failures by throwing rs::Error (a code + message); the C
// entry points in src/api convert it into the public (rs_status, rs_error*)
// pair with RS_API_BEGIN/RS_API_END, which also catch every other exception so
// that nothing crosses the C boundary.
#ifndef RECSTRATA_BASE_STATUS_H_
#define RECSTRATA_BASE_STATUS_H_

#include <exception>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>

#include "recstrata.h"

// The public opaque error object.
struct rs_error {
  int code;
  std::string message;
};

namespace rs {

// A failure with a public status code. Thrown inside the library only.
class Error : public std::runtime_error {
 public:
  Error(rs_status code, std::string message)
      : std::runtime_error(std::move(message)), code_(code) {}
  rs_status code() const { return code_; }

 private:
  rs_status code_;
};

[[noreturn]] inline void Fail(rs_status code, std::string message) {
  throw Error(code, std::move(message));
}
inline void Check(bool condition, rs_status code, const char* message) {
  if (!condition) throw Error(code, message);
}

// Stores an error for the caller (if it asked for one) and returns the code.
// Never throws: if allocating the error object fails, the code still returns.
inline int SetError(rs_error** out, int code, const char* message) noexcept {
  if (out != nullptr) {
    *out = nullptr;
    try {
      *out = new rs_error{code, message ? message : ""};
    } catch (...) {
    }
  }
  return code;
}

}  // namespace rs

// Exception wall for every exported function that returns an rs_status and
// has an `rs_error** error` parameter. Usage:
//   int rs_foo(..., rs_error** error) noexcept {
//     RS_API_BEGIN(error);
//     ... may throw ...
//     RS_API_END(error);
//   }
#define RS_API_BEGIN(err_out)      \
  if (err_out) *(err_out) = nullptr; \
  try {
#define RS_API_END(err_out)                                                  \
  return RS_OK;                                                              \
  }                                                                          \
  catch (const rs::Error& e) {                                               \
    return rs::SetError(err_out, e.code(), e.what());                        \
  }                                                                          \
  catch (const std::bad_alloc&) {                                            \
    return rs::SetError(err_out, RS_ERR_RESOURCE_EXHAUSTED, "out of memory"); \
  }                                                                          \
  catch (const std::exception& e) {                                          \
    return rs::SetError(err_out, RS_ERR_INTERNAL, e.what());                 \
  }                                                                          \
  catch (...) {                                                              \
    return rs::SetError(err_out, RS_ERR_INTERNAL, "unknown exception");      \
  }

#endif  // RECSTRATA_BASE_STATUS_H_
