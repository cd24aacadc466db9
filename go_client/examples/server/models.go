package main

// models.go puts the server's model configuration onto the library's native
// model host (recstrata.Host, docs/host.md), which does the lifecycle:
// version discovery (its poll thread), load and warmup before traffic,
// routing by version, leases, drain-then-close, pins, failed-load reports,
// and per-version metrics. What stays here is server policy: the flags turned
// into a host config, "rollback" (pin the highest version below the serving
// one), readiness during shutdown, and the status JSON of the HTTP admin
// routes. A Manager is safe for concurrent use.

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/recstrata/recstrata/go_client"
)

// modelSpec names a model and its base directory.
type modelSpec struct {
	Name string
	Base string
}

// Manager hosts the configured models on one recstrata.Host.
type Manager struct {
	host     *recstrata.Host
	order    []string // configuration order; order[0] is the default model
	known    map[string]bool
	draining atomic.Bool // set by Drain or Close: not ready
}

// hostStatus is the part of the host's status JSON the server reads.
type hostStatus struct {
	Models []hostModel `json:"models"`
}

type hostModel struct {
	Name           string        `json:"name"`
	BasePath       string        `json:"base_path"`
	Policy         string        `json:"policy"`
	Pinned         bool          `json:"pinned"`
	Serving        []int64       `json:"serving"`
	DefaultVersion int64         `json:"default_version"`
	Ready          bool          `json:"ready"`
	BaseError      string        `json:"base_error"`
	Versions       []hostVersion `json:"versions"`
}

type hostVersion struct {
	Version int64  `json:"version"`
	State   string `json:"state"`
	Error   string `json:"error"`
}

// modelStatus is the JSON form of a model's state (GET /v1/models/{name}:status).
type modelStatus struct {
	Name      string           `json:"name"`
	Base      string           `json:"base"`
	Serving   int64            `json:"serving_version"` // the default version; 0: none
	Pinned    int64            `json:"pinned_version"`  // 0: the policy (latest)
	Policy    string           `json:"policy"`          // the host's policy name
	Failed    map[int64]string `json:"failed_versions,omitempty"`
	LastError string           `json:"last_error,omitempty"`
	// Versions is the host's per-version status, unchanged.
	Versions json.RawMessage `json:"versions"`
}

// NewManager checks the specs and opens the host, which loads each model's
// newest version before this returns (a model whose load fails is reported
// and not ready) and discovers new versions every poll (never when poll <=
// 0). modelConfig is every version's rs_model_open config.
func NewManager(specs []modelSpec, poll time.Duration, modelConfig map[string]any) (*Manager, error) {
	if len(specs) == 0 {
		return nil, fmt.Errorf("no models configured")
	}
	mg := &Manager{known: map[string]bool{}}
	var models []map[string]any
	for _, s := range specs {
		// The host would report a missing base in the status; a server
		// started with a typo fails at once instead.
		if st, err := os.Stat(s.Base); s.Base == "" || err != nil || !st.IsDir() {
			return nil, fmt.Errorf("model %q: base %q is not a directory", s.Name, s.Base)
		}
		mg.known[s.Name] = true
		mg.order = append(mg.order, s.Name)
		models = append(models, map[string]any{"name": s.Name, "base_path": s.Base,
			"version_policy": map[string]any{"latest": map[string]any{"num_versions": 1}}})
	}
	cfg := map[string]any{"models": models, "model_config": modelConfig}
	if poll > 0 {
		cfg["poll_interval_seconds"] = poll.Seconds()
	}
	text, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	// Names (empty, duplicate, malformed) are checked by the host.
	mg.host, err = recstrata.OpenHost(string(text))
	if err != nil {
		return nil, err
	}
	return mg, nil
}

// DefaultModel is the first configured model.
func (mg *Manager) DefaultModel() string { return mg.order[0] }

// Known reports whether name is a configured model.
func (mg *Manager) Known(name string) bool { return mg.known[name] }

// Host is the native host (for calls and metrics).
func (mg *Manager) Host() *recstrata.Host { return mg.host }

// Acquire leases a version of a model (want 0: the default version). Errors
// are the host's: NotFound (unknown model or version), FailedPrecondition
// (nothing serving, or shut down).
func (mg *Manager) Acquire(name string, want int64) (*recstrata.Lease, error) {
	return mg.host.Acquire(name, want)
}

// Reload runs one discovery pass of the model now.
func (mg *Manager) Reload(name string) error { return mg.host.Reload(name) }

// Pin serves version num from now on (loaded first; if that fails the
// serving version and the policy stay, and the load error is returned).
func (mg *Manager) Pin(name string, num int64) error {
	if num <= 0 {
		return &recstrata.Error{Op: "Pin", Code: recstrata.InvalidArgument,
			Message: fmt.Sprintf("version must be a positive integer, got %d", num)}
	}
	return mg.host.Pin(name, num)
}

// Unpin returns the model to its policy (the latest version).
func (mg *Manager) Unpin(name string) error { return mg.host.Unpin(name) }

// Rollback pins the highest version below the serving one that the host
// accepts (versions that are incomplete or fail to load are skipped) and
// returns it.
func (mg *Manager) Rollback(name string) (int64, error) {
	st, err := mg.ModelStatus(name)
	if err != nil {
		return 0, err
	}
	vers, err := listVersions(st.Base)
	if err != nil {
		return 0, &recstrata.Error{Op: "Rollback", Code: recstrata.IO, Message: err.Error()}
	}
	var lastErr error
	for i := len(vers) - 1; i >= 0; i-- {
		if vers[i] >= st.Serving {
			continue
		}
		if lastErr = mg.host.Pin(name, vers[i]); lastErr == nil {
			return vers[i], nil
		}
	}
	if lastErr != nil {
		return 0, lastErr
	}
	return 0, &recstrata.Error{Op: "Rollback", Code: recstrata.NotFound,
		Message: fmt.Sprintf("model %q: no version below %d in %s", name, st.Serving, st.Base)}
}

// listVersions returns the integer-named entries of base, ascending (the
// host decides which are complete versions).
func listVersions(base string) ([]int64, error) {
	entries, err := os.ReadDir(base)
	if err != nil {
		return nil, fmt.Errorf("reading base directory: %w", err)
	}
	var out []int64
	for _, e := range entries {
		n, err := strconv.ParseInt(e.Name(), 10, 64)
		if err == nil && n > 0 && strconv.FormatInt(n, 10) == e.Name() {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (mg *Manager) hostStatus() (hostStatus, map[string]json.RawMessage, error) {
	var st hostStatus
	text, err := mg.host.StatusJSON()
	if err != nil {
		return st, nil, err
	}
	var raw struct {
		Models []struct {
			Name     string          `json:"name"`
			Versions json.RawMessage `json:"versions"`
		} `json:"models"`
	}
	if err := json.Unmarshal([]byte(text), &st); err != nil {
		return st, nil, &recstrata.Error{Op: "Status", Code: recstrata.Internal, Message: "host status: " + err.Error()}
	}
	if err := json.Unmarshal([]byte(text), &raw); err != nil {
		return st, nil, &recstrata.Error{Op: "Status", Code: recstrata.Internal, Message: "host status: " + err.Error()}
	}
	versions := map[string]json.RawMessage{}
	for _, m := range raw.Models {
		versions[m.Name] = m.Versions
	}
	return st, versions, nil
}

func toStatus(m hostModel, versions json.RawMessage) modelStatus {
	st := modelStatus{Name: m.Name, Base: m.BasePath, Serving: m.DefaultVersion, Policy: m.Policy,
		LastError: m.BaseError, Versions: versions}
	if m.Pinned {
		// A pin is the policy "specific:N".
		st.Pinned, _ = strconv.ParseInt(strings.TrimPrefix(m.Policy, "specific:"), 10, 64)
	}
	for _, v := range m.Versions {
		if v.State == "failed" {
			if st.Failed == nil {
				st.Failed = map[int64]string{}
			}
			st.Failed[v.Version] = v.Error
			if st.LastError == "" {
				st.LastError = fmt.Sprintf("version %d: %s", v.Version, v.Error)
			}
		}
	}
	return st
}

// Status reports every model (configuration order).
func (mg *Manager) Status() ([]modelStatus, error) {
	hs, versions, err := mg.hostStatus()
	if err != nil {
		return nil, err
	}
	byName := map[string]hostModel{}
	for _, m := range hs.Models {
		byName[m.Name] = m
	}
	out := make([]modelStatus, 0, len(mg.order))
	for _, name := range mg.order {
		out = append(out, toStatus(byName[name], versions[name]))
	}
	return out, nil
}

// ModelStatus reports one model.
func (mg *Manager) ModelStatus(name string) (modelStatus, error) {
	if !mg.known[name] {
		return modelStatus{}, &recstrata.Error{Op: "Status", Code: recstrata.NotFound,
			Message: fmt.Sprintf("no model named %q", name)}
	}
	hs, versions, err := mg.hostStatus()
	if err != nil {
		return modelStatus{}, err
	}
	for _, m := range hs.Models {
		if m.Name == name {
			return toStatus(m, versions[name]), nil
		}
	}
	return modelStatus{}, &recstrata.Error{Op: "Status", Code: recstrata.Internal,
		Message: fmt.Sprintf("the host does not report model %q", name)}
}

// Ready reports whether every model has a version serving (and the server
// is not shutting down).
func (mg *Manager) Ready() bool {
	if mg.draining.Load() {
		return false
	}
	hs, _, err := mg.hostStatus()
	if err != nil {
		return false
	}
	for _, m := range hs.Models {
		if !m.Ready {
			return false
		}
	}
	return len(hs.Models) == len(mg.order)
}

// Drain marks the server as shutting down: Ready turns false; the serving
// versions keep answering until Close.
func (mg *Manager) Drain() { mg.draining.Store(true) }

// Close shuts the host down (later calls fail with FailedPrecondition),
// waits for the calls in flight, closes every version and frees the host.
// Call it after the servers stopped taking requests. Idempotent.
func (mg *Manager) Close() {
	mg.draining.Store(true)
	mg.host.Close()
}
