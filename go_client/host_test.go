package recstrata_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/recstrata/recstrata/go_client"
	"github.com/recstrata/recstrata/go_client/internal/testmodel"
)

// hostFixture is a host over the generator's two models "a" and "b" with
// versions 1 and 2 each, plus what each version must answer.
type hostFixture struct {
	exp    *testmodel.Expected
	host   *recstrata.Host
	req    []byte                      // request.bin (a PredictRequest for "x")
	answer map[string]map[int64][]byte // PredictResponse of each version, from Model.PredictBytes
}

func hostConfig(exp *testmodel.Expected, policy string) string {
	var models []string
	for _, name := range []string{"a", "b"} {
		models = append(models, fmt.Sprintf(`{"name": %q, "base_path": %q, "version_policy": %s}`,
			name, filepath.Join(exp.HostBase, name), policy))
	}
	return fmt.Sprintf(`{"models": [%s, %s]}`, models[0], models[1])
}

func openHostFixture(t *testing.T) *hostFixture {
	t.Helper()
	_, exp := testmodel.Load(t)
	if exp.HostBase == "" {
		t.Fatal("the generator wrote no host_base")
	}
	req, err := os.ReadFile(exp.RequestFile)
	if err != nil {
		t.Fatal(err)
	}
	f := &hostFixture{exp: exp, req: req, answer: map[string]map[int64][]byte{}}
	for _, name := range []string{"a", "b"} {
		f.answer[name] = map[int64][]byte{}
		for _, v := range []int64{1, 2} {
			m, err := recstrata.Open(filepath.Join(exp.HostBase, name, strconv.FormatInt(v, 10)))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := m.PredictBytes(req)
			m.Close()
			if err != nil {
				t.Fatal(err)
			}
			f.answer[name][v] = resp
		}
	}
	if bytes.Equal(f.answer["a"][1], f.answer["a"][2]) || bytes.Equal(f.answer["a"][1], f.answer["b"][1]) {
		t.Fatal("the versions' answers do not tell them apart")
	}
	f.host, err = recstrata.OpenHost(hostConfig(exp, `{"latest": {"num_versions": 1}}`))
	if err != nil {
		t.Fatalf("OpenHost: %v", err)
	}
	t.Cleanup(func() { f.host.Close() })
	return f
}

// checkRun checks a tensor answer against the version that says it answered.
func (f *hostFixture) checkRun(model string, x []float32, outs []recstrata.Tensor, version int64) error {
	shift, ok := f.exp.HostShifts[model][strconv.FormatInt(version, 10)]
	if !ok {
		return fmt.Errorf("%s answered by unknown version %d", model, version)
	}
	if len(outs) != 1 || outs[0].Name != "y" {
		return fmt.Errorf("%s v%d: outputs %v", model, version, outs)
	}
	got, _ := outs[0].Data.([]float32)
	want := f.exp.Affine(x)
	if len(got) != len(want) {
		return fmt.Errorf("%s v%d: %d values, want %d", model, version, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i]+shift {
			return fmt.Errorf("%s v%d: y[%d] = %v, want %v", model, version, i, got[i], want[i]+shift)
		}
	}
	return nil
}

// call makes one tensor or bytes call of model at version (0: default) and
// checks the answer; it returns the version that answered.
func (f *hostFixture) call(r *rand.Rand, model string, version int64, useBytes bool) (int64, error) {
	if useBytes {
		resp, v, err := f.host.PredictBytes(model, version, f.req)
		if err != nil {
			return 0, err
		}
		if want, ok := f.answer[model][v]; !ok || !bytes.Equal(resp, want) {
			return v, fmt.Errorf("%s: bytes answer is not version %d's", model, v)
		}
		return v, nil
	}
	x := randomBatch(r)
	outs, v, err := f.host.Run(model, version, []recstrata.Tensor{{Name: "x", DType: recstrata.Float32,
		Shape: []int64{int64(len(x) / 4), 4}, Data: x}})
	if err != nil {
		return 0, err
	}
	return v, f.checkRun(model, x, outs, v)
}

func TestHostSwapAndRollbackUnderLoad(t *testing.T) {
	f := openHostFixture(t)
	r := rand.New(rand.NewPCG(1, 0))
	for _, m := range []string{"a", "b"} {
		if v, err := f.call(r, m, 0, false); err != nil || v != 2 {
			t.Fatalf("%s before swaps: version %d, %v (want the latest, 2)", m, v, err)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls, failures atomic.Int64
	var firstErr atomic.Value
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(100+g), 0))
			model := []string{"a", "b"}[g%2]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := f.call(r, model, 0, i%2 == 1); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
				calls.Add(1)
			}
		}(g)
	}

	// Swaps and rollbacks of both models while the callers run. After each
	// step returns, new calls must be answered by the version it chose.
	type step struct {
		model string
		do    func() error
		want  int64 // the default version after the step
		also  int64 // another version that must serve by number (0: none)
	}
	var steps []step
	for round := 0; round < 5; round++ {
		for _, m := range []string{"a", "b"} {
			m := m
			steps = append(steps,
				step{m, func() error { return f.host.Pin(m, 1) }, 1, 0},                      // rollback
				step{m, func() error { return f.host.Unpin(m) }, 2, 0},                       // back to latest
				step{m, func() error { return f.host.Pin(m, 1) }, 1, 0},                      // rollback again
				step{m, func() error { return f.host.SetPolicy(m, `{"latest": {}}`) }, 2, 0}, // roll forward
				step{m, func() error { return f.host.SetPolicy(m, `{"all": {}}`) }, 2, 1},    // both serve
				step{m, func() error { return f.host.Reload(m) }, 2, 1})
		}
	}
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d (%s): %v", i, s.model, err)
		}
		for _, useBytes := range []bool{false, true} {
			if v, err := f.call(r, s.model, 0, useBytes); err != nil || v != s.want {
				t.Fatalf("step %d (%s): answered by %d, %v; want %d", i, s.model, v, err, s.want)
			}
		}
		if s.also != 0 {
			if v, err := f.call(r, s.model, s.also, false); err != nil || v != s.also {
				t.Fatalf("step %d (%s): version %d by number: answered by %d, %v", i, s.model, s.also, v, err)
			}
		}
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed during %d swaps; first: %v", n, calls.Load(), len(steps), firstErr.Load())
	}
	if calls.Load() < int64(len(steps)) {
		t.Fatalf("only %d calls ran during %d swaps", calls.Load(), len(steps))
	}
	t.Logf("%d calls, 0 failed, during %d swaps/rollbacks", calls.Load(), len(steps))
}

func TestHostLeaseOutlivesSwapAndClose(t *testing.T) {
	f := openHostFixture(t)
	lease, err := f.host.Acquire("a", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Release()
	if lease.Version() != 2 {
		t.Fatalf("lease on version %d, want 2", lease.Version())
	}
	check := func(when string) {
		t.Helper()
		resp, err := lease.PredictBytes(f.req)
		if err != nil || !bytes.Equal(resp, f.answer["a"][2]) {
			t.Fatalf("%s: lease bytes answer wrong (%v)", when, err)
		}
		r := rand.New(rand.NewPCG(3, 0))
		x := randomBatch(r)
		outs, err := lease.Run([]recstrata.Tensor{{Name: "x", DType: recstrata.Float32,
			Shape: []int64{int64(len(x) / 4), 4}, Data: x}})
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if err := f.checkRun("a", x, outs, 2); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
	}
	if err := f.host.Pin("a", 1); err != nil {
		t.Fatal(err)
	}
	if _, v, err := f.host.PredictBytes("a", 0, f.req); err != nil || v != 1 {
		t.Fatalf("after the pin the host answers with %d, %v", v, err)
	}
	if _, _, err := f.host.PredictBytes("a", 2, f.req); !errors.Is(err, recstrata.NotFound) {
		t.Fatalf("retired version 2 by number: %v, want NotFound", err)
	}
	check("after the swap")
	f.host.Close()
	check("after Close")
	lease.Release()
	lease.Release() // idempotent
	if _, err := lease.PredictBytes(f.req); !errors.Is(err, recstrata.ErrClosed) {
		t.Fatalf("released lease: %v, want ErrClosed", err)
	}
}

func TestHostCloseRacesCalls(t *testing.T) {
	f := openHostFixture(t)
	var wg sync.WaitGroup
	var ok, refused atomic.Int64
	var bad atomic.Value
	start := make(chan struct{})
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(200+g), 0))
			<-start
			// Call until refused: every call before is answered correctly.
			for i := 0; ; i++ {
				_, err := f.call(r, []string{"a", "b"}[g%2], 0, i%2 == 0)
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, recstrata.FailedPrecondition):
					refused.Add(1) // shut down or closed: a clear refusal
					return
				default:
					bad.CompareAndSwap(nil, err)
					return
				}
			}
		}(g)
	}
	close(start)
	// Let some calls through, then shut down and close while they run.
	for ok.Load() < 10 && bad.Load() == nil {
		runtime.Gosched()
	}
	if err := f.host.Shutdown(); err != nil {
		t.Fatal(err)
	}
	f.host.Close()
	wg.Wait()
	if err := bad.Load(); err != nil {
		t.Fatalf("a call racing Close got %v (want a right answer or FailedPrecondition)", err)
	}
	if refused.Load() != 6 {
		t.Fatalf("%d of 6 callers were refused", refused.Load())
	}
	if _, _, err := f.host.Run("a", 0, nil); !errors.Is(err, recstrata.ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
	t.Logf("%d calls answered before the close", ok.Load())
}

func TestHostErrors(t *testing.T) {
	f := openHostFixture(t)
	for _, cfg := range []string{
		`{`, `{"models": []}`, `{"models": [{"name": "a"}]}`,
		`{"models": [{"name": "a", "base_path": "/x", "bogus": 1}]}`,
		`{"models": [{"name": "a", "base_path": "/x"}, {"name": "a", "base_path": "/y"}]}`,
	} {
		if h, err := recstrata.OpenHost(cfg); !errors.Is(err, recstrata.InvalidArgument) {
			if h != nil {
				h.Close()
			}
			t.Errorf("OpenHost(%s): %v, want InvalidArgument", cfg, err)
		}
	}
	wantError(t, "unknown model", second(f.host.PredictBytes("nope", 0, f.req)), recstrata.NotFound)
	wantError(t, "unknown version", second(f.host.PredictBytes("a", 9, f.req)), recstrata.NotFound)
	_, _, err := f.host.Run("a", 0, []recstrata.Tensor{{Name: "nope", DType: recstrata.Float32,
		Shape: []int64{1, 4}, Data: make([]float32, 4)}})
	wantError(t, "bad input name", err, recstrata.InvalidArgument)
	_, err = f.host.Acquire("nope", 0)
	wantError(t, "acquire unknown model", err, recstrata.NotFound)
	wantError(t, "pin a missing version", f.host.Pin("a", 7), recstrata.NotFound)
	wantError(t, "pin unknown model", f.host.Pin("nope", 1), recstrata.NotFound)
	wantError(t, "reload unknown model", f.host.Reload("nope"), recstrata.NotFound)
	wantError(t, "bad policy", f.host.SetPolicy("a", `{"sometimes": {}}`), recstrata.InvalidArgument)
	if err := f.host.Reload(""); err != nil {
		t.Fatalf("Reload of every model: %v", err)
	}
	// The failed calls changed nothing: version 2 still serves.
	if _, v, err := f.host.PredictBytes("a", 0, f.req); err != nil || v != 2 {
		t.Fatalf("after the errors: version %d, %v", v, err)
	}
	if err := f.host.Shutdown(); err != nil {
		t.Fatal(err)
	}
	wantError(t, "after Shutdown", second(f.host.PredictBytes("a", 0, f.req)), recstrata.FailedPrecondition)
	f.host.Close()
	f.host.Close()
	if err := f.host.Pin("a", 1); !errors.Is(err, recstrata.ErrClosed) {
		t.Fatalf("Pin after Close: %v, want ErrClosed", err)
	}
}

func second(_ []byte, _ int64, err error) error { return err }

func TestHostStatusAndMetrics(t *testing.T) {
	f := openHostFixture(t)
	if err := f.host.SetPolicy("b", `{"all": {}}`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if _, _, err := f.host.PredictBytes("b", 1, f.req); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := f.host.PredictBytes("b", 1, []byte("\xff\xff not a request")); err == nil {
		t.Fatal("damaged request bytes were accepted")
	}
	raw, err := f.host.StatusJSON()
	if err != nil {
		t.Fatal(err)
	}
	var status struct {
		Models []struct {
			Name    string  `json:"name"`
			Serving []int64 `json:"serving"`
			Ready   bool    `json:"ready"`
		} `json:"models"`
	}
	if err := json.Unmarshal([]byte(raw), &status); err != nil {
		t.Fatalf("status is not JSON: %v\n%s", err, raw)
	}
	serving := map[string][]int64{}
	for _, m := range status.Models {
		if !m.Ready {
			t.Errorf("%s not ready: %s", m.Name, raw)
		}
		serving[m.Name] = m.Serving
	}
	if fmt.Sprint(serving["a"]) != "[2]" || len(serving["b"]) != 2 {
		t.Fatalf("serving %v, want a [2] and b both versions\n%s", serving, raw)
	}

	text, err := f.host.MetricsText()
	if err != nil {
		t.Fatal(err)
	}
	metric := func(name string) string {
		re := regexp.MustCompile(`(?m)^` + name + `\{model="b",version="1"\} (\S+)$`)
		m := re.FindStringSubmatch(text)
		if m == nil {
			t.Fatalf("no %s for b v1 in\n%s", name, text)
		}
		return m[1]
	}
	if got := metric("rs_host_requests_total"); got != "6" {
		t.Errorf("rs_host_requests_total = %s, want 6", got)
	}
	if got := metric("rs_host_errors_total"); got != "1" {
		t.Errorf("rs_host_errors_total = %s, want 1", got)
	}
}
