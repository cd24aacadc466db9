package main

import (
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

func TestManagerServesLatestAndDrainsOnSwap(t *testing.T) {
	mg, base := newTestManager(t, 2)
	if st, _ := mg.ModelStatus("m"); st.Serving != 2 || st.Pinned != 0 || len(st.Available) != 2 {
		t.Fatalf("status %+v", st)
	}
	old, err := mg.Acquire("m", 0)
	if err != nil {
		t.Fatal(err)
	}
	// Version 3 appears; Reload swaps it in while a lease on 2 is held.
	if err := os.Symlink(testDir(t), filepath.Join(base, "3")); err != nil {
		t.Fatal(err)
	}
	if err := mg.Reload("m"); err != nil {
		t.Fatal(err)
	}
	l, err := mg.Acquire("m", 0)
	if err != nil || l.num != 3 {
		t.Fatalf("after reload: version %d, %v", l.num, err)
	}
	l.Release()
	if _, err := mg.Acquire("m", 2); !errors.Is(err, recstrata.NotFound) {
		t.Fatalf("version 2 after the swap: %v", err)
	}
	// The replaced version still answers its lease holder ...
	if _, err := old.model.Run(oneRow); err != nil {
		t.Fatalf("draining version failed a leased call: %v", err)
	}
	// ... and is closed once the last lease is released.
	m2 := old.model
	old.Release()
	waitFor(t, "version 2 to close", func() bool {
		_, err := m2.Run(oneRow)
		return errors.Is(err, recstrata.ErrClosed)
	})
}

func TestManagerSwapUnderLoadFailsNothing(t *testing.T) {
	mg, _ := newTestManager(t, 3)
	var stop atomic.Bool
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				l, err := mg.Acquire("m", 0)
				if err == nil {
					_, err = l.model.Run(oneRow)
					l.Release()
				}
				calls.Add(1)
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
	mg, base := newTestManager(t, 2)
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
	// A broken version 4 fails to load, the serving version stays and the
	// failure is reported; the poller would not retry it.
	if err := os.Mkdir(filepath.Join(base, "4"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := mg.Unpin("m"); err == nil {
		t.Fatal("unpin onto a broken version 4 reported no error")
	}
	st, _ := mg.ModelStatus("m")
	if st.Serving != 1 || st.Failed[4] == "" || st.LastError == "" {
		t.Fatalf("after failed load %+v", st)
	}
	if err := mg.Reload("m"); err == nil {
		t.Fatal("reload retried version 4 without an error")
	}
	// Pinning a version that does not exist keeps the pin and the version.
	if err := mg.Pin("m", 9); !errors.Is(err, recstrata.NotFound) {
		t.Fatalf("pin 9: %v", err)
	}
	if err := mg.Pin("m", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := mg.Acquire("nope", 0); !errors.Is(err, recstrata.NotFound) {
		t.Fatalf("unknown model: %v", err)
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
		if mg, err := NewManager(specs, 0, newMetrics()); err == nil {
			mg.Close()
			t.Errorf("%+v: no error", specs)
		}
	}
	// A base with no versions: created, not ready, reported.
	mg, err := NewManager([]modelSpec{{Name: "a", Base: t.TempDir()}}, 0, newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer mg.Close()
	if st, _ := mg.ModelStatus("a"); mg.Ready() || st.LastError == "" {
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
