#!/usr/bin/env bash
# Build the kafka-go v0.3.0 producer (its Hash balancer: unsigned fnv1a % n) into the test cache,
# once per source change; modules from the Go module proxy, pinned by go.mod/go.sum.
# Prints the binary's path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${KEYSCOPE_TEST_CACHE:-$HOME/.cache/keyscope-tests}/kafka-go-old"
tag=$(cat "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)
bin="$cache/kafka-go-old-$tag"
if [ ! -x "$bin" ]; then
  command -v go >/dev/null || { echo "build.sh: go not found" >&2; exit 3; }
  mkdir -p "$cache"
  (cd "$here" && go build -trimpath -o "$bin.tmp" .) >&2
  mv "$bin.tmp" "$bin"
fi
echo "$bin"
