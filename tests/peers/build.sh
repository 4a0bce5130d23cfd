#!/usr/bin/env bash
# tests/peers/build.sh NAME: build the peer in tests/peers/NAME from our own small source and its
# pinned manifests, from its client's own registry (Go module proxy, Maven Central, npm), into the
# test cache, once per source change (the cache key hashes every file of the peer).
# Prints the artefact: the binary (go.mod), the classpath (pom.xml), or the directory (package.json).
set -euo pipefail
name="${1:?usage: build.sh NAME}"
here="$(cd "$(dirname "$0")" && pwd)/$name"
[ -d "$here" ] || { echo "build.sh: no peer named $name in tests/peers" >&2; exit 2; }
tag=$(cd "$here" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
dir="${KEYSCOPE_TEST_CACHE:-$HOME/.cache/keyscope-tests}/peers/$name/$tag"
need() { command -v "$1" >/dev/null || { echo "build.sh: $1 not found${2:+ ($2)}" >&2; exit 3; }; }

if [ -f "$here/go.mod" ]; then kind=go; elif [ -f "$here/pom.xml" ]; then kind=maven; else kind=npm; fi
if [ ! -f "$dir/.complete" ]; then
  tmp="$dir.tmp.$$"
  trap 'rm -rf "$tmp"' EXIT
  rm -rf "$tmp" && mkdir -p "$tmp"
  case $kind in
    go)  # built from a copy: -mod=mod may complete go.sum, never in the checkout
      need go
      cp -r "$here/." "$tmp/src"
      (cd "$tmp/src" && GOFLAGS=-mod=mod go build -trimpath -o "$tmp/$name" .) >&2
      rm -rf "$tmp/src" ;;
    maven)
      need mvn "needs Java 17 + Maven"
      mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
          -DincludeScope=runtime -DoutputDirectory="$tmp/lib" >&2
      mkdir -p "$tmp/classes"
      find "$here/src" -name '*.java' -print0 | xargs -0 javac -d "$tmp/classes" -cp "$tmp/lib/*" >&2 ;;
    npm)
      need npm
      (cd "$here" && cp package.json package-lock.json ./*.js "$tmp/")
      (cd "$tmp" && npm ci --no-audit --no-fund --loglevel=error) >&2 ;;
  esac
  touch "$tmp/.complete"
  rm -rf "$dir" && mkdir -p "$(dirname "$dir")" && mv "$tmp" "$dir"
fi
case $kind in
  go) echo "$dir/$name" ;;
  maven) echo "$dir/classes:$dir/lib/*" ;;
  npm) echo "$dir" ;;
esac
