package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/recstrata/recstrata/go_client"
)

// maxBody caps request bodies (JSON or protobuf) at 64 MiB.
const maxBody = 64 << 20

// modelPath matches /v1/models/{name}[/versions/{v}][:action].
var modelPath = regexp.MustCompile(`^/v1/models/([^/:]+)(?:/versions/(\d+))?(?::([a-z_]+))?$`)

// newHandler is the HTTP front:
//
//	POST /v1/models/{name}[/versions/{v}]:predict     JSON tensors in, JSON tensors out
//	POST /v1/models/{name}[/versions/{v}]:predict_pb  PredictRequest bytes in, PredictResponse out
//	GET  /v1/models/{name}[/versions/{v}]             signature of the serving version
//	GET  /v1/models, /v1/models/{name}:status         lifecycle status (JSON)
//	POST /v1/models/{name}:pin     {"version": N}     serve version N until unpinned
//	POST /v1/models/{name}:rollback                   pin the highest version below the serving one
//	POST /v1/models/{name}:unpin                      back to the latest version
//	POST /v1/models/{name}:reload                     discover now (a discovery pass of the host)
//	GET  /healthz                                     200 while the process serves
//	GET  /readyz                                      200 when every model serves a version, else 503
//	GET  /metrics                                     Prometheus text: the server's and the host's series
//
// Predict responses carry the header X-Recstrata-Model-Version. Errors are
// JSON {"code": "RS_ERR_...", "message": ...}; see writeModelError.
func newHandler(svc *service) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/models/", func(w http.ResponseWriter, r *http.Request) {
		m := modelPath.FindStringSubmatch(r.URL.Path)
		if m == nil {
			writeError(w, http.StatusNotFound, "RS_ERR_NOT_FOUND", "no such path "+r.URL.Path)
			return
		}
		name, action := m[1], m[3]
		var want int64
		if m[2] != "" {
			var err error
			if want, err = strconv.ParseInt(m[2], 10, 64); err != nil || want <= 0 {
				writeError(w, http.StatusBadRequest, "RS_ERR_INVALID_ARGUMENT", "version must be a positive integer")
				return
			}
		}
		method := http.MethodPost
		if action == "" || action == "status" {
			method = http.MethodGet
		}
		if r.Method != method {
			w.Header().Set("Allow", method)
			writeError(w, http.StatusMethodNotAllowed, "RS_ERR_INVALID_ARGUMENT", r.URL.Path+" takes "+method)
			return
		}
		if want != 0 && action != "" && action != "predict" && action != "predict_pb" {
			writeError(w, http.StatusNotFound, "RS_ERR_NOT_FOUND", ":"+action+" takes no /versions/ part")
			return
		}
		switch action {
		case "predict":
			predictJSON(svc, w, r, name, want)
		case "predict_pb":
			predictProto(svc, w, r, name, want)
		case "":
			metadataRoute(svc, w, r, name, want)
		case "status":
			st, err := svc.mg.ModelStatus(name)
			if err != nil {
				writeModelError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, st)
		case "pin", "rollback", "unpin", "reload":
			adminRoute(svc, w, r, name, action)
		default:
			writeError(w, http.StatusNotFound, "RS_ERR_NOT_FOUND", "unknown action :"+action)
		}
	})
	mux.HandleFunc("GET /v1/models", func(w http.ResponseWriter, r *http.Request) {
		st, err := svc.mg.Status()
		if err != nil {
			writeModelError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"models": st})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !svc.mg.Ready() {
			writeError(w, http.StatusServiceUnavailable, "RS_ERR_FAILED_PRECONDITION", "not every model has a version serving")
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.Handle("GET /metrics", svc.metrics.handler(svc.mg.Host()))
	return mux
}

func setVersion(w http.ResponseWriter, num int64) {
	if num != 0 {
		w.Header().Set("X-Recstrata-Model-Version", strconv.FormatInt(num, 10))
	}
}

func predictJSON(svc *service, w http.ResponseWriter, r *http.Request, name string, want int64) {
	var req predictRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		svc.metrics.observeRequest(labelFor(svc, name), 0, "http_json", time.Now(), badRequest(err))
		writeError(w, http.StatusBadRequest, "RS_ERR_INVALID_ARGUMENT", "request JSON: "+err.Error())
		return
	}
	var outs []recstrata.Tensor
	num, err := svc.withLease(r.Context(), name, want, "http_json", func(l *recstrata.Lease) error {
		ins, _, err := svc.sigs.get(name, l)
		if err != nil {
			return err
		}
		types := map[string]recstrata.DType{}
		for _, in := range ins {
			types[in.Name] = in.DType
		}
		inputs := make([]recstrata.Tensor, 0, len(req.Inputs))
		for in, jt := range req.Inputs {
			t, err := jt.decode(in, types[in])
			if err != nil {
				return badRequest(err)
			}
			inputs = append(inputs, t)
		}
		outs, err = l.Run(inputs, req.Outputs...)
		return err
	})
	setVersion(w, num)
	if err != nil {
		writeModelError(w, err)
		return
	}
	resp := predictResponse{Outputs: map[string]any{}, ModelVersion: num}
	for _, t := range outs {
		resp.Outputs[t.Name] = map[string]any{"dtype": t.DType.String(), "shape": t.Shape, "data": t.Data}
	}
	writeJSON(w, http.StatusOK, resp)
}

func predictProto(svc *service, w http.ResponseWriter, r *http.Request, name string, want int64) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err == nil && len(body) == 0 {
		// PredictBytes(nil) would answer with JSON; this route speaks protobuf only.
		err = fmt.Errorf("empty request body")
	}
	if err != nil {
		svc.metrics.observeRequest(labelFor(svc, name), 0, "http_pb", time.Now(), badRequest(err))
		writeError(w, http.StatusBadRequest, "RS_ERR_INVALID_ARGUMENT", err.Error())
		return
	}
	out, num, err := svc.predictBytes(r.Context(), name, want, "http_pb", body)
	setVersion(w, num)
	if err != nil {
		writeModelError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

func metadataRoute(svc *service, w http.ResponseWriter, r *http.Request, name string, want int64) {
	l, err := svc.mg.Acquire(name, want)
	if err != nil {
		writeModelError(w, err)
		return
	}
	defer l.Release()
	ins, outs, err := svc.sigs.get(name, l)
	if err != nil {
		writeModelError(w, err)
		return
	}
	setVersion(w, l.Version())
	writeJSON(w, http.StatusOK, map[string]any{"model": name, "version": l.Version(),
		"inputs": infos(ins), "outputs": infos(outs)})
}

func adminRoute(svc *service, w http.ResponseWriter, r *http.Request, name, action string) {
	var err error
	switch action {
	case "pin":
		var body struct {
			Version int64 `json:"version"`
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
		dec.DisallowUnknownFields()
		if derr := dec.Decode(&body); derr != nil {
			writeError(w, http.StatusBadRequest, "RS_ERR_INVALID_ARGUMENT", `body must be {"version": N}: `+derr.Error())
			return
		}
		err = svc.mg.Pin(name, body.Version)
	case "rollback":
		_, err = svc.mg.Rollback(name)
	case "unpin":
		err = svc.mg.Unpin(name)
	case "reload":
		err = svc.mg.Reload(name)
	}
	if err != nil {
		writeModelError(w, err)
		return
	}
	st, err := svc.mg.ModelStatus(name)
	if err != nil {
		writeModelError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func labelFor(svc *service, name string) string {
	if svc.mg.Known(name) {
		return name
	}
	return "_unknown"
}

// badRequest marks a decoding error as the request's fault.
func badRequest(err error) error {
	return &recstrata.Error{Op: "Decode", Code: recstrata.InvalidArgument, Message: err.Error()}
}
