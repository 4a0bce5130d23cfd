#!/usr/bin/env bash
# Resolve kafka-clients (pinned in pom.xml) from Maven Central into the test cache
# and compile Main.java with javac, once per source change. Prints the classpath.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${KEYSCOPE_TEST_CACHE:-$HOME/.cache/keyscope-tests}/java-producer"
tag=$(cat "$here/pom.xml" "$here/src/main/java/keyscope/peer/Main.java" | sha256sum | cut -c1-16)
dir="$cache/$tag"
if [ ! -f "$dir/.complete" ]; then
  command -v mvn >/dev/null || { echo "build.sh: mvn not found (needs Java 17 + Maven)" >&2; exit 3; }
  rm -rf "$dir" && mkdir -p "$dir/classes"
  mvn -q -B -Dstyle.color=never -f "$here/pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$dir/lib" >&2
  javac -d "$dir/classes" -cp "$dir/lib/*" "$here/src/main/java/keyscope/peer/Main.java" >&2
  touch "$dir/.complete"
fi
echo "$dir/classes:$dir/lib/*"
