package recstrata_test

// These tests need the SavedModel and expected outputs that
// tests/test_go_client.py generates; without RECSTRATA_TEST_MODEL they skip.

import (
	"encoding/json"
	"errors"
	"maps"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/recstrata/recstrata/go_client"
	"github.com/recstrata/recstrata/go_client/internal/testmodel"
)

func TestLibraryVersion(t *testing.T) {
	testmodel.Dir(t)
	if err := recstrata.LoadLibrary(""); err != nil {
		t.Fatal(err)
	}
	s, n, path, err := recstrata.LibraryVersion()
	if err != nil {
		t.Fatal(err)
	}
	if n < 100 || s == "" {
		t.Errorf("version %q (%d)", s, n)
	}
	if want := os.Getenv("RECSTRATA_LIBRARY"); want != "" && path != want {
		t.Errorf("loaded from %s, RECSTRATA_LIBRARY is %s", path, want)
	}
	// Loading again (same or default path) is a no-op.
	if err := recstrata.LoadLibrary(path); err != nil {
		t.Errorf("reload: %v", err)
	}
}

func TestSignature(t *testing.T) {
	m := testmodel.Open(t)
	want := []recstrata.TensorInfo{{Name: "x", DType: recstrata.Float32, Shape: []int64{-1, 4}, Rank: 2}}
	if got := m.Inputs(); !reflect.DeepEqual(got, want) {
		t.Errorf("inputs %+v, want %+v", got, want)
	}
	want = []recstrata.TensorInfo{{Name: "y", DType: recstrata.Float32, Shape: []int64{-1, 3}, Rank: 2}}
	if got := m.Outputs(); !reflect.DeepEqual(got, want) {
		t.Errorf("outputs %+v, want %+v", got, want)
	}
	desc, err := m.Describe()
	if err != nil || !json.Valid([]byte(desc)) {
		t.Errorf("Describe: %v %q", err, desc)
	}

	mixed := testmodel.Open(t, recstrata.WithSignature("mixed"))
	dtypes := func(infos []recstrata.TensorInfo) map[string]recstrata.DType {
		out := map[string]recstrata.DType{}
		for _, i := range infos {
			out[i.Name] = i.DType
		}
		return out
	}
	wantIn := map[string]recstrata.DType{"x": recstrata.Float32, "ids": recstrata.Int64,
		"names": recstrata.String, "z": recstrata.Float64}
	if got := dtypes(mixed.Inputs()); !reflect.DeepEqual(got, wantIn) {
		t.Errorf("mixed inputs %v, want %v", got, wantIn)
	}
	wantOut := map[string]recstrata.DType{"y": recstrata.Float32, "ids2": recstrata.Int64,
		"name_len": recstrata.Int32, "greeting": recstrata.String, "z2": recstrata.Float64,
		"positive": recstrata.Bool}
	if got := dtypes(mixed.Outputs()); !reflect.DeepEqual(got, wantOut) {
		t.Errorf("mixed outputs %v, want %v", got, wantOut)
	}
}

// checkOutputs compares outputs with TensorFlow's, exactly (dtype, shape, data).
func checkOutputs(t *testing.T, got map[string]recstrata.Tensor, want map[string]testmodel.JSONTensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d outputs, want %d", len(got), len(want))
	}
	for name, j := range want {
		w, err := j.Tensor()
		if err != nil {
			t.Fatal(err)
		}
		g, ok := got[name]
		if !ok {
			t.Errorf("output %q missing", name)
			continue
		}
		if g.Name != name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) {
			t.Errorf("output %q: %s %s %v, want %s %v", name, g.Name, g.DType, g.Shape, w.DType, w.Shape)
		}
		if !reflect.DeepEqual(g.Data, w.Data) {
			t.Errorf("output %q data\n got %v\nwant %v", name, g.Data, w.Data)
		}
	}
}

func TestPredictMatchesTensorFlow(t *testing.T) {
	_, exp := testmodel.Load(t)
	models := map[string]*recstrata.Model{}
	var mixedOuts []map[string]recstrata.Tensor
	for _, c := range exp.Cases {
		m := models[c.Signature]
		if m == nil {
			m = testmodel.Open(t, recstrata.WithSignature(c.Signature))
			models[c.Signature] = m
		}
		got, err := m.Predict(testmodel.Tensors(t, c.Inputs))
		if err != nil {
			t.Fatalf("%s: %v", c.Signature, err)
		}
		checkOutputs(t, got, c.Outputs)
		if c.Signature == "mixed" {
			mixedOuts = append(mixedOuts, got)
		}
	}
	if len(models) < 2 {
		t.Fatalf("expected cases for 2 signatures, got %d", len(models))
	}
	// pytest compares these with the Python binding's outputs.
	if err := testmodel.WriteOutputs(exp.GoOutputsFile, mixedOuts); err != nil {
		t.Fatal(err)
	}
}

func TestRunSelectsOutputs(t *testing.T) {
	_, exp := testmodel.Load(t)
	var c testmodel.Case
	for _, c = range exp.Cases {
		if c.Signature == "mixed" {
			break
		}
	}
	m := testmodel.Open(t, recstrata.WithSignature("mixed"))
	var inputs []recstrata.Tensor
	for _, tensor := range testmodel.Tensors(t, c.Inputs) {
		inputs = append(inputs, tensor)
	}
	outs, err := m.Run(inputs, "z2", "greeting")
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 || outs[0].Name != "z2" || outs[1].Name != "greeting" {
		t.Fatalf("outputs %+v", outs)
	}
	checkOutputs(t, map[string]recstrata.Tensor{"z2": outs[0], "greeting": outs[1]},
		map[string]testmodel.JSONTensor{"z2": c.Outputs["z2"], "greeting": c.Outputs["greeting"]})

	// No names: every output, in signature order.
	all, err := m.Run(inputs)
	if err != nil {
		t.Fatal(err)
	}
	var names, sig []string
	for _, o := range all {
		names = append(names, o.Name)
	}
	for _, o := range m.Outputs() {
		sig = append(sig, o.Name)
	}
	if !slices.Equal(names, sig) {
		t.Errorf("outputs %v, signature order %v", names, sig)
	}
}

func randomBatch(r *rand.Rand) []float32 {
	x := make([]float32, (1+r.IntN(32))*4)
	for i := range x {
		x[i] = float32(r.IntN(33)-16) / 4
	}
	return x
}

func TestConcurrentPredict(t *testing.T) {
	_, exp := testmodel.Load(t)
	const goroutines, calls = 16, 40
	for _, policy := range []recstrata.Policy{recstrata.PolicyMod, recstrata.PolicyRoundRobin, recstrata.PolicyLeastLoaded} {
		t.Run(string(policy), func(t *testing.T) {
			m := testmodel.Open(t, recstrata.WithSessions(2), recstrata.WithPolicy(policy),
				recstrata.WithThreads(1, 1))
			var wg sync.WaitGroup
			errs := make(chan error, goroutines)
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(g), 1))
					for range calls {
						x := randomBatch(r)
						out, err := m.Predict(map[string]recstrata.Tensor{
							"x": recstrata.NewTensor(x, int64(len(x)/4), 4)})
						if err != nil {
							errs <- err
							return
						}
						y := out["y"]
						if !slices.Equal(y.Shape, []int64{int64(len(x) / 4), 3}) ||
							!slices.Equal(y.Float32s(), exp.Affine(x)) {
							errs <- errors.New("wrong output under concurrency")
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			stats, err := m.Stats()
			if err != nil || !json.Valid([]byte(stats)) {
				t.Errorf("Stats: %v %q", err, stats)
			}
		})
	}
}

func TestPredictBytes(t *testing.T) {
	_, exp := testmodel.Load(t)
	m := testmodel.Open(t)
	req, err := os.ReadFile(exp.RequestFile)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := m.PredictBytes(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp) == 0 {
		t.Fatal("empty response")
	}
	// pytest decodes this file with the protobuf module and checks the values.
	if err := os.WriteFile(exp.ResponseFile, resp, 0o644); err != nil {
		t.Fatal(err)
	}
	// Same request from many goroutines: same bytes.
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				again, err := m.PredictBytes(req)
				if err != nil || !slices.Equal(again, resp) {
					t.Errorf("concurrent PredictBytes: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()

	// An empty request returns the signature description as JSON (DeepRec).
	info, err := m.PredictBytes(nil)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(info, &v); err != nil {
		t.Errorf("empty request answer is not JSON: %v: %q", err, info)
	}
}

// wantError checks that err is an *Error with the code and a real message
// from the library (not only the status name).
func wantError(t *testing.T, what string, err error, code recstrata.Code) {
	t.Helper()
	var e *recstrata.Error
	if !errors.As(err, &e) || !errors.Is(err, code) || e.Message == "" || e.Message == e.Code.String() {
		t.Errorf("%s: got %v, want %s with a message", what, err, code)
		return
	}
	t.Logf("%s: %v", what, err)
}

func TestPredictBytesErrors(t *testing.T) {
	_, exp := testmodel.Load(t)
	m := testmodel.Open(t)
	req, err := os.ReadFile(exp.RequestFile)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(42, 42))
	bad := [][]byte{req[:len(req)-3], req[:1], {0xff, 0xff, 0xff, 0xff, 0xff}}
	for range 200 {
		b := make([]byte, 1+r.IntN(256))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		bad = append(bad, b)
	}
	for i, b := range bad {
		_, err := m.PredictBytes(b)
		var e *recstrata.Error
		if !errors.As(err, &e) || !errors.Is(err, recstrata.InvalidArgument) ||
			e.Message == "" || e.Message == e.Code.String() {
			t.Errorf("request %d (%d bytes): got %v, want an InvalidArgument error", i, len(b), err)
		}
	}
	// The model still works.
	if _, err := m.PredictBytes(req); err != nil {
		t.Errorf("after bad requests: %v", err)
	}
}

func TestInputErrors(t *testing.T) {
	m := testmodel.Open(t)
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8}
	cases := []struct {
		name   string
		inputs map[string]recstrata.Tensor
	}{
		{"unknown input", map[string]recstrata.Tensor{
			"x": recstrata.NewTensor(x, 2, 4), "nope": recstrata.NewTensor(x, 2, 4)}},
		{"missing input", map[string]recstrata.Tensor{}},
		{"wrong dtype", map[string]recstrata.Tensor{
			"x": recstrata.NewTensor([]float64{1, 2, 3, 4, 5, 6, 7, 8}, 2, 4)}},
		{"too few elements", map[string]recstrata.Tensor{"x": recstrata.NewTensor(x[:7], 2, 4)}},
		{"too many elements", map[string]recstrata.Tensor{"x": recstrata.NewTensor(x, 1, 4)}},
		{"wrong inner dim", map[string]recstrata.Tensor{
			"x": recstrata.NewTensor(append(x, 9, 10), 2, 5)}},
		{"wrong rank", map[string]recstrata.Tensor{"x": recstrata.NewTensor(x, 8)}},
		{"negative dim", map[string]recstrata.Tensor{"x": recstrata.NewTensor(x[:4], -1, 4)}},
		{"overflowing dims", map[string]recstrata.Tensor{
			"x": recstrata.NewTensor(x[:4], 1<<62, 4)}},
		{"data type differs from dtype", map[string]recstrata.Tensor{
			"x": {DType: recstrata.Float32, Shape: []int64{2, 4}, Data: []int64{1, 2, 3, 4, 5, 6, 7, 8}}}},
		{"unsupported data", map[string]recstrata.Tensor{
			"x": {Shape: []int64{2, 4}, Data: []string{"a"}}}},
		{"no dtype, no data", map[string]recstrata.Tensor{"x": {Shape: []int64{2, 4}}}},
	}
	for _, c := range cases {
		_, err := m.Predict(c.inputs)
		wantError(t, c.name, err, recstrata.InvalidArgument)
		if e, ok := err.(*recstrata.Error); ok && e.Op != "Predict" {
			t.Errorf("%s: Op %q", c.name, e.Op)
		}
	}
	_, err := m.Run([]recstrata.Tensor{{Name: "x", DType: recstrata.Float32, Shape: []int64{2, 4}, Data: x}}, "nope")
	wantError(t, "unknown output", err, recstrata.InvalidArgument)
	// String inputs: element count vs shape, and dtype, on the mixed signature.
	mixed := testmodel.Open(t, recstrata.WithSignature("mixed"))
	good := map[string]recstrata.Tensor{
		"x":     recstrata.NewTensor(x, 2, 4),
		"ids":   recstrata.NewTensor([]int64{1, 2}),
		"names": recstrata.NewTensor([][]byte{[]byte("a"), {}}),
		"z":     recstrata.NewTensor([]float64{1, 2, 3, 4}, 2, 2),
	}
	if _, err := mixed.Predict(good); err != nil {
		t.Fatalf("mixed: %v", err)
	}
	bad := maps.Clone(good)
	bad["names"] = recstrata.NewTensor([][]byte{[]byte("a"), {}, []byte("c")}, 2)
	_, err = mixed.Predict(bad)
	wantError(t, "string count vs shape", err, recstrata.InvalidArgument)
	bad["names"] = recstrata.NewTensor([]int64{1, 2})
	_, err = mixed.Predict(bad)
	wantError(t, "int64 for a string input", err, recstrata.InvalidArgument)

	// The model still answers correctly.
	out, err := m.Predict(map[string]recstrata.Tensor{"x": recstrata.NewTensor(x, 2, 4)})
	if err != nil || len(out["y"].Float32s()) != 6 {
		t.Errorf("after errors: %v %v", out, err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := testmodel.Dir(t)
	check := func(what string, err error, code recstrata.Code) { t.Helper(); wantError(t, what, err, code) }
	_, err := recstrata.Open(dir + "/does-not-exist")
	check("missing model dir", err, recstrata.NotFound)
	_, err = recstrata.Open(dir, recstrata.WithSignature("no_such_signature"))
	check("unknown signature", err, recstrata.NotFound)
	_, err = recstrata.Open(dir, recstrata.WithConfig("session_num", "many"))
	check("malformed session_num", err, recstrata.InvalidArgument)
	_, err = recstrata.Open(dir, recstrata.WithPolicy("BOGUS"))
	check("unknown policy", err, recstrata.InvalidArgument)
	_, err = recstrata.Open(dir, recstrata.WithConfigJSON("{not json"))
	check("malformed config JSON", err, recstrata.InvalidArgument)
	_, err = recstrata.Open(dir, recstrata.WithLibrary("/nonexistent/librecstrata.so"))
	check("second library path", err, recstrata.FailedPrecondition)
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	m, err := recstrata.Open(testmodel.Dir(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	x := recstrata.NewTensor([]float32{1, 2, 3, 4}, 1, 4)
	_, err = m.Predict(map[string]recstrata.Tensor{"x": x})
	if !errors.Is(err, recstrata.ErrClosed) || !errors.Is(err, recstrata.FailedPrecondition) {
		t.Errorf("Predict after Close: %v", err)
	}
	if _, err := m.PredictBytes(nil); !errors.Is(err, recstrata.ErrClosed) {
		t.Errorf("PredictBytes after Close: %v", err)
	}
	if _, err := m.Describe(); !errors.Is(err, recstrata.ErrClosed) {
		t.Errorf("Describe after Close: %v", err)
	}
	if _, err := m.Stats(); !errors.Is(err, recstrata.ErrClosed) {
		t.Errorf("Stats after Close: %v", err)
	}
	if len(m.Inputs()) != 1 {
		t.Errorf("Inputs after Close: %v", m.Inputs())
	}
}

func TestCloseWaitsForCallsInFlight(t *testing.T) {
	_, exp := testmodel.Load(t)
	m, err := recstrata.Open(testmodel.Dir(t), recstrata.WithSessions(2))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	okCalls := 0
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 2))
			for {
				x := randomBatch(r)
				out, err := m.Predict(map[string]recstrata.Tensor{"x": recstrata.NewTensor(x, int64(len(x)/4), 4)})
				if err != nil {
					if !errors.Is(err, recstrata.ErrClosed) {
						t.Errorf("in-flight call: %v", err)
					}
					return
				}
				if !slices.Equal(out["y"].Float32s(), exp.Affine(x)) {
					t.Error("wrong output")
					return
				}
				mu.Lock()
				okCalls++
				mu.Unlock()
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	m.Close()
	wg.Wait()
	if okCalls == 0 {
		t.Error("no call completed before Close")
	}
}

func TestMakeAlignedInputs(t *testing.T) {
	_, exp := testmodel.Load(t)
	m := testmodel.Open(t)
	for _, n := range []int{1, 3, 64, 1000} {
		x := recstrata.MakeAligned[float32](n * 4)
		if len(x) != n*4 || uintptr(unsafe.Pointer(&x[0]))%recstrata.Alignment != 0 {
			t.Fatalf("MakeAligned(%d): len %d, address %p", n*4, len(x), &x[0])
		}
		for i := range x {
			x[i] = float32(i%9-4) / 4
		}
		out, err := m.Predict(map[string]recstrata.Tensor{"x": recstrata.NewTensor(x, int64(n), 4)})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(out["y"].Float32s(), exp.Affine(x)) {
			t.Errorf("batch %d: wrong output from aligned input", n)
		}
	}
	if b := recstrata.MakeAligned[bool](5); len(b) != 5 || uintptr(unsafe.Pointer(&b[0]))%recstrata.Alignment != 0 {
		t.Errorf("MakeAligned[bool]: %p", &b[0])
	}
}
