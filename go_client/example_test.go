package recstrata_test

import (
	"errors"
	"fmt"
	"log"

	"github.com/recstrata/recstrata/go_client"
)

// Open a SavedModel on two sessions and run one batch. (Compiled, not run:
// it needs a model; see docs/go.md.)
func Example() {
	m, err := recstrata.Open("/models/affine",
		recstrata.WithSessions(2), recstrata.WithPolicy(recstrata.PolicyLeastLoaded))
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()

	x := recstrata.MakeAligned[float32](2 * 4) // aligned: passed to TensorFlow without a copy
	copy(x, []float32{1, 2, 3, 4, 5, 6, 7, 8})
	out, err := m.Predict(map[string]recstrata.Tensor{"x": recstrata.NewTensor(x, 2, 4)})
	switch {
	case errors.Is(err, recstrata.InvalidArgument):
		log.Fatalf("bad request: %v", err)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Println(out["y"].Shape, out["y"].Float32s())
}
