package recstrata

// The native boundary of models and library loading. (native_tensor.go
// marshals tensors, host_native.go binds the model host; rsg_abi.h holds the
// C declarations all three share.)
//
// The C shim in the preamble dlopen()s librecstrata.so at run time and calls
// it through function pointers (cgo cannot call a C function pointer itself).
// The module therefore builds without the library or its header: the few
// declarations it needs are mirrored in rsg_abi.h, and rsg_load refuses a library
// whose ABI version differs from the one mirrored here.
//
// Every shim call converts a native error before it returns: the message is
// copied into malloc'd memory (freed by Go) and the rs_error is released in
// the same C call, so nothing depends on which OS thread the goroutine runs
// on next.
//
// Go memory handed to C: input tensors are described by a Go slice of
// rs_tensor whose pointers (names, shapes, data, string elements) point into
// Go memory pinned with runtime.Pinner for the duration of the call only. The
// library borrows inputs for the call and never keeps them (recstrata.h).

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rsg_abi.h"
#define RSG_ABI_VERSION 1
// The oldest library version that has every function used here.
#define RSG_MIN_VERSION_NUMBER 100

// ---- The function table, filled once by rsg_load. ----
typedef struct rsg_api {
  int (*version_number)(void);
  const char* (*version_string)(void);
  int (*abi_version)(void);
  const char* (*error_message)(const rs_error*);
  void (*error_free)(rs_error*);
  const char* (*status_name)(int);
  void (*free_)(void*);
  int (*model_open)(const char*, const char*, rs_model**, rs_error**);
  void (*model_close)(rs_model*);
  size_t (*model_num_inputs)(const rs_model*);
  size_t (*model_num_outputs)(const rs_model*);
  int (*model_input)(const rs_model*, size_t, rs_tensor*, rs_error**);
  int (*model_output)(const rs_model*, size_t, rs_tensor*, rs_error**);
  int (*model_describe_json)(const rs_model*, char**, rs_error**);
  int (*model_stats_json)(const rs_model*, char**, rs_error**);
  int (*model_run)(rs_model*, const rs_tensor*, size_t, const char* const*,
                   size_t, rs_result**, rs_error**);
  size_t (*result_count)(const rs_result*);
  int (*result_output)(const rs_result*, size_t, rs_tensor*, rs_error**);
  void (*result_free)(rs_result*);
  int (*model_predict)(rs_model*, const void*, size_t, void**, size_t*,
                       rs_error**);
} rsg_api;

static rsg_api rsg;

static int rsg_fail(rsg_status* st, int code, const char* msg) {
  st->code = code;
  st->msg = strdup(msg ? msg : "");
  return code;
}

// Copies the message of a failed call and releases the error object.
static int rsg_take(rsg_status* st, int code, rs_error* err) {
  if (code != 0) {
    const char* m = err ? rsg.error_message(err) : rsg.status_name(code);
    rsg_fail(st, code, m);
  }
  if (err) rsg.error_free(err);
  return code;
}

#define RSG_SYM(field, name)                                              \
  do {                                                                    \
    *(void**)(&rsg.field) = dlsym(h, name);                               \
    if (!rsg.field) {                                                     \
      snprintf(buf, sizeof buf, "%s has no symbol %s (too old?)", path,   \
               name);                                                     \
      return rsg_fail(st, 8, buf);                                        \
    }                                                                     \
  } while (0)

// Opens the library and fills the table. Called once (guarded in Go). The
// handle is never closed, not even after a failed check: the library has
// already mapped TensorFlow, which does not support being unloaded.
static int rsg_load(const char* path, rsg_status* st, int* version) {
  char buf[1024];
  void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) {
    const char* e = dlerror();
    snprintf(buf, sizeof buf, "dlopen %s: %s", path, e ? e : "failed");
    return rsg_fail(st, 2, buf);
  }
  RSG_SYM(version_number, "rs_version_number");
  RSG_SYM(version_string, "rs_version_string");
  RSG_SYM(abi_version, "rs_abi_version");
  RSG_SYM(error_message, "rs_error_message");
  RSG_SYM(error_free, "rs_error_free");
  RSG_SYM(status_name, "rs_status_name");
  RSG_SYM(free_, "rs_free");
  RSG_SYM(model_open, "rs_model_open");
  RSG_SYM(model_close, "rs_model_close");
  RSG_SYM(model_num_inputs, "rs_model_num_inputs");
  RSG_SYM(model_num_outputs, "rs_model_num_outputs");
  RSG_SYM(model_input, "rs_model_input");
  RSG_SYM(model_output, "rs_model_output");
  RSG_SYM(model_describe_json, "rs_model_describe_json");
  RSG_SYM(model_stats_json, "rs_model_stats_json");
  RSG_SYM(model_run, "rs_model_run");
  RSG_SYM(result_count, "rs_result_count");
  RSG_SYM(result_output, "rs_result_output");
  RSG_SYM(result_free, "rs_result_free");
  RSG_SYM(model_predict, "rs_model_predict");
  int abi = rsg.abi_version();
  int v = rsg.version_number();
  *version = v;
  if (abi != RSG_ABI_VERSION || v < RSG_MIN_VERSION_NUMBER) {
    snprintf(buf, sizeof buf,
             "%s is version %d (ABI %d); this Go module needs ABI %d and "
             "version >= %d",
             path, v, abi, RSG_ABI_VERSION, RSG_MIN_VERSION_NUMBER);
    memset(&rsg, 0, sizeof rsg);
    return rsg_fail(st, 8, buf);
  }
  return 0;
}

static const char* rsg_version_string(void) { return rsg.version_string(); }

static int rsg_model_open(const char* dir, const char* cfg, rs_model** out,
                          rsg_status* st) {
  rs_error* err = NULL;
  int rc = rsg.model_open(dir, cfg, out, &err);  // before reading err
  return rsg_take(st, rc, err);
}

static void rsg_model_close(rs_model* m) { rsg.model_close(m); }

// Copies the signature (names, dtypes, shapes) into caller arrays sized by
// rsg_model_counts. Pointers written into `ins`/`outs` stay valid until
// rs_model_close.
static void rsg_model_counts(const rs_model* m, size_t* n_in, size_t* n_out) {
  *n_in = rsg.model_num_inputs(m);
  *n_out = rsg.model_num_outputs(m);
}

static int rsg_model_signature(const rs_model* m, rs_tensor* ins, size_t n_in,
                               rs_tensor* outs, size_t n_out, rsg_status* st) {
  rs_error* err = NULL;
  for (size_t i = 0; i < n_in; i++) {
    int rc = rsg.model_input(m, i, &ins[i], &err);
    if (rc) return rsg_take(st, rc, err);
  }
  for (size_t i = 0; i < n_out; i++) {
    int rc = rsg.model_output(m, i, &outs[i], &err);
    if (rc) return rsg_take(st, rc, err);
  }
  return 0;
}

// which: 0 describe, 1 stats. *out is released with rsg_free.
static int rsg_model_json(const rs_model* m, int which, char** out,
                          rsg_status* st) {
  rs_error* err = NULL;
  int rc = which == 0 ? rsg.model_describe_json(m, out, &err)
                      : rsg.model_stats_json(m, out, &err);
  return rsg_take(st, rc, err);
}

// Runs the model and fills `outs` (capacity `cap`) with views of the result's
// outputs. On success the caller copies them and calls rsg_result_free(*res).
static int rsg_run(rs_model* m, const rs_tensor* in, size_t n_in,
                   const char* const* names, size_t n_names, rs_tensor* outs,
                   size_t cap, size_t* n_out, rs_result** res,
                   rsg_status* st) {
  rs_error* err = NULL;
  rs_result* r = NULL;
  int rc = rsg.model_run(m, in, n_in, names, n_names, &r, &err);
  if (rc) return rsg_take(st, rc, err);
  size_t n = rsg.result_count(r);
  if (n > cap) {
    rsg.result_free(r);
    return rsg_fail(st, 11, "the library returned more outputs than requested");
  }
  for (size_t i = 0; i < n; i++) {
    rc = rsg.result_output(r, i, &outs[i], &err);
    if (rc) {
      rsg.result_free(r);
      return rsg_take(st, rc, err);
    }
  }
  *n_out = n;
  *res = r;
  return 0;
}

static void rsg_result_free(rs_result* r) { rsg.result_free(r); }

static int rsg_predict(rs_model* m, const void* req, size_t n, void** out,
                       size_t* out_n, rsg_status* st) {
  rs_error* err = NULL;
  int rc = rsg.model_predict(m, req, n, out, out_n, &err);  // before reading err
  return rsg_take(st, rc, err);
}

static void rsg_free(void* p) { rsg.free_(p); }
*/
import "C"

import (
	"os"
	"sync"
	"unsafe"
)

// modelHandle is the native model; nil once closed.
type modelHandle = *C.rs_model

// statusError converts a shim status into an *Error and frees its message.
func statusError(op string, st *C.rsg_status) *Error {
	msg := ""
	if st.msg != nil {
		msg = C.GoString(st.msg)
		C.free(unsafe.Pointer(st.msg))
		st.msg = nil
	}
	return &Error{Op: op, Code: Code(st.code), Message: msg}
}

// ---- Library loading ----

var library struct {
	mu      sync.Mutex
	path    string // set once loaded
	version int
}

// DefaultLibrary is the name dlopen() searches for when neither WithLibrary
// nor RECSTRATA_LIBRARY names a path (LD_LIBRARY_PATH and the system paths).
const DefaultLibrary = "librecstrata.so"

// LoadLibrary loads librecstrata.so from path ("" means $RECSTRATA_LIBRARY,
// else DefaultLibrary) and checks its ABI version. Open calls it for you. The
// library is loaded once per process: later calls with the same or an empty
// path return nil, a different path returns a FailedPrecondition error. A
// failed load may be retried.
func LoadLibrary(path string) error {
	if path == "" {
		path = os.Getenv("RECSTRATA_LIBRARY")
	}
	library.mu.Lock()
	defer library.mu.Unlock()
	if library.path != "" {
		if path != "" && path != library.path {
			return newError("LoadLibrary", FailedPrecondition,
				"librecstrata is already loaded from %s; cannot also load %s", library.path, path)
		}
		return nil
	}
	if path == "" {
		path = DefaultLibrary
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var st C.rsg_status
	var version C.int
	if C.rsg_load(cpath, &st, &version) != 0 {
		e := statusError("LoadLibrary", &st)
		if path == DefaultLibrary && e.Code == NotFound {
			e.Message += ` (set RECSTRATA_LIBRARY or use WithLibrary; ` +
				`python -c "import recstrata; print(recstrata.library_path())" prints the installed path)`
		}
		return e
	}
	library.path = path
	library.version = int(version)
	return nil
}

// LibraryVersion returns the loaded library's version string ("0.1.0"), its
// version number (major*10000 + minor*100 + patch) and the path it was loaded
// from. It returns an error before a successful LoadLibrary or Open.
func LibraryVersion() (string, int, string, error) {
	library.mu.Lock()
	defer library.mu.Unlock()
	if library.path == "" {
		return "", 0, "", newError("LibraryVersion", FailedPrecondition, "librecstrata is not loaded")
	}
	return C.GoString(C.rsg_version_string()), library.version, library.path, nil
}

// ---- Models ----

// nativeOpen opens a model; dir "" passes NULL (the config names the dir).
func nativeOpen(dir, config string) (modelHandle, error) {
	var cdir, ccfg *C.char
	if dir != "" {
		cdir = C.CString(dir)
		defer C.free(unsafe.Pointer(cdir))
	}
	if config != "" {
		ccfg = C.CString(config)
		defer C.free(unsafe.Pointer(ccfg))
	}
	var h *C.rs_model
	var st C.rsg_status
	if C.rsg_model_open(cdir, ccfg, &h, &st) != 0 {
		return nil, statusError("Open", &st)
	}
	return h, nil
}

func nativeClose(h modelHandle) { C.rsg_model_close(h) }

// nativeSignature copies the signature description into Go values.
func nativeSignature(h modelHandle) (inputs, outputs []TensorInfo, err error) {
	var nIn, nOut C.size_t
	C.rsg_model_counts(h, &nIn, &nOut)
	ins := make([]C.rs_tensor, int(nIn)+1) // +1: never pass a pointer to nothing
	outs := make([]C.rs_tensor, int(nOut)+1)
	var st C.rsg_status
	if C.rsg_model_signature(h, &ins[0], nIn, &outs[0], nOut, &st) != 0 {
		return nil, nil, statusError("Open", &st)
	}
	return tensorInfos(ins[:nIn]), tensorInfos(outs[:nOut]), nil
}

func tensorInfos(ts []C.rs_tensor) []TensorInfo {
	infos := make([]TensorInfo, len(ts))
	for i := range ts {
		t := &ts[i]
		info := TensorInfo{Name: C.GoString(t.name), DType: DType(t.dtype), Rank: int(t.ndim)}
		if t.ndim >= 0 {
			info.Shape = make([]int64, int(t.ndim))
			if t.ndim > 0 {
				copy(info.Shape, unsafe.Slice((*int64)(unsafe.Pointer(t.shape)), int(t.ndim)))
			}
		}
		infos[i] = info
	}
	return infos
}

// nativeJSON returns the describe (which 0) or stats (which 1) JSON text.
func nativeJSON(h modelHandle, op string, which int) (string, error) {
	var out *C.char
	var st C.rsg_status
	if C.rsg_model_json(h, C.int(which), &out, &st) != 0 {
		return "", statusError(op, &st)
	}
	defer C.rsg_free(unsafe.Pointer(out))
	return C.GoString(out), nil
}

// nativePredict passes serialized PredictRequest bytes through. req is only
// read during the call (cgo pins it for the call).
func nativePredict(h modelHandle, req []byte) ([]byte, error) {
	var p unsafe.Pointer
	if len(req) > 0 {
		p = unsafe.Pointer(&req[0])
	}
	var out unsafe.Pointer
	var n C.size_t
	var st C.rsg_status
	if C.rsg_predict(h, p, C.size_t(len(req)), &out, &n, &st) != 0 {
		return nil, statusError("PredictBytes", &st)
	}
	defer C.rsg_free(out)
	resp := make([]byte, int(n))
	if n > 0 {
		copy(resp, unsafe.Slice((*byte)(out), int(n)))
	}
	return resp, nil
}

// nativeRun runs the model on inputs and returns copies of the outputs.
// maxOutputs is the number of outputs the call can return (the requested
// names, or the signature's output count when none are requested).
func nativeRun(h modelHandle, inputs []Tensor, outputNames []string, maxOutputs int) ([]Tensor, error) {
	c, err := marshalCall("Predict", inputs, outputNames)
	if err != nil {
		return nil, err
	}
	defer c.release()
	couts := make([]C.rs_tensor, maxOutputs+1)
	var nOut C.size_t
	var res *C.rs_result
	var st C.rsg_status
	if C.rsg_run(h, &c.ins[0], C.size_t(c.nIn), &c.names[0], C.size_t(c.nNames),
		&couts[0], C.size_t(maxOutputs), &nOut, &res, &st) != 0 {
		return nil, statusError("Predict", &st)
	}
	defer C.rsg_result_free(res)
	return copyOutputs(couts[:nOut])
}
