package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/recstrata/recstrata/go_client"
)

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
	Outputs      map[string]any `json:"outputs"`
	ModelVersion int64          `json:"model_version"`
}

type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
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
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		writeError(w, http.StatusServiceUnavailable, "CANCELLED", err.Error())
		return
	}
	var e *recstrata.Error
	if !errors.As(err, &e) {
		writeError(w, http.StatusInternalServerError, "RS_ERR_INTERNAL", err.Error())
		return
	}
	status := http.StatusInternalServerError
	switch e.Code {
	case recstrata.InvalidArgument, recstrata.OutOfRange:
		status = http.StatusBadRequest
	case recstrata.NotFound:
		status = http.StatusNotFound
	case recstrata.FailedPrecondition:
		status = http.StatusServiceUnavailable
	case recstrata.ResourceExhausted:
		status = http.StatusTooManyRequests
	}
	msg := e.Message
	if error(e) != err {
		msg = err.Error() // wrapped: keep the context (e.g. which version failed to load)
	}
	writeError(w, status, e.Code.String(), msg)
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
