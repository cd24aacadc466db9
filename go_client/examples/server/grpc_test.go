package main

import (
	"context"
	"net"
	"os"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/recstrata/recstrata/go_client/examples/server/predictpb"
	"github.com/recstrata/recstrata/go_client/internal/testmodel"
)

func TestGRPCPredict(t *testing.T) {
	_, exp := testmodel.Load(t)
	direct := testmodel.Open(t)
	mg, _ := newTestManager(t, 2, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(newRawCodec()))
	(&grpcService{svc: newService(mg, newMetrics(), 4)}).register(gs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := predictpb.NewPredictionServiceClient(conn)

	raw, err := os.ReadFile(exp.RequestFile)
	if err != nil {
		t.Fatal(err)
	}
	req := &predictpb.PredictRequest{}
	if err := proto.Unmarshal(raw, req); err != nil {
		t.Fatal(err)
	}
	var header metadata.MD
	resp, err := client.Predict(context.Background(), req, grpc.Header(&header))
	if err != nil {
		t.Fatal(err)
	}
	if got := header.Get(mdServingVersion); len(got) != 1 || got[0] != "2" {
		t.Errorf("version header %v", got)
	}
	want := &predictpb.PredictResponse{}
	wantBytes, err := direct.PredictBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(wantBytes, want); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(resp, want) || len(resp.Outputs["y"].GetFloatVal()) == 0 {
		t.Errorf("gRPC response %v, want %v", resp, want)
	}

	cases := []struct {
		name string
		md   []string
		req  *predictpb.PredictRequest
		code codes.Code
	}{
		{"unknown model", []string{mdModel, "nope"}, req, codes.NotFound},
		{"unloaded version", []string{mdVersion, "1"}, req, codes.NotFound},
		{"bad version", []string{mdVersion, "x"}, req, codes.InvalidArgument},
		{"empty request", nil, &predictpb.PredictRequest{}, codes.InvalidArgument},
		{"unknown input", nil, &predictpb.PredictRequest{Inputs: map[string]*predictpb.ArrayProto{
			"nope": {Dtype: predictpb.ArrayDataType_DT_FLOAT, ArrayShape: &predictpb.ArrayShape{Dim: []int64{1}}, FloatVal: []float32{1}}}},
			codes.InvalidArgument},
	}
	for _, c := range cases {
		ctx := context.Background()
		if c.md != nil {
			ctx = metadata.AppendToOutgoingContext(ctx, c.md...)
		}
		_, err := client.Predict(ctx, c.req)
		if status.Code(err) != c.code || status.Convert(err).Message() == "" {
			t.Errorf("%s: %v, want %v", c.name, err, c.code)
		}
	}
	// Version 2 by name and model "m" by name both work.
	ctx := metadata.AppendToOutgoingContext(context.Background(), mdModel, "m", mdVersion, "2")
	if _, err := client.Predict(ctx, req); err != nil {
		t.Errorf("model m version 2: %v", err)
	}
}
