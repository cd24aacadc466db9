package main

import (
	"fmt"
	"sync"

	"github.com/recstrata/recstrata/go_client"
)

// warmRuns is how many synthetic requests warm a new version before it takes
// traffic (run warmParallel at a time, so a session-picking policy such as
// LEAST_LOADED spreads them over the sessions).
var warmRuns, warmParallel = 8, 4

// warm runs synthetic requests through a freshly opened model, so TensorFlow's
// first-run graph work happens before the version serves. (recstrata.Open
// already replays a configured warmup file on every session; this covers
// models without one.) Inputs are zeros (empty strings) with every open
// dimension set to 1. A model with an input this cannot synthesize is not
// warmed here; a warmup request that the model rejects fails the load.
func warm(m *recstrata.Model) error {
	var inputs []recstrata.Tensor
	for _, in := range m.Inputs() {
		if in.Rank < 0 {
			return nil // unknown rank: nothing sensible to synthesize
		}
		shape := make([]int64, len(in.Shape))
		n := int64(1)
		for i, d := range in.Shape {
			if d < 0 {
				d = 1
			}
			shape[i] = d
			n *= d
		}
		data, ok := zeros(in.DType, n)
		if !ok {
			return nil
		}
		inputs = append(inputs, recstrata.Tensor{Name: in.Name, DType: in.DType, Shape: shape, Data: data})
	}
	var wg sync.WaitGroup
	errs := make(chan error, warmRuns)
	jobs := make(chan struct{}, warmRuns)
	for range warmRuns {
		jobs <- struct{}{}
	}
	close(jobs)
	for range warmParallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if _, err := m.Run(inputs); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err, bad := <-errs; bad {
		return fmt.Errorf("synthetic request: %w", err)
	}
	return nil
}

func zeros(d recstrata.DType, n int64) (any, bool) {
	switch d {
	case recstrata.Float32:
		return make([]float32, n), true
	case recstrata.Float64:
		return make([]float64, n), true
	case recstrata.Int32:
		return make([]int32, n), true
	case recstrata.Int64:
		return make([]int64, n), true
	case recstrata.Int8:
		return make([]int8, n), true
	case recstrata.Int16:
		return make([]int16, n), true
	case recstrata.Uint8:
		return make([]uint8, n), true
	case recstrata.Uint16:
		return make([]uint16, n), true
	case recstrata.Bool:
		return make([]bool, n), true
	case recstrata.String:
		s := make([][]byte, n)
		for i := range s {
			s[i] = []byte{}
		}
		return s, true
	}
	return nil, false
}
