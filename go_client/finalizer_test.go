package recstrata

import (
	"os"
	"runtime"
	"testing"
	"time"
)

// Internal test: a Model dropped without Close is closed by its finalizer
// (observed through the package's open-model counter).
func TestFinalizerClosesModel(t *testing.T) {
	dir := os.Getenv("RECSTRATA_TEST_MODEL")
	if dir == "" {
		t.Skip("RECSTRATA_TEST_MODEL is not set: run these tests through " +
			"`python -m pytest tests/test_go_client.py`, which builds the test model")
	}
	before := openModels.Load()
	func() {
		m, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		_ = m.Inputs()
		if got := openModels.Load(); got != before+1 {
			t.Fatalf("open models %d, want %d", got, before+1)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for openModels.Load() != before {
		if time.Now().After(deadline) {
			t.Fatalf("finalizer did not close the model (open models %d, want %d)", openModels.Load(), before)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	// Close clears the finalizer: an explicitly closed model is closed once.
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	runtime.GC()
	time.Sleep(50 * time.Millisecond)
	if got := openModels.Load(); got != before {
		t.Errorf("open models %d after Close + GC, want %d", got, before)
	}
}
