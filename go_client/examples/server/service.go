package main

import (
	"context"
	"time"

	"github.com/recstrata/recstrata/go_client"
)

// service is what every front (gRPC, HTTP) calls: it bounds the model calls
// running at once, leases a version from the Manager for the call and
// records the request's metrics. Safe for concurrent use.
type service struct {
	mg      *Manager
	metrics *metrics
	sem     chan struct{} // nil: no limit
}

// newService lets at most maxInFlight model calls run at once (the rest
// wait, or give up when their context ends). A cgo call occupies an OS thread
// for its whole duration, so an unbounded burst would otherwise become as
// many OS threads blocked in TensorFlow.
func newService(mg *Manager, mt *metrics, maxInFlight int) *service {
	s := &service{mg: mg, metrics: mt}
	if maxInFlight > 0 {
		s.sem = make(chan struct{}, maxInFlight)
	}
	return s
}

// call runs fn on a leased version of model (want 0: the serving one) and
// returns the version that answered (0 when none took the request).
func (s *service) call(ctx context.Context, model string, want int64, protocol string,
	fn func(*recstrata.Model) error) (int64, error) {
	t0 := time.Now()
	label := model
	if _, ok := s.mg.models[model]; !ok {
		label = "_unknown"
	}
	var num int64
	err := s.run(ctx, model, want, &num, fn)
	s.metrics.observeRequest(label, num, protocol, t0, err)
	return num, err
}

func (s *service) run(ctx context.Context, model string, want int64, num *int64, fn func(*recstrata.Model) error) error {
	if s.sem != nil {
		select {
		case s.sem <- struct{}{}:
			defer func() { <-s.sem }()
		case <-ctx.Done():
			return ctx.Err() // the caller went away while queued
		}
	}
	l, err := s.mg.Acquire(model, want)
	if err != nil {
		return err
	}
	defer l.Release()
	*num = l.num
	s.metrics.inflight.Inc()
	defer s.metrics.inflight.Dec()
	return fn(l.model)
}
