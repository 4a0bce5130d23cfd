"""What-if's compiled unit tables (dictionary codes + per-key dense group-by) equal the value group-by."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import keyscope.whatif.engine as scn
import keyscope.whatif.tables as wt
from keyscope._keytable import encode
from keyscope.whatif.engine import WhatIf
from tests.test_analysis_scan import tricky_frame
from tests.test_scenarios import SCENARIOS, assert_matches, make_sample

SIZE = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)


@pytest.mark.parametrize("cap", [16, 1 << 10])
def test_encode_is_an_exact_dictionary(cap):
    """Every key layout (null, empty, inline, 13-16 bytes, long, binary), several chunks, a table that must grow."""
    keys = tricky_frame(20_000, seed=3)["key"]
    keys = pl.concat([keys.head(7_000), keys.slice(7_000)], rechunk=False)  # two chunks
    codes, firsts = encode(keys, cap=cap)
    assert codes.dtype == np.int32 and len(codes) == len(keys)
    assert ((codes < 0) == keys.is_null().to_numpy()).all()
    dictionary = keys.gather(firsts)
    assert dictionary.null_count() == 0 and dictionary.n_unique() == len(firsts) == keys.drop_nulls().n_unique()
    assert (firsts == np.sort(firsts)).all()  # first-seen order
    back = pl.concat([dictionary, pl.Series([None], dtype=pl.Binary)]).gather(np.where(codes < 0, len(firsts), codes))
    assert back.equals(keys.rechunk())


def test_encode_string_column_with_nulls():
    s = pl.Series("user_id", ["aé", None, "b", "aé", "", None, "x" * 30, "b", "x" * 30])
    codes, firsts = encode(s)
    assert codes.tolist() == [0, -1, 1, 0, 2, -1, 3, 1, 3]
    assert s.gather(firsts).to_list() == ["aé", "b", "", "x" * 30]


def _value_tables(df, sets):
    out = []
    for fs in sets:
        cols = ["partition", "key", *fs]
        out.append(df.group_by(cols).agg(pl.len().cast(pl.Int64).alias("n"), SIZE.sum().alias("b")))
    return out


@pytest.mark.parametrize("dense_cells", [wt.DENSE_CELLS, 1])
def test_coded_tables_equal_value_group_by(monkeypatch, dense_cells):
    """Null keys and fields, non-UTF-8 keys; dense tables and the sort by key; kid matches the key index."""
    monkeypatch.setattr(wt, "DENSE_CELLS", dense_cells)
    df = make_sample(seed=8, n=6_000, keys=800).df
    sets = [("user_id",), ("region",), ("user_id", "region")]
    key_index, tables, record_kid = wt.group_by_codes(df, sets, 3)
    refs = _value_tables(df, [(), *sets])
    assert len(tables) == len(refs)
    for fs, got, ref in zip([(), *sets], tables, refs):
        cols = ["partition", "key", *fs]
        assert got.columns == [*cols, "n", "b", "kid"]
        assert got.height == ref.height
        assert got.select(ref.columns).sort(cols, nulls_last=True).equals(ref.sort(cols, nulls_last=True))
        joined = got.drop_nulls("key").join(key_index, on="key", how="left", suffix="_ix")
        assert (joined["kid"] == joined["kid_ix"]).all()
        assert got.filter(pl.col("key").is_null())["kid"].null_count() == got["key"].null_count()
    assert key_index["key"].n_unique() == key_index.height == df["key"].drop_nulls().n_unique()
    keyed = record_kid >= 0
    assert (keyed == df["key"].is_not_null().to_numpy()).all()
    assert key_index["key"].gather(record_kid[keyed]).equals(df["key"].filter(pl.Series(keyed)))


def test_too_many_cells_declines():
    df = make_sample(seed=8, n=2_000, keys=100).df
    assert wt.group_by_codes(df, [("user_id", "region")], 3) is not None
    assert wt.group_by_codes(df, [("user_id", "region")], 10**6) is None  # wider than MAX_CELLS per key


@pytest.mark.parametrize("max_cells,dense_cells", [(wt.MAX_CELLS, wt.DENSE_CELLS), (wt.MAX_CELLS, 1), (1, 1)])
def test_compiled_tables_give_brute_force_predictions(monkeypatch, max_cells, dense_cells):
    """Through WhatIf (as for 10M records: dense and sorted tables), and the fallback when the cells are too many."""
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    monkeypatch.setattr(wt, "MAX_CELLS", max_cells)
    monkeypatch.setattr(wt, "DENSE_CELLS", dense_cells)
    s = make_sample(seed=10, n=6_000, keys=800)
    w = WhatIf(s, group_fields=("user_id", "region"))
    assert ("record-kid" in w._cache) == (max_cells > 1)
    for sc in SCENARIOS:
        assert_matches(w, sc)


def test_compiled_and_polars_paths_agree(monkeypatch):
    s = make_sample(seed=11, n=5_000, keys=600)
    polars_path = WhatIf(s, group_fields=("user_id", "region"))
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    compiled = WhatIf(s, group_fields=("user_id", "region"))
    assert "record-kid" in compiled._cache and "record-kid" not in polars_path._cache
    by_id = []  # the salting candidates' hot records come from key ids on this path
    original = WhatIf._hot_records_by_id
    monkeypatch.setattr(WhatIf, "_hot_records_by_id", lambda self, hot: by_id.append(1) or original(self, hot))
    for sc in SCENARIOS:
        a, b = polars_path.evaluate(sc), compiled.evaluate(sc)
        assert np.array_equal(a.records, b.records) and np.array_equal(a.bytes, b.bytes)
        assert (a.keys_total, a.keys_moved, a.keys_split) == (b.keys_total, b.keys_moved, b.keys_split)
        assert a.salted_keys == b.salted_keys
        assert (a.skew_low, a.skew_high) == (b.skew_low, b.skew_high)
    assert by_id


def test_key_ids_from_a_later_coded_table_find_the_hot_pool(monkeypatch):
    """No fields up front: the plain table comes from the scan, a field's coded table later brings per-record
    key ids (translated to the WhatIf's own), and salting draws its hot records through them -- same results."""
    s = make_sample(seed=12, n=5_000, keys=500)
    polars_path = WhatIf(s)
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    compiled = WhatIf(s)
    assert "record-kid" not in compiled._cache
    compiled.units(("region",))
    kid = compiled._cache["record-kid"]
    keyed = kid >= 0
    assert compiled._key_index["key"].gather(kid[keyed]).equals(s.df["key"].filter(pl.Series(keyed)))
    for sc in SCENARIOS:
        a, b = polars_path.evaluate(sc), compiled.evaluate(sc)
        assert np.array_equal(a.records, b.records) and np.array_equal(a.bytes, b.bytes)
        assert (a.keys_total, a.keys_moved, a.keys_split, a.salted_keys) == (b.keys_total, b.keys_moved, b.keys_split, b.salted_keys)


def test_whatif_grid_builds_its_field_tables_in_the_coded_pass(monkeypatch, tmp_path):
    """`keyscope whatif --key-by key,region --salt-hot ...`: the grid's fields reach WhatIf up front, so the
    plain and region tables and the per-record key ids come from one coded pass; predictions as Polars'."""
    from keyscope.grid import Grid, run_whatif

    s = make_sample(seed=13, n=5_000, keys=500)
    path = s.write(tmp_path / "s.parquet")
    grid = Grid.parse(partitions=["6"], key_by=["key,region", "key"], salt_hot=["1:4"], salt_by="user_id")
    polars_run = run_whatif(path, grid)
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    import keyscope._keytable as kt

    def no_scan(*a, **k):
        raise AssertionError("the plain table comes from the coded pass, not a separate scan")

    monkeypatch.setattr(kt, "scan", no_scan)
    coded_run = run_whatif(path, grid)
    cache = coded_run.whatif._cache
    assert "record-kid" in cache and {("units", ()), ("units", ("region",)), ("units", ("user_id",))} <= set(cache)
    assert "record-kid" not in polars_run.whatif._cache
    assert len(coded_run.results) == len(polars_run.results) == 2
    for a, b in zip(polars_run.results, coded_run.results):
        assert np.array_equal(a.records, b.records) and np.array_equal(a.bytes, b.bytes)
        assert (a.keys_total, a.keys_moved, a.keys_split, a.salted_keys) == (b.keys_total, b.keys_moved, b.keys_split, b.salted_keys)
        assert (a.skew_low, a.skew_high) == (b.skew_low, b.skew_high)
