#!/usr/bin/env bash
# Resolve the pinned Apache Kafka broker jars from Maven Central into the test
# cache (idempotent; ~12-50 s the first time, instant after). Prints the lib dir.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/pom.xml")
cache="${KEYSCOPE_TEST_CACHE:-$HOME/.cache/keyscope-tests}"
lib="$cache/kafka-$version/lib"
stamp="$cache/kafka-$version/.complete"
if [ ! -f "$stamp" ] || [ "$here/pom.xml" -nt "$stamp" ]; then
  command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (needs Java 17 + Maven)" >&2; exit 3; }
  rm -rf "$lib.tmp"
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$lib.tmp" >&2
  rm -rf "$lib" && mv "$lib.tmp" "$lib" && touch "$stamp"
fi
echo "$lib"
