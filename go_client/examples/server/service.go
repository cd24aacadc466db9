package main

import (
	"context"
	"time"

	"github.com/recstrata/recstrata/go_client"
)

// service is what every front (gRPC, HTTP) calls: it bounds the model calls
// running at once, routes them through the host and records the request's
// metrics. Safe for concurrent use.
type service struct {
	mg      *Manager
	metrics *metrics
	sem     chan struct{} // nil: no limit
	sigs    sigCache
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

// predictBytes passes PredictRequest bytes to a version of model (want 0:
// the default one) and returns the response and the version that answered
// (0 when none took the request).
func (s *service) predictBytes(ctx context.Context, model string, want int64, protocol string,
	req []byte) ([]byte, int64, error) {
	var out []byte
	num, err := s.call(ctx, model, protocol, func() (int64, error) {
		var num int64
		var err error
		out, num, err = s.mg.Host().PredictBytes(model, want, req)
		return num, err
	})
	return out, num, err
}

// withLease runs fn on a leased version of model, for requests that need
// several calls on one version (signature, then run).
func (s *service) withLease(ctx context.Context, model string, want int64, protocol string,
	fn func(*recstrata.Lease) error) (int64, error) {
	return s.call(ctx, model, protocol, func() (int64, error) {
		l, err := s.mg.Acquire(model, want)
		if err != nil {
			return 0, err
		}
		defer l.Release()
		return l.Version(), fn(l)
	})
}

func (s *service) call(ctx context.Context, model, protocol string, fn func() (int64, error)) (int64, error) {
	t0 := time.Now()
	label := model
	if !s.mg.Known(model) {
		label = "_unknown"
	}
	var num int64
	err := s.limit(ctx, func() error {
		var err error
		num, err = fn()
		return err
	})
	s.metrics.observeRequest(label, num, protocol, t0, err)
	return num, err
}

func (s *service) limit(ctx context.Context, fn func() error) error {
	if s.sem != nil {
		select {
		case s.sem <- struct{}{}:
			defer func() { <-s.sem }()
		case <-ctx.Done():
			return ctx.Err() // the caller went away while queued
		}
	}
	s.metrics.inflight.Inc()
	defer s.metrics.inflight.Dec()
	return fn()
}
