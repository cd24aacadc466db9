package recstrata_test

// Benchmarks of the Go binding on the test model (y = x @ W + b): they
// measure the per-call cost of cgo, pinning, the library's run and the
// output copy, not model compute. Run through the pytest harness's
// environment, e.g.
//
//	go test -run '^$' -bench . -benchtime 2000x
import (
	"fmt"
	"os"
	"testing"

	"github.com/recstrata/recstrata/go_client"
	"github.com/recstrata/recstrata/go_client/internal/testmodel"
)

func BenchmarkPredict(b *testing.B) {
	m := testmodel.Open(b, recstrata.WithSessions(2), recstrata.WithPolicy(recstrata.PolicyLeastLoaded))
	for _, batch := range []int{1, 64, 512} {
		x := make([]float32, batch*4)
		for i := range x {
			x[i] = float32(i%7) / 4
		}
		in := map[string]recstrata.Tensor{"x": recstrata.NewTensor(x, int64(batch), 4)}
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Predict(in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("batch=%d/parallel", batch), func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := m.Predict(in); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkPredictBytes(b *testing.B) {
	_, exp := testmodel.Load(b)
	m := testmodel.Open(b)
	req, err := os.ReadFile(exp.RequestFile)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := m.PredictBytes(req); err != nil {
			b.Fatal(err)
		}
	}
}
