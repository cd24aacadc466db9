package main

import (
	"context"
	"errors"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/recstrata/recstrata/go_client"
	"github.com/recstrata/recstrata/go_client/examples/server/predictpb"
)

// Metadata keys of the gRPC front (see proto/predict_service.proto).
const (
	mdModel          = "recstrata-model"         // request: model name (default: the first model)
	mdVersion        = "recstrata-version"       // request: require this version
	mdServingVersion = "recstrata-model-version" // response header: the version that answered
)

// grpcService implements recstrata.serving.v1.PredictionService over
// DeepRec's PredictRequest/PredictResponse. The request bytes go unchanged to
// the library's PredictRequest entry point (rs_host_predict via
// Host.PredictBytes), so the wire semantics are the library's; see rawCodec.
type grpcService struct {
	svc *service
}

// register adds the service to gs, which must use newRawCodec (the
// generated predictpb handler would decode into a Go message instead). The
// service and method names are the generated descriptor's, so generated
// clients (predictpb.NewPredictionServiceClient) and generic ones both work.
func (g *grpcService) register(gs *grpc.Server) {
	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: predictpb.PredictionService_ServiceDesc.ServiceName,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Predict",
			Handler: func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				in := &rawMessage{}
				if err := dec(in); err != nil {
					return nil, err
				}
				if icpt == nil {
					return g.predict(ctx, in)
				}
				info := &grpc.UnaryServerInfo{Server: g, FullMethod: predictpb.PredictionService_Predict_FullMethodName}
				return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
					return g.predict(ctx, req.(*rawMessage))
				})
			},
		}},
		Metadata: predictpb.PredictionService_ServiceDesc.Metadata,
	}, g)
}

func (g *grpcService) predict(ctx context.Context, req *rawMessage) (*rawMessage, error) {
	model, want, err := g.target(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.b) == 0 {
		// The library answers an empty request with the signature JSON; that
		// is no PredictResponse.
		return nil, status.Error(codes.InvalidArgument, "empty PredictRequest: name the inputs")
	}
	out, num, err := g.svc.predictBytes(ctx, model, want, "grpc", req.b)
	if num != 0 {
		grpc.SetHeader(ctx, metadata.Pairs(mdServingVersion, strconv.FormatInt(num, 10)))
	}
	if err != nil {
		return nil, grpcError(err)
	}
	return &rawMessage{b: out}, nil
}

// target reads the model and version from the request metadata.
func (g *grpcService) target(ctx context.Context) (string, int64, error) {
	model, want := g.svc.mg.DefaultModel(), int64(0)
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(mdModel); len(v) > 0 {
		model = v[0]
	}
	if v := md.Get(mdVersion); len(v) > 0 {
		n, err := strconv.ParseInt(v[0], 10, 64)
		if err != nil || n <= 0 {
			return "", 0, status.Errorf(codes.InvalidArgument, "metadata %s=%q is not a positive integer", mdVersion, v[0])
		}
		want = n
	}
	return model, want, nil
}

// grpcError maps library codes to gRPC codes.
func grpcError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return status.FromContextError(err).Err()
	}
	var e *recstrata.Error
	if !errors.As(err, &e) {
		return status.Error(codes.Internal, err.Error())
	}
	c := codes.Internal
	switch e.Code {
	case recstrata.InvalidArgument:
		c = codes.InvalidArgument
	case recstrata.OutOfRange:
		c = codes.OutOfRange
	case recstrata.NotFound:
		c = codes.NotFound
	case recstrata.FailedPrecondition:
		c = codes.Unavailable // nothing serving (yet), or shutting down: retryable
	case recstrata.ResourceExhausted:
		c = codes.ResourceExhausted
	case recstrata.Unimplemented:
		c = codes.Unimplemented
	}
	return status.Error(c, e.Code.String()+": "+e.Message)
}
