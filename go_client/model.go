package recstrata

import (
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// Model is a loaded model: a SavedModel signature (or a recstrata bundle)
// served by the library's SessionGroup.
//
// A Model is safe for concurrent use: any number of goroutines may call
// Predict, Run, PredictBytes, Describe and Stats at once (the library runs
// them in parallel on its sessions). Close waits for calls in flight to
// return, then frees the native model; calls made after Close fail with an
// error matching ErrClosed. A Model that becomes unreachable without Close is
// closed by a finalizer, but do not rely on it: native models hold a lot of
// memory the Go garbage collector cannot see.
type Model struct {
	// mu makes Close exclusive: rs_model_close must not overlap any other
	// call on the model (recstrata.h). Calls hold it shared.
	mu      sync.RWMutex
	h       modelHandle // nil once closed
	dir     string
	inputs  []TensorInfo
	outputs []TensorInfo
}

// openModels counts native models opened and not yet closed (tests use it to
// observe the finalizer).
var openModels atomic.Int64

// Open loads the library if needed (see LoadLibrary) and opens the model in
// dir, a SavedModel or recstrata bundle directory. dir may be "" when
// WithConfig("savedmodel_dir", ...) names it. The library runs warmup on
// every session before Open returns.
func Open(dir string, opts ...Option) (*Model, error) {
	cfg := openConfig{keys: map[string]any{}}
	for _, opt := range opts {
		if err := opt(&cfg); err != nil {
			return nil, &Error{Op: "Open", Code: InvalidArgument, Message: err.Error()}
		}
	}
	config, err := cfg.configJSON()
	if err != nil {
		return nil, &Error{Op: "Open", Code: InvalidArgument, Message: err.Error()}
	}
	if err := LoadLibrary(cfg.library); err != nil {
		return nil, err
	}
	h, err := nativeOpen(dir, config)
	if err != nil {
		return nil, err
	}
	ins, outs, err := nativeSignature(h)
	if err != nil {
		nativeClose(h)
		return nil, err
	}
	m := &Model{h: h, dir: dir, inputs: ins, outputs: outs}
	openModels.Add(1)
	runtime.SetFinalizer(m, (*Model).finalize)
	return m, nil
}

// Close frees the native model. It waits for calls in flight, is idempotent
// and always returns nil (the error is there for io.Closer).
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.h != nil {
		nativeClose(m.h)
		m.h = nil
		openModels.Add(-1)
	}
	runtime.SetFinalizer(m, nil)
	return nil
}

// finalize runs only when no goroutine can reach m, so it needs no lock.
func (m *Model) finalize() {
	if m.h != nil {
		nativeClose(m.h)
		m.h = nil
		openModels.Add(-1)
	}
}

// Dir is the directory the model was opened from ("" if the config named it).
func (m *Model) Dir() string { return m.dir }

// Inputs describes the signature's inputs, in signature order. The slice is a
// copy; it stays available after Close.
func (m *Model) Inputs() []TensorInfo { return cloneInfos(m.inputs) }

// Outputs describes the signature's outputs, in signature order.
func (m *Model) Outputs() []TensorInfo { return cloneInfos(m.outputs) }

func cloneInfos(in []TensorInfo) []TensorInfo {
	out := make([]TensorInfo, len(in))
	for i, t := range in {
		t.Shape = slices.Clone(t.Shape)
		out[i] = t
	}
	return out
}

// acquire holds the model open for one call; release with m.mu.RUnlock.
func (m *Model) acquire(op string) (modelHandle, error) {
	m.mu.RLock()
	if m.h == nil {
		m.mu.RUnlock()
		return nil, closedError(op)
	}
	return m.h, nil
}

// Predict runs the model on named inputs (every signature input exactly once;
// the map key is the input alias) and returns every output keyed by alias.
func (m *Model) Predict(inputs map[string]Tensor) (map[string]Tensor, error) {
	list := make([]Tensor, 0, len(inputs))
	for name, t := range inputs {
		t.Name = name
		list = append(list, t)
	}
	outs, err := m.Run(list)
	if err != nil {
		return nil, err
	}
	res := make(map[string]Tensor, len(outs))
	for _, t := range outs {
		res[t.Name] = t
	}
	return res, nil
}

// Run runs the model on inputs named by Tensor.Name and returns the outputs
// named in outputNames, in that order, or every output in signature order
// when none are named. Inputs are read during the call only.
func (m *Model) Run(inputs []Tensor, outputNames ...string) ([]Tensor, error) {
	h, err := m.acquire("Predict")
	if err != nil {
		return nil, err
	}
	defer m.mu.RUnlock()
	max := len(outputNames)
	if max == 0 {
		max = len(m.outputs)
	}
	outs, err := nativeRun(h, inputs, outputNames, max)
	runtime.KeepAlive(m)
	return outs, err
}

// PredictBytes passes a serialized DeepRec PredictRequest (tensorflow.eas
// wire format, see predict.proto) to the model and returns the serialized
// PredictResponse. An empty request returns the signature description as
// JSON text instead, as DeepRec's process() does. Malformed bytes yield an
// InvalidArgument error.
func (m *Model) PredictBytes(request []byte) ([]byte, error) {
	h, err := m.acquire("PredictBytes")
	if err != nil {
		return nil, err
	}
	defer m.mu.RUnlock()
	resp, err := nativePredict(h, request)
	runtime.KeepAlive(m)
	return resp, err
}

// Describe returns the library's JSON description of the model (signature,
// session group layout).
func (m *Model) Describe() (string, error) {
	h, err := m.acquire("Describe")
	if err != nil {
		return "", err
	}
	defer m.mu.RUnlock()
	return nativeJSON(h, "Describe", 0)
}

// Stats returns the library's JSON counters of the model (requests, errors,
// per-session calls and in-flight counts, latency summary).
func (m *Model) Stats() (string, error) {
	h, err := m.acquire("Stats")
	if err != nil {
		return "", err
	}
	defer m.mu.RUnlock()
	return nativeJSON(h, "Stats", 1)
}
