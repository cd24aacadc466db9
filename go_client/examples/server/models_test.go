package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recstrata/recstrata/go_client"
)

var oneRow = []recstrata.Tensor{{Name: "x", DType: recstrata.Float32, Shape: []int64{1, 4}, Data: []float32{1, 2, 3, 4}}}

// waitFor polls cond for up to 30 s (a deadline for a background step, not
// a timing assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// versionState is the host's state of one version of model "m" ("" if the
// host does not list it).
func versionState(t *testing.T, mg *Manager, v int64) string {
	t.Helper()
	st, err := mg.ModelStatus("m")
	if err != nil {
		t.Fatal(err)
	}
	var vers []hostVersion
	if err := json.Unmarshal(st.Versions, &vers); err != nil {
		t.Fatalf("versions %s: %v", st.Versions, err)
	}
	for _, hv := range vers {
		if hv.Version == v {
			return hv.State
		}
	}
	return ""
}

func TestManagerServesLatestAndDrainsOnSwap(t *testing.T) {
	mg, base := newTestManager(t, 2, "")
	if st, _ := mg.ModelStatus("m"); st.Serving != 2 || st.Pinned != 0 {
		t.Fatalf("status %+v", st)
	}
	old, err := mg.Acquire("m", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Release()
	// Version 3 appears; Reload swaps it in while a lease on 2 is held.
	if err := os.Symlink(testDir(t), filepath.Join(base, "3")); err != nil {
		t.Fatal(err)
	}
	if err := mg.Reload("m"); err != nil {
		t.Fatal(err)
	}
	l, err := mg.Acquire("m", 0)
	if err != nil || l.Version() != 3 {
		t.Fatalf("after reload: %v, %v", l, err)
	}
	l.Release()
	if _, err := mg.Acquire("m", 2); !errors.Is(err, recstrata.NotFound) {
		t.Fatalf("version 2 after the swap: %v", err)
	}
	// The replaced version still answers its lease holder ...
	if got := versionState(t, mg, 2); got != "unloading" {
		t.Fatalf("version 2 under a lease is %q, want unloading", got)
	}
	if _, err := old.Run(oneRow); err != nil {
		t.Fatalf("draining version failed a leased call: %v", err)
	}
	// ... and is closed once the last lease is released.
	old.Release()
	waitFor(t, "version 2 to close", func() bool { return versionState(t, mg, 2) == "end" })
}

func TestManagerSwapUnderLoadFailsNothing(t *testing.T) {
	mg, _ := newTestManager(t, 3, "")
	var stop atomic.Bool
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				_, v, err := mg.Host().Run("m", 0, oneRow)
				calls.Add(1)
				if err == nil && (v < 1 || v > 3) {
					err = errors.New("answered by an unknown version")
				}
				if err != nil {
					failures.Add(1)
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := range 10 {
		v := int64(1 + i%3)
		if err := mg.Pin("m", v); err != nil {
			t.Fatal(err)
		}
		if got, _ := mg.ModelStatus("m"); got.Serving != v || got.Pinned != v {
			t.Fatalf("pinned %d, status %+v", v, got)
		}
	}
	stop.Store(true)
	wg.Wait()
	if failures.Load() != 0 || calls.Load() == 0 {
		t.Fatalf("%d of %d calls failed", failures.Load(), calls.Load())
	}
}

func TestManagerPinRollbackAndFailedLoads(t *testing.T) {
	mg, base := newTestManager(t, 2, "")
	if v, err := mg.Rollback("m"); err != nil || v != 1 {
		t.Fatalf("rollback: %d %v", v, err)
	}
	if st, _ := mg.ModelStatus("m"); st.Serving != 1 || st.Pinned != 1 {
		t.Fatalf("after rollback %+v", st)
	}
	// Pinned: a newer version does not take over.
	if err := os.Symlink(testDir(t), filepath.Join(base, "3")); err != nil {
		t.Fatal(err)
	}
	if err := mg.Reload("m"); err != nil {
		t.Fatal(err)
	}
	if st, _ := mg.ModelStatus("m"); st.Serving != 1 {
		t.Fatalf("pinned model moved: %+v", st)
	}
	if _, err := mg.Rollback("m"); !errors.Is(err, recstrata.NotFound) {
		t.Fatalf("rollback below 1: %v", err)
	}
	// A damaged version 4 fails to load: the serving version stays and the
	// failure is reported (a load failure is not an error of the pass).
	if err := os.Mkdir(filepath.Join(base, "4"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "4", "saved_model.pb"), []byte("\x00damaged"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := mg.Unpin("m"); err != nil {
		t.Fatal(err)
	}
	st, _ := mg.ModelStatus("m")
	if st.Serving != 1 || st.Failed[4] == "" || st.LastError == "" {
		t.Fatalf("after failed load %+v", st)
	}
	// Pinning the damaged version returns its load error and changes nothing.
	if err := mg.Pin("m", 4); err == nil {
		t.Fatal("pin onto a damaged version 4 reported no error")
	}
	// Pinning a version that does not exist keeps the version.
	if err := mg.Pin("m", 9); !errors.Is(err, recstrata.NotFound) {
		t.Fatalf("pin 9: %v", err)
	}
	if err := mg.Pin("m", 0); !errors.Is(err, recstrata.InvalidArgument) {
		t.Fatalf("pin 0: %v", err)
	}
	if st, _ := mg.ModelStatus("m"); st.Serving != 1 {
		t.Fatalf("failed pins moved the model: %+v", st)
	}
	if err := mg.Pin("m", 3); err != nil {
		t.Fatal(err)
	}
	if v, err := mg.Rollback("m"); err != nil || v != 2 {
		t.Fatalf("rollback from 3: %d %v", v, err)
	}
	if _, err := mg.Acquire("nope", 0); !errors.Is(err, recstrata.NotFound) {
		t.Fatalf("unknown model: %v", err)
	}
	if _, err := mg.ModelStatus("nope"); !errors.Is(err, recstrata.NotFound) {
		t.Fatalf("status of an unknown model: %v", err)
	}
	if !mg.Ready() {
		t.Fatal("not ready while serving")
	}
	mg.Close()
	if mg.Ready() {
		t.Fatal("ready after Close")
	}
	if _, err := mg.Acquire("m", 0); !errors.Is(err, recstrata.FailedPrecondition) {
		t.Fatalf("acquire after Close: %v", err)
	}
}

func TestManagerConfigErrors(t *testing.T) {
	dir := testDir(t)
	for _, specs := range [][]modelSpec{
		nil,
		{{Name: "", Base: dir}},
		{{Name: "a", Base: filepath.Join(dir, "missing")}},
		{{Name: "a", Base: dir}, {Name: "a", Base: dir}},
	} {
		if mg, err := NewManager(specs, 0, nil); err == nil {
			mg.Close()
			t.Errorf("%+v: no error", specs)
		}
	}
	// A base with no versions: created, not ready.
	mg, err := NewManager([]modelSpec{{Name: "a", Base: t.TempDir()}}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	if st, _ := mg.ModelStatus("a"); mg.Ready() || st.Serving != 0 {
		t.Fatalf("empty base: ready=%v %+v", mg.Ready(), st)
	}
}

func testDir(t *testing.T) string {
	t.Helper()
	dir, _ := filepath.Abs(os.Getenv("RECSTRATA_TEST_MODEL"))
	if os.Getenv("RECSTRATA_TEST_MODEL") == "" {
		t.Skip("RECSTRATA_TEST_MODEL is not set")
	}
	return dir
}
