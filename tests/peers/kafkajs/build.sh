#!/usr/bin/env bash
# Install the pinned KafkaJS (npm ci from package-lock.json) into the test cache,
# once per manifest change. Prints the directory holding produce.js.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${KEYSCOPE_TEST_CACHE:-$HOME/.cache/keyscope-tests}/kafkajs"
tag=$(cat "$here/package.json" "$here/package-lock.json" "$here/produce.js" | sha256sum | cut -c1-16)
dir="$cache/$tag"
if [ ! -f "$dir/.complete" ]; then
  command -v npm >/dev/null || { echo "build.sh: npm not found" >&2; exit 3; }
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$here/package.json" "$here/package-lock.json" "$here/produce.js" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >&2
  touch "$dir/.complete"
fi
echo "$dir"
