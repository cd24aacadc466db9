package recstrata_test

import (
	"errors"
	"os"
	"testing"

	"github.com/recstrata/recstrata/go_client"
	"github.com/recstrata/recstrata/go_client/internal/testmodel"
)

// FuzzPredictBytes feeds mutated PredictRequest bytes to the library: every
// input must give either a response or an InvalidArgument error with a
// message, and never crash the process. `go test` runs the seeds; explore
// with `go test -run '^$' -fuzz FuzzPredictBytes -fuzztime 60s` (with the
// pytest harness's environment).
func FuzzPredictBytes(f *testing.F) {
	_, exp := testmodel.Load(f)
	req, err := os.ReadFile(exp.RequestFile)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(req)
	f.Add(req[:len(req)/2])
	f.Add([]byte{0x12, 0x03, 0x0a, 0x01, 0x78})
	m := testmodel.Open(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) == 0 {
			return // the signature-description request, not a predict call
		}
		_, err := m.PredictBytes(b)
		if err == nil {
			return
		}
		var e *recstrata.Error
		if !errors.As(err, &e) || e.Message == "" ||
			(e.Code != recstrata.InvalidArgument && e.Code != recstrata.ResourceExhausted) {
			t.Errorf("%d bytes: %v", len(b), err)
		}
	})
}
