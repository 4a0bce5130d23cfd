"""``keyscope analyze`` on a large sample against the obvious script, in one run.

Data: N records over K distinct keys drawn Zipf(s=1.1) (numpy, columnar),
placed by murmur2 on 12 partitions, with offsets, timestamps and value sizes,
written as a keyscope Parquet sample whose metadata has each partition's
first/last times as ``keyscope sample`` writes them (``--no-meta-times``: without
them, so analyze reads every timestamp for the rates).

Timed:

* read: ``read_sample`` (Parquet -> Polars), reported apart;
* keyscope: ``keyscope.analysis.analyze`` on the loaded sample, steady state
  (the compiled kernels are loaded once before timing): partition load,
  chi-square/CV/Gini, hot keys with Wilson intervals, the skew interval, the
  perfect-hashing baseline (1,000 simulated placements) and partitioner
  detection over three hash families;
* the obvious script (the issue's peer): Arrow -> Python lists,
  ``collections.Counter`` over keys and partitions, and kafka-python's
  ``murmur2`` per record to check where each key should sit.  Timed on a
  subset and extrapolated linearly to N (it is linear; the output says so);
* a careful script, for honesty: one ``Counter`` over (key, partition) per
  record, then ``murmur2`` once per distinct key (all K keys).  It still does
  less than keyscope (one partitioner, no intervals, no baseline); its
  per-record Counter is timed on a subset and extrapolated.

Memory: the process RSS is polled during ``analyze``; the peak above the RSS
before the call is the analysis's own memory, compared with the key bytes
(sum of key lengths) and with the key column as Polars holds it (16-byte views
plus out-of-line bytes).

Run: ``python benchmarks/bench_analyze.py [--quick] [--json FILE]``.
Targets (issue 4): analysis < 1 s for 10M records / 100k keys, peak memory
< 3x key bytes, >= 50x the obvious script.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import best_of, parser, peak_rss_mb, print_table, write_json  # noqa: E402

PARTITIONS = 12


def make_sample(n: int, k: int, seed: int = 1, meta_times: bool = True):
    """A keyscope Sample of n records over k Zipf(1.1) keys, built columnar."""
    from keyscope.partitioners import partition_column
    from keyscope.sample import Sample

    rng = np.random.default_rng(seed)
    w = 1.0 / np.arange(1, k + 1) ** 1.1
    ids = rng.choice(k, size=n, p=w / w.sum())
    names = pl.select(pl.concat_str(pl.lit("tenant-"), pl.int_range(k).cast(pl.String)).cast(pl.Binary)).to_series()
    place = partition_column(names, PARTITIONS, "murmur2").cast(pl.Int32).to_numpy()
    part = place[ids]
    df = pl.DataFrame(
        {
            "partition": part,
            "key": names.gather(ids),
            "value_size": rng.integers(40, 400, n, dtype=np.int32),
            "timestamp": pl.Series((1_700_000_000_000 + np.arange(n) // 10).astype(np.int64)).cast(
                pl.Datetime("ms", "UTC")
            ),
        }
    ).with_columns(pl.int_range(pl.len()).over("partition").alias("offset"))
    s = Sample.from_frame(df, topic="bench", partition_count=PARTITIONS, source="synthetic")
    # Per-partition first/last times, as `keyscope sample` records them (so the
    # rates need no pass over the timestamps); --no-meta-times leaves them out.
    if meta_times:
        g = df.group_by("partition").agg(
            pl.col("timestamp").sort_by("offset").first().dt.epoch("ms").alias("t0"),
            pl.col("timestamp").sort_by("offset").last().dt.epoch("ms").alias("t1"),
        )
        for p, t0, t1 in g.iter_rows():
            s.meta.partitions[p].first_timestamp_ms = t0
            s.meta.partitions[p].last_timestamp_ms = t1
    return s


def obvious_script(keys: list, parts: list, partitions: int):
    """What a person writes first: Counters over keys and partitions, and a
    per-record check of where kafka-python's murmur2 would put each key."""
    from kafka.partitioner.default import murmur2

    key_load = collections.Counter(keys)
    load = collections.Counter(parts)
    agree = sum(1 for k, p in zip(keys, parts) if k is not None and (murmur2(k) & 0x7FFFFFFF) % partitions == p)
    return key_load.most_common(10), load, agree


def careful_script(keys: list, parts: list):
    """A script written with hindsight, part 1: one Counter over (key, partition) records..."""
    per_key_part = collections.Counter(zip(keys, parts))
    load = collections.Counter()
    for (_k, p), c in per_key_part.items():
        load[p] += c
    return per_key_part, load


def careful_per_key(per_key_part: collections.Counter, partitions: int):
    """...part 2: kafka-python's murmur2 once per distinct key, and the top keys."""
    from kafka.partitioner.default import murmur2

    agree = total = 0
    key_load = collections.Counter()
    for (k, p), c in per_key_part.items():
        if k is None:
            continue
        key_load[k] += c
        total += c
        if (murmur2(k) & 0x7FFFFFFF) % partitions == p:
            agree += c
    return agree, total, key_load.most_common(10)


class RssPoller:
    """Peak resident memory (from /proc) while a block runs."""

    def __init__(self, every: float = 0.002):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self.before = self.rss()
        self.peak = self.before
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.rss())


def main(argv=None) -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument(
        "--no-meta-times", action="store_true",
        help="sample metadata without per-partition times: analyze then reads every timestamp for the rates",
    )  # fmt: skip
    args = p.parse_args(argv)
    n, k = (300_000, 5_000) if args.quick else (10_000_000, 100_000)
    obvious_n = min(n, 50_000 if args.quick else 500_000)
    careful_n = min(n, 300_000 if args.quick else 2_000_000)

    from keyscope import _kernels
    from keyscope.analysis import analyze
    from keyscope.sample import Sample, read_sample

    _kernels.warm()
    t = time.perf_counter()
    sample = make_sample(n, k, meta_times=not args.no_meta_times)
    gen_s = time.perf_counter() - t
    # Kept until the process ends: a Sample reads its other columns from the file when first asked.
    tmp = tempfile.TemporaryDirectory()
    path = sample.write(Path(tmp.name) / "bench.parquet")
    file_mb = path.stat().st_size / 1e6
    del sample
    read_s, sample = best_of(lambda: read_sample(path), args.repeat)

    key_bytes = int(sample.df["key_size"].sum())
    key_arrow = sample.df["key"].to_arrow(compat_level=pl.CompatLevel.newest())
    chunks = key_arrow.chunks if hasattr(key_arrow, "chunks") else [key_arrow]
    key_mem = sum(b.size for c in chunks for b in c.buffers() if b is not None)
    del key_arrow, chunks
    # Load the kernels and scipy on a small slice; the memory poll then covers
    # the first full call (nothing of it is left in the allocator yet).
    analyze(Sample.from_frame(sample.df.head(300_000), partition_count=PARTITIONS))
    with RssPoller() as mem:
        t = time.perf_counter()
        result = analyze(sample)
        first_s = time.perf_counter() - t
    times = []
    for _ in range(max(1, args.repeat)):
        t = time.perf_counter()
        result = analyze(sample)
        times.append(time.perf_counter() - t)
    ks_s = min(times)
    analysis_mb = (mem.peak - mem.before) / 1e6

    # ---- the obvious script: per record, on a subset, extrapolated ----
    sub = sample.df.head(obvious_n)
    t = time.perf_counter()
    keys, parts = sub["key"].to_list(), sub["partition"].to_list()
    _top, _load, agree = obvious_script(keys, parts, PARTITIONS)
    obvious_s = (time.perf_counter() - t) * (n / obvious_n)
    assert agree == obvious_n  # every record sits where murmur2 puts it
    del keys, parts

    # ---- the careful script: Counter per record (subset, extrapolated), murmur2 per distinct key (all) ----
    sub = sample.df.head(careful_n)
    t = time.perf_counter()
    careful_script(sub["key"].to_list(), sub["partition"].to_list())
    per_record_s = (time.perf_counter() - t) * (n / careful_n)
    full = sample.df.group_by("key", "partition").len()  # all K keys for the per-key part (not timed)
    per_key_full = collections.Counter(
        dict(zip(zip(full["key"].to_list(), full["partition"].to_list()), full["len"].to_list()))
    )
    t = time.perf_counter()
    agree, total, _top = careful_per_key(per_key_full, PARTITIONS)
    per_key_s = time.perf_counter() - t
    careful_s = per_record_s + per_key_s
    # all three found every record where murmur2 puts it
    assert agree == total == n == result.partitioner["agreement"]["murmur2"]["matched_records"]

    speedup, careful_speedup = obvious_s / ks_s, careful_s / ks_s
    rows = [
        ["generate (numpy; not compared)", gen_s, "", ""],
        ["read_sample (Parquet -> Polars)", read_s, n / read_s, f"{file_mb:.0f} MB file"],
        ["keyscope analyze (compute, best)", ks_s, n / ks_s, f"first call {first_s:.2f} s"],
        [
            f"obvious script ({obvious_n:,} records, x{n / obvious_n:g})",
            obvious_s,
            n / obvious_s,
            f"keyscope {speedup:,.0f}x faster",
        ],
        [
            f"careful script (Counter on {careful_n:,}, x{n / careful_n:g})",
            careful_s,
            n / careful_s,
            f"keyscope {careful_speedup:,.1f}x faster",
        ],
    ]
    print_table(
        f"analyze: {n:,} records, {k:,} distinct keys (Zipf 1.1), {PARTITIONS} partitions, "
        f"{result.sample['distinct_keys']:,} keys seen"
        + ("" if not args.no_meta_times else ", no per-partition times in the metadata"),
        ["step", "seconds", "records/s", "note"],
        rows,
    )
    mem_rows = [
        ["key bytes (sum of key lengths)", key_bytes / 1e6, ""],
        ["key column in memory (views + data)", key_mem / 1e6, f"{key_mem / key_bytes:.2f}x key bytes"],
        ["analysis peak above loaded sample", analysis_mb, f"{analysis_mb * 1e6 / key_bytes:.2f}x key bytes"],
        ["process peak RSS (all of the above)", peak_rss_mb() * 1.048576, ""],
    ]
    print_table("memory (MB)", ["what", "MB", "ratio"], mem_rows)
    print(
        f"\nskew ratio {result.skew_ratio:.3f}, hottest partition {result.skew['hottest_partition']}, "
        f"partitioner {result.partitioner['verdict']}, cause {result.baseline['cause']}"
    )
    write_json(
        args.json,
        "analyze",
        {
            "records": n,
            "distinct_keys": k,
            "partitions": PARTITIONS,
            "meta_times": not args.no_meta_times,
            "read_s": read_s,
            "analyze_s": ks_s,
            "analyze_runs_s": times,
            "analyze_first_call_s": first_s,
            "obvious_script_s": obvious_s,
            "obvious_script_extrapolated_from": obvious_n,
            "speedup_vs_obvious": speedup,
            "careful_script_s": careful_s,
            "careful_script_counter_extrapolated_from": careful_n,
            "speedup_vs_careful": careful_speedup,
            "key_bytes": key_bytes,
            "key_column_bytes": key_mem,
            "analysis_peak_bytes": int(mem.peak - mem.before),
            "analysis_peak_over_key_bytes": (mem.peak - mem.before) / key_bytes,
        },
        quick=args.quick,
    )


if __name__ == "__main__":
    main()
