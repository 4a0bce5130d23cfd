"""keyscope.io.pages (the Parquet reader without pyarrow) against pyarrow, and its kernels against their twins.

Files written by pyarrow as keyscope writes them and in the other layouts its writer can produce (data
pages v2, no compression, nulls, many small pages), each column's indices and values compared with what
pyarrow reads; layouts outside the reader's scope (another codec, pages that fell back to PLAIN, a damaged
chunk) must raise Unsupported, so the caller reads with pyarrow.  Then the key table summed from the pages
equals pyarrow's, keys reach Polars through the C data interface, and a cold analyze imports no pyarrow.
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from keyscope import _kernels
from keyscope.io import arrow_c, pages
from keyscope.io import parquet as kpq
from keyscope.io.sample_format import parquet_options
from keyscope.sample import META_KEY, Sample

from .test_analysis_scan import tricky_frame


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _stream(rng, bw: int, n: int) -> tuple[bytes, list[int]]:
    """A random RLE / bit-packed hybrid stream of ``n`` values (at least) of width ``bw``, and its values."""
    out, vals = bytearray(), []
    top = 1 << bw
    while len(vals) < n:
        if rng.random() < 0.5:  # an RLE run
            c = int(rng.integers(1, 300))
            v = int(rng.integers(0, top))
            out += _varint(c << 1) + v.to_bytes((bw + 7) // 8, "little")
            vals += [v] * c
        else:
            g = int(rng.integers(1, 40))
            vs = [int(x) for x in rng.integers(0, top, 8 * g, dtype=np.uint64)]
            bits = sum(v << (i * bw) for i, v in enumerate(vs))
            out += _varint((g << 1) | 1) + bits.to_bytes(g * bw, "little")
            vals += vs
    return bytes(out), vals


def _buf(b: bytes) -> np.ndarray:
    return np.frombuffer(b + bytes(pages.PAD), np.uint8).copy()


@pytest.mark.parametrize("bw", [0, 1, 2, 3, 7, 8, 9, 16, 17, 24, 31, 32])
def test_hybrid_kernel_equals_its_python_twin(bw):
    rng = np.random.default_rng(bw)
    for n in (1, 7, 8, 9, 1000, 5000):
        src, vals = _stream(rng, bw, n)
        ref, used = pages.reference_hybrid(src, bw, n)
        assert ref == vals[:n]
        out = np.empty(n, np.int32)
        got = pages.hybrid(_buf(src), 0, len(src), bw, out)
        assert out.view(np.uint32).tolist() == ref and got == used
        if bw <= 12:  # through a dictionary of values
            table = rng.integers(-(2**31), 2**31, 1 << bw, dtype=np.int64).astype(np.int32)
            pages.hybrid(_buf(src), 0, len(src), bw, out, table)
            assert out.tolist() == [int(table[v]) for v in ref]


def test_hybrid_refuses_what_is_malformed():
    rng = np.random.default_rng(3)
    src, vals = _stream(rng, 5, 500)
    out = np.empty(len(vals) + 1, np.int32)
    for bad in (src[:-1] if src[-1] else src[:-2], b"", b"\x00\x05"):  # truncated, empty, a run of none
        with pytest.raises(pages.Unsupported):
            pages.hybrid(_buf(bad), 0, len(bad), 5, out)
        with pytest.raises(pages.Unsupported):
            pages.reference_hybrid(bad, 5, len(out))
    with pytest.raises(pages.Unsupported):  # wider than 32 bits
        pages.hybrid(_buf(src), 0, len(src), 33, out[:1])
    with pytest.raises(pages.Unsupported):  # a value past the dictionary
        pages.hybrid(_buf(src), 0, len(src), 5, out[:len(vals)], entries=max(vals))
    pages.hybrid(_buf(src), 0, len(src), 5, out[:len(vals)], entries=max(vals) + 1)


def test_plain_binary_kernel_equals_its_python_twin():
    rng = np.random.default_rng(5)
    values = [bytes(rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8)) for _ in range(2000)]
    src = b"".join(len(v).to_bytes(4, "little") + v for v in values)
    assert pages.reference_plain_binary(src, len(values)) == values
    offs, data = pages.plain_binary(_buf(src), 0, len(src), len(values))
    assert kpq.Binary(offs.astype(np.int64), data).to_pylist() == values
    for bad in (src[:-1], src[:3]):
        with pytest.raises(pages.Unsupported):
            pages.plain_binary(_buf(bad), 0, len(bad), len(values))
        with pytest.raises(pages.Unsupported):
            pages.reference_plain_binary(bad, len(values))


def _frame(n: int, seed: int, nulls: bool) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    keys = [f"k{int(x)}".encode() for x in rng.zipf(1.3, n) % 5000]
    vs = rng.integers(0, 4000, n).astype(np.int32)
    df = pl.DataFrame({"partition": rng.integers(0, 7, n).astype(np.int32), "key": pl.Series(keys, dtype=pl.Binary),
                       "value_size": vs})  # fmt: skip
    if nulls:
        df = df.with_columns(
            pl.when(pl.Series(rng.random(n) < 0.1)).then(None).otherwise(pl.col("key")).alias("key"),
            pl.when(pl.Series(rng.random(n) < 0.05)).then(None).otherwise(pl.col("value_size")).alias("value_size"),
        )
    return df


def _write(df: pl.DataFrame, path, **kw) -> None:
    s = Sample.from_frame(df, partition_count=7)
    table = s.df.to_arrow().replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    opts = parquet_options([])
    opts.update(kw)
    pq.write_table(table, path, row_group_size=6_000, **opts)


LAYOUTS = {
    "keyscope": {},
    "v2 pages": {"data_page_version": "2.0"},
    "uncompressed": {"compression": "none"},
    "small pages": {"data_page_size": 512},
    "v2 uncompressed small": {"data_page_version": "2.0", "compression": "none", "data_page_size": 700},
}


def _footer(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return fd, pages.read_footer(fd, os.fstat(fd).st_size)
    except BaseException:
        os.close(fd)
        raise


@pytest.mark.parametrize("nulls", [False, True], ids=["no nulls", "nulls"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_columns_read_from_the_pages_equal_pyarrows(tmp_path, layout, nulls):
    path = tmp_path / "s.parquet"
    _write(_frame(20_000, 7, nulls), path, **LAYOUTS[layout])
    f = pq.ParquetFile(path, read_dictionary=["key"])
    fd, ft = _footer(path)
    try:
        assert ft.num_rows == f.metadata.num_rows and [c.name for c in ft.columns] == f.schema_arrow.names
        assert ft.int32_range("partition") == (0, 6)
        assert ft.metadata[META_KEY.encode()] == f.metadata.metadata[META_KEY.encode()]
        with pages.Reader(fd, ft) as r:
            for g in range(f.metadata.num_row_groups):
                t = f.read_row_group(g, columns=["partition", "key", "value_size"])
                assert r.column(g, "partition", values=True).indices.tolist() == t["partition"].to_pylist()
                vs = r.column(g, "value_size", values=True)
                assert vs.indices.tolist() == [v or 0 for v in t["value_size"].to_pylist()]
                assert vs.nulls == t["value_size"].null_count
                k = r.column(g, "key")
                keys = kpq.Binary(*(lambda o, d: (o.astype(np.int64), d))(
                    *pages.plain_binary(k.dictionary, 0, k.dictionary.size, k.entries))).to_pylist()
                want = t["key"].to_pylist()
                valid = np.unpackbits(k.valid, count=t.num_rows, bitorder="little") if k.nulls else None
                got = [keys[i] if valid is None or valid[j] else None for j, i in enumerate(k.indices.tolist())]
                assert got == want and k.nulls == t["key"].null_count
                if k.nulls:
                    assert (k.indices[valid == 0] == 0).all()
    finally:
        os.close(fd)
    names = set(f.schema_arrow.names)
    got = kpq.page_sums(path, lambda: None, 7, names)
    want = kpq._arrow_sums(path, lambda: None, 7, names)
    assert got is not None
    for a, b in zip(got, want):
        assert a.to_pylist() == b.to_pylist() if isinstance(a, kpq.Binary) else np.array_equal(a, b)


@pytest.mark.parametrize("kw", [{"compression": "snappy"}, {"dictionary_pagesize_limit": 64}, {"use_dictionary": False}],
                         ids=["snappy", "dictionary fell back to PLAIN", "no dictionary"])
def test_layouts_outside_the_scope_are_left_to_pyarrow(tmp_path, kw):
    path = tmp_path / "s.parquet"
    _write(_frame(20_000, 8, True), path, **kw)
    names = set(pq.ParquetFile(path).schema_arrow.names)
    assert kpq.page_sums(path, lambda: None, 7, names) is None
    got, want = kpq.dictionary_sums(path, lambda: None, 7, names), kpq._arrow_sums(path, lambda: None, 7, names)
    assert (got is None) == (want is None)
    if got is not None:
        assert all(a.to_pylist() == b.to_pylist() if isinstance(a, kpq.Binary) else np.array_equal(a, b)
                   for a, b in zip(got, want))


def test_damaged_files_raise_unsupported_or_count_every_row_and_never_crash(tmp_path):
    path = tmp_path / "s.parquet"
    _write(_frame(20_000, 9, False), path)
    raw = path.read_bytes()
    names = {"partition", "key", "value_size"}
    fd, ft = _footer(path)
    os.close(fd)
    start = ft.row_groups[0][1][ft.index("key")].start
    rng = np.random.default_rng(1)
    refused = 0
    for at in [*rng.integers(start, start + 3000, 25), *rng.integers(0, len(raw) - 8, 25)]:
        bad = bytearray(raw)
        bad[int(at)] ^= 0xFF
        p = tmp_path / "bad.parquet"
        p.write_bytes(bytes(bad))
        try:
            got = kpq.page_sums(p, lambda: None, 7, names)
        except kpq.InputError:  # (a flipped partition beyond the partition count: the arrow path says the same)
            refused += 1
            continue
        if got is None:
            refused += 1
            continue
        # (no checksum: a flipped index byte reads as another index, and two readers may differ on a stream
        # that breaks the spec; what must hold is a table of every row, and pyarrow's path not crashing)
        assert int(got[1].sum()) + int(got[5].sum()) == 20_000
        try:
            kpq._arrow_sums(p, lambda: None, 7, names)
        except kpq.InputError:
            pass
    assert refused > 10
    # the page headers hit on purpose: each of the first key chunk's first 200 bytes flipped in turn
    for at in range(start, start + 200):
        bad = bytearray(raw)
        bad[at] ^= 0xFF
        p = tmp_path / "hdr.parquet"
        p.write_bytes(bytes(bad))
        try:
            got = kpq.page_sums(p, lambda: None, 7, names)
        except kpq.InputError:
            continue
        assert got is None or int(got[1].sum()) + int(got[5].sum()) == 20_000
    for cut in (len(raw) - 3, 100, 10):
        p = tmp_path / "cut.parquet"
        p.write_bytes(raw[:cut])
        assert kpq.page_sums(p, lambda: None, 7, names) is None


def test_binary_reaches_polars_through_the_c_interface_and_is_released():
    keys = [b"", b"a", b"x" * 40, "ü".encode() * 9, b"\x00" * 12]
    offs = np.concatenate([[0], np.cumsum([len(k) for k in keys])]).astype(np.int64)
    b = kpq.Binary(offs, np.frombuffer(b"".join(keys), np.uint8).copy())
    before = arrow_c.alive()
    s = pl.Series("key", b, dtype=pl.Binary)
    assert s.to_list() == keys
    del s
    caps = b.__arrow_c_array__()  # never imported: released when the capsules go
    assert arrow_c.alive() > before
    del caps
    assert arrow_c.alive() == before
    assert pl.Series("k", kpq.Binary(np.zeros(1, np.int64), np.zeros(0, np.uint8)), dtype=pl.Binary).len() == 0


@pytest.mark.parametrize("name", ["murmur2", "consistent", "fnv1a", "kafkajs_legacy"])
def test_hashing_polars_own_views_equals_hashing_pyarrows(name):
    rng = np.random.default_rng(2)
    keys = [None if i % 17 == 0 else bytes(rng.integers(0, 256, int(rng.integers(0, 30)), dtype=np.uint8))
            for i in range(5000)]
    s = pl.concat([pl.Series("k", keys[:2000], dtype=pl.Binary), pl.Series("k", keys[2000:], dtype=pl.Binary)],
                  rechunk=False)  # fmt: skip
    assert s.n_chunks() == 2
    for series in (s, s.slice(3, 4000), pl.Series("k", [k.hex() if k else None for k in keys])):
        got, empties = _kernels.hash_binary(series, name, count_empty=True)
        want, wempties = _kernels.hash_arrow(series.to_arrow(), name, count_empty=True)
        assert np.array_equal(got, want) and empties == wempties
    assert _kernels.hash_binary(pl.Series("k", [], dtype=pl.Binary), name).size == 0


def test_a_cold_analyze_of_a_keyscope_file_never_imports_pyarrow(tmp_path):
    """The prefetch thread (on at any size here) and the main thread read the sample without pyarrow; a file
    outside the reader's scope (snappy) is read by pyarrow: the check sees an import when there is one."""
    frame = tricky_frame(30_000, seed=3).select("partition", "key", "value_size")
    from .coldcli import run_watching

    for kw, imported in (({}, False), ({"compression": "snappy"}, True)):
        path = tmp_path / f"s{len(kw)}.parquet"
        _write(frame, path, **kw)
        out, got = run_watching("pyarrow", ["analyze", str(path)], "from keyscope.io import prefetch\n"
                                "prefetch.MIN_ROWS = 0\n", timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert "hot keys" in out.stdout
        assert got == imported, out.stderr


def test_a_null_partition_or_a_stop_ends_the_read_ahead_cleanly(tmp_path):
    """The read-ahead thread is joined whichever way the sum ends: a null partition (left to pyarrow's path,
    which counts it as 0), a stop between row groups, an out-of-range partition."""
    import threading

    before = set(threading.enumerate())
    path = tmp_path / "s.parquet"
    df = _frame(20_000, 10, False)
    table = Sample.from_frame(df, partition_count=7).df.to_arrow()
    part = table["partition"].to_pylist()
    part[15_000] = None  # in the third row group
    table = table.set_column(0, "partition", pa_array(part))
    pq.write_table(table, path, row_group_size=6_000, **parquet_options([]))
    names = set(table.column_names)
    assert kpq.page_sums(path, lambda: None, 7, names) is None
    got, want = kpq.dictionary_sums(path, lambda: None, 7, names), kpq._arrow_sums(path, lambda: None, 7, names)
    assert all(a.to_pylist() == b.to_pylist() if isinstance(a, kpq.Binary) else np.array_equal(a, b)
               for a, b in zip(got, want))
    stop = threading.Event()
    stop.set()
    with pytest.raises(kpq.Stopped):
        kpq.page_sums(path, lambda: None, 7, names, stop=stop)
    with pytest.raises(kpq.InputError, match="out of range"):
        kpq.page_sums(path, lambda: None, 5, names)
    assert [t for t in threading.enumerate() if t not in before and t.is_alive()] == []


def pa_array(values):
    import pyarrow as pa

    return pa.array(values, pa.int32())


def test_views_kernel_equals_its_numpy_twin():
    rng = np.random.default_rng(11)
    for n in (0, 1, 5, 3000):
        values = [bytes(rng.integers(0, 256, int(rng.integers(0, 30)), dtype=np.uint8)) for _ in range(n)]
        offs = np.concatenate([[0], np.cumsum([len(v) for v in values])]).astype(np.int32)
        data = np.frombuffer(b"".join(values), np.uint8).copy()
        got, ref = kpq.view_bytes(offs, data), kpq.reference_view_bytes(offs, data)
        assert np.array_equal(got[0], ref[0])
        assert got[1][:data.size].tobytes() == data.tobytes() and not got[1][data.size:].any()
        assert got[1].size >= data.size + 16
