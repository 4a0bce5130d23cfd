"""What-if's unit tables read from a sample file's dictionary pages (keyscope.io.parquet.dictionary_codes) equal
the ones from the records read as columns and encoded (the path before whatif5), at every edge: nulls in keys
and fields, an empty file, many row groups, text keys, missing size columns, dictionary fallbacks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import keyscope.whatif.engine as scn
from keyscope._keytable import encode
from keyscope.advice import Constraints, recommend
from keyscope.io import parquet as kpq
from keyscope.sample import META_KEY, Sample, read_sample
from keyscope.whatif.engine import WhatIf
from keyscope.whatif.kernels import map_codes
from tests.test_scenarios import SCENARIOS, make_sample


def write(s: Sample, path, row_group_size: int = 1_500, drop=(), **kw) -> None:
    """``s`` as a keyscope sample file, in small row groups (so the read crosses many dictionaries)."""
    table = s.df.drop(list(drop)).to_arrow()
    table = table.replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    kw.setdefault("use_dictionary", True)
    pq.write_table(table, path, compression="zstd", row_group_size=row_group_size, **kw)


def codes_of(path, cols):
    s = read_sample(path, columns=("partition",))
    p, check, names = s.key_file()
    return kpq.dictionary_codes(p, check, cols, names, len(s), map_codes)


def assert_codes_equal_encode(path, cols=("key", "user_id", "region")):
    got = codes_of(path, list(cols))
    assert got is not None
    codes, values, size = got
    df = read_sample(path).df
    for c in cols:
        ref_codes, firsts = encode(df[c])
        assert np.array_equal(codes[c], ref_codes), c
        assert values[c].cast(pl.Binary).equals(df[c].cast(pl.Binary).gather(firsts), check_names=False), c
    ref_size = df.select(pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0))
    assert np.array_equal(size, ref_size.to_series().to_numpy().astype(np.int32))


def test_codes_equal_encode_with_nulls_and_many_row_groups(tmp_path):
    s = make_sample(seed=3, n=12_000, keys=900)  # null keys, null user_id values, binary and empty keys
    assert s.df["key"].null_count() and s.df["user_id"].null_count()
    path = tmp_path / "s.parquet"
    write(s, path)
    assert pq.ParquetFile(path).metadata.num_row_groups >= 8
    assert_codes_equal_encode(path)


def test_a_field_null_everywhere_and_a_row_group_of_null_keys(tmp_path):
    s = make_sample(seed=4, n=6_000, keys=200)
    df = s.df.with_columns(pl.lit(None, dtype=pl.String).alias("region"))
    df = df.with_columns(pl.when(pl.int_range(pl.len()) < 1_500).then(None).otherwise(pl.col("key")).alias("key"))
    df = df.with_columns(  # null and real value sizes
        pl.when(pl.int_range(pl.len()) % 7 == 0).then(None).otherwise(pl.int_range(pl.len()) % 500).alias("value_size")
    )
    path = tmp_path / "s.parquet"
    write(Sample.from_frame(df, partition_count=3), path)
    assert_codes_equal_encode(path)


def test_no_size_columns_text_keys(tmp_path):
    s = make_sample(seed=5, n=5_000, keys=300)
    path = tmp_path / "s.parquet"
    text = pl.Series("key", [k.decode("utf-8", "replace") if k is not None else None for k in s.df["key"].to_list()])
    table = s.df.drop("key_size", "value_size").with_columns(text).to_arrow()
    table = table.replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    pq.write_table(table, path, row_group_size=1_000)
    assert_codes_equal_encode(path)


def test_empty_file(tmp_path):
    s = make_sample(seed=6, n=2_000, keys=50)
    path = tmp_path / "s.parquet"
    write(Sample(s.df.head(0), s.meta), path)
    codes, values, size = codes_of(path, ["key", "region"])
    assert codes["key"].size == 0 and size.size == 0 and len(values["key"]) == 0 and len(values["region"]) == 0


def test_plain_encoded_keys_decline(tmp_path):
    path = tmp_path / "s.parquet"
    write(make_sample(seed=7, n=3_000, keys=100), path, use_dictionary=["partition", "region"])
    assert codes_of(path, ["key", "region"]) is None


def test_dictionary_fallback_pages_equal_or_decline(tmp_path):
    """A dictionary page over its size limit: the writer falls back to plain pages in that column chunk."""
    s = make_sample(seed=8, n=20_000, keys=15_000)
    path = tmp_path / "s.parquet"
    write(s, path, row_group_size=20_000, dictionary_pagesize_limit=2_000, data_page_size=2_000)
    got = codes_of(path, ["key", "region"])
    if got is not None:
        assert_codes_equal_encode(path, ("key", "region"))


def test_values_out_of_first_record_order_decline(tmp_path):
    """A dictionary not in first-record order (another writer): the row-order ids would differ, so None."""
    import pyarrow as pa

    n = 1_000
    keys = pa.array([b"b", b"a"] * (n // 2), pa.binary()).dictionary_encode()
    shuffled = pa.DictionaryArray.from_arrays(pa.array(1 - np.asarray(keys.indices), pa.int32()),
                                              pa.array([b"a", b"b"], pa.binary()))  # fmt: skip
    s = Sample.from_frame(pl.DataFrame({"partition": np.zeros(n, np.int32), "key": [b"b", b"a"] * (n // 2)}))
    table = s.df.to_arrow().set_column(3, "key", pa.chunked_array([shuffled]))
    table = table.replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    path = tmp_path / "s.parquet"
    pq.write_table(table, path)
    f = pq.ParquetFile(path, read_dictionary=["key"])
    assert f.read().column("key").chunk(0).dictionary.to_pylist() == [b"a", b"b"]  # first record: b"b"
    assert codes_of(path, ["key"]) is None


def test_offsets_at_rows(tmp_path):
    s = make_sample(seed=9, n=9_000, keys=100)
    path = tmp_path / "s.parquet"
    write(s, path, row_group_size=700)
    rows = np.sort(np.random.default_rng(1).choice(9_000, 2_000, replace=False))
    p, check, names = read_sample(path, columns=("partition",)).key_file()
    got = kpq.int64_at_rows(p, check, "offset", rows, 9_000)
    assert np.array_equal(got, s.df["offset"].to_numpy()[rows])
    assert kpq.int64_at_rows(p, check, "offset", rows[::-1], 9_000) is None  # not ascending: the caller reads it
    assert kpq.int64_at_rows(p, check, "offset", np.zeros(0, np.int64), 9_000).size == 0


def _equal(a, b):
    assert np.array_equal(a.records, b.records) and np.array_equal(a.bytes, b.bytes)
    assert (a.keys_total, a.keys_moved, a.keys_split, a.salted_keys) == (b.keys_total, b.keys_moved, b.keys_split,
                                                                         b.salted_keys)  # fmt: skip
    assert (a.skew, a.skew_low, a.skew_high, a.traffic_moved_share) == (b.skew, b.skew_low, b.skew_high,
                                                                        b.traffic_moved_share)  # fmt: skip


@pytest.mark.parametrize("row_group_size", [997, 1 << 20])
def test_whatif_from_the_file_equals_whatif_from_columns(monkeypatch, tmp_path, row_group_size):
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    s = make_sample(seed=10, n=8_000, keys=700)
    path = tmp_path / "s.parquet"
    write(s, path, row_group_size=row_group_size)
    fields = ("user_id", "region")
    columns = WhatIf(read_sample(path), group_fields=fields, record_fields=fields)  # keys read: encoded rows
    lazy = read_sample(path, columns=("partition",))
    from_file = WhatIf(lazy, group_fields=fields, record_fields=fields)
    assert "record-size" in from_file._cache and "record-size" not in columns._cache
    assert lazy.key_file() is not None  # the key column was never read
    for sc in SCENARIOS:
        _equal(columns.evaluate(sc), from_file.evaluate(sc))
    _equal(columns.today, from_file.today)
    a = recommend(read_sample(path), Constraints("none", max_partitions=8))
    b = recommend(read_sample(path, columns=("partition",)), Constraints("none", max_partitions=8))
    assert a.to_dict() == b.to_dict()


def test_whatif_cli_json_equal_either_way(monkeypatch, tmp_path):
    """The grid (keyscope whatif) on the file path, against the same run with the keys read as a column."""
    from keyscope.grid import Grid, run_whatif

    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    s = make_sample(seed=14, n=6_000, keys=400)
    path = tmp_path / "s.parquet"
    write(s, path)
    grid = Grid.parse(partitions=["6"], key_by=["key,region"], salt_hot=["1:8"])
    run = run_whatif(path, grid)
    assert "record-size" in run.whatif._cache
    monkeypatch.setattr(WhatIf, "_file_codes", lambda self, cols: None)  # the path before: columns encoded
    before = run_whatif(path, grid)
    assert "record-size" not in before.whatif._cache
    assert len(run.results) == len(before.results) >= 1
    for a, b in zip(run.results, before.results):
        _equal(a, b)


def test_map_codes_equals_its_reference():
    from keyscope.whatif import kernels

    rng = np.random.default_rng(2)
    seen_bad = seen_ok = 0
    for t in range(400):
        n, size = int(rng.integers(0, 60)), int(rng.integers(1, 7))
        ix = rng.integers(-1, size, n).astype(np.int32)
        if t % 2:  # first-row order (with nulls, -1, anywhere)
            top = -1
            for i in range(n):
                ix[i] = min(ix[i], top + 1)
                top = max(top, int(ix[i]))
        ids = rng.integers(0, 1_000, size).astype(np.int32)
        m0 = int(rng.integers(-1, 3))
        got, ref = np.empty(n, np.int32), np.empty(n, np.int32)
        r = kernels.map_codes(ix, ids, m0, got)
        assert r == kernels.REFERENCES["map_codes"](ix, ids, m0, ref)
        assert np.array_equal(got, ref)
        seen_bad += r == -2
        seen_ok += r != -2
    assert seen_bad and seen_ok


def test_too_wide_for_codes_falls_back_with_the_same_results(monkeypatch, tmp_path):
    """More cells than the coded tables hold: read from the file, then grouped as columns; same predictions."""
    import keyscope.whatif.tables as wt

    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    s = make_sample(seed=15, n=4_000, keys=300)
    path = tmp_path / "s.parquet"
    write(s, path)
    fields = ("user_id", "region")
    ref = WhatIf(read_sample(path), group_fields=fields, record_fields=fields)
    monkeypatch.setattr(wt, "MAX_CELLS", 4)
    wide = WhatIf(read_sample(path, columns=("partition",)), group_fields=fields, record_fields=fields)
    assert "record-size" not in wide._cache and "record-kid" not in wide._cache
    for sc in SCENARIOS:
        a, b = ref.evaluate(sc), wide.evaluate(sc)
        np.testing.assert_allclose(a.records, b.records, rtol=0, atol=1e-9)
        assert (a.keys_total, a.keys_moved, a.keys_split, a.salted_keys) == (b.keys_total, b.keys_moved,
                                                                             b.keys_split, b.salted_keys)  # fmt: skip
