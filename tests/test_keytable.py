"""keyscope._keytable's IR kernels against brute force (Polars / Python) and their pure-Python twins.

Keys of every length 0-80 (inline views <= 12 bytes, out-of-line ones
beyond, several data buffers), null keys, sliced and many-chunk columns, a
table that must grow, one and two threads, with and without extremes.
"""

from __future__ import annotations

import collections

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from keyscope import _keytable as kt
from keyscope.sample import Sample

LENGTHS = range(81)


def random_keys(n: int, seed: int, distinct: int = 400, null_share: float = 0.05) -> list:
    """n keys drawn from ``distinct`` values of every length 0-80 (some sharing long prefixes), and nulls."""
    rng = np.random.default_rng(seed)
    pool = []
    for i in range(distinct):
        ln = LENGTHS[i % len(LENGTHS)]
        b = bytes(rng.integers(0, 256, ln, dtype=np.uint8)) if i % 3 else (b"p" * 80)[: max(ln - 2, 0)] + bytes([i % 256, i // 256])[: ln]
        pool.append(b[:ln])
    keys = [pool[j] for j in rng.integers(0, len(pool), n)]
    return [None if rng.random() < null_share else k for k in keys]


def multi_buffer_series(keys: list, pieces: int = 3) -> pl.Series:
    """A Binary Series whose one Arrow chunk has ``pieces`` data buffers (pyarrow concatenation keeps them)."""
    step = -(-len(keys) // pieces)
    arr = pa.concat_arrays([pa.array(keys[i : i + step], pa.binary_view()) for i in range(0, len(keys), step)])
    s = pl.from_arrow(arr)
    assert isinstance(s, pl.Series)
    return s.alias("key")


def sample_frame(keys, partitions: int, seed: int, chunks: int = 1, buffers: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(keys)
    key = multi_buffer_series(keys, buffers) if buffers > 1 else pl.Series("key", keys, dtype=pl.Binary)
    ts = pl.Series(1_700_000_000_000 + rng.integers(0, 10**6, n)).cast(pl.Datetime("ms", "UTC"))
    df = pl.DataFrame(
        {
            "key": key,
            "partition": rng.integers(0, partitions, n).astype(np.int32),
            "value_size": pl.Series(rng.integers(0, 5_000, n), dtype=pl.Int32),
        }
    ).with_columns(pl.when(pl.Series(rng.random(n) < 0.8)).then(ts).otherwise(None).alias("timestamp"))
    df = Sample.from_frame(df, partition_count=partitions).df
    if chunks > 1:
        step = -(-n // chunks)
        df = pl.concat([df.slice(i, step) for i in range(0, n, step)], rechunk=False)
        assert df["key"].n_chunks() == chunks
    return df


def brute_force(df: pl.DataFrame) -> dict:
    """(key, partition) -> [records, bytes, bytes squared] in plain Python."""
    out: dict = collections.defaultdict(lambda: [0, 0, 0.0])
    for key, part, vs in zip(df["key"].to_list(), df["partition"].to_list(), df["value_size"].to_list()):
        size = (len(key) if key is not None else 0) + vs
        acc = out[(key, part)]
        acc[0] += 1
        acc[1] += size
        acc[2] += float(size) * float(size)
    return dict(out)


def as_dict(kp: pl.DataFrame) -> dict:
    return {(k, p): [r, b, q] for k, p, r, b, q in kp.select("key", "partition", "records", "bytes", "bytes_sq").iter_rows()}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chunks,buffers", [(1, 1), (1, 4), (5, 1)])
def test_scan_equals_brute_force(monkeypatch, threads, chunks, buffers):
    # small slices so two threads really split the rows, several pieces per chunk
    monkeypatch.setattr(kt, "SLICE_ROWS", 1_000)
    keys = random_keys(12_000, seed=chunks * 10 + buffers)
    df = sample_frame(keys, 4, seed=1, chunks=chunks, buffers=buffers)
    kp, ext = kt.scan(df, 4, threads=threads)
    got = as_dict(kp)
    want = brute_force(df)
    assert got.keys() == want.keys()
    for k, (r, b, q) in want.items():
        assert got[k][:2] == [r, b]
        assert got[k][2] == pytest.approx(q, rel=1e-12)  # sums in another order across threads
    # first-seen order, null keys last
    firsts = df.with_row_index().group_by("key", "partition").agg(pl.col("index").min())
    order = {(k, p): i for k, p, i in firsts.select("key", "partition", "index").iter_rows()}
    valid = [order[(k, p)] for k, p in kp.filter(pl.col("key").is_not_null()).select("key", "partition").iter_rows()]
    assert valid == sorted(valid)
    assert kp["key"].is_null().to_list() == sorted(kp["key"].is_null().to_list())
    # extremes: over records with a timestamp
    timed = df.filter(pl.col("timestamp").is_not_null())
    for p in range(4):
        rows = timed.filter(pl.col("partition") == p)
        assert ext["omin"][p] == rows["offset"].min() and ext["omax"][p] == rows["offset"].max()
        assert ext["tmin"][p] == rows["timestamp"].dt.epoch("ms").min()
        assert ext["tmax"][p] == rows["timestamp"].dt.epoch("ms").max()


def test_scan_on_one_thread_is_bit_for_bit_the_python_sums():
    """One thread adds in row order, as the brute force does: the float sums are equal, not just close."""
    keys = random_keys(5_000, seed=9)
    df = sample_frame(keys, 3, seed=2)
    assert as_dict(kt.scan(df, 3, threads=1)[0]) == brute_force(df)


def test_extremes_flag_and_frames_without_timestamps():
    keys = random_keys(3_000, seed=4)
    df = sample_frame(keys, 3, seed=3)
    kp, ext = kt.scan(df, 3, extremes=False)
    kp2, ext2 = kt.scan(df, 3)
    assert kp.equals(kp2)
    assert (ext["tmin"] == kt.I64_MAX).all() and (ext["omax"] == kt.I64_MIN).all()
    assert (ext2["tmin"] != kt.I64_MAX).all()
    no_ts = df.with_columns(pl.lit(None, dtype=pl.Datetime("ms", "UTC")).alias("timestamp"))
    kp3, ext3 = kt.scan(no_ts, 3)
    assert kp3.equals(kp) and (ext3["tmin"] == kt.I64_MAX).all()


def test_scan_grows_its_table_and_threads_agree():
    """60k distinct (key, partition) groups from a 2**14-slot start: several rehashes mid-chunk, then a merge."""
    keys = [f"key-{i}-{'x' * (i % 70)}".encode() for i in range(60_000)] * 2
    df = sample_frame(keys, 6, seed=5, chunks=3)
    one, _ = kt.scan(df, 6, threads=1)
    two, _ = kt.scan(df, 6, threads=2)
    assert one.height > 60_000 and one.equals(two)
    assert as_dict(one) == brute_force(df)


def test_empty_and_all_null_frames():
    df = sample_frame([None] * 50, 2, seed=6)
    kp, _ = kt.scan(df, 2)
    assert kp["key"].null_count() == kp.height == df["partition"].n_unique()
    kp, ext = kt.scan(df.head(0), 2)
    assert kp.height == 0 and (ext["tmin"] == kt.I64_MAX).all()


def _views(series: pl.Series):
    """(views address, rows, buffer addresses, validity, its bit offset, keep-alive) of a one-chunk column."""
    chunk = series.to_frame().to_arrow(compat_level=pl.CompatLevel.newest()).column(0).chunks[0]
    bufs = chunk.buffers()
    addrs = np.array([b.address for b in bufs[2:]] or [0], np.int64)
    valid = np.frombuffer(bufs[0], np.uint8) if bufs[0] is not None and chunk.null_count else np.zeros(0, np.uint8)
    return bufs[1].address + 16 * chunk.offset, len(chunk), addrs, valid, chunk.offset, (chunk, addrs, valid)


def test_scan_table_is_the_reference_table_slot_for_slot():
    """The IR hashes, probes and sums exactly as the pure-Python twin (w0 of > 16-byte keys is an address)."""
    keys = random_keys(4_000, seed=7, distinct=300)
    series = pl.Series("key", [None, b"", *keys], dtype=pl.Binary).slice(1)  # a sliced chunk: offset 1
    rng = np.random.default_rng(8)
    n = len(series)
    parts = rng.integers(0, 3, n).astype(np.int32)
    sizes = rng.integers(0, 1_000, n).astype(np.int32)
    views, rows, addrs, valid, vbit, keep = _views(series)
    slots = 1 << 12
    gd = np.zeros((slots, kt._WIDTH), np.uint64)
    sums = [np.zeros(3, np.int64), np.zeros(3, np.int64), np.zeros(3, np.float64)]
    ext = [np.full(3, kt.I64_MAX), np.full(3, kt.I64_MIN), np.full(3, kt.I64_MAX), np.full(3, kt.I64_MIN)]
    none = np.zeros(0, np.int64)
    stop, ng = kt._scan(views, rows, addrs, valid, vbit, parts, sizes, none, none, 0, 0, gd, 0, slots // 2, *sums, *ext)
    del keep
    ref, by_slot, nulls = kt.reference_scan(series.to_list(), parts, sizes, slots)
    assert stop == n and ng == len(by_slot)
    long = np.array([len(by_slot.get(s, b"")) > 16 for s in range(slots)])
    gd[long, kt._W0] = 0
    assert np.array_equal(gd, ref)
    for p in range(3):
        assert [sums[0][p], sums[1][p], sums[2][p]] == nulls.get(p, [0, 0, 0.0])


def test_encode_equals_python_dictionary():
    keys = random_keys(20_000, seed=11, distinct=2_000)
    series = pl.concat([multi_buffer_series(keys[:9_000], 3), pl.Series("key", keys[9_000:], dtype=pl.Binary).slice(0)],
                       rechunk=False)  # fmt: skip
    for cap in (16, 1 << 12):  # the small table grows many times
        codes, firsts = kt.encode(series, cap=cap)
        seen: dict = {}
        want = [-1 if k is None else seen.setdefault(k, len(seen)) for k in keys]
        assert codes.tolist() == want
        assert [keys[i] for i in firsts] == list(seen)


def test_encode_table_is_the_reference_table_slot_for_slot():
    keys = random_keys(3_000, seed=12, distinct=500)
    series = pl.Series("key", keys, dtype=pl.Binary)
    views, rows, addrs, valid, vbit, keep = _views(series)
    slots = 1 << 12
    tab = np.zeros((slots, kt._EWIDTH), np.uint64)
    out = np.empty(rows, np.int32)
    firsts = np.empty(slots // 2, np.int64)
    stop, ng = kt._encode(views, rows, addrs, valid, vbit, out, 0, tab, 0, slots // 2, firsts)
    del keep
    codes, ref_firsts, ref = kt.reference_encode(keys, slots)
    assert stop == rows and ng == len(ref_firsts)
    assert np.array_equal(out, codes) and np.array_equal(firsts[:ng], ref_firsts)
    lengths = (tab[:, kt._ELC] & np.uint64(0xFFFFFFFF)).astype(np.int64)
    tab[lengths > 16, kt._EW0] = 0
    assert np.array_equal(tab, ref)


def test_rehash_keeps_every_record():
    keys = [f"k{i}".encode() * (1 + i % 9) for i in range(3_000)]
    codes, firsts = kt.encode(pl.Series(keys), cap=16)
    assert codes.tolist() == list(range(3_000)) and firsts.tolist() == list(range(3_000))
    g = kt._Groups(16)
    df = sample_frame(keys, 1, seed=13)
    w = kt._Worker(1, 16)
    w.groups = g
    piece = _views(df["key"])
    w.run((df["partition"], df["value_size"], None, None), [(*piece[:5], 0)])
    assert g.ng == 3_000 and g.gd.shape[0] >= 6_000 and len(g.groups()) == 3_000


def test_signatures_are_checked_against_the_ir():
    from keyscope import _native

    bad = (_native.Fn("kt_merge", kt._I64, (("table", kt._P),)),)
    with pytest.raises(_native.SignatureError, match="kt_merge"):
        _native.load("keytable-test", kt.module_ir(), bad, opt=0)


def test_using_the_key_table_imports_no_numba():
    """The point of the port (issue 13): scan and encode load LLVM IR through keyscope._native, not numba."""
    import ast
    import subprocess
    import sys

    code = (
        "import sys, polars as pl\n"
        "from keyscope import _keytable as kt\n"
        "from keyscope.sample import Sample\n"
        "df = Sample.from_frame(pl.DataFrame({'key': [b'a', None, b'x' * 30], 'partition': [0, 1, 0]}),"
        " partition_count=2).df\n"
        "kp, _ = kt.scan(df, 2)\n"
        "codes, _ = kt.encode(df['key'])\n"
        "assert kp.height == 3 and codes.tolist() == [0, -1, 1]\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))\n"
        "print(type(kt._LIB.get().engine).__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-800:]
    mods_line, engine = r.stdout.strip().splitlines()
    mods = ast.literal_eval(mods_line)
    # the kernels' machine code, loaded by keyscope._native: from the cache without LLVM (keyscope._elf) or
    # through llvmlite's JIT
    assert engine in ("Image", "ExecutionEngine") and not any(m.startswith("numba") for m in mods)
