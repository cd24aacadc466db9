// Library-wide entry points: version, errors, rs_free.
#include <cstdlib>

#include "base/status.h"

extern "C" {

RS_API int rs_version_number(void) noexcept { return RS_VERSION_NUMBER; }
RS_API const char* rs_version_string(void) noexcept { return "0.1.0"; }
RS_API int rs_abi_version(void) noexcept { return RS_ABI_VERSION; }

RS_API int rs_error_code(const rs_error* error) noexcept { return error ? error->code : RS_OK; }
RS_API const char* rs_error_message(const rs_error* error) noexcept {
  return error ? error->message.c_str() : "";
}
RS_API void rs_error_free(rs_error* error) noexcept { delete error; }

RS_API const char* rs_status_name(int code) noexcept {
  switch (code) {
    case RS_OK: return "RS_OK";
    case RS_ERR_INVALID_ARGUMENT: return "RS_ERR_INVALID_ARGUMENT";
    case RS_ERR_NOT_FOUND: return "RS_ERR_NOT_FOUND";
    case RS_ERR_ALREADY_EXISTS: return "RS_ERR_ALREADY_EXISTS";
    case RS_ERR_FAILED_PRECONDITION: return "RS_ERR_FAILED_PRECONDITION";
    case RS_ERR_OUT_OF_RANGE: return "RS_ERR_OUT_OF_RANGE";
    case RS_ERR_IO: return "RS_ERR_IO";
    case RS_ERR_CORRUPTION: return "RS_ERR_CORRUPTION";
    case RS_ERR_INCOMPATIBLE: return "RS_ERR_INCOMPATIBLE";
    case RS_ERR_RESOURCE_EXHAUSTED: return "RS_ERR_RESOURCE_EXHAUSTED";
    case RS_ERR_UNIMPLEMENTED: return "RS_ERR_UNIMPLEMENTED";
    case RS_ERR_INTERNAL: return "RS_ERR_INTERNAL";
    default: return "RS_UNKNOWN";
  }
}

// Every buffer the library hands out is allocated with malloc (see
// rs::MallocCopy in base/buffers.h), so rs_free is plain free — but callers
// must still use rs_free: their process may use another allocator.
RS_API void rs_free(void* ptr) noexcept { std::free(ptr); }

}  // extern "C"
