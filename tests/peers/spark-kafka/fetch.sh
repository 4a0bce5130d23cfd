#!/usr/bin/env bash
# Resolve Spark's Kafka connector (spark-sql-kafka-0-10_2.13, the installed pyspark's version) and the
# jars it needs that pyspark does not ship, from Maven Central into the test cache (idempotent;
# ~10-30 s the first time, instant after). Prints them comma-separated, for spark.jars.
# Usage: fetch.sh [PYTHON]: the interpreter whose pyspark to match (default: python on PATH).
set -euo pipefail
py="${1:-python}"
here="$(cd "$(dirname "$0")" && pwd)"
read -r version pyjars < <("$py" -c 'import os, pyspark; print(pyspark.__version__, os.path.join(os.path.dirname(pyspark.__file__), "jars"))')
cache="${KEYSCOPE_TEST_CACHE:-$HOME/.cache/keyscope-tests}/spark-kafka-$version"
sum=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)
if [ "$(cat "$cache/.complete" 2>/dev/null)" != "$sum" ]; then
  command -v mvn >/dev/null || { echo "fetch.sh: mvn not found (needs Java 17 + Maven)" >&2; exit 3; }
  rm -rf "$cache.tmp"
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -Dspark.version="$version" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$cache.tmp" >&2
  # pyspark already ships Spark itself and the compression/logging libraries kafka-clients uses:
  # two versions of one library on a classpath is the classic source of NoSuchMethodError.
  for j in "$cache.tmp"/*.jar; do
    a=$(basename "$j" .jar | sed 's/-[0-9][^-]*\(-[A-Za-z0-9.]*\)*$//')
    if compgen -G "$pyjars/$a-[0-9]*.jar" >/dev/null; then rm "$j"; fi
  done
  echo "$sum" > "$cache.tmp/.complete"
  rm -rf "$cache" && mv "$cache.tmp" "$cache"
fi
ls "$cache"/*.jar | paste -sd, -
