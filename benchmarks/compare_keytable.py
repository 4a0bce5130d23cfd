"""keyscope._keytable's kernels, warm, against an older tree's (e.g. the numba ones), in one process.

Times ``scan`` (the one pass of ``analyze``: 2 threads as analyze runs it, or ``--threads``)
and ``encode`` (what-if's dictionary codes) on the key column of a sample
file, and on the same rows with 36-byte UUID-like keys (the out-of-line
view path), taking turns between the trees (each first in every other round); median of ``--repeat``.  Both
are compiled/loaded before timing.

Run: ``git archive main keyscope | tar -x -C /tmp/before`` then
``python benchmarks/compare_keytable.py SAMPLE.parquet --before /tmp/before``
(a sample: ``python benchmarks/bench_cold.py --make-sample 10000000 s.parquet``).
A tree whose _keytable is numba's needs ``pip install numba`` (keyscope no longer depends on it).
Named compare_*, not bench_*: it needs a sample and an older tree, so .ci/run's ``--quick`` loop
over benchmarks/bench_*.py leaves it out.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load_tree(path: str):
    """The older tree's _keytable as its own module, from a copy (numba's on-disk cache is per file and
    names the module: loading the tree's own file under another name would spoil that tree's cache)."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="bench-keytable-")
    shutil.copy(Path(path) / "keyscope" / "_keytable.py", Path(d) / "before_keytable.py")
    sys.path.insert(0, d)
    return importlib.import_module("before_keytable")  # it imports numpy/numba/llvmlite only


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sample")
    ap.add_argument("--before", help="a tree holding keyscope/_keytable.py to compare with")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, help="scan's threads (default: as analyze, up to 2)")
    args = ap.parse_args(argv)

    import numpy as np
    import polars as pl

    from keyscope import _keytable as after
    from keyscope.sample import read_sample

    s = read_sample(args.sample)
    df = s.frame("partition", "key", "value_size")
    n = df.height
    uuids = pl.Series("key", np.random.default_rng(1).integers(0, 100_000, n)).cast(pl.String)
    uuids = pl.select(pl.format("00000000-0000-4000-8000-{}", uuids.str.zfill(12)).cast(pl.Binary)).to_series()
    frames = {"tenant-N keys (<= 12 bytes, inline)": df,
              "UUID keys (36 bytes, out of line)": df.with_columns(uuids.alias("key"))}
    trees = {"after": after}
    if args.before:
        trees["before"] = load_tree(args.before)
    P = s.partition_count
    print(f"{n:,} records, {P} partitions; scan threads {args.threads or 'auto'}; median of {args.repeat}")
    for label, frame in frames.items():
        for what, call in (("scan", lambda m, f: m.scan(f, P, threads=args.threads, extremes=False)),
                           ("encode", lambda m, f: m.encode(f["key"]))):
            times: dict = {t: [] for t in trees}
            ref = None
            for t, m in trees.items():  # compile / load, and check both give the same result
                out = call(m, frame)
                got = out[0].sort("key", "partition") if what == "scan" else out[0]
                if ref is None:
                    ref = got
                else:
                    assert (got.equals(ref) if what == "scan" else np.array_equal(got, ref)), (what, t)
            for r in range(args.repeat):
                # ABBA order: the second call of a pair ran up to 1.2x slower or faster (memory
                # state left by the first, measured), so each tree goes first in every other round
                for t, m in (list(trees.items()) if r % 2 == 0 else list(trees.items())[::-1]):
                    t0, c0 = time.perf_counter(), time.process_time()
                    call(m, frame)
                    times[t].append((time.perf_counter() - t0, time.process_time() - c0))
            # CPU time (all threads) too: on a shared machine it moves far less than the wall clock
            med = {t: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for t, v in times.items()}
            line = "  ".join(f"{t} {w:.3f} s wall, {c:.3f} s CPU ({c / n * 1e9:.1f} ns/rec)" for t, (w, c) in med.items())
            ratio = (f"  before/after wall {med['before'][0] / med['after'][0]:.2f}x, CPU {med['before'][1] / med['after'][1]:.2f}x"
                     if "before" in med else "")
            print(f"{what:6s} {label}: {line}{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
