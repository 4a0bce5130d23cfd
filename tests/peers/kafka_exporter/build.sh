#!/bin/sh
# Build the kafka_exporter stand-in (our main.go; Shopify/sarama v1.38.1 and
# prometheus/client_golang v1.15.1 from the Go module proxy, pinned by go.sum) into $1.
# Why a stand-in: the Go module proxy serves no version of github.com/danielqsj/kafka_exporter.
set -eu
out="$1"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp "$here/main.go" "$here/go.mod" "$here/go.sum" "$work/"
cd "$work"
GOFLAGS=-mod=mod go build -trimpath -o "$out.tmp" .
mv "$out.tmp" "$out"
