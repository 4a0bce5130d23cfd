"""analyze's key table from a Parquet file's dictionary pages (keyscope.io.parquet) against Polars' group_by.

Files as keyscope writes them (pyarrow, dictionary pages) with keys at every
layout edge, several row groups, nulls in keys and value sizes, text keys; the
sparse path (many partitions x many keys), the fallbacks (plain-encoded keys),
and the kernel ``kt_dict_sum`` against its pure-Python twin.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keyscope import _keytable as kt
from keyscope.analysis import analyze, key_partition_table
from keyscope.errors import InputError
from keyscope.io import parquet as kpq
from keyscope.sample import META_KEY, Sample, read_sample

from .test_analysis_scan import canon, tricky_frame


def write(df: pl.DataFrame, path, partitions: int = 5, row_group_size: int = 7_000, **kw) -> None:
    """A keyscope sample file with small row groups (so the path crosses dictionaries)."""
    s = Sample.from_frame(df, partition_count=partitions)
    table = s.df.to_arrow()
    table = table.replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    pq.write_table(table, path, compression="zstd", row_group_size=row_group_size, **kw)


def keys_of(path, partitions: int = 5):
    s = read_sample(path, columns=("partition",))
    src = s.key_file()
    assert src is not None
    return kpq.dictionary_keys(src[0], src[1], partitions, src[2], parts=s.frame("partition")["partition"])


def test_dictionary_pages_give_the_group_by_table(tmp_path):
    df = tricky_frame(40_000, seed=11, timestamps=False)
    path = tmp_path / "s.parquet"
    write(df, path)
    assert pq.ParquetFile(path).metadata.num_row_groups > 3
    kp = keys_of(path)
    ref = key_partition_table(Sample.from_frame(df, partition_count=5).df)
    assert kp is not None and canon(kp).equals(canon(ref))
    # without the partition column handed in, it is read from the file: the same table
    s = read_sample(path, columns=("partition",))
    p, check, names = s.key_file()
    assert canon(kpq.dictionary_keys(p, check, 5, names)).equals(canon(ref))


def test_null_value_sizes_text_keys_and_no_value_size_column(tmp_path):
    rng = np.random.default_rng(4)
    n = 20_000
    keys = [None if i % 17 == 0 else f"ключ-{i % 900}" * (1 + i % 3) for i in rng.integers(0, 5000, n)]
    vs = pl.Series([None if i % 11 == 0 else int(i) for i in rng.integers(0, 500, n)], dtype=pl.Int32)
    df = pl.DataFrame({"key": pl.Series(keys, dtype=pl.String), "partition": rng.integers(0, 3, n).astype(np.int32)})
    table = pa.table({"partition": df["partition"].to_arrow(), "key": df["key"].to_arrow(),
                      "value_size": vs.to_arrow()})  # fmt: skip
    path = tmp_path / "text.parquet"
    pq.write_table(table, path, row_group_size=5_000)
    ref = key_partition_table(Sample.from_frame(df.with_columns(value_size=vs.fill_null(0)), partition_count=3).df)
    assert canon(keys_of(path, 3)).equals(canon(ref))
    pq.write_table(table.drop(["value_size"]), path, row_group_size=5_000)
    ref0 = key_partition_table(Sample.from_frame(df, partition_count=3).df)
    assert canon(keys_of(path, 3)).equals(canon(ref0))


def test_sparse_bins_give_the_same_table(tmp_path, monkeypatch):
    """Many partitions x many keys per row group: pairs made dense by np.unique, sums collapsed as a list."""
    df = tricky_frame(30_000, seed=2, timestamps=False, n_keys=8_000)
    path = tmp_path / "s.parquet"
    write(df, path)
    ref = key_partition_table(Sample.from_frame(df, partition_count=5).df)
    monkeypatch.setattr(kpq, "DENSE_BINS_PER_ROW", 0)
    monkeypatch.setattr(kpq, "DENSE_BINS_MIN", 0)
    assert canon(keys_of(path)).equals(canon(ref))


def test_bins_turning_sparse_mid_file_give_the_same_table(tmp_path, monkeypatch):
    """The file's bins summed by global code while few, then (the keys grown past the limit) as a list."""
    df = tricky_frame(40_000, seed=5, timestamps=False, n_keys=6_000)
    path = tmp_path / "s.parquet"
    write(df, path, row_group_size=2_000)
    ref = key_partition_table(Sample.from_frame(df, partition_count=5).df)
    switched = []
    table_for = kpq._Sums.table_for

    def spy(self, keys):
        t = table_for(self, keys)
        switched.append(t is None)
        return t

    monkeypatch.setattr(kpq._Sums, "table_for", spy)
    monkeypatch.setattr(kpq, "DENSE_BINS_MIN", 5 * 2_000)  # dense up to 2,000 keys (5 partitions)
    assert canon(keys_of(path)).equals(canon(ref))
    assert switched[0] is False and switched[-1] is True  # both ways within one file


def test_plain_encoded_keys_fall_back_to_the_scan_with_the_same_analysis(tmp_path):
    df = tricky_frame(30_000, seed=8)
    plain, dicts = tmp_path / "plain.parquet", tmp_path / "dict.parquet"
    write(df, plain, use_dictionary=False)
    write(df, dicts)
    assert keys_of(plain) is None
    want = analyze(Sample.from_frame(df, partition_count=5), compiled=True).to_dict()
    for path in (plain, dicts):
        for cols in (("partition",), ("partition", "key")):
            got = analyze(read_sample(path, columns=cols), compiled=True).to_dict()
            for d in (got, want):
                d["sample"].pop("sampled_at", None), d["sample"].pop("source", None)
            assert got == want


def test_keys_stay_in_the_file_until_asked_for(tmp_path):
    df = tricky_frame(20_000, seed=1)
    path = tmp_path / "s.parquet"
    write(df, path)
    s = read_sample(path, columns=("partition",))
    assert s.columns == list(read_sample(path).columns) and "key" not in s._df.columns
    analyze(s, compiled=True)
    assert "key" not in s._df.columns  # the analysis never loaded the key column
    full = Sample.from_frame(df, partition_count=5).df
    assert s.frame("key", "key_size")["key"].equals(full["key"])
    assert s.key_file() is None
    assert s.df.equals(read_sample(path).df)


def test_a_file_changed_under_the_reader_is_refused(tmp_path):
    df = tricky_frame(20_000, seed=3)
    path = tmp_path / "s.parquet"
    write(df, path)
    s = read_sample(path, columns=("partition",))
    write(tricky_frame(20_000, seed=4), path)
    with pytest.raises(InputError, match="changed while keyscope was reading"):
        analyze(s, compiled=True)


def test_dict_sum_kernel_equals_its_python_twin():
    rng = np.random.default_rng(9)
    n, D, P = 5_000, 300, 4
    idx = rng.integers(0, D, n).astype(np.int32)
    parts = rng.integers(0, P, n).astype(np.int32)
    sizes = rng.integers(0, 10_000, n).astype(np.int32)
    klen = rng.integers(0, 80, D).astype(np.int64)
    null = rng.random(n) < 0.1
    arr = pa.array(np.where(null, None, idx).tolist(), pa.int32()).slice(3)  # a bitmap that starts mid-byte
    bufs = arr.buffers()
    ix = np.frombuffer(bufs[1], np.int32, count=len(arr), offset=4 * arr.offset)
    valid = np.frombuffer(bufs[0], np.uint8)
    arrs = np.zeros((D * P, 3), np.int64)
    nrec, nbytes, nbsq = np.zeros(P, np.int64), np.zeros(P, np.int64), np.zeros(P)
    kt.dict_sum(ix, valid, arr.offset, parts[3:], sizes[3:], klen, P, arrs, nrec, nbytes, nbsq)
    bins, nulls = kt.reference_dict_sum([None if z else int(d) for d, z in zip(idx[3:], null[3:])], parts[3:],
                                        sizes[3:], klen, P)  # fmt: skip
    g, rec, byt, bsq = kt.dict_bins(arrs)
    assert {int(b): [int(r), int(y), float(q)] for b, r, y, q in zip(g, rec, byt, bsq)} == bins
    assert {int(p): [int(nrec[p]), int(nbytes[p]), float(nbsq[p])] for p in np.flatnonzero(nrec)} == nulls
    assert not arrs.any()  # cleared for the next chunk
    # no value sizes, no nulls: key bytes only
    kt.dict_sum(idx, np.zeros(0, np.uint8), 0, parts, np.zeros(0, np.int32), klen, P, arrs, nrec, nbytes, nbsq)
    bins, _ = kt.reference_dict_sum(idx.tolist(), parts, np.zeros(n, np.int64), klen, P)
    g, rec, byt, bsq = kt.dict_bins(arrs)
    assert {int(b): [int(r), int(y), float(q)] for b, r, y, q in zip(g, rec, byt, bsq)} == bins
    # global codes: entry d's bins at gcode[d] * P + p of a wider table, summed in place across calls;
    # the null rows' indices out of the dictionary (read only to prefetch, clamped: never a fault)
    gcode = rng.permutation(3 * D)[:D].astype(np.int64)
    wide = np.zeros((3 * D * P, 3), np.int64)
    ixg = ix.copy()
    ixg[null[3:]] = np.int32(2**31 - 1)
    nrec, nbytes, nbsq = np.zeros(P, np.int64), np.zeros(P, np.int64), np.zeros(P)
    for _ in range(2):
        kt.dict_sum(ixg, valid, arr.offset, parts[3:], sizes[3:], klen, P, wide, nrec, nbytes, nbsq, gcode=gcode)
    bins, nulls = kt.reference_dict_sum([None if z else int(d) for d, z in zip(idx[3:], null[3:])] * 2,
                                        [*parts[3:]] * 2, [*sizes[3:]] * 2, klen, P)  # fmt: skip
    want = {int(gcode[b // P]) * P + b % P: v for b, v in bins.items()}
    g, rec, byt, bsq = kt.dict_bins(wide)
    assert {int(b): [int(r), int(y), float(q)] for b, r, y, q in zip(g, rec, byt, bsq)} == want
    assert {int(p): [int(nrec[p]), int(nbytes[p]), float(nbsq[p])] for p in np.flatnonzero(nrec)} == nulls


def test_views_built_in_numpy_equal_pyarrows_cast_and_encoder_spans_chunks():
    keys = [b"", b"a", b"123456789012", b"1234567890123", b"x" * 40, "ü".encode() * 9, b"\x00" * 12, b"q" * 13]
    arr = pa.array(keys * 3, pa.binary()).slice(2)
    offs = np.frombuffer(arr.buffers()[1], np.int32)[arr.offset:arr.offset + len(arr) + 1]
    views = kpq._views(offs, arr.buffers()[2])
    assert views.to_pylist() == arr.cast(pa.binary_view()).to_pylist()
    got, ref = kpq.view_bytes(offs, arr.buffers()[2]), kpq.reference_view_bytes(offs, arr.buffers()[2])
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])  # the kernel and its numpy twin
    enc = kt.Encoder(16)
    a, b = pa.array(keys[:5], pa.binary()), pa.array(keys[3:], pa.binary())
    codes = np.concatenate([enc.add(a), enc.add(b)])
    whole, firsts = kt.encode(pl.Series(keys[:5] + keys[3:], dtype=pl.Binary))
    assert codes.tolist() == whole.tolist() and enc.firsts[:enc.ng].tolist() == firsts.tolist()


def test_analyze_cli_imports_neither_pandas_nor_pyarrow_compute(tmp_path):
    """pyarrow's to_numpy (with nulls), pa.array and casts pull in pandas / pyarrow.compute: 0.1-0.4 s cold."""
    df = tricky_frame(600_000, seed=6, n_keys=500)
    path = tmp_path / "s.parquet"
    write(df, path, row_group_size=200_000)
    code = ("import sys\nfrom keyscope.cli import main\ntry:\n    main(['analyze', sys.argv[1]])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('pandas', 'pyarrow.compute', 'pyarrow.dataset') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
