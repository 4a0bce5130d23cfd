"""Real producers of every client, built on demand, and a plain reader for what they wrote.

Each peer (tests/peers/<name>, built by tests/peers/build.sh) is built from our own small source and
pinned manifests, from the client's own registry, into ~/.cache/keyscope-tests.
Every peer reads the same key file: one record per line, ``-`` for a null key,
otherwise the key in hex (an empty line is the empty key); the record's value
is its line number, so the reader can match every record to its key.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
PARTITIONS = 6


def build(name: str) -> str:
    """Run tests/peers/build.sh NAME (cached after the first time); its last stdout line is the artefact."""
    r = subprocess.run(["bash", str(HERE / "build.sh"), name], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"building the {name} peer failed:\n{r.stderr[-3000:]}")
    return r.stdout.strip().splitlines()[-1]


def ensure_kcat() -> str:
    """kcat from Debian, installed when missing (the tests run as root)."""
    path = shutil.which("kcat")
    if path is None:
        subprocess.run(["apt-get", "install", "-y", "kcat"], capture_output=True, timeout=600, check=False)
        path = shutil.which("kcat")
        if path is None:
            raise RuntimeError("kcat is missing and `apt-get install -y kcat` did not install it")
    return path


def make_keys(seed: int = 7) -> list[bytes | None]:
    """2,100 distinct non-empty keys (ASCII, UTF-8, binary with NUL/newline/high bytes, 1-40 bytes),
    empty and null keys spread through them, and the first 300 keys once more at the end
    (repeats show whether placement depends on the key)."""
    rng = np.random.default_rng(seed)
    distinct: dict[bytes, None] = {}
    for i in range(1000):
        distinct[f"{'order' if i % 2 else 'k'}-{i}{'x' * (i % 29)}".encode()] = None
    for i in range(500):
        distinct[f"ключ-{i}-ü€{'🔑' * (i % 3)}".encode()] = None
    while len(distinct) < 2100:
        n = int(rng.integers(1, 41))
        k = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        distinct[k + (b"\n\x00\xff" if len(distinct) % 5 == 0 else b"")] = None
    keys: list[bytes | None] = []
    for i, k in enumerate(distinct):
        if i % 50 == 10:
            keys.append(b"")
        if i % 50 == 35:
            keys.append(None)
        keys.append(k)
    keys += list(distinct)[:300]
    return keys


def write_key_file(path: Path, keys) -> Path:
    path.write_text("".join("-\n" if k is None else k.hex() + "\n" for k in keys))
    return path


def run_peer(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"{argv[0]} failed ({r.returncode}):\n{r.stderr[-3000:]}")


def produce_librdkafka(bootstrap: str, topic: str, keys, partitioner: str, pause_s: float = 0.012) -> None:
    """confluent-kafka (librdkafka) with ``partitioner``, in bursts of 100 records.

    Between bursts a pause longer than ``sticky.partitioning.linger.ms`` (10 ms):
    a service's keyless records do not all arrive within 10 ms either, so the
    sticky partition moves.
    """
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": partitioner, "linger.ms": 5})
    for start in range(0, len(keys), 100):
        for i in range(start, min(start + 100, len(keys))):
            producer.produce(topic, key=keys[i], value=str(i).encode())
        assert producer.flush(30) == 0
        time.sleep(pause_s)


def produce_kafka_python(bootstrap: str, topic: str, keys, first_index: int = 0) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i, k in enumerate(keys, first_index):
        producer.send(topic, key=k, value=str(i).encode())
    producer.flush(30)
    producer.close()


def read_back(bootstrap: str, topic: str, want: int, partitions: int = PARTITIONS) -> pl.DataFrame:
    """Every record, via a plain assign-mode consumer (no group join, no commit).

    Columns: index (the value), partition, offset, timestamp, key.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    rows: dict[str, list] = {"index": [], "partition": [], "offset": [], "timestamp": [], "key": []}
    while len(rows["index"]) < want:
        # ask for no more than are left: consume() waits its full timeout for a short batch
        msgs = consumer.consume(min(1000, want - len(rows["index"])), timeout=10)
        assert msgs, f"read {len(rows['index'])} of {want} records"
        for m in msgs:
            assert m.error() is None, m.error()
            rows["index"].append(int(m.value()))
            rows["partition"].append(m.partition())
            rows["offset"].append(m.offset())
            rows["timestamp"].append(m.timestamp()[1])
            rows["key"].append(m.key())
    consumer.close()
    return pl.DataFrame(
        rows, schema={"index": pl.Int64, "partition": pl.Int32, "offset": pl.Int64, "timestamp": pl.Int64,
                      "key": pl.Binary},
    ).with_columns(pl.col("timestamp").cast(pl.Datetime("ms", "UTC")))


def as_sample(df: pl.DataFrame, topic: str, partitions: int = PARTITIONS):
    from keyscope.sample import Sample

    frame = df.select("partition", "offset", "timestamp", "key").with_columns(pl.lit(4, pl.Int32).alias("value_size"))
    return Sample.from_frame(frame, topic=topic, partition_count=partitions, source="kafka")


def env_cache() -> str:
    return os.environ.get("KEYSCOPE_TEST_CACHE") or str(Path.home() / ".cache" / "keyscope-tests")
