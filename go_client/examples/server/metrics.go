package main

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"

	"github.com/recstrata/recstrata/go_client"
)

// metrics are the server's Prometheus series, per front (served at GET
// /metrics, followed by the native host's rs_host_* series: versions, loads,
// library-side latency, batching, store tiers; docs/host.md):
//
//	recstrata_requests_total{model,version,protocol}               predict requests
//	recstrata_request_errors_total{model,version,protocol,code}    failed ones, by library code
//	recstrata_request_duration_seconds{model,version,protocol}     latency histogram (queueing included)
//	recstrata_inflight_requests                                    predicts running now
//	go_*, process_*                                                the Go runtime and the process
//
// code is the library's code name, or CANCELLED when the caller gave up.
// protocol is "grpc", "http_json" or "http_pb". Requests for an unknown
// model count under model="_unknown" and requests no version took under
// version="none", so labels stay bounded by the configuration.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	inflight prometheus.Gauge
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
	}
	mt.reg.MustRegister(mt.requests, mt.errors, mt.latency, mt.inflight, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return mt
}

// handler serves the server's series and then the host's, both in the
// Prometheus text format (the names do not overlap: rs_host_* are the
// host's). A failed host read is logged and leaves its series out.
func (mt *metrics) handler(host *recstrata.Host) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		families, err := mt.reg.Gather()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		hostText, herr := host.MetricsText()
		w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
		for _, mf := range families {
			if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
				return // the client went away
			}
		}
		if herr != nil {
			log.Printf("/metrics: host metrics: %v", herr)
			return
		}
		io.WriteString(w, hostText)
	})
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
