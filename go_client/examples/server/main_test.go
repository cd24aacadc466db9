package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"sync"
	"testing"

	"github.com/recstrata/recstrata/go_client"
	"github.com/recstrata/recstrata/go_client/internal/testmodel"
)

// newTestManager serves the test model as versions 1..n of model "m" (the
// version directories are symlinks to the one SavedModel) with the given
// signature ("": serving_default).
func newTestManager(t *testing.T, n int, signature string) (*Manager, string) {
	t.Helper()
	dir := testmodel.Dir(t)
	base := t.TempDir()
	for v := 1; v <= n; v++ {
		if err := os.Symlink(dir, filepath.Join(base, strconv.Itoa(v))); err != nil {
			t.Fatal(err)
		}
	}
	cfg := map[string]any{"session_num": 2, "warmup_runs": 1}
	if signature != "" {
		cfg["signature_name"] = signature
	}
	mg, err := NewManager([]modelSpec{{Name: "m", Base: base}}, 0, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mg.Close)
	return mg, base
}

func newTestServer(t *testing.T, signature string) (*httptest.Server, *recstrata.Model, *testmodel.Expected) {
	_, exp := testmodel.Load(t)
	var opts []recstrata.Option
	if signature != "" {
		opts = append(opts, recstrata.WithSignature(signature))
	}
	m := testmodel.Open(t, opts...)
	mg, _ := newTestManager(t, 1, signature)
	// httptest listens on 127.0.0.1; a limit of 2 makes the concurrent test queue.
	srv := httptest.NewServer(newHandler(newService(mg, newMetrics(), 2)))
	t.Cleanup(srv.Close)
	return srv, m, exp
}

func post(t *testing.T, url, contentType string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, out
}

func TestServerPredictJSON(t *testing.T) {
	srv, _, exp := newTestServer(t, "mixed")
	var c testmodel.Case
	for _, c = range exp.Cases {
		if c.Signature == "mixed" {
			break
		}
	}
	// Send the inputs without dtypes: the handler takes them from the signature.
	inputs := map[string]jsonTensor{}
	for name, j := range c.Inputs {
		inputs[name] = jsonTensor{Shape: j.Shape, Data: j.Data}
	}
	body, _ := json.Marshal(predictRequest{Inputs: inputs})
	status, out := post(t, srv.URL+"/v1/models/m:predict", "application/json", body)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, out)
	}
	var resp struct {
		Outputs map[string]testmodel.JSONTensor `json:"outputs"`
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	if len(resp.Outputs) != len(c.Outputs) {
		t.Errorf("%d outputs, want %d", len(resp.Outputs), len(c.Outputs))
	}
	for name, want := range c.Outputs {
		wt, err := want.Tensor()
		if err != nil {
			t.Fatal(err)
		}
		gt, err := resp.Outputs[name].Tensor()
		if err != nil {
			t.Fatalf("output %q: %v", name, err)
		}
		if !reflect.DeepEqual(gt.Shape, wt.Shape) || !reflect.DeepEqual(gt.Data, wt.Data) {
			t.Errorf("output %q: got %v %v, want %v %v", name, gt.Shape, gt.Data, wt.Shape, wt.Data)
		}
	}
}

func TestServerPredictProto(t *testing.T) {
	srv, m, exp := newTestServer(t, "")
	req, err := os.ReadFile(exp.RequestFile)
	if err != nil {
		t.Fatal(err)
	}
	status, out := post(t, srv.URL+"/v1/models/m:predict_pb", "application/x-protobuf", req)
	if status != http.StatusOK {
		t.Fatalf("status %d: %s", status, out)
	}
	direct, err := m.PredictBytes(req)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, direct) {
		t.Error("HTTP response differs from PredictBytes")
	}
}

func TestServerErrors(t *testing.T) {
	srv, _, _ := newTestServer(t, "")
	cases := []struct {
		name, path, body string
		status           int
		code             string
	}{
		{"malformed JSON", "/v1/models/m:predict", "{", 400, "RS_ERR_INVALID_ARGUMENT"},
		{"unknown input", "/v1/models/m:predict", `{"inputs":{"nope":{"shape":[1],"data":[1]}}}`, 400, "RS_ERR_INVALID_ARGUMENT"},
		{"bad shape", "/v1/models/m:predict", `{"inputs":{"x":{"shape":[2,4],"data":[1,2,3]}}}`, 400, "RS_ERR_INVALID_ARGUMENT"},
		{"wrong JSON type", "/v1/models/m:predict", `{"inputs":{"x":{"shape":[1,4],"data":["a","b","c","d"]}}}`, 400, "RS_ERR_INVALID_ARGUMENT"},
		{"garbage protobuf", "/v1/models/m:predict_pb", "\xff\xff\xff\xff\xff garbage", 400, "RS_ERR_INVALID_ARGUMENT"},
		{"empty protobuf", "/v1/models/m:predict_pb", "", 400, "RS_ERR_INVALID_ARGUMENT"},
		{"unknown model", "/v1/models/nope:predict", `{"inputs":{}}`, 404, "RS_ERR_NOT_FOUND"},
		{"unknown version", "/v1/models/m/versions/7:predict_pb", "\x0a\x00", 404, "RS_ERR_NOT_FOUND"},
		{"unknown action", "/v1/models/m:explode", "", 404, "RS_ERR_NOT_FOUND"},
		{"pin without body", "/v1/models/m:pin", "", 400, "RS_ERR_INVALID_ARGUMENT"},
		{"pin missing version", "/v1/models/m:pin", `{"version": 9}`, 404, "RS_ERR_NOT_FOUND"},
		{"rollback below 1", "/v1/models/m:rollback", "", 404, "RS_ERR_NOT_FOUND"},
	}
	for _, c := range cases {
		status, out := post(t, srv.URL+c.path, "application/octet-stream", []byte(c.body))
		var e errorBody
		json.Unmarshal(out, &e)
		if status != c.status || e.Code != c.code || e.Message == "" {
			t.Errorf("%s: %d %s", c.name, status, out)
		}
	}
	resp, err := http.Get(srv.URL + "/v1/models/m:predict")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET :predict: %d", resp.StatusCode)
	}
	for _, path := range []string{"/v1/models/m", "/v1/models/m/versions/1", "/v1/models/m:status", "/v1/models", "/healthz", "/readyz", "/metrics"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
}

func TestServerConcurrentRequests(t *testing.T) {
	srv, _, exp := newTestServer(t, "")
	var c testmodel.Case
	for _, c = range exp.Cases {
		if c.Signature == "serving_default" && c.Inputs["x"].Shape[0] == 3 {
			break
		}
	}
	inputs := map[string]jsonTensor{}
	for name, j := range c.Inputs {
		inputs[name] = jsonTensor{DType: j.DType, Shape: j.Shape, Data: j.Data}
	}
	body, _ := json.Marshal(predictRequest{Inputs: inputs})
	want, err := c.Outputs["y"].Tensor()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				r, err := http.Post(srv.URL+"/v1/models/m:predict", "application/json", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				out, _ := io.ReadAll(r.Body)
				r.Body.Close()
				var resp struct {
					Outputs map[string]testmodel.JSONTensor `json:"outputs"`
				}
				if r.StatusCode != http.StatusOK || json.Unmarshal(out, &resp) != nil {
					t.Errorf("status %d: %s", r.StatusCode, out)
					return
				}
				got, err := resp.Outputs["y"].Tensor()
				if err != nil || !reflect.DeepEqual(got.Data, want.Data) {
					t.Errorf("wrong output %v (%v)", got.Data, err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// The JSON route reads a version's signature once (the host counts that
// call as a request), then only runs.
func TestServerJSONReadsSignatureOnce(t *testing.T) {
	mg, _ := newTestManager(t, 1, "")
	srv := httptest.NewServer(newHandler(newService(mg, newMetrics(), 2)))
	t.Cleanup(srv.Close)
	body := []byte(`{"inputs":{"x":{"shape":[1,4],"data":[1,2,3,4]}}}`)
	for range 3 {
		if status, out := post(t, srv.URL+"/v1/models/m:predict", "application/json", body); status != http.StatusOK {
			t.Fatalf("status %d: %s", status, out)
		}
	}
	text, err := mg.Host().MetricsText()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^rs_host_requests_total\{model="m",version="1"\} (\S+)$`).FindStringSubmatch(text)
	if m == nil || m[1] != "4" {
		t.Fatalf("host requests %v, want 4 (1 signature + 3 runs)\n%s", m, text)
	}
}
