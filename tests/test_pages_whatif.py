"""What-if's reads without pyarrow (keyscope.io.pages, keyscope.io.arrow_c) against pyarrow's, and their kernels
against their pure-Python twins.

The per-record dictionary codes (``page_codes``) and the hot records' offsets and sizes (``_page_at_rows``) read
from the pages equal pyarrow's paths in every layout keyscope's writer can produce; the DELTA_BINARY_PACKED
kernel equals the spec read value by value (pyarrow's streams and hand-made ones up to 64-bit widths) and
refuses every truncation; binary views come out of Polars and Binary goes into it with its nulls; damaged files
never crash; and a cold whatif and recommend import no pyarrow.
"""

from __future__ import annotations

import io
import os

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keyscope.io import arrow_c, pages
from keyscope.io import parquet as kpq
from keyscope.io.sample_format import parquet_options
from keyscope.sample import META_KEY, Sample, read_sample
from keyscope.whatif.kernels import map_codes
from tests.test_pages import _varint
from tests.test_scenarios import make_sample

# ---- the DELTA_BINARY_PACKED kernel -----------------------------------------------------------


_uleb = _varint  # (DELTA_BINARY_PACKED's varints are the hybrid stream's: ULEB128)


def _zz(v: int) -> int:
    return ((v << 1) ^ (v >> 63)) & (1 << 64) - 1


def _delta_stream(rng, values: list[int], block: int = 128, minis: int = 4) -> bytes:
    """``values`` (int64) as a DELTA_BINARY_PACKED stream, each miniblock at a random bit width that holds it
    (up to 64), unneeded miniblocks of the last block left out, their widths random bytes (as readers must
    accept)."""
    n, vpm = len(values), block // minis
    out = bytearray(_uleb(block) + _uleb(minis) + _uleb(n) + _uleb(_zz(values[0] if n else 0)))
    deltas = [(values[i] - values[i - 1]) & (1 << 64) - 1 for i in range(1, n)]
    deltas = [d - (1 << 64) if d >> 63 else d for d in deltas]
    for b in range(0, len(deltas), block):
        chunk = deltas[b:b + block]
        lo = min(chunk)
        out += _uleb(_zz(lo))
        parts, widths = [], []
        for m in range(minis):
            mb = [(d - lo) & (1 << 64) - 1 for d in chunk[m * vpm:(m + 1) * vpm]]
            if not mb:
                widths.append(int(rng.integers(0, 256)))  # not needed: any byte, no body
                continue
            bw = max(max(mb).bit_length(), int(rng.integers(0, 65)))
            widths.append(bw)
            mb += [0] * (vpm - len(mb))
            parts.append(sum(v << (i * bw) for i, v in enumerate(mb)).to_bytes(vpm * bw // 8, "little"))
        out += bytes(widths) + b"".join(parts)
    return bytes(out)


def _dbuf(b: bytes) -> np.ndarray:
    return np.frombuffer(b + bytes(pages.DELTA_PAD), np.uint8).copy()


@pytest.mark.parametrize("block,minis", [(128, 4), (256, 8), (128, 1), (128, 16)])
def test_delta_kernel_equals_its_python_twin(block, minis):
    rng = np.random.default_rng(block + minis)
    for n in (0, 1, 2, 33, 128, 129, 1000):
        for kind in range(4):
            if kind == 0:
                v = np.cumsum(rng.integers(0, 5, n))
            elif kind == 1:
                v = rng.integers(-(1 << 63), (1 << 63) - 1, n, dtype=np.int64)
            elif kind == 2:
                v = np.full(n, -7)
            else:
                v = np.cumsum(rng.integers(-(1 << 40), 1 << 40, n))
            values = [int(x) for x in np.asarray(v, np.int64)]
            src = _delta_stream(rng, values, block, minis)
            ref, used = pages.reference_delta(src, n)
            assert ref == values and used == len(src)
            out = np.empty(n, np.int64)
            assert pages.delta(_dbuf(src), 0, len(src), out) == used
            assert out.tolist() == values


def test_delta_kernel_reads_pyarrows_streams_and_refuses_every_truncation():
    rng = np.random.default_rng(3)
    for values in (np.cumsum(rng.integers(0, 3, 3000)), rng.integers(-(1 << 62), 1 << 62, 700), np.arange(0)):
        buf = io.BytesIO()
        pq.write_table(pa.table({"x": pa.array(values, pa.int64())}), buf, compression="none", use_dictionary=False,
                       column_encoding={"x": "DELTA_BINARY_PACKED"}, data_page_version="2.0",
                       write_statistics=False)  # fmt: skip
        raw = buf.getvalue()
        fd_path = f"/tmp/keyscope-delta-{os.getpid()}.parquet"
        with open(fd_path, "wb") as f:
            f.write(raw)
        fd = os.open(fd_path, os.O_RDONLY)
        try:
            ch = pages.read_footer(fd, len(raw)).row_groups[0][1][0] if len(values) else None
        finally:
            os.close(fd)
            os.unlink(fd_path)
        if ch is None:
            continue
        ph, h = pages.page_header(raw[ch.start:ch.start + ch.size])
        body = raw[ch.start + h + ph[8].get(5, 0):ch.start + h + ph[3]]
        n = len(values)
        out = np.empty(n, np.int64)
        assert pages.delta(_dbuf(body), 0, len(body), out) == len(body)
        assert out.tolist() == values.tolist() == pages.reference_delta(body, n)[0]
        for cut in range(len(body)):
            with pytest.raises(pages.Unsupported):
                pages.delta(_dbuf(body[:cut]), 0, cut, np.empty(n, np.int64))
            with pytest.raises(pages.Unsupported):
                pages.reference_delta(body[:cut], n)
        with pytest.raises(pages.Unsupported):  # another count than the header's
            pages.delta(_dbuf(body), 0, len(body), np.empty(n + 1, np.int64))


def test_delta_kernel_refuses_headers_it_does_not_read():
    ok = _uleb(128) + _uleb(4) + _uleb(1) + _uleb(2)
    assert pages.reference_delta(ok, 1) == ([1], len(ok))
    for bad in (_uleb(100) + _uleb(4) + _uleb(1) + _uleb(2),  # block size not a multiple of 128
                _uleb(128) + _uleb(0) + _uleb(1) + _uleb(2),  # no miniblock
                _uleb(128) + _uleb(3) + _uleb(1) + _uleb(2),  # 128 / 3
                _uleb(128) + _uleb(32) + _uleb(1) + _uleb(2),  # 4 values a miniblock
                b"\xff" * 11,  # a varint over 10 bytes
                _uleb(128) + _uleb(4) + _uleb(3) + _uleb(2) + _uleb(0) + bytes([65, 0, 0, 0]) + bytes(300)):  # width 65
        with pytest.raises(pages.Unsupported):
            pages.delta(_dbuf(bad), 0, len(bad), np.empty(1 if len(bad) < 20 else 3, np.int64))
        with pytest.raises(pages.Unsupported):
            pages.reference_delta(bad, 1 if len(bad) < 20 else 3)


# ---- files -------------------------------------------------------------------------------------

LAYOUTS = {
    "keyscope": {},
    "v2 pages": {"data_page_version": "2.0"},
    "uncompressed": {"compression": "none"},
    "small pages": {"data_page_size": 600},
    "v2 uncompressed small": {"data_page_version": "2.0", "compression": "none", "data_page_size": 900},
    "plain offsets": {"column_encoding": {"timestamp": "DELTA_BINARY_PACKED"}},
}


def _write(s: Sample, path, row_group_size: int = 1_700, drop=(), **kw) -> None:
    table = s.df.drop(list(drop)).to_arrow().replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    opts = parquet_options([c for c in s.df.columns if c not in ("partition", "offset", "timestamp", "key",
                                                                  "key_size", "value_size")])  # fmt: skip
    opts.update(kw)
    pq.write_table(table, path, row_group_size=row_group_size, **opts)


def _timed(s: Sample, seed: int) -> Sample:
    """``s`` with timestamps (make_sample leaves them null): rising per record, with jitter."""
    rng = np.random.default_rng(seed)
    ms = 1_764_000_000_000 + np.cumsum(rng.integers(0, 40, len(s.df))) - rng.integers(0, 500, len(s.df))
    df = s.df.with_columns(pl.Series("timestamp", ms).cast(pl.Datetime("ms", "UTC")))
    return Sample.from_frame(df, partition_count=3)


def _key_file(path):
    s = read_sample(path, columns=("partition",))
    p, check, names = s.key_file()
    return p, check, names, len(s)


def _codes_equal(a, b) -> None:
    assert a is not None and b is not None
    for x, y in zip(a[:1] + a[2:], b[:1] + b[2:]):
        if isinstance(x, dict):
            assert x.keys() == y.keys() and all(np.array_equal(x[c], y[c]) for c in x)
        else:
            assert np.array_equal(x, y)
    assert a[1].keys() == b[1].keys() and all(a[1][c].equals(b[1][c]) for c in a[1])


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_codes_offsets_and_sizes_from_the_pages_equal_pyarrows(tmp_path, layout):
    s = _timed(make_sample(seed=21, n=9_000, keys=600), 1)  # null keys and fields, binary and empty keys
    path = tmp_path / "s.parquet"
    _write(s, path, **LAYOUTS[layout])
    p, check, names, n = _key_file(path)
    cols = ["key", "user_id", "region"]
    got = kpq.page_codes(p, check, cols, names, n, map_codes)
    _codes_equal(got, kpq._arrow_codes(p, check, cols, names, n, map_codes))
    rows = np.sort(np.random.default_rng(2).choice(n, 2_500, replace=False))
    f = kpq._open_checked(p, n)
    want = kpq._at_rows(f, p, rows, [kpq._int64_reader(f, "offset"), kpq._sizes_reader(f, p)])
    off, size = kpq._page_at_rows(p, check, rows, n, True, True)
    assert np.array_equal(off, want[0]) and np.array_equal(size, want[1])
    assert np.array_equal(off, s.df["offset"].to_numpy()[rows])
    assert kpq._page_at_rows(p, check, rows, n, False, True)[0] is None
    assert kpq._page_at_rows(p, check, np.zeros(0, np.int64), n, True, True)[0].size == 0
    assert kpq._page_at_rows(p, check, np.array([n]), n, True, True) == (None, None)  # a row past the file
    fd = os.open(p, os.O_RDONLY)
    try:
        ft = pages.read_footer(fd, os.fstat(fd).st_size)
        with pages.Reader(fd, ft) as r:
            pf = pq.ParquetFile(p)
            for g in range(len(ft.row_groups)):
                t = pf.read_row_group(g, columns=["offset", "timestamp"])
                assert r.int64(g, "offset").tolist() == t["offset"].to_pylist()
                ts = t["timestamp"].cast(pa.int64()).to_pylist()
                assert r.int64(g, "timestamp").tolist() == ts
    finally:
        os.close(fd)


def test_nulls_no_size_columns_and_an_empty_file(tmp_path):
    s = make_sample(seed=22, n=5_000, keys=300)
    offs = pl.when(pl.int_range(pl.len()) == 4_321).then(None).otherwise(pl.col("offset")).alias("offset")
    df = s.df.with_columns(offs)
    path = tmp_path / "nulls.parquet"
    _write(Sample.from_frame(df, partition_count=3), path)
    p, check, names, n = _key_file(path)
    rows = np.arange(0, n, 7)
    assert kpq._page_at_rows(p, check, rows, n, True, True) is None  # a null offset: left to pyarrow, which...
    off, size = kpq.offsets_and_sizes_at_rows(p, check, rows, n)
    assert off is None and size is not None  # ...gives the sizes and says no to the offsets
    path = tmp_path / "nosize.parquet"
    _write(s, path, drop=("key_size", "value_size"))
    p, check, names, n = _key_file(path)
    _codes_equal(kpq.page_codes(p, check, ["key", "region"], names, n, map_codes),
                 kpq._arrow_codes(p, check, ["key", "region"], names, n, map_codes))  # fmt: skip
    assert kpq._page_at_rows(p, check, rows, n, True, True) is None  # sizes asked, no key_size
    assert kpq._page_at_rows(p, check, rows, n, True, False)[1] is None
    path = tmp_path / "empty.parquet"
    _write(Sample(s.df.head(0), s.meta), path)
    p, check, names, n = _key_file(path)
    codes, values, size = kpq.page_codes(p, check, ["key", "region"], names, n, map_codes)
    assert codes["key"].size == 0 and size.size == 0 and len(values["key"]) == 0


def test_out_of_order_dictionaries_and_plain_keys_decline(tmp_path):
    s = make_sample(seed=23, n=3_000, keys=100)
    path = tmp_path / "plain.parquet"
    _write(s, path, use_dictionary=["partition", "region"])
    p, check, names, n = _key_file(path)
    assert kpq.page_codes(p, check, ["key", "region"], names, n, map_codes) is None
    assert kpq.dictionary_codes(p, check, ["key", "region"], names, n, map_codes) is None
    n = 1_000
    shuffled = pa.DictionaryArray.from_arrays(pa.array([1, 0] * (n // 2), pa.int32()), pa.array([b"a", b"b"]))
    t = Sample.from_frame(pl.DataFrame({"partition": np.zeros(n, np.int32), "key": [b"b", b"a"] * (n // 2)}))
    table = t.df.to_arrow().set_column(3, "key", pa.chunked_array([shuffled]))
    table = table.replace_schema_metadata({META_KEY.encode(): t.meta.to_json().encode()})
    path = tmp_path / "order.parquet"
    pq.write_table(table, path)
    p, check, names, n = _key_file(path)
    assert kpq.page_codes(p, check, ["key"], names, n, map_codes) is None


def test_damaged_files_never_crash_and_agree_or_decline(tmp_path):
    """Bytes of the offset and key chunks flipped: the pages refuse (Unsupported: pyarrow's path then reads, or
    raises its InputError) or give every row; nothing crashes."""
    s = make_sample(seed=24, n=6_000, keys=400)
    path = tmp_path / "s.parquet"
    _write(s, path, row_group_size=3_000)
    raw = path.read_bytes()
    fd = os.open(path, os.O_RDONLY)
    try:
        ft = pages.read_footer(fd, len(raw))
    finally:
        os.close(fd)
    rows = np.arange(0, 6_000, 3)
    starts = [ft.row_groups[0][1][ft.index(c)].start for c in ("offset", "key", "key_size")]
    spots = [*(range(a, a + 120) for a in starts)]
    rng = np.random.default_rng(4)
    declined = 0
    for at in [*spots[0], *spots[1], *spots[2], *rng.integers(0, len(raw) - 8, 40)]:
        bad = bytearray(raw)
        bad[int(at)] ^= 0xFF
        p = tmp_path / "bad.parquet"
        p.write_bytes(bytes(bad))
        names = {"partition", "offset", "timestamp", "key", "key_size", "value_size", "user_id", "region"}
        try:
            got = kpq._page_at_rows(p, lambda: None, rows, 6_000, True, True)
            codes = kpq.page_codes(p, lambda: None, ["key", "region"], names, 6_000, map_codes)
        except kpq.InputError:
            declined += 1
            continue
        if got is None or codes is None:
            declined += 1
        if got is not None:
            assert got[0].size == got[1].size == rows.size
        if codes is not None:
            assert codes[0]["key"].size == 6_000 and int(codes[0]["key"].max()) < len(codes[1]["key"])
    assert declined > 20


# ---- binary views out of Polars, Binary into it ----------------------------------------------


def test_binary_parts_equal_pyarrows_and_series_keep_their_nulls():
    rng = np.random.default_rng(5)
    vals = [None if rng.random() < 0.1 else bytes(rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8))
            for _ in range(4_000)]  # fmt: skip
    s = pl.Series(vals, dtype=pl.Binary)
    cases = [s, pl.concat([s.slice(3, 999), s.slice(2_000, 1_500)], rechunk=False), s.slice(7, 100),
             pl.Series([], dtype=pl.Binary), pl.Series(["a", None, "héllo, a long enough string"]), s.fill_null(b"")]
    assert cases[1].n_chunks() == 2
    from keyscope.whatif.tables import _series

    for ser in cases:
        off, data = arrow_c.binary_parts(ser)
        want = ser.cast(pl.Binary).to_list()
        assert [bytes(data[off[i]:off[i + 1]]) if w is not None else None for i, w in enumerate(want)] == want
        assert all(off[i + 1] == off[i] for i, w in enumerate(want) if w is None)
        arr = ser.cast(pl.Binary).to_arrow(compat_level=pl.CompatLevel.oldest())  # pyarrow's layout
        assert np.array_equal(off, np.frombuffer(arr.buffers()[1], np.int64)[arr.offset:arr.offset + len(arr) + 1])
        valid = np.array([w is not None for w in want], bool)
        back = _series("x", off, data, valid)
        assert back.name == "x" and back.to_list() == want and back.null_count() == int((~valid).sum())
        del back  # (Polars may keep the long values' buffer until then)
        assert arrow_c.alive() == 0


# ---- cold commands -----------------------------------------------------------------------------


def test_a_cold_whatif_and_recommend_of_a_keyscope_file_never_import_pyarrow(tmp_path):
    """Codes, hot records and composite keys read without pyarrow (the prefetch and the compiled paths on at
    this size); a snappy file is read by pyarrow: the check sees an import when there is one."""
    s = make_sample(seed=25, n=12_000, keys=500)
    from tests.coldcli import run_watching

    patches = ("from keyscope.io import prefetch\nimport keyscope.whatif.engine as engine\n"
               "prefetch.CODES_MIN_ROWS = 0\nengine.COMPILED_MIN_ROWS = 1\n")  # fmt: skip
    for kw, imported in (({}, False), ({"compression": "snappy"}, True)):
        path = tmp_path / f"s{len(kw)}.parquet"
        _write(s, path, **kw)
        for args in (["whatif", str(path), "--partitions", "6", "--key-by", "key,region", "--salt-hot", "1:8"],
                     ["recommend", str(path)]):
            out, got = run_watching("pyarrow", args, patches)
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip()
            assert got == imported, (args, out.stderr)


@pytest.mark.parametrize("readers", [1, 2, 3, 4])
def test_the_read_ahead_keeps_order_and_never_reuses_a_reader_in_use(readers):
    """``fetch`` of each group in order; a reader fetches again only once the caller is done with the group
    it fetched before (its buffers are reused), whatever the depth."""
    import threading
    import time

    held: set = set()
    lock = threading.Lock()
    seen = []

    def fetch(r, g):
        time.sleep(0.002)  # (by then the caller holds what it was handed)
        with lock:
            assert r not in held, (r, g)
        return r, g

    for r, g in kpq._read_ahead(list(range(11)), list(range(readers)), fetch):
        with lock:
            held.add(r)
        seen.append(g)
        assert r == g % readers
        time.sleep(0.006)
        with lock:
            held.discard(r)
    assert seen == list(range(11))
