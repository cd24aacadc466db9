// Package testmodel gives the module's tests the SavedModel and expected
// outputs that tests/test_go_client.py generates.
//
// Environment (set by the pytest test):
//
//	RECSTRATA_TEST_MODEL     SavedModel directory; tests skip when unset
//	RECSTRATA_TEST_EXPECTED  JSON file: weights, cases (inputs and the outputs
//	                         TensorFlow computed), wire request/response paths
//	RECSTRATA_LIBRARY        librecstrata.so (read by the recstrata package)
package testmodel

import (
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/recstrata/recstrata/go_client"
)

// JSONTensor is a tensor as the generator writes it. String elements are
// base64 in JSON ([]byte decoding).
type JSONTensor struct {
	DType string          `json:"dtype"`
	Shape []int64         `json:"shape"`
	Data  json.RawMessage `json:"data"`
}

// Case is one call of a signature and TensorFlow's outputs for it.
type Case struct {
	Signature string                `json:"signature"`
	Inputs    map[string]JSONTensor `json:"inputs"`
	Outputs   map[string]JSONTensor `json:"outputs"`
}

// Expected is the generator's JSON file.
type Expected struct {
	W            [][]float32 `json:"W"` // [4][3]
	B            []float32   `json:"b"` // [3]
	Cases        []Case      `json:"cases"`
	RequestFile  string      `json:"request_file"`
	ResponseFile string      `json:"response_file"`
	// GoOutputsFile receives the Go outputs of every "mixed" case (JSON, same
	// form as Case.Outputs); pytest compares them with the Python binding's.
	GoOutputsFile string `json:"go_outputs_file"`
	// HostBase holds the host tests' models: HostBase/MODEL/VERSION, each
	// computing Affine(x) + HostShifts[MODEL][VERSION].
	HostBase   string                        `json:"host_base"`
	HostShifts map[string]map[string]float32 `json:"host_shifts"`
}

// WriteOutputs saves outputs in the generator's JSON form.
func WriteOutputs(path string, outs []map[string]recstrata.Tensor) error {
	var doc []map[string]any
	for _, o := range outs {
		m := map[string]any{}
		for name, t := range o {
			m[name] = map[string]any{"dtype": t.DType.String(), "shape": t.Shape, "data": t.Data}
		}
		doc = append(doc, m)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// Dir returns the test model directory, or skips the test when it is not
// configured (plain `go test` without the pytest harness).
func Dir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("RECSTRATA_TEST_MODEL")
	if dir == "" {
		t.Skip("RECSTRATA_TEST_MODEL is not set: run these tests through " +
			"`python -m pytest tests/test_go_client.py`, which builds the test model")
	}
	return dir
}

// Load returns the model directory and the expected outputs (skipping like Dir).
func Load(t testing.TB) (string, *Expected) {
	t.Helper()
	dir := Dir(t)
	path := os.Getenv("RECSTRATA_TEST_EXPECTED")
	if path == "" {
		t.Fatal("RECSTRATA_TEST_MODEL is set but RECSTRATA_TEST_EXPECTED is not")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var exp Expected
	if err := json.Unmarshal(raw, &exp); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return dir, &exp
}

// Open opens the test model with the given options, closing it at test end.
func Open(t testing.TB, opts ...recstrata.Option) *recstrata.Model {
	t.Helper()
	m, err := recstrata.Open(Dir(t), opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Tensor converts a JSON tensor into a recstrata.Tensor.
func (j JSONTensor) Tensor() (recstrata.Tensor, error) {
	d, ok := recstrata.ParseDType(j.DType)
	if !ok {
		return recstrata.Tensor{}, fmt.Errorf("unknown dtype %q", j.DType)
	}
	var data any
	var err error
	switch d {
	case recstrata.Float32:
		data, err = decode[float32](j.Data)
	case recstrata.Float64:
		data, err = decode[float64](j.Data)
	case recstrata.Int32:
		data, err = decode[int32](j.Data)
	case recstrata.Int64:
		data, err = decode[int64](j.Data)
	case recstrata.Bool:
		data, err = decode[bool](j.Data)
	case recstrata.String:
		data, err = decode[[]byte](j.Data)
	default:
		err = fmt.Errorf("dtype %s not used by the generator", d)
	}
	return recstrata.Tensor{DType: d, Shape: j.Shape, Data: data}, err
}

func decode[T any](raw json.RawMessage) ([]T, error) {
	out := []T{}
	err := json.Unmarshal(raw, &out)
	return out, err
}

// Tensors converts a case's map of JSON tensors.
func Tensors(t testing.TB, m map[string]JSONTensor) map[string]recstrata.Tensor {
	t.Helper()
	out := make(map[string]recstrata.Tensor, len(m))
	for name, j := range m {
		tensor, err := j.Tensor()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		tensor.Name = name
		out[name] = tensor
	}
	return out
}

// Affine computes y = x @ W + b for x of shape [n, 4] in float32. With the
// generator's quarter-valued data every step is exact, so the result equals
// TensorFlow's bit for bit.
func (e *Expected) Affine(x []float32) []float32 {
	n := len(x) / 4
	y := make([]float32, n*3)
	for r := 0; r < n; r++ {
		for c := 0; c < 3; c++ {
			acc := e.B[c]
			for k := 0; k < 4; k++ {
				acc += x[r*4+k] * e.W[k][c]
			}
			y[r*3+c] = acc
		}
	}
	return y
}
