package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/recstrata/recstrata/go_client"
)

// maxBody caps request bodies (JSON or protobuf) at 64 MiB.
const maxBody = 64 << 20

// jsonTensor is the JSON form of a tensor: data is a flat row-major array
// (String elements are base64, the encoding/json convention for []byte).
// On input, dtype may be omitted: the signature's dtype is used.
type jsonTensor struct {
	DType string          `json:"dtype,omitempty"`
	Shape []int64         `json:"shape"`
	Data  json.RawMessage `json:"data"`
}

type predictRequest struct {
	Inputs  map[string]jsonTensor `json:"inputs"`
	Outputs []string              `json:"outputs,omitempty"` // default: all
}

type predictResponse struct {
	Outputs map[string]any `json:"outputs"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// newHandler serves one model:
//
//	POST /v1/predict     JSON tensors in, JSON tensors out
//	POST /v1/predict.pb  DeepRec PredictRequest bytes in, PredictResponse out
//	GET  /v1/model       signature (inputs and outputs)
//	GET  /v1/stats       the library's counters
//	GET  /healthz        liveness
//
// Every handler calls the shared *recstrata.Model directly: it is safe for
// concurrent use, and net/http runs each request on its own goroutine.
func newHandler(m *recstrata.Model) http.Handler {
	mux := http.NewServeMux()
	inputTypes := map[string]recstrata.DType{}
	for _, in := range m.Inputs() {
		inputTypes[in.Name] = in.DType
	}

	mux.HandleFunc("POST /v1/predict", func(w http.ResponseWriter, r *http.Request) {
		var req predictRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "RS_ERR_INVALID_ARGUMENT", "request JSON: "+err.Error())
			return
		}
		inputs := make([]recstrata.Tensor, 0, len(req.Inputs))
		for name, jt := range req.Inputs {
			t, err := jt.decode(name, inputTypes[name])
			if err != nil {
				writeError(w, http.StatusBadRequest, "RS_ERR_INVALID_ARGUMENT", err.Error())
				return
			}
			inputs = append(inputs, t)
		}
		outs, err := m.Run(inputs, req.Outputs...)
		if err != nil {
			writeModelError(w, err)
			return
		}
		resp := predictResponse{Outputs: map[string]any{}}
		for _, t := range outs {
			resp.Outputs[t.Name] = map[string]any{"dtype": t.DType.String(), "shape": t.Shape, "data": t.Data}
		}
		writeJSON(w, http.StatusOK, resp)
	})

	mux.HandleFunc("POST /v1/predict.pb", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeError(w, http.StatusBadRequest, "RS_ERR_INVALID_ARGUMENT", err.Error())
			return
		}
		if len(body) == 0 {
			// PredictBytes(nil) would answer with JSON; this route speaks protobuf only.
			writeError(w, http.StatusBadRequest, "RS_ERR_INVALID_ARGUMENT", "empty request body")
			return
		}
		resp, err := m.PredictBytes(body)
		if err != nil {
			writeModelError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.Write(resp)
	})

	mux.HandleFunc("GET /v1/model", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"inputs": infos(m.Inputs()), "outputs": infos(m.Outputs())})
	})

	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		stats, err := m.Stats()
		if err != nil {
			writeModelError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, stats)
	})

	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	return mux
}

func infos(in []recstrata.TensorInfo) []map[string]any {
	out := make([]map[string]any, len(in))
	for i, t := range in {
		out[i] = map[string]any{"name": t.Name, "dtype": t.DType.String(), "shape": t.Shape}
	}
	return out
}

// decode turns a JSON tensor into a typed Tensor; fallback is the
// signature's dtype (Invalid for an unknown input, which the library rejects
// by name).
func (j jsonTensor) decode(name string, fallback recstrata.DType) (recstrata.Tensor, error) {
	d := fallback
	if j.DType != "" {
		var ok bool
		if d, ok = recstrata.ParseDType(j.DType); !ok {
			return recstrata.Tensor{}, fmt.Errorf("input %q: unknown dtype %q", name, j.DType)
		}
	}
	if d == recstrata.Invalid {
		d = recstrata.Float32 // unknown input: let the library name the problem
	}
	var data any
	var err error
	switch d {
	case recstrata.Float32:
		data, err = unmarshal[float32](j.Data)
	case recstrata.Float64:
		data, err = unmarshal[float64](j.Data)
	case recstrata.Int32:
		data, err = unmarshal[int32](j.Data)
	case recstrata.Int64:
		data, err = unmarshal[int64](j.Data)
	case recstrata.Bool:
		data, err = unmarshal[bool](j.Data)
	case recstrata.String:
		data, err = unmarshal[[]byte](j.Data)
	default:
		err = fmt.Errorf("dtype %s is not supported in JSON", d)
	}
	if err != nil {
		return recstrata.Tensor{}, fmt.Errorf("input %q: %v", name, err)
	}
	return recstrata.Tensor{Name: name, DType: d, Shape: j.Shape, Data: data}, nil
}

func unmarshal[T any](raw json.RawMessage) ([]T, error) {
	out := []T{}
	if len(raw) == 0 {
		return out, nil
	}
	err := json.Unmarshal(raw, &out)
	return out, err
}

// writeModelError maps library status codes to HTTP statuses.
func writeModelError(w http.ResponseWriter, err error) {
	var e *recstrata.Error
	if !errors.As(err, &e) {
		writeError(w, http.StatusInternalServerError, "RS_ERR_INTERNAL", err.Error())
		return
	}
	status := http.StatusInternalServerError
	switch e.Code {
	case recstrata.InvalidArgument, recstrata.OutOfRange, recstrata.NotFound:
		status = http.StatusBadRequest
	case recstrata.FailedPrecondition:
		status = http.StatusServiceUnavailable
	case recstrata.ResourceExhausted:
		status = http.StatusTooManyRequests
	}
	writeError(w, status, e.Code.String(), e.Message)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, errorBody{Code: code, Message: message})
}

// writeJSON encodes before writing, so an unencodable value (NaN and Inf
// have no JSON form) becomes a clean 500 instead of a truncated 200.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body, _ = json.Marshal(errorBody{Code: "RS_ERR_INTERNAL", Message: "encoding the response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}
