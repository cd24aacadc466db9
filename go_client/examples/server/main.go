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
	flag.Parse()
	if *modelDir == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*modelDir, *port, *libPath, recstrata.WithSessions(*sessions),
		recstrata.WithPolicy(recstrata.Policy(*policy)), recstrata.WithSignature(*signature)); err != nil {
		log.Fatal(err)
	}
}

func run(modelDir string, port int, libPath string, opts ...recstrata.Option) error {
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
	srv := &http.Server{Handler: newHandler(m), ReadHeaderTimeout: 10 * time.Second}
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
