// Command server is an example HTTP prediction service embedding a recstrata
// model in a Go process. It listens on 127.0.0.1 only.
//
//	go run ./examples/server -model /path/to/saved_model -port 8500
//	curl -s localhost:8500/v1/model
//	curl -s -d '{"inputs":{"x":{"shape":[1,4],"data":[1,2,3,4]}}}' localhost:8500/v1/predict
//
// The library comes from -library or RECSTRATA_LIBRARY. See handler.go for
// the routes and docs/go.md for the package.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/recstrata/recstrata/go_client"
)

func main() {
	modelDir := flag.String("model", "", "SavedModel directory (required)")
	port := flag.Int("port", 8500, "port on 127.0.0.1")
	sessions := flag.Int("sessions", 1, "session_num")
	policy := flag.String("policy", "MOD", "select_session_policy: MOD, RR or LEAST_LOADED")
	signature := flag.String("signature", "serving_default", "signature_name")
	libPath := flag.String("library", "", "path of librecstrata.so (default $RECSTRATA_LIBRARY)")
	maxInFlight := flag.Int("max-inflight", 4*runtime.GOMAXPROCS(0), "model calls running at once (others queue)")
	flag.Parse()
	if *modelDir == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*modelDir, *port, *libPath, *maxInFlight, recstrata.WithSessions(*sessions),
		recstrata.WithPolicy(recstrata.Policy(*policy)), recstrata.WithSignature(*signature)); err != nil {
		log.Fatal(err)
	}
}

func run(modelDir string, port int, libPath string, maxInFlight int, opts ...recstrata.Option) error {
	if libPath != "" {
		opts = append(opts, recstrata.WithLibrary(libPath))
	}
	m, err := recstrata.Open(modelDir, opts...)
	if err != nil {
		return err
	}
	defer m.Close() // after Shutdown: no handler is still calling the model

	// Loopback only: this example has no authentication.
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: limitInFlight(newHandler(m), maxInFlight), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Printf("serving %s on http://%s", modelDir, ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// limitInFlight lets at most n requests run at once; the rest wait (or give
// up when the client goes away). A cgo call occupies an OS thread for its
// whole duration, so an unbounded burst of requests would otherwise turn into
// as many OS threads blocked in TensorFlow.
func limitInFlight(h http.Handler, n int) http.Handler {
	if n <= 0 {
		return h
	}
	sem := make(chan struct{}, n)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
			h.ServeHTTP(w, r)
		case <-r.Context().Done():
			http.Error(w, "request cancelled while queued", http.StatusServiceUnavailable)
		}
	})
}
