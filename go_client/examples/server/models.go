package main

// models.go is the server's model-lifecycle layer, written over the Go Model
// API until the library has a native multi-model host:
//
//   - each model has a base directory of integer version directories
//     (base/1, base/2, ...); a poller (and Reload) discovers them;
//   - the latest version serves, unless a version is pinned (Pin, Rollback);
//   - a new version is opened and warmed before it takes traffic; a failed
//     load leaves the old version serving and is reported (Status, metrics);
//   - versions are reference counted: the model entry holds one reference
//     while a version serves, each request holds one (a lease); a replaced
//     version is closed when its last lease is released, so no request is
//     ever answered by a closed model (drain).
//
// Only the serving version of a model is loaded (plus versions still
// draining). A Manager is safe for concurrent use.

import (
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/recstrata/recstrata/go_client"
)

// modelSpec names a model and its base directory.
type modelSpec struct {
	Name string
	Base string
}

// version is one loaded version directory.
type version struct {
	num      int64
	dir      string
	model    *recstrata.Model
	refs     atomic.Int64 // 1 for the entry while serving + 1 per lease
	loadedAt time.Time
}

// lease keeps a version open for one request; call Release exactly once.
type lease struct {
	*version
	mg *Manager
}

func (l lease) Release() { l.mg.release(l.version) }

// managedModel is one model name and its lifecycle state.
type managedModel struct {
	name, base string

	mu      sync.RWMutex // guards serving; requests take it shared
	serving *version

	loadMu  sync.Mutex // one discovery / load / pin at a time; guards the rest
	pinned  int64      // 0: serve the latest version
	failed  map[int64]string
	lastErr string
	loads   int
}

// modelStatus is the JSON form of a model's state (GET /v1/models/{name}).
type modelStatus struct {
	Name      string           `json:"name"`
	Base      string           `json:"base"`
	Serving   int64            `json:"serving_version"` // 0: none
	Pinned    int64            `json:"pinned_version"`  // 0: latest
	Available []int64          `json:"available_versions"`
	Failed    map[int64]string `json:"failed_versions,omitempty"`
	LastError string           `json:"last_error,omitempty"`
	Loads     int              `json:"loads"`
}

// Manager hosts the configured models.
type Manager struct {
	models  map[string]*managedModel
	order   []string // configuration order; order[0] is the default model
	opts    []recstrata.Option
	metrics *metrics

	stop     chan struct{}
	pollDone sync.WaitGroup
	live     sync.WaitGroup // one per opened version, Done once it is closed
	draining atomic.Bool    // set by Drain or Close: not ready, no more loads
	closed   atomic.Bool
}

// NewManager checks the specs, loads each model's first version (a model
// whose load fails is reported and not ready) and starts polling every poll
// (never when poll <= 0). opts configure every version's recstrata.Open.
func NewManager(specs []modelSpec, poll time.Duration, mt *metrics, opts ...recstrata.Option) (*Manager, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("no models configured")
	}
	mg := &Manager{models: map[string]*managedModel{}, opts: opts, metrics: mt, stop: make(chan struct{})}
	for _, s := range specs {
		if s.Name == "" || s.Base == "" {
			return nil, fmt.Errorf("model %q: name and base directory are required", s.Name)
		}
		if _, dup := mg.models[s.Name]; dup {
			return nil, fmt.Errorf("model %q configured twice", s.Name)
		}
		if st, err := os.Stat(s.Base); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("model %q: base %q is not a directory", s.Name, s.Base)
		}
		mg.models[s.Name] = &managedModel{name: s.Name, base: s.Base, failed: map[int64]string{}}
		mg.order = append(mg.order, s.Name)
	}
	for _, name := range mg.order {
		if err := mg.Reload(name); err != nil {
			log.Printf("model %s: %v", name, err)
		}
	}
	if poll > 0 {
		mg.pollDone.Add(1)
		go mg.pollLoop(poll)
	}
	return mg, nil
}

func (mg *Manager) pollLoop(every time.Duration) {
	defer mg.pollDone.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-mg.stop:
			return
		case <-t.C:
			for _, name := range mg.order {
				mm := mg.models[name]
				mm.loadMu.Lock()
				err := mg.syncLocked(mm)
				mm.loadMu.Unlock()
				if err != nil {
					log.Printf("model %s: %v", name, err)
				}
			}
		}
	}
}

// DefaultModel is the first configured model.
func (mg *Manager) DefaultModel() string { return mg.order[0] }

func (mg *Manager) model(name string) (*managedModel, error) {
	mm, ok := mg.models[name]
	if !ok {
		return nil, &recstrata.Error{Op: "Acquire", Code: recstrata.NotFound, Message: fmt.Sprintf("no model named %q", name)}
	}
	return mm, nil
}

// Acquire leases the serving version of a model (want == 0) or checks that
// the serving version is want. Errors: NotFound (unknown model or version),
// FailedPrecondition (nothing serving, or the manager is closed).
func (mg *Manager) Acquire(name string, want int64) (lease, error) {
	mm, err := mg.model(name)
	if err != nil {
		return lease{}, err
	}
	mm.mu.RLock()
	defer mm.mu.RUnlock()
	v := mm.serving
	if v == nil {
		return lease{}, &recstrata.Error{Op: "Acquire", Code: recstrata.FailedPrecondition,
			Message: fmt.Sprintf("model %q has no version serving", name)}
	}
	if want != 0 && v.num != want {
		return lease{}, &recstrata.Error{Op: "Acquire", Code: recstrata.NotFound,
			Message: fmt.Sprintf("model %q: version %d is not loaded (serving %d)", name, want, v.num)}
	}
	// The entry's own reference is held while v serves, and swaps need mu
	// exclusively, so refs > 0 here: v cannot be closed under this lease.
	v.refs.Add(1)
	return lease{version: v, mg: mg}, nil
}

// release drops one reference; the last one closes the version (in the
// background: a request does not wait for TensorFlow to free a model).
func (mg *Manager) release(v *version) {
	if n := v.refs.Add(-1); n > 0 {
		return
	} else if n < 0 {
		panic("recstrata server: version released more often than acquired")
	}
	go func() {
		defer mg.live.Done()
		v.model.Close()
		log.Printf("closed version directory %s (drained)", v.dir)
	}()
}

// Reload forgets failed loads of the model and runs one discovery step now.
func (mg *Manager) Reload(name string) error {
	mm, err := mg.model(name)
	if err != nil {
		return err
	}
	mm.loadMu.Lock()
	defer mm.loadMu.Unlock()
	clear(mm.failed)
	return mg.syncLocked(mm)
}

// Pin serves version num from now on (loading it first; on failure the old
// version keeps serving and the pin is unchanged). Discovery then leaves the
// model alone until Unpin.
func (mg *Manager) Pin(name string, num int64) error {
	mm, err := mg.model(name)
	if err != nil {
		return err
	}
	if num <= 0 {
		return &recstrata.Error{Op: "Pin", Code: recstrata.InvalidArgument, Message: fmt.Sprintf("version must be a positive integer, got %d", num)}
	}
	mm.loadMu.Lock()
	defer mm.loadMu.Unlock()
	delete(mm.failed, num) // an explicit pin retries a failed version
	if err := mg.switchLocked(mm, num); err != nil {
		return err
	}
	mm.pinned = num
	return nil
}

// Unpin returns the model to the latest version.
func (mg *Manager) Unpin(name string) error {
	mm, err := mg.model(name)
	if err != nil {
		return err
	}
	mm.loadMu.Lock()
	defer mm.loadMu.Unlock()
	mm.pinned = 0
	return mg.syncLocked(mm)
}

// Rollback pins the highest available version below the serving one and
// returns it.
func (mg *Manager) Rollback(name string) (int64, error) {
	mm, err := mg.model(name)
	if err != nil {
		return 0, err
	}
	mm.loadMu.Lock()
	defer mm.loadMu.Unlock()
	cur := mm.servingNum()
	vers, err := listVersions(mm.base)
	if err != nil {
		return 0, err
	}
	var prev int64
	for _, v := range vers {
		if v < cur && v > prev {
			prev = v
		}
	}
	if prev == 0 {
		return 0, &recstrata.Error{Op: "Rollback", Code: recstrata.NotFound,
			Message: fmt.Sprintf("model %q: no version below %d in %s", name, cur, mm.base)}
	}
	if err := mg.switchLocked(mm, prev); err != nil {
		return 0, err
	}
	mm.pinned = prev
	return prev, nil
}

func (mm *managedModel) servingNum() int64 {
	mm.mu.RLock()
	defer mm.mu.RUnlock()
	if mm.serving == nil {
		return 0
	}
	return mm.serving.num
}

// syncLocked is one discovery step: serve the pinned version, else the
// highest version that has not failed to load. Needs mm.loadMu.
func (mg *Manager) syncLocked(mm *managedModel) error {
	vers, err := listVersions(mm.base)
	if err != nil {
		mm.lastErr = err.Error()
		return err
	}
	target := mm.pinned
	if target == 0 {
		for _, v := range vers {
			if _, bad := mm.failed[v]; !bad && v > target {
				target = v
			}
		}
	}
	if target == 0 {
		if len(vers) == 0 {
			mm.lastErr = fmt.Sprintf("no version directories in %s", mm.base)
			return fmt.Errorf("%s", mm.lastErr)
		}
		return nil // every version failed: keep what serves, errors already reported
	}
	if target == mm.servingNum() {
		return nil
	}
	if _, bad := mm.failed[target]; bad {
		return nil // a pinned version that failed: not retried by polling
	}
	return mg.switchLocked(mm, target)
}

// switchLocked opens, warms and swaps in version num. Needs mm.loadMu.
func (mg *Manager) switchLocked(mm *managedModel, num int64) error {
	if num == mm.servingNum() {
		return nil
	}
	if mg.draining.Load() {
		return &recstrata.Error{Op: "Load", Code: recstrata.FailedPrecondition, Message: "server is shutting down"}
	}
	dir := filepath.Join(mm.base, strconv.FormatInt(num, 10))
	mm.loads++
	t0 := time.Now()
	nv, err := mg.open(dir)
	mg.metrics.observeLoad(mm.name, time.Since(t0), err)
	if err != nil {
		mm.failed[num] = err.Error()
		mm.lastErr = fmt.Sprintf("version %d: %v", num, err)
		return fmt.Errorf("model %q: loading version %d failed (the serving version is unchanged): %w", mm.name, num, err)
	}
	nv.num = num
	nv.refs.Store(1) // the entry's reference
	mm.mu.Lock()
	old := mm.serving
	mm.serving = nv
	mm.mu.Unlock()
	mm.lastErr = ""
	mg.metrics.servingVersion.WithLabelValues(mm.name).Set(float64(num))
	log.Printf("model %s: version %d serving (%s, loaded in %v)", mm.name, num, dir, time.Since(t0).Round(time.Millisecond))
	if old != nil {
		mg.release(old) // closes once its in-flight requests are done
	}
	return nil
}

// open opens a version directory and warms it before it takes traffic.
func (mg *Manager) open(dir string) (*version, error) {
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() {
		return nil, &recstrata.Error{Op: "Load", Code: recstrata.NotFound, Message: fmt.Sprintf("no version directory %s", dir)}
	}
	m, err := recstrata.Open(dir, mg.opts...)
	if err != nil {
		return nil, err
	}
	if err := warm(m); err != nil {
		m.Close()
		return nil, fmt.Errorf("warmup: %w", err)
	}
	mg.live.Add(1)
	return &version{dir: dir, model: m, loadedAt: time.Now()}, nil
}

// listVersions returns the integer-named directories of base, ascending.
func listVersions(base string) ([]int64, error) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil, fmt.Errorf("reading base directory: %w", err)
	}
	var out []int64
	for _, e := range entries {
		n, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil || n <= 0 || strconv.FormatInt(n, 10) != e.Name() {
			continue // not a version directory (temp names, files, "007")
		}
		if st, err := os.Stat(filepath.Join(base, e.Name())); err == nil && st.IsDir() {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Status reports every model (configuration order).
func (mg *Manager) Status() []modelStatus {
	out := make([]modelStatus, 0, len(mg.order))
	for _, name := range mg.order {
		st, _ := mg.ModelStatus(name)
		out = append(out, st)
	}
	return out
}

// ModelStatus reports one model.
func (mg *Manager) ModelStatus(name string) (modelStatus, error) {
	mm, err := mg.model(name)
	if err != nil {
		return modelStatus{}, err
	}
	mm.loadMu.Lock()
	defer mm.loadMu.Unlock()
	vers, verr := listVersions(mm.base)
	st := modelStatus{Name: name, Base: mm.base, Serving: mm.servingNum(), Pinned: mm.pinned,
		Available: vers, Failed: maps(mm.failed), LastError: mm.lastErr, Loads: mm.loads}
	if verr != nil {
		st.LastError = verr.Error()
	}
	return st, nil
}

func maps(m map[int64]string) map[int64]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[int64]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// Ready reports whether every model has a version serving (and the manager
// is not closing).
func (mg *Manager) Ready() bool {
	if mg.draining.Load() {
		return false
	}
	for _, mm := range mg.models {
		if mm.servingNum() == 0 {
			return false
		}
	}
	return true
}

// Drain marks the manager as shutting down: Ready turns false and no version
// is loaded any more; the serving versions keep answering.
func (mg *Manager) Drain() { mg.draining.Store(true) }

// Close stops discovery, retires every serving version and waits until each
// is closed, i.e. until every lease has been released. Call it after the
// servers stopped taking requests. Idempotent.
func (mg *Manager) Close() {
	mg.draining.Store(true)
	if mg.closed.Swap(true) {
		mg.live.Wait()
		return
	}
	close(mg.stop)
	mg.pollDone.Wait()
	for _, mm := range mg.models {
		mm.loadMu.Lock() // no load is under way past this point
		mm.mu.Lock()
		v := mm.serving
		mm.serving = nil
		mm.mu.Unlock()
		mm.loadMu.Unlock()
		if v != nil {
			mg.release(v)
		}
	}
	mg.live.Wait()
}
