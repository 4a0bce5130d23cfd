"""Whole-topic scan: `keyscope scan` records/s against kcat reading the same topic, in one run.

One embedded Tansu broker; a 6-partition topic of N keyed records (keys
``user-<n>`` over D distinct, ~40-byte JSON values, batched by librdkafka), then,
each a fresh process as a user runs it:

* kcat: ``kcat -C -e -q -f '%k\\n'`` to a file (librdkafka 2.16 from the
  confluent-kafka wheel, see shared/BROKER.md): only reads the keys;
* kcat | sort | uniq -c: the shell answer to "how many of each key"
  (``LC_ALL=C``): what a user runs without keyscope;
* keyscope scan --workers 1 and --workers 2: every record into a profile
  (per-partition counts, agreement, exact loads for 1..64 partitions under
  three partitioners, frequent items, HLL, KLL);
* peak RSS of ``keyscope scan --workers 1`` as the distinct keys grow (same N).

Every row checks it read exactly N records.  Ratios are records/s against kcat's.
Run: ``python benchmarks/bench_scan.py [--quick] [--records N] [--json FILE]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_sample import kcat_env, run_child  # noqa: E402
from benchmarks.common import parser, print_table, write_json  # noqa: E402
from keyscope.kafka.broker import EmbeddedBroker  # noqa: E402

PARTITIONS = 6


def produce(bootstrap: str, topic: str, n: int, distinct: int) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(topic, PARTITIONS, 1)]).values():
        f.result(timeout=30)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 50_000,
                  "queue.buffering.max.messages": 2_000_000, "partitioner": "murmur2_random"})
    for i in range(n):
        k = (i * 2654435761) % distinct  # every key appears, spread over the topic
        while True:
            try:
                p.produce(topic, key=b"user-%d" % k, value=b'{"tenant":"t%d","v":%d,"pad":"xxxxxxxx"}' % (i % 17, i))
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(120) == 0


def produce_in_child(bootstrap: str, topic: str, n: int, distinct: int) -> None:
    """Produce from a child process: Linux keeps ru_maxrss across fork+exec, so a parent grown by
    producing would pass its peak RSS on to every measured child (all rows showed the producer's 292 MB)."""
    root = Path(__file__).resolve().parent.parent
    code = f"import benchmarks.bench_scan as b; b.produce({bootstrap!r}, {topic!r}, {n}, {distinct})"
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def scan(bs: str, topic: str, tmp: Path, workers: int) -> dict:
    out = tmp / f"{topic}.{workers}.json"
    cmd = [sys.executable, "-m", "keyscope", "scan", "-b", bs, "-t", topic, "-o", str(out), "--force", "-q",
           "--workers", str(workers), "--format", "json"]
    with open(tmp / "scan.json", "wb") as f:
        secs, rss, _ = run_child(cmd, f)
    doc = json.loads((tmp / "scan.json").read_text())
    # scan_seconds: the scan's own elapsed_s (plan, tasks, merge), without start-up, imports and output
    return {"peer": f"keyscope scan --workers {workers}", "seconds": secs, "records": doc["records"], "rss_mb": rss,
            "scan_seconds": doc["elapsed_s"], "distinct_estimate": doc["expressions"][0]["distinct_keys"]["estimate"]}


def kcat(bs: str, topic: str, tmp: Path, env: dict) -> dict:
    cmd = ["kcat", "-C", "-b", bs, "-t", topic, "-e", "-q", "-f", "%k\n"]
    with open(tmp / "kcat.txt", "wb") as f:
        secs, rss, _ = run_child(cmd, f, env=env)
    with open(tmp / "kcat.txt", "rb") as f:
        got = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return {"peer": "kcat -C -e -f '%k\\n'", "seconds": secs, "records": got, "rss_mb": rss}


def kcat_uniq(bs: str, topic: str, tmp: Path, env: dict) -> dict:
    sh = f"kcat -C -b {bs} -t {topic} -e -q -f '%k\\n' | sort | uniq -c > {tmp}/uniq.txt"
    e = dict(env, LC_ALL="C")
    t = time.perf_counter()
    proc = subprocess.Popen(["sh", "-c", sh], env=e)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("kcat | sort | uniq -c failed")
    got = 0
    with open(tmp / "uniq.txt") as f:
        for line in f:
            got += int(line.split(None, 1)[0])
    # wait4 on the shell covers its reaped children (kcat, sort, uniq): the largest of them
    return {"peer": "kcat | sort | uniq -c", "seconds": secs, "records": got, "rss_mb": usage.ru_maxrss / 1024}


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=None, help="records per topic (default 2,000,000; --quick 100,000)")
    args = ap.parse_args(argv)
    n = args.records or (100_000 if args.quick else 2_000_000)
    distinct_main = min(100_000, n // 10)
    grow = [1_000, 10_000, 50_000] if args.quick else [10_000, 100_000, 1_000_000]
    rows, rss_rows = [], []
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bs = broker.bootstrap_server
        t = time.perf_counter()
        produce_in_child(bs, "bench-scan", n, distinct_main)
        print(f"produced {n:,} records ({distinct_main:,} distinct keys) in {time.perf_counter() - t:.1f}s", flush=True)
        env = kcat_env(tmp)
        if env is not None:
            rows.append(kcat(bs, "bench-scan", tmp, env))
            rows.append(kcat_uniq(bs, "bench-scan", tmp, env))
        else:
            print("note: kcat is not installed (apt-get install kcat); no kcat rows", flush=True)
        rows.append(scan(bs, "bench-scan", tmp, 1))
        rows.append(scan(bs, "bench-scan", tmp, 2))
        for dk in grow:
            topic = f"bench-scan-d{dk}"
            produce_in_child(bs, topic, n, dk)
            r = scan(bs, topic, tmp, 1)
            if r["records"] != n:
                raise SystemExit(f"scan of {topic} read {r['records']:,} records, expected {n:,}")
            rss_rows.append({"distinct_keys": dk, "seconds": r["seconds"], "rss_mb": r["rss_mb"],
                             "distinct_estimate": r["distinct_estimate"]})
    for r in rows:
        if r["records"] != n:
            raise SystemExit(f"{r['peer']} read {r['records']:,} records, expected {n:,}")
        r["records_per_s"] = n / r["seconds"]
    ref = next((r for r in rows if r["peer"].startswith("kcat -C")), None)
    for r in rows:
        r["vs_kcat"] = r["records_per_s"] / ref["records_per_s"] if ref else None
    w1 = next(r for r in rows if r["peer"].endswith("--workers 1"))
    w2 = next(r for r in rows if r["peer"].endswith("--workers 2"))
    print_table(f"Scanning {n:,} keyed records ({distinct_main:,} distinct) from the embedded broker, cold processes",
                ["peer", "seconds", "records/s", "vs kcat", "peak RSS MB", "of which scanning s"],
                [[r["peer"], r["seconds"], r["records_per_s"], r["vs_kcat"] if r["vs_kcat"] is not None else "-",
                  r["rss_mb"], r.get("scan_seconds", "-")] for r in rows])
    print(f"workers 1 -> 2: {w1['seconds'] / w2['seconds']:.2f}x faster", flush=True)
    print_table(f"keyscope scan --workers 1 peak RSS as distinct keys grow ({n:,} records each)",
                ["distinct keys", "seconds", "peak RSS MB", "HLL estimate"],
                [[r["distinct_keys"], r["seconds"], r["rss_mb"], r["distinct_estimate"]] for r in rss_rows])
    write_json(args.json, "scan", {"peers": rows, "rss_by_distinct_keys": rss_rows,
                                   "workers_speedup": w1["seconds"] / w2["seconds"]},
               records=n, partitions=PARTITIONS, distinct_keys=distinct_main)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
