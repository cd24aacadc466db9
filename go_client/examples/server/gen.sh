#!/usr/bin/env bash
# Regenerates predictpb/ (committed, so building the server needs no protoc).
# Needs protoc and, on PATH:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
set -euo pipefail
cd "$(dirname "$0")"
pkg=github.com/recstrata/recstrata/go_client/examples/server/predictpb
protoc -I ../../../processor/proto -I proto \
  --go_out=predictpb --go_opt=paths=source_relative \
  --go_opt=Mrecstrata/wire/predict.proto=$pkg --go_opt=Mpredict_service.proto=$pkg \
  --go-grpc_out=predictpb --go-grpc_opt=paths=source_relative \
  --go-grpc_opt=Mrecstrata/wire/predict.proto=$pkg --go-grpc_opt=Mpredict_service.proto=$pkg \
  recstrata/wire/predict.proto predict_service.proto
# paths=source_relative keeps the proto's folder; flatten into the one package.
mv predictpb/recstrata/wire/predict.pb.go predictpb/ && rm -r predictpb/recstrata
