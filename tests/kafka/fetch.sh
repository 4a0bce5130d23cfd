#!/usr/bin/env bash
# Resolve the pinned Apache Kafka broker jars from Maven Central into the test
# cache (idempotent; ~12-50 s the first time, instant after). Prints the lib dir.
# Usage: fetch.sh [POM]: this folder's pom.xml (Kafka 4.4) by default; another
# pom with a <kafka.version> property pins another broker (Burrow's Kafka 3.9).
set -euo pipefail
pom="$(realpath "${1:-$(dirname "$0")/pom.xml}")"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$pom")
cache="${KEYSCOPE_TEST_CACHE:-$HOME/.cache/keyscope-tests}"
lib="$cache/kafka-$version/lib"
stamp="$cache/kafka-$version/.complete"
sum=$(sha256sum "$pom" | cut -d' ' -f1)  # the pom's content, not its mtime: a fresh clone is "newer"
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (needs Java 17 + Maven)" >&2; exit 3; }
  rm -rf "$lib.tmp"
  mvn -q -B -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$lib.tmp" >&2
  rm -rf "$lib" && mv "$lib.tmp" "$lib" && echo "$sum" > "$stamp"
fi
echo "$lib"
