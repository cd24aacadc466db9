// Declarations mirrored from recstrata.h (RS_ABI_VERSION 1) that every cgo
// file of this package shares, so their C types are one Go type. The module
// builds without the library or its header; see native.go.
#ifndef RSG_ABI_H_
#define RSG_ABI_H_

#include <stddef.h>
#include <stdint.h>

typedef struct rs_error rs_error;
typedef struct rs_model rs_model;
typedef struct rs_result rs_result;
typedef struct rs_host rs_host;
typedef struct rs_lease rs_lease;
typedef struct rs_bytes { const char* data; size_t size; } rs_bytes;
typedef struct rs_tensor {
  const char* name;
  int dtype;
  int32_t ndim;
  const int64_t* shape;
  const void* data;
  size_t byte_size;
} rs_tensor;

// A converted error: code and a malloc'd copy of the message (Go frees it).
typedef struct rsg_status { int code; char* msg; } rsg_status;

#endif  // RSG_ABI_H_
