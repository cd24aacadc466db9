package main

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/recstrata/recstrata/go_client"
)

// metrics are the server's Prometheus series (served at GET /metrics):
//
//	recstrata_requests_total{model,version,protocol}               predict requests
//	recstrata_request_errors_total{model,version,protocol,code}    failed ones, by library code
//	recstrata_request_duration_seconds{model,version,protocol}     latency histogram
//	recstrata_inflight_requests                                    predicts running now
//	recstrata_model_serving_version{model}                         0 while nothing serves
//	recstrata_model_loads_total{model,result}                      result "ok" or "error"
//	recstrata_model_load_duration_seconds{model}                   open + warmup
//
// code is the library's code name, or CANCELLED when the caller gave up.
// protocol is "grpc", "http_json" or "http_pb". Requests for an unknown
// model count under model="_unknown" and requests no version took under
// version="none", so labels stay bounded by the configuration.
type metrics struct {
	reg            *prometheus.Registry
	requests       *prometheus.CounterVec
	errors         *prometheus.CounterVec
	latency        *prometheus.HistogramVec
	inflight       prometheus.Gauge
	servingVersion *prometheus.GaugeVec
	loads          *prometheus.CounterVec
	loadTime       *prometheus.HistogramVec
}

func newMetrics() *metrics {
	mt := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recstrata_requests_total", Help: "Predict requests by model, version and protocol."},
			[]string{"model", "version", "protocol"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recstrata_request_errors_total", Help: "Failed predict requests by library error code."},
			[]string{"model", "version", "protocol", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "recstrata_request_duration_seconds", Help: "Predict latency inside the server.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18)}, // 50us .. ~6.5s
			[]string{"model", "version", "protocol"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "recstrata_inflight_requests", Help: "Predict requests running now."}),
		servingVersion: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "recstrata_model_serving_version", Help: "The version serving each model (0: none)."},
			[]string{"model"}),
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "recstrata_model_loads_total", Help: "Version loads by result (ok, error)."},
			[]string{"model", "result"}),
		loadTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "recstrata_model_load_duration_seconds", Help: "Open plus warmup of a version.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14)},
			[]string{"model"}),
	}
	mt.reg.MustRegister(mt.requests, mt.errors, mt.latency, mt.inflight, mt.servingVersion,
		mt.loads, mt.loadTime, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return mt
}

func (mt *metrics) handler() http.Handler {
	return promhttp.HandlerFor(mt.reg, promhttp.HandlerOpts{})
}

// declare makes a model's series visible before its first request.
func (mt *metrics) declare(model string) {
	mt.servingVersion.WithLabelValues(model).Set(0)
}

// observeRequest records one predict request that started at t0; version 0
// means no version took it.
func (mt *metrics) observeRequest(model string, version int64, protocol string, t0 time.Time, err error) {
	v := "none"
	if version != 0 {
		v = strconv.FormatInt(version, 10)
	}
	mt.requests.WithLabelValues(model, v, protocol).Inc()
	mt.latency.WithLabelValues(model, v, protocol).Observe(time.Since(t0).Seconds())
	if err != nil {
		code := "RS_ERR_INTERNAL"
		var e *recstrata.Error
		if errors.As(err, &e) {
			code = e.Code.String()
		} else if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			code = "CANCELLED"
		}
		mt.errors.WithLabelValues(model, v, protocol, code).Inc()
	}
}

func (mt *metrics) observeLoad(model string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	mt.loads.WithLabelValues(model, result).Inc()
	mt.loadTime.WithLabelValues(model).Observe(d.Seconds())
}
