"""Every command cold from the shell, against the peer in the same run: one table of ratios (issue 14).

Each measurement is a fresh process started with ``subprocess`` as a user runs
it (the ``keyscope`` console script, or ``sh -c`` for a pipeline); wall time
from the parent, the child's peak RSS from ``os.wait4``'s rusage (for a shell
pipeline: the largest process in it).  Median of ``--repeat`` runs (3; 1 with
``--quick``), the candidates taking turns so both sides of a ratio see the same
machine.  A ratio is peer seconds / keyscope seconds: above 1 keyscope is faster.

* sampling: ``keyscope sample`` vs ``kcat -C -e -f '%p %k\\n'`` on one topic of
  N records (5M; --quick 100k), without and with two ``--field`` JSON paths;
  the on-call pipeline ``keyscope sample`` + ``keyscope analyze`` vs
  ``kcat … -f '%k\\n' | sort | uniq -c | sort -rn | head`` (LC_ALL=C).  Broker:
  real Apache Kafka (tests/kafka, one KRaft node) in full mode, the embedded
  Tansu broker with --quick (fast in CI; kcat then runs on the
  confluent-kafka wheel's librdkafka, as tests/test_sources.py does);
* offline: ``keyscope analyze``, ``whatif --partitions 6 --key-by key,region
  --salt-hot 1:8`` (three scenarios) and ``recommend`` on Parquet samples
  written by keyscope's own writer (Zipf keys, two fields) of 1M/10M/30M
  records (--quick 100k/300k), each vs the plain Polars script in a fresh
  process; cost per record across sizes; peak RSS / the decoded key column;
* start-up: ``keyscope --version``, ``keyscope partition KEY`` vs ``python -c pass``;
* column hashes vs gcc -O3: benchmarks/bench_partitioners.py, run as it is.

Run: ``python benchmarks/bench_cold.py [--quick] [--json FILE] [--repeat R]
[--records N] [--sizes 1M,10M,30M] [--only sampling,offline,startup,hashes]
[--commands analyze,whatif,recommend] [--kcat-librdkafka system|wheel] [--pause S]``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import measured_child, parser, print_table, write_json  # noqa: E402

TOPIC = "bench-cold"
PARTITIONS = 6
SECTIONS = ("sampling", "offline", "startup", "hashes")

# The plain Polars script a user would write instead (read, group_by key len, top-k, per-partition counts).
POLARS_SCRIPT = """\
import sys, polars as pl
df = pl.read_parquet(sys.argv[1], columns=["partition", "key"])
print(df.group_by("key").len().sort("len", descending=True).head(10))
print(df.group_by("partition").len().sort("partition"))
"""


def keyscope_cmd() -> list[str]:
    """The console script next to this interpreter (what a user types), else ``python -m keyscope``."""
    exe = Path(sys.executable).parent / "keyscope"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "keyscope"]


def run_child(cmd: list[str], stdout=subprocess.DEVNULL, env=None) -> tuple[float, float]:
    """(wall seconds, peak RSS MB) of one fresh child; exits if it fails."""
    m = measured_child(cmd, stdout=stdout, env=env)
    if m.returncode != 0:
        raise SystemExit(f"failed ({m.returncode}): {shlex.join(cmd)}\n{m.stderr[-800:]}")
    return m.seconds, m.rss_mb


# --pause: seconds idle before each run.  Back to back, a run reuses the memory the run before it freed
# moments ago; after a pause a virtual machine that reports free pages to its host (Firecracker, as this
# project's machines) has handed it back, as between an engineer's commands (docs/benchmarks.md, stop 28).
PAUSE = 0.0


def measure(cands: dict, repeat: int) -> dict:
    """Median wall time and max peak RSS of each candidate ``name -> (cmd, stdout path|None, env)``, taking turns."""
    times = {k: [] for k in cands}
    rss = {k: 0.0 for k in cands}
    for _ in range(max(1, repeat)):
        for k, (cmd, out, env) in cands.items():
            if PAUSE:
                time.sleep(PAUSE)
            if out is None:
                s, m = run_child(cmd, env=env)
            else:
                with open(out, "wb") as f:
                    s, m = run_child(cmd, stdout=f, env=env)
            times[k].append(s)
            rss[k] = max(rss[k], m)
    return {k: {"seconds": statistics.median(v), "runs": v, "rss_mb": rss[k]} for k, v in times.items()}


def row(group: str, what: str, ours: dict, peer_name: str | None = None, peer: dict | None = None, **extra) -> dict:
    r = {"group": group, "what": what, "keyscope_s": ours["seconds"], "keyscope_runs": ours["runs"],
         "keyscope_rss_mb": ours["rss_mb"], "peer": peer_name, "peer_s": None, "peer_rss_mb": None, "ratio": None}
    if peer is not None:
        r.update(peer_s=peer["seconds"], peer_runs=peer["runs"], peer_rss_mb=peer["rss_mb"],
                 ratio=peer["seconds"] / ours["seconds"])
    r.update(extra)
    print(f"  {what}: keyscope {ours['seconds']:.3f} s {ours['rss_mb']:.0f} MB"
          + (f" | {peer_name} {peer['seconds']:.3f} s {peer['rss_mb']:.0f} MB -> {r['ratio']:.2f}x" if peer else ""),
          flush=True)
    return r


# ---------------------------------------------------------------- sampling


def produce(bootstrap: str, n: int) -> None:
    """N keyed records (Zipf-ish ``user-<n>`` keys, JSON values with region and user) over 6 partitions."""
    import numpy as np
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)]).values():
        f.result(timeout=60)
    rng = np.random.default_rng(3)
    ids = (rng.zipf(1.2, n) % 200_000).tolist()
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000, "batch.size": 1 << 20,
                  "queue.buffering.max.messages": 2_000_000, "partitioner": "murmur2_random", "acks": 1})
    for i, k in enumerate(ids):
        key = b"user-%d" % k
        val = b'{"region":"r%d","user":"u%d","v":%d}' % (k % 8, (k * 7 + i) % 2000, i)
        while True:
            try:
                p.produce(TOPIC, key=key, value=val)
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(300) != 0:
        raise SystemExit("producer could not deliver every record")


def kcat_env(tmp: Path, wheel: bool) -> dict:
    """Debian's kcat, on Debian's librdkafka or the confluent-kafka wheel's (Debian's 2.0.2 cannot parse Tansu)."""
    if not wheel:
        return dict(os.environ)
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        raise SystemExit("no librdkafka in the confluent-kafka wheel to run kcat against Tansu")
    (tmp / "lib").mkdir(exist_ok=True)
    link = tmp / "lib" / "librdkafka.so.1"
    if not link.exists():
        link.symlink_to(found[0])
    return dict(os.environ, LD_LIBRARY_PATH=str(tmp / "lib"))


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def key_field_bytes(path: Path) -> int:
    """The records' key and field bytes in a sample file (what issue 14's RSS goal is 2x of): the keys'
    sizes plus the fields' string bytes, no offsets, no nulls."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    fields = [c for c in t.column_names if c not in ("partition", "offset", "timestamp", "key", "key_size", "value_size")]
    return int((pc.sum(t.column("key_size")).as_py() or 0)
               + sum(pc.sum(pc.binary_length(t.column(c))).as_py() or 0 for c in fields))


def rss_vs_key_fields(m: dict, path: Path) -> dict:
    """The row's key+field bytes (MB) and peak RSS / them: the goal is <= 2."""
    kf = key_field_bytes(path) / 1e6
    return {"key_field_mb": kf, "rss_vs_key_field": m["rss_mb"] / kf if kf else None}


def bench_sampling(args, n: int, repeat: int, tmp: Path, smaller: tuple[int, ...] = ()) -> tuple[list[dict], dict]:
    """The rows against kcat on a topic of ``n`` records; then, for each of ``smaller``, keyscope's rows
    alone on the first records of that topic (``--max-records``): peak RSS as the records grow."""
    kcat = shutil.which("kcat")
    if kcat is None:
        print("note: kcat is not installed (apt-get install kcat): sampling rows skipped", flush=True)
        return [], {"broker": None}
    if args.quick:
        from keyscope.kafka.broker import EmbeddedBroker

        broker, kind = EmbeddedBroker(), "embedded Tansu (keyscope.kafka.broker.EmbeddedBroker)"
    else:
        from tests.kafka.cluster import KafkaCluster

        broker, kind = KafkaCluster(1, heap="1g"), "Apache Kafka 4.4.0, one KRaft node (tests/kafka)"
    rows = []
    with broker:
        bs = broker.bootstrap_server
        t = time.perf_counter()
        produce(bs, n)
        print(f"sampling: produced {n:,} records to {kind} in {time.perf_counter() - t:.1f} s", flush=True)
        lib = args.kcat_librdkafka or ("wheel" if args.quick else "system")
        if args.quick and lib == "system":
            raise SystemExit("--kcat-librdkafka system cannot read from Tansu (--quick): Debian's librdkafka 2.0.2")
        env = kcat_env(tmp, wheel=lib == "wheel")
        kv = [x.strip() for x in subprocess.run([kcat, "-V"], capture_output=True, text=True, env=env).stdout.splitlines()
              if "version" in x.lower()]
        kv = [re.sub(r"\s*\(.*?(librdkafka [\d.]+).*", r", built with \1", x) for x in kv]
        env_c = dict(env, LC_ALL="C")
        ks = keyscope_cmd()
        out = tmp / "s.parquet"
        sample = ks + ["sample", "-b", bs, "-t", TOPIC, "-o", str(out), "--force", "-q", "--from", "earliest",
                       "--max-records", str(n), "--max-bytes", "100GB", "--timeout", "500"]
        fields = ["--field", "region=$.region", "--field", "user=$.user"]
        kc = [kcat, "-C", "-b", bs, "-t", TOPIC, "-e", "-q"]
        got = {}
        benv = before_env(args.before)

        def before(name: str, what: str, m: dict) -> None:
            """With --before: the older tree's run of the same command, as its own row."""
            if benv:
                rows.append(row("sampling-before", f"{what} (before: {args.before})", m["ks before"], name, m["kcat"],
                                records=n, speedup_vs_before=m["ks before"]["seconds"] / m["ks"]["seconds"]))

        def with_before(cands: dict, env_b=None) -> dict:
            if not benv:
                return cands
            ks_cmd, ks_out, _ = cands["ks"]
            return {"ks before": (ks_cmd, ks_out, dict(env_b, PYTHONPATH=benv["PYTHONPATH"]) if env_b else benv), **cands}

        m = measure(with_before({"ks": (sample, None, None), "kcat": (kc + ["-f", "%p %k\n"], tmp / "k.txt", env)}),
                    repeat)
        got["sample"], got["kcat"] = parquet_rows(out), count_lines(tmp / "k.txt")
        rows.append(row("sampling", f"sample {n:,} records", m["ks"], "kcat -C -e -f '%p %k\\n'", m["kcat"],
                        records=n, records_per_s=n / m["ks"]["seconds"], peer_records_per_s=n / m["kcat"]["seconds"],
                        **rss_vs_key_fields(m["ks"], out)))
        before("kcat -C -e -f '%p %k\\n'", f"sample {n:,} records", m)
        m = measure(with_before({"ks": (sample + fields, None, None), "kcat": (kc + ["-f", "%p %k\n"], tmp / "k.txt", env)}),
                    repeat)
        got["sample --field x2"] = parquet_rows(out)
        rows.append(row("sampling", f"sample {n:,} records, 2 --field", m["ks"], "kcat -C -e -f '%p %k\\n'", m["kcat"],
                        records=n, records_per_s=n / m["ks"]["seconds"], peer_records_per_s=n / m["kcat"]["seconds"],
                        fields=2, **rss_vs_key_fields(m["ks"], out)))
        before("kcat -C -e -f '%p %k\\n'", f"sample {n:,} records, 2 --field", m)
        pipe_ks = shlex.join(sample) + " && " + shlex.join(ks + ["analyze", str(out)])
        pipe_kcat = shlex.join(kc + ["-f", "%k\n"]) + " | sort | uniq -c | sort -rn | head"
        m = measure(with_before({"ks": (["sh", "-c", pipe_ks], tmp / "a.txt", env_c),
                                 "kcat": (["sh", "-c", pipe_kcat], tmp / "u.txt", env_c)}, env_c), repeat)
        rows.append(row("sampling", f"on-call: sample + analyze, {n:,} records", m["ks"],
                        "kcat -f '%k\\n' | sort | uniq -c | sort -rn | head (LC_ALL=C)", m["kcat"], records=n))
        before("kcat -f '%k\\n' | sort | uniq -c | sort -rn | head (LC_ALL=C)", f"on-call: sample + analyze, {n:,} records", m)
        for k in smaller:  # peak RSS as the records grow: the first k records of the same topic
            at = [x if x != str(n) else str(k) for x in sample]
            for extra, what in (([], f"sample {k:,} of {n:,} records"), (fields, f"sample {k:,} of {n:,} records, 2 --field")):
                m = measure(with_before({"ks": (at + extra, None, None)}), repeat)
                got[what] = (parquet_rows(out), k)
                rows.append(row("sampling-scale", what, m["ks"], records=k, fields=len(extra) // 2,
                                **rss_vs_key_fields(m["ks"], out)))
                if benv:
                    rows.append(row("sampling-scale-before", f"{what} (before: {args.before})", m["ks before"], records=k,
                                    fields=len(extra) // 2, **rss_vs_key_fields(m["ks before"], out)))
    for k, v in got.items():
        v, want = v if isinstance(v, tuple) else (v, n)
        if v != want:
            raise SystemExit(f"{k} read {v:,} records, expected {want:,}")
    return rows, {"broker": kind, "kcat": kcat, "kcat_version": kv,
                  "kcat_librdkafka": "confluent-kafka wheel" if lib == "wheel" else "system (Debian)", "records": n}


# ---------------------------------------------------------------- offline


def make_sample_file(n: int, path: str) -> None:
    """A keyscope Parquet sample: n records, Zipf(1.1) over 100k keys, fields region (8) and user_id (2,000)."""
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq

    from keyscope.partitioners import partition_column
    from keyscope.sample import Sample

    k = 100_000
    rng = np.random.default_rng(1)
    w = 1.0 / np.arange(1, k + 1) ** 1.1
    ids = rng.choice(k, size=n, p=w / w.sum())
    names = pl.select(pl.concat_str(pl.lit("tenant-"), pl.int_range(k).cast(pl.String)).cast(pl.Binary)).to_series()
    place = partition_column(names, 3, "murmur2").cast(pl.Int32).to_numpy()
    df = pl.DataFrame({
        "partition": place[ids],
        "key": names.gather(ids),
        "value_size": rng.integers(40, 400, n, dtype=np.int32),
        "timestamp": pl.Series((1_700_000_000_000 + np.arange(n) // 10).astype(np.int64)).cast(pl.Datetime("ms", "UTC")),
        "u": rng.integers(0, 2_000, n),
        "r": rng.integers(0, 8, n),
    })
    del ids
    df = df.with_columns(
        pl.int_range(pl.len()).over("partition").alias("offset"),
        pl.format("user-{}", pl.col("u")).alias("user_id"),
        pl.format("region-{}", pl.col("r")).alias("region"),
    ).drop("u", "r")
    s = Sample.from_frame(df, topic="bench", partition_count=3, source="synthetic")
    g = df.group_by("partition").agg(pl.col("timestamp").min().dt.epoch("ms"), pl.col("timestamp").max().dt.epoch("ms").alias("t1"))
    for p, t0, t1 in g.iter_rows():  # as `keyscope sample` records them
        s.meta.partitions[p].first_timestamp_ms = t0
        s.meta.partitions[p].last_timestamp_ms = t1
    del df, g
    s.write(path)
    del s
    key = pq.read_table(path, columns=["key"])
    side = {"records": n, "key_column_bytes": key.nbytes, "file_bytes": os.path.getsize(path)}
    Path(path + ".json").write_text(json.dumps(side))


def before_env(before: str | None) -> dict | None:
    """Environment that runs an older keyscope tree (``git archive REV keyscope | tar -x -C DIR``) first on the path."""
    if not before:
        return None
    return dict(os.environ, PYTHONPATH=str(Path(before).resolve()) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def compile_bytecode(before: str | None) -> None:
    """Byte-compile keyscope's modules (this tree's, and ``--before``'s) as ``pip install`` does at install time.

    Run from a source checkout with PYTHONDONTWRITEBYTECODE=1 (an editable install; this machine
    sets it), every fresh process would compile each module it imports from source: ~0.1 s of CPU
    per cold command (1M analyze 0.96 vs 0.89 s, median of 7, load ~3.5) that an installed keyscope
    never pays.  ``--from-source`` measures that case instead.
    """
    import compileall

    for tree in [ROOT] + ([Path(before)] if before else []):
        compileall.compile_dir(str(tree / "keyscope"), quiet=1)


OFFLINE_COMMANDS = ("analyze", "whatif", "recommend")
# the columns each offline command keys by, as run below: whatif's --key-by key,region, every field
# recommend considers (WhatIf's group_fields: the sample's fields), analyze the key alone
KEY_COLUMNS = {"analyze": ("key",), "whatif": ("key", "region"), "recommend": ("key", "user_id", "region")}


def pq_names(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).schema_arrow.names


def decoded_mb(path: Path, columns) -> float:
    """MiB of ``columns`` of the Parquet file decoded (pyarrow's ``nbytes``, as key_column_bytes)."""
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=list(columns)).nbytes / 2**20


def bench_offline(sizes: list[int], repeat: int, tmp: Path, before: str | None = None,
                  commands=OFFLINE_COMMANDS) -> list[dict]:  # fmt: skip
    ks = keyscope_cmd()
    benv = before_env(before)
    rows = []
    for n in sizes:
        path = tmp / f"s{n}.parquet"
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make-sample", str(n), str(path)], check=True)
        side = json.loads(Path(str(path) + ".json").read_text())
        os.unlink(str(path) + ".json")
        print(f"offline: wrote {n:,}-record sample ({side['file_bytes'] / 1e6:.0f} MB, key column "
              f"{side['key_column_bytes'] / 1e6:.0f} MB decoded) in {time.perf_counter() - t:.1f} s", flush=True)
        (tmp / "p.py").write_text(POLARS_SCRIPT)
        cands = {
            "analyze": (ks + ["analyze", str(path)], None, None),
            "whatif": (ks + ["whatif", str(path), "--partitions", "6", "--key-by", "key,region", "--salt-hot", "1:8"],
                       None, None),
            "recommend": (ks + ["recommend", str(path)], None, None),
            "polars": ([sys.executable, str(tmp / "p.py"), str(path)], None, None),
        }
        cands = {k: v for k, v in cands.items() if k in commands or k == "polars"}
        if benv:  # the same commands on the older tree, taking turns with the rest
            cands.update({f"{k} before": (c, None, benv) for k, (c, _, _) in list(cands.items())
                          if k != "polars"})
        m = measure(cands, repeat)
        kb = side["key_column_bytes"] / 2**20
        for cmd in (c for c in OFFLINE_COMMANDS if c in commands):
            # beside the key-only ratio: RSS over the decoded columns this command keys by (KEY_COLUMNS)
            kcols = [c for c in KEY_COLUMNS[cmd] if c in pq_names(path)]
            kc = decoded_mb(path, kcols)
            for tag, k in ((cmd, cmd), (f"{cmd} before", f"{cmd} before") if benv else (None, None)):
                if tag is None:
                    continue
                print(f"  {tag} {n:,}: RSS {m[k]['rss_mb']:.0f} MB = {m[k]['rss_mb'] / kb:.2f}x the key column "
                      f"({kb:.0f} MiB), {m[k]['rss_mb'] / kc:.2f}x its key columns {'+'.join(kcols)} ({kc:.0f} MiB)",
                      flush=True)
            extra = dict(key_columns=kcols, key_columns_mb=kc, peer_rss_vs_key_columns=m["polars"]["rss_mb"] / kc)
            rows.append(row("offline", f"{cmd} {n:,}", m[cmd], "Polars script", m["polars"], command=cmd, records=n,
                            ns_per_record=m[cmd]["seconds"] / n * 1e9, key_column_mb=kb,
                            rss_vs_key_column=m[cmd]["rss_mb"] / kb, peer_rss_vs_key_column=m["polars"]["rss_mb"] / kb,
                            rss_vs_key_columns=m[cmd]["rss_mb"] / kc, **extra))
            if benv:
                rows.append(row("offline-before", f"{cmd} {n:,} (before: {before})", m[f"{cmd} before"],
                                "Polars script", m["polars"], command=cmd, records=n,
                                ns_per_record=m[f"{cmd} before"]["seconds"] / n * 1e9, key_column_mb=kb,
                                rss_vs_key_column=m[f"{cmd} before"]["rss_mb"] / kb,
                                peer_rss_vs_key_column=m["polars"]["rss_mb"] / kb,
                                rss_vs_key_columns=m[f"{cmd} before"]["rss_mb"] / kc, **extra,
                                speedup_vs_before=m[f"{cmd} before"]["seconds"] / m[cmd]["seconds"]))
        path.unlink()
    return rows


def linearity(rows: list[dict]) -> list[dict]:
    """Per command: cost per record at each size, its growth largest/smallest (1.0 = linear, below = fixed
    cost amortised), and the marginal cost per record between consecutive sizes (the Polars script's too)."""
    out = []
    for cmd in ("analyze", "whatif", "recommend"):
        rs = sorted((r for r in rows if r.get("command") == cmd and r["group"] == "offline"), key=lambda r: r["records"])
        if len(rs) >= 2:
            out.append({"command": cmd, "from_records": rs[0]["records"], "to_records": rs[-1]["records"],
                        "ns_per_record": [r["ns_per_record"] for r in rs],
                        "growth": rs[-1]["ns_per_record"] / rs[0]["ns_per_record"],
                        "marginal_ns_per_record": [(b["keyscope_s"] - a["keyscope_s"]) / (b["records"] - a["records"]) * 1e9
                                                   for a, b in zip(rs, rs[1:])],
                        "polars_marginal_ns_per_record": [(b["peer_s"] - a["peer_s"]) / (b["records"] - a["records"]) * 1e9
                                                          for a, b in zip(rs, rs[1:])]})
    return out


# ---------------------------------------------------------------- start-up and hashes


def bench_startup(repeat: int) -> list[dict]:
    ks = keyscope_cmd()
    m = measure({"version": (ks + ["--version"], None, None),
                 "partition": (ks + ["partition", "tenant-42", "-p", "6"], None, None),
                 "python": ([sys.executable, "-c", "pass"], None, None)}, repeat)
    return [row("startup", "keyscope --version", m["version"], "python -c pass", m["python"], goal_s=0.15),
            row("startup", "keyscope partition KEY -p 6", m["partition"], "python -c pass", m["python"], goal_s=0.15)]


def bench_hashes(quick: bool, tmp: Path) -> list[dict]:
    """bench_partitioners.py as it is (thread CPU time, best of its rounds); its C -O3 ratios on UUIDs and short keys."""
    out = tmp / "partitioners.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_partitioners.py"), "--json", str(out)]
    cmd += ["--quick"] if quick else ["--repeat", "5"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    doc = json.loads(out.read_text())
    rows = []
    for r in doc["results"]:
        if r["shape"] not in ("uuid", "short"):
            continue
        name = {"consistent": "crc32", "fnv1a": "fnv1a", "murmur2": "murmur2"}[r["hash"]]
        rows.append({"group": "hashes", "what": f"{name} column hash, {r['keys']:,} {r['shape']} keys",
                     "keyscope_keys_per_s": r["keyscope_1t_keys_per_s"], "peer": "gcc -O3 -march=native, 1 thread",
                     "peer_keys_per_s": r["c_1t_keys_per_s"], "ratio": r["ratio_keyscope_1t_vs_c"],
                     "kernel_ratio": r["ratio_kernel_1t_vs_c"], "keys": r["keys"]})
    return rows


# ---------------------------------------------------------------- main


def size(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1:], 1)
    return int(float(s[:-1] if mult > 1 else s) * mult)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--make-sample"]:
        make_sample_file(int(argv[1]), argv[2])
        return 0
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--records", help="records in the topic (default 5M; --quick 100k); a list (5M,10M,20M): the "
                                      "topic holds the largest, kcat's rows use it, keyscope also samples the first N "
                                      "of it for each other N (peak RSS as the records grow)")
    ap.add_argument("--sizes", help="offline sample sizes, e.g. 1M,10M,30M (default; --quick 100k,300k)")
    ap.add_argument("--kcat-librdkafka", choices=("system", "wheel"),
                    help="kcat's librdkafka: Debian's (default with Kafka) or the confluent-kafka wheel's (with Tansu)")
    ap.add_argument("--before", metavar="DIR",
                    help="also run the offline and sampling commands on an older keyscope tree in DIR (git archive REV keyscope "
                         "| tar -x -C DIR), taking turns: before/after in the same run")
    ap.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)} (default: all)")
    ap.add_argument("--from-source", action="store_true",
                    help="do not byte-compile keyscope first (as pip install does): each process compiles what it imports")
    ap.add_argument("--commands", help=f"offline: comma-separated commands of {','.join(OFFLINE_COMMANDS)} (default: all)")
    ap.add_argument("--pause", type=float, default=0.0, metavar="S",
                    help="seconds idle before each run (default 0: back to back), so freed memory goes back to a "
                         "VM's host between runs as between a user's commands")
    ap.set_defaults(repeat=None)
    args = ap.parse_args(argv)
    global PAUSE
    PAUSE = max(0.0, args.pause)
    repeat = args.repeat or (1 if args.quick else 3)
    counts = sorted({size(x) for x in args.records.split(",")}) if args.records else [100_000 if args.quick else 5_000_000]
    n = counts[-1]
    sizes = [size(s) for s in args.sizes.split(",")] if args.sizes else (
        [100_000, 300_000] if args.quick else [1_000_000, 10_000_000, 30_000_000])
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    if only - set(SECTIONS):
        ap.error(f"--only takes {', '.join(SECTIONS)}")
    if not args.from_source:
        compile_bytecode(args.before)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    rows, info = [], {}
    with tempfile.TemporaryDirectory(prefix="keyscope-cold-") as d:
        tmp = Path(d)
        if "startup" in only:
            rows += bench_startup(max(repeat, 5))
        if "sampling" in only:
            r, info = bench_sampling(args, n, repeat, tmp, tuple(counts[:-1]))
            rows += r
        if "offline" in only:
            commands = tuple(args.commands.split(",")) if args.commands else OFFLINE_COMMANDS
            if set(commands) - set(OFFLINE_COMMANDS):
                ap.error(f"--commands takes {', '.join(OFFLINE_COMMANDS)}")
            rows += bench_offline(sizes, repeat, tmp, args.before, commands)
        if "hashes" in only:
            rows += bench_hashes(args.quick, tmp)
    lin = linearity(rows)
    load_end = os.getloadavg()

    table = []
    for r in rows:
        if r["group"] == "hashes":
            table.append([r["what"], f"{r['keyscope_keys_per_s'] / 1e6:.1f}M keys/s", "", r["peer"],
                          f"{r['peer_keys_per_s'] / 1e6:.1f}M keys/s", "", f"{r['ratio']:.2f}x"])
            continue
        table.append([r["what"], f"{r['keyscope_s']:.3f} s", f"{r['keyscope_rss_mb']:.0f} MB", r["peer"] or "-",
                      "-" if r["peer_s"] is None else f"{r['peer_s']:.3f} s",
                      "-" if r["peer_rss_mb"] is None else f"{r['peer_rss_mb']:.0f} MB",
                      "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"])
    print_table(f"Cold from the shell ({'--quick, ' if args.quick else ''}median of {repeat}; start-up median of "
                f"{max(repeat, 5)}; ratio = peer time / keyscope time, hashes: keyscope rate / C rate)",
                ["what", "keyscope", "RSS", "peer", "peer", "peer RSS", "ratio"], table)
    kf = [r for r in rows if r.get("key_field_mb")]
    if kf:
        print_table("Sampling: peak RSS over the records' key+field bytes (issue 14's goal: <= 2x)",
                    ["what", "records", "key+field MB", "peak RSS MB", "RSS / key+field"],
                    [[r["what"], r["records"], r["key_field_mb"], r["keyscope_rss_mb"], f"{r['rss_vs_key_field']:.2f}x"]
                     for r in kf])
    off = [r for r in rows if r["group"] == "offline"]
    if off:
        print_table("Offline: cost per record and peak RSS over the decoded key column",
                    ["command", "records", "ns/record", "RSS / key column", "Polars RSS / key column",
                     "RSS / key columns used"],
                    [[r["command"], r["records"], r["ns_per_record"], f"{r['rss_vs_key_column']:.2f}x",
                      f"{r['peer_rss_vs_key_column']:.2f}x",
                      f"{r['rss_vs_key_columns']:.2f}x ({'+'.join(r['key_columns'])})"] for r in off])
    for x in lin:
        print(f"linearity: {x['command']} ns/record {x['from_records']:,} -> {x['to_records']:,}: "
              + " -> ".join(f"{v:.0f}" for v in x["ns_per_record"]) + f" ({x['growth']:.2f}x); marginal "
              + ", ".join(f"{v:.0f}" for v in x["marginal_ns_per_record"]) + " ns/record (Polars script "
              + ", ".join(f"{v:.0f}" for v in x["polars_marginal_ns_per_record"]) + ")")
    if info.get("broker"):
        print(f"broker: {info['broker']}; {'; '.join(info['kcat_version'])}; kcat's librdkafka from: {info['kcat_librdkafka']}")
    print(f"load average (1/5/15 min): start {load_start[0]:.2f}/{load_start[1]:.2f}/{load_start[2]:.2f}, "
          f"end {load_end[0]:.2f}/{load_end[1]:.2f}/{load_end[2]:.2f}; {time.perf_counter() - t0:.0f} s in all")
    write_json(args.json, "cold", rows, quick=args.quick, repeat=repeat, sampling=info, linearity=lin,
               offline_sizes=sizes if "offline" in only else [], loadavg_start=list(load_start),
               loadavg_end=list(load_end), keyscope=keyscope_cmd(), seconds=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
