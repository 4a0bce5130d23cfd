"""The Java code `recommend` prints builds the very keys, and places them, as keyscope evaluated.

Compiles the snippet's ``keyscopeKey`` (composite key + salting with
commons-codec's MurmurHash3) with javac and runs it over the sample's records;
compiles the printed CRC32/FNV-1a ``Partitioner`` classes against two-line
stand-ins of the Kafka types they name (the placement logic is the snippet's).
Needs a JDK and a commons-codec jar (COMMONS_CODEC_JAR, else the local Maven
repository, resolved there from Maven Central with mvn when missing); the Kafka
client jar is not needed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import numpy as np
import polars as pl
import pytest

from keyscope.advice import snippets
from keyscope.partitioners import get_partitioner, partition_column
from keyscope.sample import Sample
from keyscope.whatif.engine import WhatIf
from keyscope.whatif.spec import Salt, Scenario


CODEC_VERSION = "1.17.1"  # pinned: MurmurHash3.hash32x86 exists from 1.14 on


def _codec_jar() -> str | None:
    env = os.environ.get("COMMONS_CODEC_JAR")
    if env and os.path.exists(env):
        return env
    jars = sorted(glob.glob(os.path.expanduser("~/.m2/repository/commons-codec/commons-codec/*/commons-codec-*.jar")))
    jars += sorted(glob.glob("/usr/share/java/commons-codec*.jar"))
    # hash32x86 (the correct MurmurHash3_x86_32) exists from commons-codec 1.14 on
    good = [j for j in jars if not any(f"/1.{m}/" in j for m in range(0, 14))]
    if not good and shutil.which("mvn"):
        subprocess.run(["mvn", "-q", "-B", "-Dstyle.color=never", "dependency:get",
                        f"-Dartifact=commons-codec:commons-codec:{CODEC_VERSION}"], capture_output=True)
        jar = os.path.expanduser(f"~/.m2/repository/commons-codec/commons-codec/{CODEC_VERSION}/"
                                 f"commons-codec-{CODEC_VERSION}.jar")
        good = [jar] if os.path.exists(jar) else []
    return good[-1] if good else None


JAR = _codec_jar()
pytestmark = pytest.mark.skipif(shutil.which("javac") is None, reason="needs a JDK (javac)")


def _sample():
    rng = np.random.default_rng(8)
    n = 6_000
    tenant = np.where(rng.random(n) < 0.4, 0, rng.integers(1, 300, n))
    keys = pl.Series("key", [f"tenant-{t}" for t in tenant]).cast(pl.Binary)
    users = [None if i % 17 == 0 else f"üser-{u}" for i, u in enumerate(rng.integers(0, 50, n))]
    df = pl.DataFrame(
        {"partition": partition_column(keys, 3, "murmur2").cast(pl.Int32), "key": keys, "user_id": users}
    )
    return Sample.from_frame(df, topic="orders", partition_count=3)


@pytest.mark.parametrize(
    "sc",
    [
        Scenario(3, "murmur2", salt=Salt(top=2, buckets=8, by="user_id", seed=11)),
        Scenario(6, "murmur2", key_fields=("user_id",), separator=":", salt=Salt(top=1, buckets=4, by="user_id")),
    ],
    ids=lambda s: s.label,
)
@pytest.mark.skipif(JAR is None, reason="needs a commons-codec >= 1.14 jar (MurmurHash3.hash32x86)")
def test_java_key_function_reproduces_the_prediction(tmp_path, sc):
    sample = _sample()
    res = WhatIf(sample).evaluate(sc)
    java = snippets(sc, 3, res.salted_keys, topic="orders")["java"]
    lines = java.splitlines()
    body = lines[: lines.index("}") + 1]  # HOT set and keyscopeKey
    src = "\n".join(
        [
            "import java.io.*;",
            "import java.nio.charset.StandardCharsets;",
            "import java.util.*;",
            "import org.apache.commons.codec.digest.MurmurHash3;",
            "public class KeyCheck {",
            *body,
            "    public static void main(String[] a) throws IOException {",
            "        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));",
            "        PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), false, \"UTF-8\");",
            "        for (String line; (line = in.readLine()) != null; ) {",
            "            String[] f = line.split(\"\\t\", -1);",
            "            out.println(keyscopeKey(f[0], f[1].equals(\"\\\\N\") ? null : f[1]));",
            "        }",
            "        out.flush();",
            "    }",
            "}",
        ]
    )
    (tmp_path / "KeyCheck.java").write_text(src, encoding="utf-8")
    subprocess.run(["javac", "-encoding", "UTF-8", "-cp", JAR, "KeyCheck.java"], cwd=tmp_path, check=True)
    rows = sample.df.select(pl.col("key").cast(pl.String), "user_id").rows()
    null = "\\N"
    stdin = "\n".join(f"{k}\t{null if u is None else u}" for k, u in rows) + "\n"
    run = subprocess.run(
        ["java", "-cp", f"{JAR}{os.pathsep}.", "KeyCheck"],
        cwd=tmp_path, input=stdin.encode(), capture_output=True, check=True,
    )
    java_keys = run.stdout.decode("utf-8").splitlines()
    assert len(java_keys) == len(rows)
    p = get_partitioner(sc.partitioner)
    loads = np.zeros(sc.partitions)
    for k in java_keys:
        loads[p.partition(k.encode(), sc.partitions)] += 1
    np.testing.assert_array_equal(loads, res.records)
    assert any("#" in k for k in java_keys)  # salting happened


@pytest.mark.parametrize("name,cls", [("consistent", "Crc32Partitioner"), ("fnv1a", "Fnv1aPartitioner")])
def test_java_partitioner_snippet_places_keys_like_keyscope(tmp_path, name, cls):
    """The printed Partitioner class, compiled against minimal stand-ins of the two Kafka types it names."""
    java = snippets(Scenario(6, name), 3, topic="orders")["java"]
    lines = java.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("public class "))
    end = lines.index("}", start)
    stubs = tmp_path / "org" / "apache" / "kafka"
    (stubs / "clients" / "producer").mkdir(parents=True)
    (stubs / "common").mkdir(parents=True)
    (stubs / "clients" / "producer" / "Partitioner.java").write_text(
        "package org.apache.kafka.clients.producer;\n"
        "public interface Partitioner {\n"
        "  int partition(String topic, Object key, byte[] keyBytes, Object value, byte[] valueBytes,"
        " org.apache.kafka.common.Cluster cluster);\n"
        "  void close();\n  void configure(java.util.Map<String, ?> configs);\n}\n"
    )
    (stubs / "common" / "Cluster.java").write_text(
        "package org.apache.kafka.common;\n"
        "public class Cluster {\n  final int n;\n  public Cluster(int n) { this.n = n; }\n"
        "  public java.util.List<Integer> partitionsForTopic(String t) {"
        " java.util.List<Integer> l = new java.util.ArrayList<>(); for (int i = 0; i < n; i++) l.add(i); return l; }\n}\n"
    )
    src = "\n".join(
        [
            "import java.util.*;",
            "import java.util.zip.CRC32;",
            "import java.util.concurrent.ThreadLocalRandom;",
            "import org.apache.kafka.clients.producer.Partitioner;",
            "import org.apache.kafka.common.Cluster;",
            *lines[start : end + 1],
        ]
    )
    (tmp_path / f"{cls}.java").write_text(src, encoding="utf-8")
    main = (
        "import java.io.*;\nimport java.util.*;\n"
        "public class Place {\n  public static void main(String[] a) throws IOException {\n"
        f"    {cls} p = new {cls}();\n    org.apache.kafka.common.Cluster c = new org.apache.kafka.common.Cluster(6);\n"
        "    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, \"ISO-8859-1\"));\n"
        "    for (String line; (line = in.readLine()) != null; ) {\n"
        "      byte[] k = HexFormat.of().parseHex(line);\n"
        "      System.out.println(p.partition(\"t\", null, k, null, null, c));\n    }\n  }\n}\n"
    )
    (tmp_path / "Place.java").write_text(main)
    files = [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.java")]
    subprocess.run(["javac", *files], cwd=tmp_path, check=True)
    keys = [f"tenant-{i}:ü".encode() for i in range(500)] + [bytes([i, 255, i ^ 0x55, 0x80]) for i in range(256)]
    run = subprocess.run(
        ["java", "-cp", ".", "Place"], cwd=tmp_path, input="\n".join(k.hex() for k in keys).encode() + b"\n",
        capture_output=True, check=True,
    )
    placed = [int(x) for x in run.stdout.decode().split()]
    assert placed == partition_column(keys, 6, name).to_list()
