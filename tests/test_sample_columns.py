"""read_sample reads a Parquet sample's columns on demand: the same frame as reading them all, fewer bytes read.

Why on demand: reading every column of a 10M-record sample was 2.9-4.2 s of a
cold analyze/whatif (docs/benchmarks.md, "Where the time goes").
"""

from __future__ import annotations

import os

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import keyscope.whatif.engine as scn
from keyscope.analysis import analyze
from keyscope.errors import InputError
from keyscope.sample import META_KEY, Sample, SampleMeta, read_sample
from keyscope.whatif.engine import WhatIf
from keyscope.whatif.spec import Salt, Scenario
from tests.test_scenarios import SCENARIOS, assert_matches, make_sample


def read_all_columns(path) -> Sample:
    """The previous reader: every column through pyarrow, then from_frame (the reference)."""
    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(META_KEY.encode())
    meta = SampleMeta.from_json(raw.decode()) if raw else None
    s = Sample.from_frame(pl.from_arrow(table.replace_schema_metadata(None)),
                          topic=meta.topic if meta else "unknown",
                          partition_count=meta.partition_count if meta else None)
    if meta:
        s.meta = meta
        s.meta.partition_count = max(meta.partition_count, s.partition_count)
    return s


def test_on_demand_frame_equals_reading_every_column(tmp_path):
    path = tmp_path / "s.parquet"
    make_sample(seed=3, n=3_000, keys=200).write(path)
    ref, got = read_all_columns(path), read_sample(path)
    assert got.columns == ref.df.columns and got.field_names == ref.field_names == ["user_id", "region"]
    assert set(got._df.columns) == {"partition", "key"}  # nothing else read yet
    assert got.frame("region", "key").equals(ref.df.select("region", "key"))
    assert set(got._df.columns) == {"partition", "key", "region"}
    assert got.df.equals(ref.df) and got.meta.to_dict() == ref.meta.to_dict()
    assert len(got) == len(ref) and got.partition_count == ref.partition_count


def test_foreign_parquet_fills_the_missing_columns_as_from_frame(tmp_path):
    path = tmp_path / "foreign.parquet"
    rng = np.random.default_rng(1)
    df = pl.DataFrame({"key": [f"k{i}" for i in rng.integers(0, 50, 500)],
                       "partition": rng.integers(0, 4, 500).astype(np.int64), "tenant": rng.integers(0, 9, 500)})
    df.write_parquet(path)
    ref, got = read_all_columns(path), read_sample(path)
    assert got.frame("offset", "key_size", "value_size", "timestamp").equals(
        ref.df.select("offset", "key_size", "value_size", "timestamp"))
    assert got.df.equals(ref.df)
    assert got.meta.partitions == ref.meta.partitions and got.meta.partition_count == ref.meta.partition_count


def test_analyze_reads_no_field_and_whatif_only_the_fields_it_uses(tmp_path):
    path = tmp_path / "s.parquet"
    make_sample(seed=4, n=4_000, keys=300).write(path)
    s = read_sample(path)
    a = analyze(s, reps=50)
    assert not {"user_id", "region"} & set(s._df.columns)
    assert a.to_dict() == analyze(read_all_columns(path), reps=50).to_dict()
    s = read_sample(path)
    w = WhatIf(s)
    w.evaluate_all([Scenario(6, "murmur2", key_fields=("region",), salt=Salt(top=1, buckets=4, by="offset"))])
    assert "region" in s._df.columns and "user_id" not in s._df.columns


def test_a_file_replaced_while_reading_is_refused(tmp_path):
    path = tmp_path / "s.parquet"
    make_sample(seed=5, n=1_000, keys=50).write(path)
    s = read_sample(path)
    make_sample(seed=6, n=1_200, keys=50).write(path)  # atomically replaced, as keyscope sample -o does
    with pytest.raises(InputError, match="changed while keyscope was reading it"):
        s.frame("region")


def test_unusable_column_is_refused_when_read_not_later(tmp_path):
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"partition": [0, 1], "key": [b"a", b"b"],
                             "payload": pa.array([[1], [2]])}), path)
    with pytest.raises(InputError, match="unusable columns"):
        read_sample(path)


def test_whatif_field_tables_compiled_without_group_fields_match_brute_force(monkeypatch):
    """whatif's CLI passes no group_fields: large samples now take the compiled unit tables for --key-by FIELD."""
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    calls = []
    original = scn.group_by_codes
    monkeypatch.setattr(scn, "group_by_codes", lambda *a: calls.append(a[1]) or original(*a))
    w = WhatIf(make_sample(seed=12, n=5_000, keys=500))
    for sc in SCENARIOS:
        assert_matches(w, sc)
    assert [("user_id",)] in calls and [("region", "user_id")] in calls


def test_same_file_identity_ignores_reads(tmp_path):
    """Reading columns does not count as a change (atime)."""
    path = tmp_path / "s.parquet"
    make_sample(seed=7, n=500, keys=20).write(path)
    s = read_sample(path)
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns))
    assert s.frame("user_id").height == 500
