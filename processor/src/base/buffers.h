// Buffers handed to C callers. Everything the library returns through a
// `void**`/`char**` out-parameter is allocated here with malloc and released
// by rs_free (api/common_api.cc): one allocator for every buffer.
#ifndef RECSTRATA_BASE_BUFFERS_H_
#define RECSTRATA_BASE_BUFFERS_H_

#include <cstdlib>
#include <cstring>
#include <string>

#include "base/status.h"

namespace rs {

// Copies `size` bytes into a new malloc'ed buffer (plus a NUL terminator, so
// text can be read as a C string). Throws rs::Error on allocation failure.
inline char* MallocCopy(const void* data, size_t size) {
  char* out = static_cast<char*>(std::malloc(size + 1));
  if (out == nullptr) Fail(RS_ERR_RESOURCE_EXHAUSTED, "out of memory");
  if (size) std::memcpy(out, data, size);
  out[size] = '\0';
  return out;
}
inline char* MallocCopy(const std::string& s) { return MallocCopy(s.data(), s.size()); }

}  // namespace rs

#endif  // RECSTRATA_BASE_BUFFERS_H_
