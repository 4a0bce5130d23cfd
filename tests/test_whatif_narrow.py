"""The unit rows as the tables hold them: scenario_pass on int32 partitions / key ids and Int64 counts.

Its narrow variant must give the same bits as the float64 path and the
pure-Python reference (counts converted to doubles as they are read); and
``WhatIf`` must hand the tables' own columns to it, not int64/float64 copies.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyscope.whatif import WhatIf, kernels as K
from keyscope.whatif import engine
from keyscope.whatif.spec import Scenario
from tests.test_scenarios import make_sample

REF = K.REFERENCES
FIELDS = ("cells_n", "cells_b", "unkeyed_n", "unkeyed_b")
SCALARS = ("keys_present", "keys_moved", "keys_split", "keyed_weighted", "moved_weighted", "lost_weighted")


def _equal(a, b):
    for f in FIELDS:
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    for f in SCALARS:
        assert getattr(a, f) == getattr(b, f), f


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 400), keys=st.integers(1, 50), S=st.integers(1, 7), N=st.integers(1, 13),
       seed=st.integers(0, 2**32 - 1), track=st.booleans(), null_share=st.sampled_from([0.0, 0.3, 1.0]),
       big=st.booleans())
def test_narrow_equals_wide_and_reference(n, keys, S, N, seed, track, null_share, big):
    r = np.random.default_rng(seed)
    valid = r.random(n) >= null_share
    src = r.integers(0, S, n)
    kid = np.where(valid, r.integers(0, keys, n), -1)
    hi = 2**40 if big else 1000  # byte sums past 2^32: still exact as doubles
    cnt, byt = r.integers(1, 1000, n), r.integers(0, hi, n)
    op, w = r.integers(-2**40, 2**40, n), r.random(S) + 0.5
    narrow = (src.astype(np.int32), op, valid, cnt.astype(np.int64), byt.astype(np.int64), kid.astype(np.int32),
              w, S, N, keys, track)
    wide = (src, op, valid, cnt.astype(np.float64), byt.astype(np.float64), kid, w, S, N, keys, track)
    got = K.scenario_pass(*narrow)
    _equal(got, K.scenario_pass(*wide))
    _equal(got, REF["scenario_pass"](*wide))


def test_narrow_ir_reads_narrow_types():
    ir = K._scenario_ir("x", narrow=True)
    assert "load i32, ptr %s.w.p" in ir and "load i32, ptr %k.w.p" in ir
    assert "sitofp i64 %ni.w to double" in ir and "sitofp i64 %bi.w to double" in ir
    assert "load double, ptr %ni.p" not in K._scenario_ir("x", narrow=True)
    assert "load double, ptr %ni.p" in K._scenario_ir("y")


@pytest.mark.parametrize("rows", [5_000, 250_000])  # Polars tables, and the coded ones (COMPILED_MIN_ROWS)
def test_whatif_rows_are_the_tables_columns(rows):
    sample = make_sample(seed=3, n=rows)
    w = WhatIf(sample, partitioner="murmur2", group_fields=["region", "user_id"])
    sc = Scenario(partitions=6, key_fields=("user_id",), partitioner="murmur2")
    res = w.evaluate(sc)
    rows_ = w._rows(sc)
    assert rows_.src.dtype == np.int32 and rows_.kid.dtype == np.int32
    assert rows_.n.dtype == np.int64 and rows_.b.dtype == np.int64
    assert np.shares_memory(rows_.n, w._table(("user_id",))["n"].to_numpy())
    # the same figures from float64 / int64 copies, the rows as they were before
    wide = engine._Rows(src=rows_.src.astype(np.int64), kid=rows_.kid.astype(np.int64), keys=rows_.keys,
                        n=rows_.n.astype(np.float64), b=rows_.b.astype(np.float64), splittable=True)
    again = w._result(sc, wide)
    assert again.records.tolist() == res.records.tolist() and again.bytes.tolist() == res.bytes.tolist()
    assert (again.keys_moved, again.keys_split, again.traffic_moved_share) == (
        res.keys_moved, res.keys_split, res.traffic_moved_share)


def _sample_file(tmp_path, drop=(), seed=11):
    import polars as pl

    from tests.test_whatif_file_codes import write

    s = make_sample(seed=seed, n=9_000, keys=200)
    r = np.random.default_rng(2)
    vals = [None if x < 0.2 else int(v) for x, v in zip(r.random(9_000), r.integers(0, 5_000, 9_000))]
    s.df = s.df.with_columns(pl.Series("value_size", vals, dtype=pl.Int32))
    path = tmp_path / "s.parquet"
    write(s, path, row_group_size=700, drop=drop)
    return path


def test_sizes_at_rows_equal_the_kept_sizes(tmp_path):
    from keyscope.io import parquet as kpq
    from keyscope.sample import read_sample
    from tests.test_whatif_file_codes import codes_of

    path = _sample_file(tmp_path)
    _, _, size = codes_of(path, ["key"])
    p, check, _ = read_sample(path, columns=("partition",)).key_file()
    rows = np.sort(np.random.default_rng(1).choice(9_000, 2_500, replace=False))
    got = kpq.sizes_at_rows(p, check, rows, 9_000)
    assert got.dtype == np.int64 and np.array_equal(got, size[rows].astype(np.int64))
    assert kpq.sizes_at_rows(p, check, rows[::-1], 9_000) is None  # not ascending: the caller reads the columns
    assert kpq.sizes_at_rows(p, check, np.zeros(0, np.int64), 9_000).size == 0
    (tmp_path / "b").mkdir()
    no_ks = _sample_file(tmp_path / "b", drop=("key_size",))
    p2, check2, _ = read_sample(no_ks, columns=("partition",)).key_file()
    assert kpq.sizes_at_rows(p2, check2, rows, 9_000) is None  # a key's size is its length: kept sizes instead


@pytest.mark.parametrize("drop", [(), ("key_size",)])
def test_salting_from_the_file_keeps_no_per_record_sizes(monkeypatch, tmp_path, drop):
    from keyscope.sample import read_sample
    from keyscope.whatif.spec import Salt

    monkeypatch.setattr(engine, "COMPILED_MIN_ROWS", 1_000)
    path = _sample_file(tmp_path, drop=drop)
    sc = Scenario(partitions=6, key_fields=("region",), salt=Salt(buckets=4, top=2))
    w_file = WhatIf(read_sample(path, columns=("partition",)), partitioner="murmur2", group_fields=["region"],
                    record_fields=["region"])
    assert (w_file._cache["record-size"].kept is not None) == bool(drop)
    w_cols = WhatIf(read_sample(path), partitioner="murmur2", group_fields=["region"], record_fields=["region"])
    a, b = w_file.evaluate(sc), w_cols.evaluate(sc)
    assert a.records.tolist() == b.records.tolist() and a.bytes.tolist() == b.bytes.tolist()
    assert a.salted_keys == b.salted_keys and a.keys_split == b.keys_split


def test_offsets_and_sizes_in_one_pass_equal_each_read_alone(tmp_path, monkeypatch):
    """The one-pass reader salting uses gives what the two single-column readers give, skipping row groups."""
    from keyscope.io import parquet as kpq
    from keyscope.sample import read_sample

    path = _sample_file(tmp_path)
    p, check, _ = read_sample(path, columns=("partition",)).key_file()
    rng = np.random.default_rng(2)
    # rows in the 1st, 4th and last row groups only (row groups of 700): the others are never read
    rows = np.sort(np.concatenate([rng.choice(700, 50, replace=False), 2_100 + rng.choice(700, 80, replace=False),
                                   np.array([8_999])]))  # fmt: skip
    reads = []
    real = kpq._row_groups
    monkeypatch.setattr(kpq, "_row_groups", lambda *a, **k: (reads.append(list(k["groups"])), real(*a, **k))[1])
    off, size = kpq.offsets_and_sizes_at_rows(p, check, rows, 9_000)
    monkeypatch.undo()
    assert reads == [[0, 3, 12]]
    assert np.array_equal(off, kpq.int64_at_rows(p, check, "offset", rows, 9_000))
    assert np.array_equal(size, kpq.sizes_at_rows(p, check, rows, 9_000))
    assert kpq.offsets_and_sizes_at_rows(p, check, rows, 9_000, sizes=False)[1] is None
    assert kpq.offsets_and_sizes_at_rows(p, check, np.array([9_000]), 9_000) == (None, None)  # past the file
    assert kpq.offsets_and_sizes_at_rows(p, check, rows[::-1], 9_000) == (None, None)  # not ascending


def _salted_after_plain():
    """Unsalted scenarios, then plain keys salted by offset: the first salted one's hot records are read ahead."""
    from keyscope.whatif.spec import Salt

    return [Scenario(partitions=6), Scenario(partitions=6, key_fields=("region",)),
            Scenario(partitions=3, salt=Salt(buckets=4, top=2)), Scenario(partitions=6, salt=Salt(buckets=8, top=2)),
            Scenario(partitions=6, salt=Salt(buckets=2, top=1))]  # fmt: skip


@pytest.mark.parametrize("drop", [(), ("key_size",)])
def test_the_hot_records_read_ahead_give_the_results_of_a_read_in_turn(monkeypatch, tmp_path, drop):
    from keyscope.sample import read_sample

    monkeypatch.setattr(engine, "COMPILED_MIN_ROWS", 1_000)
    path = _sample_file(tmp_path, drop=drop)
    taken = []
    real = WhatIf._take_hot_read
    monkeypatch.setattr(WhatIf, "_take_hot_read", lambda self, rows: taken.append(real(self, rows)) or taken[-1])

    def run(scenarios):
        w = WhatIf(read_sample(path, columns=("partition",)), partitioner="murmur2", group_fields=["region"])
        return w.evaluate_all(scenarios), w

    ahead, w = run(_salted_after_plain())
    # read on the thread, taken by the first salted scenario; the top-1 scenario's records are read in turn
    assert taken[0] is not None and taken[1:] == [None]
    assert "hot-read" not in w._cache
    taken.clear()
    in_turn = [run([sc])[0][0] for sc in _salted_after_plain()]  # one scenario each: nothing read ahead
    assert taken == [None, None, None]
    for a, b in zip(ahead, in_turn):
        assert a.records.tolist() == b.records.tolist() and a.bytes.tolist() == b.bytes.tolist()
        assert (a.skew, a.keys_moved, a.salted_keys) == (b.skew, b.keys_moved, b.salted_keys)


def test_a_read_ahead_of_a_changed_file_fails_as_the_read_would(monkeypatch, tmp_path):
    """The thread's error (the sample file changed under it) is raised where the records are taken."""
    from keyscope.errors import InputError
    from keyscope.sample import read_sample

    monkeypatch.setattr(engine, "COMPILED_MIN_ROWS", 1_000)
    path = _sample_file(tmp_path)
    w = WhatIf(read_sample(path, columns=("partition",)), partitioner="murmur2", group_fields=["region"])
    scenarios = _salted_after_plain()
    _sample_file(tmp_path, seed=8)  # another sample at the same path, after the codes were read
    with pytest.raises(InputError):
        w.evaluate_all(scenarios)
