#!/usr/bin/env bash
# Builds the Go client of the broker (tests/go/client) into OUT/client,
# with Debian's Go toolchain and libraries only (no module proxy): go
# (golang-go), grpc-go and the protobuf runtime as source under
# /usr/share/gocode (golang-google-grpc-dev, golang-google-protobuf-dev),
# and stubs generated from proto/ by protoc with protoc-gen-go and
# protoc-gen-go-grpc (protobuf-compiler, protoc-gen-go, protoc-gen-go-grpc).
# scripts/setup-test-host.sh installs them. The build is GOPATH-style
# (GO111MODULE=off): the stubs go to OUT/gopath/src/switchyard.local/brokerpb,
# and GOPATH is OUT/gopath then /usr/share/gocode.
#
# Usage: tests/go/build.sh OUT
set -euo pipefail
out="${1:?usage: tests/go/build.sh OUT}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
stubs="$out/gopath/src/switchyard.local/brokerpb"
mkdir -p "$stubs"
map="Mswitchyard/v1/broker.proto=switchyard.local/brokerpb"
protoc -I"$root/proto" \
    --go_out="$out/gopath/src" --go_opt="$map" \
    --go-grpc_out="$out/gopath/src" --go-grpc_opt="$map" \
    switchyard/v1/broker.proto
export GO111MODULE=off GOPATH="$out/gopath:/usr/share/gocode" GOFLAGS=
export GOCACHE="${GOCACHE:-$out/gocache}"
cd "$root/tests/go/client"
go build -o "$out/client" .
