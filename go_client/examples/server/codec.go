package main

import (
	"google.golang.org/grpc/encoding"
	encproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// rawMessage is a protobuf message kept as its wire bytes: the gRPC front
// hands a PredictRequest to the library exactly as the client sent it and
// returns the library's PredictResponse bytes as they are, with no decode or
// re-encode in Go.
type rawMessage struct{ b []byte }

// rawCodec is the server's codec: rawMessage values pass through, every
// other message (the health service's) goes to gRPC's protobuf codec. It
// keeps the name "proto", so clients see an ordinary application/grpc+proto
// service.
type rawCodec struct{ proto encoding.CodecV2 }

func newRawCodec() rawCodec { return rawCodec{proto: encoding.GetCodecV2(encproto.Name)} }

func (c rawCodec) Name() string { return encproto.Name }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*rawMessage); ok {
		return mem.BufferSlice{mem.SliceBuffer(r.b)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if r, ok := v.(*rawMessage); ok {
		r.b = data.Materialize() // a copy: data's buffers go back to gRPC's pool
		return nil
	}
	return c.proto.Unmarshal(data, v)
}
