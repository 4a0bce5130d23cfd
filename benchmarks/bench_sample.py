"""Records per second read from the embedded broker: `keyscope sample` against kcat, in one run.

One embedded Tansu broker, one 6-partition topic of N small keyed records
(keys ``user-<n>``, ~25-byte JSON values, produced batched by librdkafka), then:

* keyscope CLI: ``keyscope sample --from earliest`` as a user runs it, a fresh
  process writing the Parquet sample (process start, imports and the decoder's
  compile included);
* keyscope library: :func:`keyscope.sampling.sample_topic` in a warm process
  (steady state, no file), and :func:`keyscope.sampling.sample_to_file` (row
  groups written while reading, as the CLI does);
* kcat: ``kcat -C -e -f '%p %k\\n'`` (librdkafka 2.16 from the confluent-kafka
  wheel, see shared/BROKER.md), output to a file: the peer to beat;
* confluent-kafka: a ``Consumer`` with ``assign()`` and batched ``consume()``
  keeping partition and key: what a Python user would write with librdkafka;
* kafka-python: a ``KafkaConsumer`` ``assign()``/``poll()`` loop: the plain loop.

Every row checks it read exactly N records.  Ratios are records/s against
kcat's (against confluent-kafka's when kcat is not installed).

Run: ``python benchmarks/bench_sample.py [--quick] [--records N] [--json FILE]``.
Target (issue 3): keyscope sample >= 1.0x kcat.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import best_of, measured_child, parser, peak_rss_mb, print_table, write_json  # noqa: E402
from keyscope.kafka.broker import EmbeddedBroker  # noqa: E402

TOPIC = "bench-sample"
PARTITIONS = 6


def produce(bootstrap: str, n: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
        f.result(timeout=30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1_000_000, "partitioner": "murmur2_random"})
    for i in range(n):
        while True:
            try:
                p.produce(TOPIC, key=b"user-%d" % (i % 50_000), value=b'{"tenant":"t%d","v":%d}' % (i % 17, i))
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0


def run_child(cmd: list[str], stdout, env=None) -> tuple[float, float, int]:
    """(seconds, peak RSS MB, exit code) of one child process, measured by common.measured_child."""
    m = measured_child(cmd, stdout=stdout, env=env)
    if m.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({m.returncode}): {m.stderr[-500:]}")
    return m.seconds, m.rss_mb, m.returncode


def kcat_env(tmp: Path) -> dict | None:
    """kcat pointed at the wheel's librdkafka (Debian's 2.0.2 cannot parse Tansu's ApiVersions)."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if shutil.which("kcat") is None or not found:
        return None
    (tmp / "lib").mkdir(exist_ok=True)
    link = tmp / "lib" / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(found[0])
    return dict(os.environ, LD_LIBRARY_PATH=str(tmp / "lib"))


def bench_keyscope_cli(bs: str, n: int, tmp: Path, repeat: int) -> dict:
    out = tmp / "sample.parquet"
    cmd = [sys.executable, "-m", "keyscope", "sample", "-b", bs, "-t", TOPIC, "-o", str(out), "--force", "-q",
           "--from", "earliest", "--max-records", str(n), "--max-bytes", "100GB", "--timeout", "600", "--format", "json"]
    best, rss = float("inf"), 0.0
    for _ in range(repeat):
        with open(tmp / "report.json", "wb") as f:
            secs, peak, _ = run_child(cmd, f)
        best, rss = min(best, secs), max(rss, peak)
    got = json.loads((tmp / "report.json").read_text())["summary"]["records"]
    return {"peer": "keyscope sample (CLI, new process)", "seconds": best, "records": got, "rss_mb": rss}


def bench_keyscope_lib(bs: str, n: int, repeat: int) -> dict:
    from keyscope.kafka.connection import resolve
    from keyscope.sampling import SampleSpec, sample_topic

    spec = SampleSpec(topic=TOPIC, start="earliest", max_records=n, max_bytes=1 << 40, timeout_s=600)
    sample_topic(resolve(bs), spec)  # warm: imports, decoder compile, connections
    secs, s = best_of(lambda: sample_topic(resolve(bs), spec), repeat)
    return {"peer": "keyscope sample_topic (warm process)", "seconds": secs, "records": len(s), "rss_mb": peak_rss_mb()}


def bench_keyscope_file(bs: str, n: int, tmp: Path, repeat: int) -> dict:
    """sample_to_file in a warm process: the fetch with the row groups written as it reads."""
    from keyscope.kafka.connection import resolve
    from keyscope.sampling import SampleSpec, sample_to_file

    spec = SampleSpec(topic=TOPIC, start="earliest", max_records=n, max_bytes=1 << 40, timeout_s=600)
    secs, s = best_of(lambda: sample_to_file(resolve(bs), spec, tmp / "lib.parquet"), repeat)
    return {"peer": "keyscope sample_to_file (warm process, writes the file)", "seconds": secs, "records": len(s),
            "rss_mb": peak_rss_mb()}


def bench_kcat(bs: str, tmp: Path, repeat: int) -> dict | None:
    env = kcat_env(tmp)
    if env is None:
        return None
    cmd = ["kcat", "-C", "-b", bs, "-t", TOPIC, "-e", "-q", "-f", "%p %k\n"]
    best, rss = float("inf"), 0.0
    for _ in range(repeat):
        with open(tmp / "kcat.txt", "wb") as f:
            secs, peak, _ = run_child(cmd, f, env=env)
        best, rss = min(best, secs), max(rss, peak)
    with open(tmp / "kcat.txt", "rb") as f:
        got = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return {"peer": "kcat -C -e -f '%p %k\\n'", "seconds": best, "records": got, "rss_mb": rss}


def bench_confluent(bs: str, n: int, repeat: int) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    def once():
        # group.id is required by librdkafka even with assign(); nothing joins or commits
        c = Consumer({"bootstrap.servers": bs, "group.id": "bench-unused", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        parts, keys = [], []
        while len(keys) < n:
            for m in c.consume(num_messages=10_000, timeout=1):
                if m.error():
                    continue
                parts.append(m.partition())
                keys.append(m.key())
        c.close()
        return len(keys)

    secs, got = best_of(once, repeat)
    return {"peer": "confluent-kafka Consumer loop", "seconds": secs, "records": got, "rss_mb": peak_rss_mb()}


def bench_kafka_python(bs: str, n: int, repeat: int) -> dict:
    from kafka import KafkaConsumer, TopicPartition

    def once():
        c = KafkaConsumer(bootstrap_servers=bs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest")
        tps = [TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        c.assign(tps)
        c.seek_to_beginning()
        keys, parts = [], []
        while len(keys) < n:
            for tp, recs in c.poll(timeout_ms=1000, max_records=10_000).items():
                for r in recs:
                    parts.append(tp.partition)
                    keys.append(r.key)
        c.close()
        return len(keys)

    secs, got = best_of(once, repeat)
    return {"peer": "kafka-python KafkaConsumer loop", "seconds": secs, "records": got, "rss_mb": peak_rss_mb()}


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=None, help="records in the topic (default 1,000,000; --quick 50,000)")
    args = ap.parse_args(argv)
    n = args.records or (50_000 if args.quick else 1_000_000)
    repeat = 1 if args.quick else args.repeat
    rows: list[dict] = []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bs = broker.bootstrap_server
        t = time.perf_counter()
        produce(bs, n)
        print(f"produced {n:,} records to {PARTITIONS} partitions in {time.perf_counter() - t:.1f}s", flush=True)
        kcat = bench_kcat(bs, tmp, repeat)
        rows.append(bench_keyscope_cli(bs, n, tmp, repeat))
        rows.append(bench_keyscope_lib(bs, n, repeat))
        rows.append(bench_keyscope_file(bs, n, tmp, repeat))
        if kcat:
            rows.append(kcat)
        rows.append(bench_confluent(bs, n, repeat))
        rows.append(bench_kafka_python(bs, n, 1 if n > 200_000 else repeat))
    for r in rows:
        if r["records"] != n:
            raise SystemExit(f"{r['peer']} read {r['records']:,} records, expected {n:,}")
        r["records_per_s"] = n / r["seconds"]
    ref = next((r for r in rows if r["peer"].startswith("kcat")), None)
    ref_name = "kcat"
    if ref is None:
        ref = next(r for r in rows if r["peer"].startswith("confluent"))
        ref_name = "confluent-kafka"
        print("note: kcat is not installed (apt-get install kcat); ratios are against confluent-kafka", flush=True)
    for r in rows:
        r["vs_ref"] = r["records_per_s"] / ref["records_per_s"]
    print_table(
        f"Sampling {n:,} small keyed records from the embedded broker (best of {repeat})",
        ["peer", "seconds", "records/s", f"vs {ref_name}", "peak RSS MB"],
        [[r["peer"], r["seconds"], r["records_per_s"], r["vs_ref"], r["rss_mb"]] for r in rows],
    )
    write_json(args.json, "sample", rows, records=n, partitions=PARTITIONS, reference=ref_name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
