"""Whole-topic scan: `keyscope scan` records/s against kcat reading the same topic, in one run.

Real Apache Kafka (tests/kafka, one KRaft node; ``--broker tansu`` or ``--quick``: the embedded
Tansu, which answers a Fetch for several partitions with one partition's records, so it cannot
show what one Fetch per leader saves); a 6-partition topic of N keyed records (keys
``user-<n>`` over D distinct, ~40-byte JSON values, batched by librdkafka), then,
each a fresh process as a user runs it:

* kcat: ``kcat -C -e -q -f '%k\\n'`` to a file (on Kafka Debian's kcat and librdkafka; on
  Tansu librdkafka 2.16 from the confluent-kafka wheel, see shared/BROKER.md): only reads the keys;
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

from benchmarks.bench_sample import kcat_env  # noqa: E402
from benchmarks.common import measured_child, parser, print_table, write_json  # noqa: E402
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


def system_kcat_env() -> dict | None:
    """Debian's kcat on Debian's librdkafka (it reads real Kafka; only Tansu needs the wheel's)."""
    import shutil

    return dict(os.environ) if shutil.which("kcat") else None


def produce_in_child(bootstrap: str, topic: str, n: int, distinct: int) -> None:
    """Produce from a child process: Linux keeps ru_maxrss across fork+exec, so a parent grown by
    producing would pass its peak RSS on to every measured child (all rows showed the producer's 292 MB)."""
    root = Path(__file__).resolve().parent.parent
    code = f"import benchmarks.bench_scan as b; b.produce({bootstrap!r}, {topic!r}, {n}, {distinct})"
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def _child(cmd: list[str], stdout, env=None, cwd=None) -> tuple[float, float, float]:
    """(wall seconds, user+sys CPU seconds, peak RSS MB) of one child process and what it waited for."""
    m = measured_child(cmd, stdout, env=env, cwd=cwd)
    if m.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed: {m.stderr[-500:]}")
    return m.seconds, m.cpu_s, m.rss_mb


def compiled(root: Path) -> None:
    """Byte-compile a checkout's keyscope once, as pip does on install.  With PYTHONDONTWRITEBYTECODE=1
    (set on this machine) an editable checkout otherwise compiles its sources in every run (~0.2 s CPU)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(root / "keyscope")], env=env, check=True,
                   stdout=subprocess.DEVNULL)


def scan(bs: str, topic: str, tmp: Path, workers: int, root: Path | None = None, label: str = "") -> dict:
    """One ``keyscope scan`` as a user runs it; ``root``: a checkout to run instead of this one."""
    out = tmp / f"{topic}.{workers}.json"
    cmd = [sys.executable, "-m", "keyscope", "scan", "-b", bs, "-t", topic, "-o", str(out), "--force", "-q",
           "--workers", str(workers), "--format", "json"]
    env = None
    if root is not None:
        env = dict(os.environ, PYTHONPATH=str(root))  # before the editable install on sys.path
    with open(tmp / "scan.json", "wb") as f:
        secs, cpu, rss = _child(cmd, f, env=env, cwd=str(root) if root else None)
    doc = json.loads((tmp / "scan.json").read_text())
    # scan_seconds: the scan's own elapsed_s (plan, tasks, merge), without start-up, imports and output
    return {"peer": f"keyscope scan --workers {workers}{label}", "seconds": secs, "cpu_s": cpu,
            "records": doc["records"], "rss_mb": rss, "scan_seconds": doc["elapsed_s"],
            "distinct_estimate": doc["expressions"][0]["distinct_keys"]["estimate"]}


def kcat(bs: str, topic: str, tmp: Path, env: dict) -> dict:
    cmd = ["kcat", "-C", "-b", bs, "-t", topic, "-e", "-q", "-f", "%k\n"]
    with open(tmp / "kcat.txt", "wb") as f:
        secs, cpu, rss = _child(cmd, f, env=env)
    with open(tmp / "kcat.txt", "rb") as f:
        got = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return {"peer": "kcat -C -e -f '%k\\n'", "seconds": secs, "cpu_s": cpu, "records": got, "rss_mb": rss}


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
    return {"peer": "kcat | sort | uniq -c", "seconds": secs, "cpu_s": usage.ru_utime + usage.ru_stime, "records": got,
            "rss_mb": usage.ru_maxrss / 1024}


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def main(argv=None) -> int:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=None, help="records per topic (default 2,000,000; --quick 100,000)")
    ap.add_argument("--before", metavar="DIR", help="also run the keyscope checkout in DIR (e.g. git archive main)")
    ap.add_argument("--broker", choices=("kafka", "tansu"), default=None,
                    help="real Apache Kafka 4.4 (default) or the embedded Tansu (default with --quick)")
    ap.add_argument("--grow", default=None, help="distinct keys of the peak-RSS rows, comma-separated ('' for none)")
    args = ap.parse_args(argv)
    n = args.records or (100_000 if args.quick else 2_000_000)
    distinct_main = min(100_000, n // 10)
    if args.grow is not None:
        grow = [int(x) for x in args.grow.split(",") if x.strip()]
    else:
        grow = [1_000, 10_000, 50_000] if args.quick else [10_000, 100_000, 1_000_000]
    root = Path(__file__).resolve().parent.parent
    before = Path(args.before).resolve() if args.before else None
    compiled(root)
    if before is not None:
        compiled(before)
    runs: dict[str, list[dict]] = {}
    rss_rows = []
    kind = args.broker or ("tansu" if args.quick else "kafka")
    if kind == "kafka":
        from tests.kafka.cluster import KafkaCluster

        broker, broker_name = KafkaCluster(1, heap="1g"), "Apache Kafka 4.4.0 (one KRaft node)"
    else:
        broker, broker_name = EmbeddedBroker(), "the embedded Tansu"
    with broker, tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bs = broker.bootstrap_server
        t = time.perf_counter()
        produce_in_child(bs, "bench-scan", n, distinct_main)
        print(f"produced {n:,} records ({distinct_main:,} distinct keys) to {broker_name} in "
              f"{time.perf_counter() - t:.1f}s", flush=True)
        env = kcat_env(tmp) if kind == "tansu" else system_kcat_env()
        if env is None:
            print("note: kcat is not installed (apt-get install kcat); no kcat rows", flush=True)
        peers = []
        if env is not None:
            peers += [lambda: kcat(bs, "bench-scan", tmp, env), lambda: kcat_uniq(bs, "bench-scan", tmp, env)]
        for w in (1, 2):
            peers.append(lambda w=w: scan(bs, "bench-scan", tmp, w))
            if before is not None:
                peers.append(lambda w=w: scan(bs, "bench-scan", tmp, w, before, " (before)"))
        for _ in range(max(1, args.repeat)):  # interleaved: each round sees the same neighbours' load
            for run in peers:
                r = run()
                if r["records"] != n:
                    raise SystemExit(f"{r['peer']} read {r['records']:,} records, expected {n:,}")
                runs.setdefault(r["peer"], []).append(r)
        for dk in grow:
            topic = f"bench-scan-d{dk}"
            produce_in_child(bs, topic, n, dk)
            r = scan(bs, topic, tmp, 1)
            if r["records"] != n:
                raise SystemExit(f"scan of {topic} read {r['records']:,} records, expected {n:,}")
            row = {"distinct_keys": dk, "seconds": r["seconds"], "cpu_s": r["cpu_s"], "rss_mb": r["rss_mb"],
                   "distinct_estimate": r["distinct_estimate"]}
            if before is not None:  # the same topic, right after: the same neighbours' load
                row["rss_mb_before"] = scan(bs, topic, tmp, 1, before, " (before)")["rss_mb"]
            rss_rows.append(row)
    ref = runs.get("kcat -C -e -f '%k\\n'")
    uniq = runs.get("kcat | sort | uniq -c")
    rows = []
    for peer, rs in runs.items():
        secs = _median([r["seconds"] for r in rs])
        row = {"peer": peer, "seconds": secs, "seconds_all": [round(r["seconds"], 3) for r in rs],
               "cpu_s": _median([r["cpu_s"] for r in rs]), "rss_mb": max(r["rss_mb"] for r in rs),
               "records_per_s": n / secs}
        if "scan_seconds" in rs[0]:
            row["scan_seconds"] = _median([r["scan_seconds"] for r in rs])
        if ref:
            # per round against that round's kcat, then the median: the load changes between rounds
            row["vs_kcat"] = _median([k["seconds"] / r["seconds"] for k, r in zip(ref, rs)])
        if uniq:
            row["vs_uniq"] = _median([u["seconds"] / r["seconds"] for u, r in zip(uniq, rs)])
        rows.append(row)
    w1 = next(r for r in rows if r["peer"] == "keyscope scan --workers 1")
    w2 = next(r for r in rows if r["peer"] == "keyscope scan --workers 2")
    print_table(f"Scanning {n:,} keyed records ({distinct_main:,} distinct) from {broker_name}, cold processes, "
                f"median of {max(1, args.repeat)} interleaved rounds",
                ["peer", "seconds", "CPU s", "records/s", "vs kcat", "vs kcat|sort|uniq", "peak RSS MB",
                 "of which scanning s"],
                [[r["peer"], r["seconds"], r["cpu_s"], r["records_per_s"], r.get("vs_kcat", "-"), r.get("vs_uniq", "-"),
                  r["rss_mb"],
                  r.get("scan_seconds", "-")] for r in rows])
    print(f"workers 1 -> 2: {w1['seconds'] / w2['seconds']:.2f}x faster; load average {os.getloadavg()[0]:.1f}",
          flush=True)
    if rss_rows:
        print_table(f"keyscope scan --workers 1 peak RSS as distinct keys grow ({n:,} records each)",
                    ["distinct keys", "seconds", "CPU s", "peak RSS MB", "HLL estimate", "before: peak RSS MB"],
                    [[r["distinct_keys"], r["seconds"], r["cpu_s"], r["rss_mb"], r["distinct_estimate"],
                      r.get("rss_mb_before", "-")] for r in rss_rows])
    write_json(args.json, "scan", {"peers": rows, "rss_by_distinct_keys": rss_rows,
                                   "workers_speedup": w1["seconds"] / w2["seconds"], "load": os.getloadavg()[0]},
               records=n, partitions=PARTITIONS, distinct_keys=distinct_main, broker=broker_name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
