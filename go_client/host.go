package recstrata

import (
	"runtime"
	"sync"
)

// Host is the library's native model host (docs/host.md): named models, each
// served from a base directory of integer version sub-directories, with
// version discovery, load-and-warm before traffic, routing by model name and
// version, leases, drain-then-close, pins and rollbacks, JSON status and
// Prometheus metrics. Every host language gets this behaviour from the same
// implementation in librecstrata.
//
// Goroutine safety (as rs_host in recstrata.h): every method may be called by
// any number of goroutines at once, Close included: Close first shuts the
// host down (later calls fail with FailedPrecondition), then waits for the
// Go calls in flight to return before it frees the native host; calls made
// after Close fail with an error matching ErrClosed. Loads and unloads are
// serialized inside the library; calls never wait for a load. A Host that
// becomes unreachable without Close is closed by a finalizer.
type Host struct {
	// mu makes the final rs_host_close exclusive (it must not overlap any
	// other call on the host); calls hold it shared.
	mu sync.RWMutex
	h  hostHandle // nil once closed
}

// OpenHost loads the library if needed (LoadLibrary("")) and opens a host
// from configJSON, the HostConfig of docs/host.md:
//
//	{"models": [{"name": "ctr", "base_path": "/models/ctr",
//	             "version_policy": {"latest": {"num_versions": 1}}}],
//	 "poll_interval_seconds": 5}
//
// The first load of every model happens before OpenHost returns; a model
// whose first load failed does not fail the open (see StatusJSON). A bad
// config (malformed JSON, unknown keys, duplicate names...) is an
// InvalidArgument error. A library without the host functions is an
// Incompatible error. To load the library from a given path, call
// LoadLibrary(path) first.
func OpenHost(configJSON string) (*Host, error) {
	if err := LoadLibrary(""); err != nil {
		return nil, err
	}
	if err := loadHostAPI(); err != nil {
		return nil, err
	}
	h, err := nativeHostOpen(configJSON)
	if err != nil {
		return nil, err
	}
	host := &Host{h: h}
	runtime.SetFinalizer(host, (*Host).finalize)
	return host, nil
}

// Close stops discovery, refuses new calls, waits for the calls in flight,
// closes every version no lease holds and frees the host. Leases stay usable
// until released. Idempotent; always returns nil (io.Closer).
func (h *Host) Close() error {
	h.mu.RLock()
	if h.h != nil {
		_ = nativeHostShutdown(h.h) // only fails on a NULL host
	}
	h.mu.RUnlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h != nil {
		nativeHostClose(h.h)
		h.h = nil
	}
	runtime.SetFinalizer(h, nil)
	return nil
}

// finalize runs only when no goroutine can reach h, so it needs no lock.
func (h *Host) finalize() {
	if h.h != nil {
		nativeHostClose(h.h)
		h.h = nil
	}
}

// acquire holds the host open for one call; release with h.mu.RUnlock.
func (h *Host) acquire(op string) (hostHandle, error) {
	h.mu.RLock()
	if h.h == nil {
		h.mu.RUnlock()
		return nil, hostClosedError(op)
	}
	return h.h, nil
}

// Shutdown is the graceful first half of Close and may run while other
// goroutines call the host: discovery stops, every later call fails with
// FailedPrecondition ("host is closed"), calls already running finish on
// their version. It returns once every version no call or lease holds is
// closed. Idempotent; Close is still needed to free the host.
func (h *Host) Shutdown() error {
	hh, err := h.acquire("Shutdown")
	if err != nil {
		return err
	}
	defer h.mu.RUnlock()
	return nativeHostShutdown(hh)
}

// Reload runs one discovery pass now for model ("" for every model): it
// loads the versions the policy wants that are not serving, then retires
// the ones no longer wanted, and returns when the pass is done. Unknown
// model: NotFound. Load failures are reported in StatusJSON, not here.
func (h *Host) Reload(model string) error {
	hh, err := h.acquire("Reload")
	if err != nil {
		return err
	}
	defer h.mu.RUnlock()
	return nativeHostReload(hh, model)
}

// SetPolicy replaces a model's version policy (and removes a pin), then runs
// a pass for it. policyJSON: {"latest": {"num_versions": N}} | {"all": {}} |
// {"specific": {"versions": [...]}}. Bad JSON: InvalidArgument; unknown
// model: NotFound.
func (h *Host) SetPolicy(model, policyJSON string) error {
	hh, err := h.acquire("SetPolicy")
	if err != nil {
		return err
	}
	defer h.mu.RUnlock()
	return nativeHostSetPolicy(hh, model, policyJSON)
}

// Pin serves only version of model from now on (rollback or roll forward),
// loading it first if needed. A version that is not a complete directory is
// NotFound; one that fails to load returns its load error and nothing
// changes. Version 0 removes the pin (see Unpin).
func (h *Host) Pin(model string, version int64) error {
	hh, err := h.acquire("Pin")
	if err != nil {
		return err
	}
	defer h.mu.RUnlock()
	return nativeHostPin(hh, model, version)
}

// Unpin returns model to its configured policy (or the last SetPolicy).
func (h *Host) Unpin(model string) error { return h.Pin(model, 0) }

// Run is Model.Run on a version of model: version 0 is the newest serving
// version, any other must be serving. It returns the outputs and the version
// that answered. Errors: unknown model or version NotFound; no version
// serving, or the host shut down, FailedPrecondition; the model's own errors
// as Model.Run.
func (h *Host) Run(model string, version int64, inputs []Tensor, outputNames ...string) ([]Tensor, int64, error) {
	hh, err := h.acquire("Run")
	if err != nil {
		return nil, 0, err
	}
	defer h.mu.RUnlock()
	return nativeHostRun("Run", hh, nil, model, version, inputs, outputNames)
}

// PredictBytes is Model.PredictBytes (DeepRec PredictRequest bytes in,
// PredictResponse bytes out) on a version of model; routing and errors as
// Run. It also returns the version that answered.
func (h *Host) PredictBytes(model string, version int64, request []byte) ([]byte, int64, error) {
	hh, err := h.acquire("PredictBytes")
	if err != nil {
		return nil, 0, err
	}
	defer h.mu.RUnlock()
	return nativeHostPredict("PredictBytes", hh, nil, model, version, request)
}

// Acquire takes a lease on a version of model (routing and errors as Run):
// every call through the lease hits that version, which stays open until
// Release, also after it was retired and after Close.
func (h *Host) Acquire(model string, version int64) (*Lease, error) {
	hh, err := h.acquire("Acquire")
	if err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	l, v, err := nativeHostAcquire(hh, model, version)
	if err != nil {
		return nil, err
	}
	lease := &Lease{l: l, version: v}
	runtime.SetFinalizer(lease, (*Lease).finalize)
	return lease, nil
}

// StatusJSON returns the host's status (recstrata.h rs_host_status_json):
// per model its policy, pin, serving versions, readiness and per version
// state, load error, load time and counters.
func (h *Host) StatusJSON() (string, error) {
	hh, err := h.acquire("StatusJSON")
	if err != nil {
		return "", err
	}
	defer h.mu.RUnlock()
	return nativeHostText(hh, "StatusJSON", 0)
}

// MetricsText returns the host's metrics in Prometheus text format 0.0.4
// (every name starts with rs_host_; docs/host.md lists them).
func (h *Host) MetricsText() (string, error) {
	hh, err := h.acquire("MetricsText")
	if err != nil {
		return "", err
	}
	defer h.mu.RUnlock()
	return nativeHostText(hh, "MetricsText", 1)
}

// Lease holds one serving version of a model (Host.Acquire). Run and
// PredictBytes may be called by any number of goroutines at once; Release
// waits for them, is idempotent, and later calls fail with ErrClosed. An
// unreleased Lease keeps its version loaded: release it (a finalizer does,
// eventually, but do not rely on it).
type Lease struct {
	mu      sync.RWMutex // Release is exclusive (rs_lease_release)
	l       leaseHandle  // nil once released
	version int64
}

// Version is the version the lease holds.
func (l *Lease) Version() int64 { return l.version }

func (l *Lease) acquire(op string) (leaseHandle, error) {
	l.mu.RLock()
	if l.l == nil {
		l.mu.RUnlock()
		return nil, &Error{Op: op, Code: FailedPrecondition, Message: "lease is released", wrapped: ErrClosed}
	}
	return l.l, nil
}

// Run is Model.Run on the leased version.
func (l *Lease) Run(inputs []Tensor, outputNames ...string) ([]Tensor, error) {
	ll, err := l.acquire("Lease.Run")
	if err != nil {
		return nil, err
	}
	defer l.mu.RUnlock()
	outs, _, err := nativeHostRun("Lease.Run", nil, ll, "", 0, inputs, outputNames)
	return outs, err
}

// PredictBytes is Model.PredictBytes on the leased version.
func (l *Lease) PredictBytes(request []byte) ([]byte, error) {
	ll, err := l.acquire("Lease.PredictBytes")
	if err != nil {
		return nil, err
	}
	defer l.mu.RUnlock()
	resp, _, err := nativeHostPredict("Lease.PredictBytes", nil, ll, "", 0, request)
	return resp, err
}

// Release drops the lease; the version closes if it was retired and this
// was its last reference.
func (l *Lease) Release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.l != nil {
		nativeLeaseRelease(l.l)
		l.l = nil
	}
	runtime.SetFinalizer(l, nil)
}

func (l *Lease) finalize() {
	if l.l != nil {
		nativeLeaseRelease(l.l)
		l.l = nil
	}
}

func hostClosedError(op string) *Error {
	return &Error{Op: op, Code: FailedPrecondition, Message: "host is closed", wrapped: ErrClosed}
}
