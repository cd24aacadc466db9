// Command server is an example prediction service embedding recstrata in a
// Go process: gRPC (recstrata.serving.v1.PredictionService over DeepRec's
// PredictRequest/PredictResponse) and HTTP (JSON and protobuf predict,
// lifecycle admin, /metrics, health), several models, each with integer
// version directories that are discovered, warmed and hot swapped. It
// listens on 127.0.0.1 only (it has no authentication).
//
//	go build -o recstrata-server . && ./recstrata-server -model ctr=/models/ctr -model rank=/models/rank
//
// Once every model's first load was attempted it prints one line
// "serving grpc=ADDR http=ADDR" on stdout. SIGTERM or SIGINT: readiness
// drops, the servers stop taking requests and finish those in flight, then
// every model version is closed. The library comes from -library or
// RECSTRATA_LIBRARY. See docs/go.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/recstrata/recstrata/go_client"
)

//go:generate ./gen.sh

type modelFlags []modelSpec

func (f *modelFlags) String() string { return fmt.Sprint(*f) }
func (f *modelFlags) Set(s string) error {
	name, base, ok := strings.Cut(s, "=")
	if !ok || name == "" || base == "" {
		return fmt.Errorf("want NAME=BASE_DIR, got %q", s)
	}
	*f = append(*f, modelSpec{Name: name, Base: base})
	return nil
}

type config struct {
	models      []modelSpec
	grpcPort    int
	httpPort    int
	poll        time.Duration
	maxInFlight int
	drain       time.Duration
	library     string         // "" : $RECSTRATA_LIBRARY, then the loader's search
	modelConfig map[string]any // rs_model_open config of every version
}

func main() {
	var models modelFlags
	flag.Var(&models, "model", "NAME=BASE_DIR, BASE_DIR holding integer version directories (repeatable; the first is the gRPC default)")
	grpcPort := flag.Int("grpc-port", 8500, "gRPC port on 127.0.0.1 (0: any free port)")
	httpPort := flag.Int("http-port", 8501, "HTTP port on 127.0.0.1 (0: any free port)")
	poll := flag.Duration("poll", 2*time.Second, "version discovery interval (0: only at start and on :reload)")
	sessions := flag.Int("sessions", 1, "session_num of every version")
	policy := flag.String("policy", "LEAST_LOADED", "select_session_policy: MOD, RR or LEAST_LOADED")
	signature := flag.String("signature", "serving_default", "signature_name")
	configJSON := flag.String("config", "", "model_config JSON object merged into every version's config (its keys win)")
	libPath := flag.String("library", "", "path of librecstrata.so (default $RECSTRATA_LIBRARY)")
	maxInFlight := flag.Int("max-inflight", 4*runtime.GOMAXPROCS(0), "model calls running at once (others queue)")
	warmup := flag.Int("warmup-runs", 5, "generated requests the library runs on every session of a new version before it serves (0: none)")
	drain := flag.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long requests in flight may take")
	flag.Parse()
	if len(models) == 0 || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	cfg := config{models: models, grpcPort: *grpcPort, httpPort: *httpPort, poll: *poll,
		maxInFlight: *maxInFlight, drain: *drain, library: *libPath,
		modelConfig: map[string]any{"session_num": *sessions, "select_session_policy": *policy,
			"signature_name": *signature, "warmup_runs": *warmup}}
	if *configJSON != "" {
		var extra map[string]any
		if err := json.Unmarshal([]byte(*configJSON), &extra); err != nil {
			log.Fatalf("-config: not a JSON object: %v", err)
		}
		for k, v := range extra {
			cfg.modelConfig[k] = v
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		log.Fatal(err)
	}
}

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, cfg config) error {
	// Loaded up front, so a wrong path fails before any listener opens.
	if err := recstrata.LoadLibrary(cfg.library); err != nil {
		return err
	}
	mt := newMetrics()
	mg, err := NewManager(cfg.models, cfg.poll, cfg.modelConfig)
	if err != nil {
		return err
	}
	defer mg.Close() // after both servers stopped: waits for the calls in flight

	// Loopback only: this example has no authentication.
	gl, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.grpcPort))
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", cfg.httpPort))
	if err != nil {
		gl.Close()
		return err
	}
	svc := newService(mg, mt, cfg.maxInFlight)
	// Same request cap as the HTTP front (gRPC's default is 4 MiB).
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(maxBody), grpc.MaxSendMsgSize(maxBody),
		grpc.ForceServerCodecV2(newRawCodec()))
	(&grpcService{svc: svc}).register(gs)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hsrv := &http.Server{Handler: newHandler(svc), ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(gl) }()
	go func() { errc <- hsrv.Serve(hl) }()
	// gRPC health: SERVING once every model serves ("" is the whole server).
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			st := healthpb.HealthCheckResponse_NOT_SERVING
			if mg.Ready() {
				st = healthpb.HealthCheckResponse_SERVING
			}
			hs.SetServingStatus("", st)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	fmt.Printf("serving grpc=%s http=%s\n", gl.Addr(), hl.Addr())
	os.Stdout.Sync()

	select {
	case err := <-errc:
		gs.Stop()
		hsrv.Close()
		return err
	case <-ctx.Done():
	}
	log.Printf("shutting down: draining requests in flight (up to %v)", cfg.drain)
	mg.Drain() // readiness drops; the host keeps serving until Close
	hs.Shutdown()
	dctx, cancel := context.WithTimeout(context.Background(), cfg.drain)
	defer cancel()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	herr := hsrv.Shutdown(dctx)
	select {
	case <-done:
	case <-dctx.Done():
		gs.Stop() // drain timeout: cancel what is left
	}
	if herr != nil && !errors.Is(herr, http.ErrServerClosed) {
		log.Printf("http shutdown: %v", herr)
	}
	mg.Close()
	log.Printf("shutdown complete")
	return nil
}
