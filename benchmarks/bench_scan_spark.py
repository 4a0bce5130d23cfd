"""`keyscope scan --spark local[2]` against `keyscope scan --workers 1` on the same topic, in one run.

One real Apache Kafka node (tests/kafka, KRaft), a 6-partition topic of N
keyed records (bench_scan's producer), then, each a fresh process as a user
runs it: ``keyscope scan --workers 1`` and ``keyscope scan --spark local[2]``
(Spark's own Kafka source, the connector jars from Maven Central through
tests/peers/spark-kafka/fetch.sh, passed as KEYSCOPE_SPARK_JARS so no run
resolves them).  Median of 3 (1 with --quick).  Every row checks it read
exactly N records and that the two profiles' exact counters agree.  The
Spark row's wall time includes starting a JVM and a local Spark (20-40 s
here); ``scan_seconds`` is the scan's own elapsed_s.  Peak RSS is the
Python process's (Spark's JVM is its child and not waited for).
Run: ``python benchmarks/bench_scan_spark.py [--quick] [--records N] [--json FILE]``.

``--secured``: the node of tests/secured (TLS, SASL, ACLs) instead, and each engine twice per round,
interleaved: over PLAINTEXT and over SASL_SSL (SCRAM-SHA-512, PEM trust, endpoint check on), so the rows
give what TLS+SASL costs each engine (``vs plaintext``: the same engine's PLAINTEXT time over this one).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_sample import run_child  # noqa: E402
from benchmarks.bench_scan import produce_in_child, scan  # noqa: E402
from benchmarks.common import parser, print_table, write_json  # noqa: E402


def spark_scan(bs: str, topic: str, tmp: Path, env: dict) -> dict:
    out = tmp / f"{topic}.spark.json"
    cmd = [sys.executable, "-m", "keyscope", "scan", "-b", bs, "-t", topic, "-o", str(out), "--force", "-q",
           "--spark", "local[2]", "--format", "json"]
    with open(tmp / "spark.json", "wb") as f:
        secs, rss, _ = run_child(cmd, f, env=env)
    doc = json.loads((tmp / "spark.json").read_text())
    return {"peer": "keyscope scan --spark local[2]", "seconds": secs, "records": doc["records"], "rss_mb": rss,
            "scan_seconds": doc["elapsed_s"], "profile": str(out)}


def engine_scan(bs: str, topic: str, tmp: Path, engine: list[str], extra: list[str], label: str, env: dict) -> dict:
    out = tmp / f"{topic}.{engine[0][2:]}{label.replace(' ', '_')}.json"
    cmd = [sys.executable, "-m", "keyscope", "scan", "-b", bs, "-t", topic, "-o", str(out), "--force", "-q",
           *engine, *extra, "--format", "json"]
    with open(tmp / "run.json", "wb") as f:
        secs, rss, rc = run_child(cmd, f, env=env)
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {rc}")
    doc = json.loads((tmp / "run.json").read_text())
    return {"peer": f"keyscope scan {' '.join(engine)}{label}", "seconds": secs, "records": doc["records"],
            "rss_mb": rss, "scan_seconds": doc["elapsed_s"], "profile": str(out)}


def same_exact(a, b) -> bool:
    """The exact counters two profiles must share whatever engine or protocol read them."""
    return a.partitions == b.partitions and a.agreement == b.agreement and a.loads(
        "key", "murmur2", 64) == b.loads("key", "murmur2", 64)


def summarise(runs: dict, n: int) -> list[dict]:
    """One row per peer: median seconds and records/s, the worst peak RSS."""
    return [{"peer": peer, "seconds": (secs := statistics.median(r["seconds"] for r in rs)), "records_per_s": n / secs,
             "rss_mb": max(r["rss_mb"] for r in rs),
             "scan_seconds": statistics.median(r["scan_seconds"] for r in rs), "runs": len(rs)}
            for peer, rs in runs.items()]


def secured(n: int, repeat: int, env: dict, json_path) -> int:
    """PLAINTEXT against SASL_SSL, for --workers 1 and --spark local[2], on the node of tests/secured."""
    from keyscope.scan import read_profile
    from tests.kafka import KafkaCluster
    from tests.secured import LISTENERS, USERS, add_scram_users, make_certs, server_properties

    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        certs = make_certs(tmp / "certs")
        with KafkaCluster(1, listeners=LISTENERS, properties=server_properties(certs)) as kafka:
            add_scram_users(kafka.bootstrap_server)
            plain, sasl_ssl = kafka.bootstrap_server, kafka.listener_bootstrap("SASLSSL")
            cfg = tmp / "client.properties"
            cfg.write_text("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache."
                           "kafka.common.security.scram.ScramLoginModule required username=\"admin\" "
                           f'password="{USERS["admin"]}";\nssl.truststore.location={certs.ca_pem}\n')
            t = time.perf_counter()
            produce_in_child(plain, "bench-spark", n, min(100_000, n // 10))
            print(f"produced {n:,} records in {time.perf_counter() - t:.1f}s", flush=True)
            for _ in range(repeat):
                for engine in (["--workers", "1"], ["--spark", "local[2]"]):
                    for bs, extra, label in ((plain, [], " PLAINTEXT"),
                                             (sasl_ssl, ["--command-config", str(cfg)], " SASL_SSL")):
                        r = engine_scan(bs, "bench-spark", tmp, engine, extra, label, env)
                        if r["records"] != n:
                            raise SystemExit(f"{r['peer']} read {r['records']:,} records, expected {n:,}")
                        runs.setdefault(r["peer"], []).append(r)
            profiles = [read_profile(rs[-1]["profile"]) for rs in runs.values()]
            for b in profiles[1:]:
                if not same_exact(profiles[0], b):
                    raise SystemExit("the profiles' exact counters differ between engines or protocols")
    rows = summarise(runs, n)
    for r in rows:
        same = next(x for x in rows if x["peer"] == r["peer"].replace(" SASL_SSL", " PLAINTEXT"))
        r["vs_plaintext"] = same["seconds"] / r["seconds"]
    load = os.getloadavg()[0]
    print_table(f"Scanning {n:,} keyed records, PLAINTEXT against SASL_SSL, cold processes, median of {repeat} "
                f"(load {load:.1f})", ["peer", "seconds", "records/s", "vs plaintext", "peak RSS MB",
                                       "of which scanning s"],
                [[r["peer"], r["seconds"], r["records_per_s"], r["vs_plaintext"], r["rss_mb"], r["scan_seconds"]]
                 for r in rows])
    write_json(json_path, "scan-spark-secured", {"peers": rows}, records=n, load_1min=load)
    return 0


def main(argv=None) -> int:
    from keyscope.scan import read_profile
    from tests.kafka import KafkaCluster

    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=None, help="records (default 1,000,000; --quick 50,000)")
    ap.add_argument("--secured", action="store_true", help="PLAINTEXT against SASL_SSL on the node of tests/secured")
    args = ap.parse_args(argv)
    n = args.records or (50_000 if args.quick else 1_000_000)
    repeat = 1 if args.quick else 3
    jars = subprocess.run(["bash", str(ROOT / "tests/peers/spark-kafka/fetch.sh"), sys.executable], check=True,
                          capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, KEYSCOPE_SPARK_JARS=jars)
    if args.secured:
        return secured(n, repeat, env, args.json)
    runs: dict[str, list[dict]] = {}
    with KafkaCluster(1) as kafka, tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        bs = kafka.bootstrap_server
        t = time.perf_counter()
        produce_in_child(bs, "bench-spark", n, min(100_000, n // 10))
        print(f"produced {n:,} records in {time.perf_counter() - t:.1f}s", flush=True)
        for _ in range(repeat):
            local = scan(bs, "bench-spark", tmp, 1)
            sp = spark_scan(bs, "bench-spark", tmp, env)
            for r in (local, sp):
                if r["records"] != n:
                    raise SystemExit(f"{r['peer']} read {r['records']:,} records, expected {n:,}")
                runs.setdefault(r["peer"], []).append(r)
        a = read_profile(tmp / "bench-spark.1.json")
        b = read_profile(sp["profile"])
        if not same_exact(a, b):
            raise SystemExit("the Spark profile's exact counters differ from --workers 1's")
    rows = summarise(runs, n)
    base = rows[0]["seconds"]
    for r in rows:
        r["vs_workers_1"] = base / r["seconds"]
    load = os.getloadavg()[0]
    print_table(f"Scanning {n:,} keyed records from real Kafka, cold processes, median of {repeat} (load {load:.1f})",
                ["peer", "seconds", "records/s", "vs --workers 1", "peak RSS MB", "of which scanning s"],
                [[r["peer"], r["seconds"], r["records_per_s"], r["vs_workers_1"], r["rss_mb"], r["scan_seconds"]]
                 for r in rows])
    write_json(args.json, "scan-spark", {"peers": rows}, records=n, load_1min=load)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
