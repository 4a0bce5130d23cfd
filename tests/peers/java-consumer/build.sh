#!/usr/bin/env bash
# Build the Java consumer peer on demand: kafka-clients (pinned in pom.xml) from Maven Central,
# our GroupConsumer.java compiled with javac. Cached; rebuilt when pom.xml or the source is newer.
# Prints the classpath to run it with.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${KEYSCOPE_TEST_CACHE:-$HOME/.cache/keyscope-tests}/java-consumer"
stamp="$cache/.complete"
src="$here/src/keyscope/peer/GroupConsumer.java"
if [ ! -f "$stamp" ] || [ "$here/pom.xml" -nt "$stamp" ] || [ "$src" -nt "$stamp" ]; then
  command -v mvn >/dev/null || { echo "build.sh: mvn not found (needs Java 17 + Maven)" >&2; exit 3; }
  rm -rf "$cache.tmp" && mkdir -p "$cache.tmp/classes"
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$cache.tmp/lib" >&2
  javac -d "$cache.tmp/classes" -cp "$cache.tmp/lib/*" "$src" >&2
  rm -rf "$cache" && mv "$cache.tmp" "$cache" && touch "$stamp"
fi
echo "$cache/classes:$cache/lib/*"
