package recstrata

// The native boundary of the model host (recstrata.h, section "Model host").
//
// The host functions are resolved in a table of their own, the first time a
// host is opened: dlopen(RTLD_NOLOAD) returns the handle LoadLibrary already
// opened, so a library without rs_host_* still serves Model users and
// OpenHost reports the missing symbol. Errors are converted inside each shim
// call as in native.go.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rsg_abi.h"

typedef struct rsh_api {
  const char* (*error_message)(const rs_error*);
  void (*error_free)(rs_error*);
  const char* (*status_name)(int);
  void (*free_)(void*);
  size_t (*result_count)(const rs_result*);
  int (*result_output)(const rs_result*, size_t, rs_tensor*, rs_error**);
  void (*result_free)(rs_result*);
  int (*host_open)(const char*, rs_host**, rs_error**);
  void (*host_close)(rs_host*);
  int (*host_shutdown)(rs_host*, rs_error**);
  int (*host_reload)(rs_host*, const char*, rs_error**);
  int (*host_set_policy)(rs_host*, const char*, const char*, rs_error**);
  int (*host_pin)(rs_host*, const char*, int64_t, rs_error**);
  int (*host_run)(rs_host*, const char*, int64_t, const rs_tensor*, size_t,
                  const char* const*, size_t, rs_result**, int64_t*,
                  rs_error**);
  int (*host_predict)(rs_host*, const char*, int64_t, const void*, size_t,
                      void**, size_t*, int64_t*, rs_error**);
  int (*host_acquire)(rs_host*, const char*, int64_t, rs_lease**, rs_error**);
  int64_t (*lease_version)(const rs_lease*);
  int (*lease_run)(rs_lease*, const rs_tensor*, size_t, const char* const*,
                   size_t, rs_result**, rs_error**);
  int (*lease_predict)(rs_lease*, const void*, size_t, void**, size_t*,
                       rs_error**);
  void (*lease_release)(rs_lease*);
  int (*host_status_json)(rs_host*, char**, rs_error**);
  int (*host_metrics_text)(rs_host*, char**, rs_error**);
} rsh_api;

static rsh_api rsh;

static int rsh_fail(rsg_status* st, int code, const char* msg) {
  st->code = code;
  st->msg = strdup(msg ? msg : "");
  return code;
}

static int rsh_take(rsg_status* st, int code, rs_error* err) {
  if (code != 0) {
    const char* m = err ? rsh.error_message(err) : rsh.status_name(code);
    rsh_fail(st, code, m);
  }
  if (err) rsh.error_free(err);
  return code;
}

#define RSH_SYM(field, name)                                                \
  do {                                                                      \
    *(void**)(&t.field) = dlsym(h, name);                                   \
    if (!t.field) {                                                         \
      snprintf(buf, sizeof buf,                                             \
               "%s has no symbol %s (a library without the model host?)",  \
               path, name);                                                 \
      return rsh_fail(st, 8, buf);                                          \
    }                                                                       \
  } while (0)

// Fills the table from the library LoadLibrary opened at `path`. Called once
// (guarded in Go); the table is only written after every symbol resolved.
static int rsh_load(const char* path, rsg_status* st) {
  char buf[1024];
  rsh_api t;
  void* h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  if (!h) {
    const char* e = dlerror();
    snprintf(buf, sizeof buf, "dlopen %s: %s", path, e ? e : "not loaded");
    return rsh_fail(st, 4, buf);
  }
  RSH_SYM(error_message, "rs_error_message");
  RSH_SYM(error_free, "rs_error_free");
  RSH_SYM(status_name, "rs_status_name");
  RSH_SYM(free_, "rs_free");
  RSH_SYM(result_count, "rs_result_count");
  RSH_SYM(result_output, "rs_result_output");
  RSH_SYM(result_free, "rs_result_free");
  RSH_SYM(host_open, "rs_host_open");
  RSH_SYM(host_close, "rs_host_close");
  RSH_SYM(host_shutdown, "rs_host_shutdown");
  RSH_SYM(host_reload, "rs_host_reload");
  RSH_SYM(host_set_policy, "rs_host_set_policy");
  RSH_SYM(host_pin, "rs_host_pin");
  RSH_SYM(host_run, "rs_host_run");
  RSH_SYM(host_predict, "rs_host_predict");
  RSH_SYM(host_acquire, "rs_host_acquire");
  RSH_SYM(lease_version, "rs_lease_version");
  RSH_SYM(lease_run, "rs_lease_run");
  RSH_SYM(lease_predict, "rs_lease_predict");
  RSH_SYM(lease_release, "rs_lease_release");
  RSH_SYM(host_status_json, "rs_host_status_json");
  RSH_SYM(host_metrics_text, "rs_host_metrics_text");
  rsh = t;
  return 0;
}

static int rsh_open(const char* cfg, rs_host** out, rsg_status* st) {
  rs_error* err = NULL;
  int rc = rsh.host_open(cfg, out, &err);
  return rsh_take(st, rc, err);
}

static void rsh_close(rs_host* h) { rsh.host_close(h); }

static int rsh_shutdown(rs_host* h, rsg_status* st) {
  rs_error* err = NULL;
  int rc = rsh.host_shutdown(h, &err);
  return rsh_take(st, rc, err);
}

static int rsh_reload(rs_host* h, const char* model, rsg_status* st) {
  rs_error* err = NULL;
  int rc = rsh.host_reload(h, model, &err);
  return rsh_take(st, rc, err);
}

static int rsh_set_policy(rs_host* h, const char* model, const char* policy,
                          rsg_status* st) {
  rs_error* err = NULL;
  int rc = rsh.host_set_policy(h, model, policy, &err);
  return rsh_take(st, rc, err);
}

static int rsh_pin(rs_host* h, const char* model, int64_t v, rsg_status* st) {
  rs_error* err = NULL;
  int rc = rsh.host_pin(h, model, v, &err);
  return rsh_take(st, rc, err);
}

// Fills `outs` (capacity `cap`) with views of r's outputs; frees r on error.
static int rsh_views(rs_result* r, rs_tensor* outs, size_t cap, size_t* n_out,
                     rsg_status* st) {
  rs_error* err = NULL;
  size_t n = rsh.result_count(r);
  if (n > cap) {
    rsh.result_free(r);
    return rsh_fail(st, 11, "the library returned more outputs than fit");
  }
  for (size_t i = 0; i < n; i++) {
    int rc = rsh.result_output(r, i, &outs[i], &err);
    if (rc) {
      rsh.result_free(r);
      return rsh_take(st, rc, err);
    }
  }
  *n_out = n;
  return 0;
}

// Runs on the host (lease NULL) or on a lease; on success *res holds the
// result and *n_out its output count (views via rsh_views).
static int rsh_run(rs_host* h, rs_lease* l, const char* model, int64_t v,
                   const rs_tensor* in, size_t n_in, const char* const* names,
                   size_t n_names, rs_result** res, size_t* n_out,
                   int64_t* out_v, rsg_status* st) {
  rs_error* err = NULL;
  int rc = l ? rsh.lease_run(l, in, n_in, names, n_names, res, &err)
             : rsh.host_run(h, model, v, in, n_in, names, n_names, res, out_v,
                            &err);
  if (rc) return rsh_take(st, rc, err);
  *n_out = rsh.result_count(*res);
  return 0;
}

static void rsh_result_free(rs_result* r) { rsh.result_free(r); }

static int rsh_predict(rs_host* h, rs_lease* l, const char* model, int64_t v,
                       const void* req, size_t n, void** out, size_t* out_n,
                       int64_t* out_v, rsg_status* st) {
  rs_error* err = NULL;
  int rc = l ? rsh.lease_predict(l, req, n, out, out_n, &err)
             : rsh.host_predict(h, model, v, req, n, out, out_n, out_v, &err);
  return rsh_take(st, rc, err);
}

static int rsh_acquire(rs_host* h, const char* model, int64_t v,
                       rs_lease** out, int64_t* out_v, rsg_status* st) {
  rs_error* err = NULL;
  int rc = rsh.host_acquire(h, model, v, out, &err);
  if (rc == 0) *out_v = rsh.lease_version(*out);
  return rsh_take(st, rc, err);
}

static void rsh_release(rs_lease* l) { rsh.lease_release(l); }

// which: 0 status JSON, 1 metrics text. *out is released with rsh_free.
static int rsh_text(rs_host* h, int which, char** out, rsg_status* st) {
  rs_error* err = NULL;
  int rc = which == 0 ? rsh.host_status_json(h, out, &err)
                      : rsh.host_metrics_text(h, out, &err);
  return rsh_take(st, rc, err);
}

static void rsh_free(void* p) { rsh.free_(p); }
*/
import "C"

import (
	"sync"
	"unsafe"
)

type (
	hostHandle  = *C.rs_host
	leaseHandle = *C.rs_lease
)

var hostAPI struct {
	mu     sync.Mutex
	loaded bool
}

// loadHostAPI resolves the rs_host_* functions of the loaded library (once;
// a failure may be retried).
func loadHostAPI() error {
	hostAPI.mu.Lock()
	defer hostAPI.mu.Unlock()
	if hostAPI.loaded {
		return nil
	}
	library.mu.Lock()
	path := library.path
	library.mu.Unlock()
	if path == "" {
		return newError("OpenHost", FailedPrecondition, "librecstrata is not loaded")
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var st C.rsg_status
	if C.rsh_load(cpath, &st) != 0 {
		return statusError("OpenHost", &st)
	}
	hostAPI.loaded = true
	return nil
}

// cString returns a C copy of s ("" gives NULL when nullIfEmpty) and its
// free function.
func cString(s string, nullIfEmpty bool) (*C.char, func()) {
	if s == "" && nullIfEmpty {
		return nil, func() {}
	}
	p := C.CString(s)
	return p, func() { C.free(unsafe.Pointer(p)) }
}

func nativeHostOpen(config string) (hostHandle, error) {
	ccfg, free := cString(config, false)
	defer free()
	var h *C.rs_host
	var st C.rsg_status
	if C.rsh_open(ccfg, &h, &st) != 0 {
		return nil, statusError("OpenHost", &st)
	}
	return h, nil
}

func nativeHostClose(h hostHandle) { C.rsh_close(h) }

func nativeHostShutdown(h hostHandle) error {
	var st C.rsg_status
	if C.rsh_shutdown(h, &st) != 0 {
		return statusError("Shutdown", &st)
	}
	return nil
}

// nativeHostReload: model "" reloads every model (NULL).
func nativeHostReload(h hostHandle, model string) error {
	cm, free := cString(model, true)
	defer free()
	var st C.rsg_status
	if C.rsh_reload(h, cm, &st) != 0 {
		return statusError("Reload", &st)
	}
	return nil
}

func nativeHostSetPolicy(h hostHandle, model, policy string) error {
	cm, freeM := cString(model, false)
	defer freeM()
	cp, freeP := cString(policy, false)
	defer freeP()
	var st C.rsg_status
	if C.rsh_set_policy(h, cm, cp, &st) != 0 {
		return statusError("SetPolicy", &st)
	}
	return nil
}

func nativeHostPin(h hostHandle, model string, version int64) error {
	cm, free := cString(model, false)
	defer free()
	var st C.rsg_status
	if C.rsh_pin(h, cm, C.int64_t(version), &st) != 0 {
		return statusError("Pin", &st)
	}
	return nil
}

// nativeHostRun runs on the host (l nil: model and version route) or on the
// lease l; it returns copies of the outputs and the version that answered
// (0 for a lease: the caller knows it).
func nativeHostRun(op string, h hostHandle, l leaseHandle, model string, version int64,
	inputs []Tensor, outputNames []string) ([]Tensor, int64, error) {
	c, err := marshalCall(op, inputs, outputNames)
	if err != nil {
		return nil, 0, err
	}
	defer c.release()
	cm, free := cString(model, false)
	defer free()
	var res *C.rs_result
	var n C.size_t
	var answered C.int64_t
	var st C.rsg_status
	if C.rsh_run(h, l, cm, C.int64_t(version), &c.ins[0], C.size_t(c.nIn), &c.names[0],
		C.size_t(c.nNames), &res, &n, &answered, &st) != 0 {
		return nil, 0, statusError(op, &st)
	}
	couts := make([]C.rs_tensor, int(n)+1)
	var nOut C.size_t
	if C.rsh_views(res, &couts[0], n, &nOut, &st) != 0 {
		return nil, 0, statusError(op, &st)
	}
	defer C.rsh_result_free(res)
	outs, err := copyOutputs(couts[:nOut])
	return outs, int64(answered), err
}

// nativeHostPredict passes PredictRequest bytes to the host or the lease l.
func nativeHostPredict(op string, h hostHandle, l leaseHandle, model string, version int64,
	req []byte) ([]byte, int64, error) {
	var p unsafe.Pointer
	if len(req) > 0 {
		p = unsafe.Pointer(&req[0])
	}
	cm, free := cString(model, false)
	defer free()
	var out unsafe.Pointer
	var n C.size_t
	var answered C.int64_t
	var st C.rsg_status
	if C.rsh_predict(h, l, cm, C.int64_t(version), p, C.size_t(len(req)), &out, &n,
		&answered, &st) != 0 {
		return nil, 0, statusError(op, &st)
	}
	defer C.rsh_free(out)
	resp := make([]byte, int(n))
	if n > 0 {
		copy(resp, unsafe.Slice((*byte)(out), int(n)))
	}
	return resp, int64(answered), nil
}

func nativeHostAcquire(h hostHandle, model string, version int64) (leaseHandle, int64, error) {
	cm, free := cString(model, false)
	defer free()
	var l *C.rs_lease
	var v C.int64_t
	var st C.rsg_status
	if C.rsh_acquire(h, cm, C.int64_t(version), &l, &v, &st) != 0 {
		return nil, 0, statusError("Acquire", &st)
	}
	return l, int64(v), nil
}

func nativeLeaseRelease(l leaseHandle) { C.rsh_release(l) }

// nativeHostText returns the status JSON (which 0) or metrics text (which 1).
func nativeHostText(h hostHandle, op string, which int) (string, error) {
	var out *C.char
	var st C.rsg_status
	if C.rsh_text(h, C.int(which), &out, &st) != 0 {
		return "", statusError(op, &st)
	}
	defer C.rsh_free(unsafe.Pointer(out))
	return C.GoString(out), nil
}
