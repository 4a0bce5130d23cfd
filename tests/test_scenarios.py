"""Scenario predictions equal a brute-force, record-by-record evaluation.

The reference below rebuilds every record's producer key in plain Python
(composite key, salt via the ``mmh3`` package) and places it with the
pure-Python partitioners, so it shares no code path with the columnar
evaluation it checks.
"""

from __future__ import annotations

import math
import struct

import mmh3
import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyscope.errors import InputError, UsageError
from keyscope.partitioners import get_partitioner, partition_column
from keyscope.sample import PartitionInfo, Sample
from keyscope.whatif.engine import WhatIf
from keyscope.whatif.murmur import murmur3_binary, murmur3_int64
from keyscope.whatif.result import expected_keys_moved
from keyscope.whatif.spec import Salt, Scenario, parse_key_by, parse_salt


# ---------------------------------------------------------------- reference


def brute_force(df: pl.DataFrame, sc: Scenario, salted: set[bytes]) -> dict:
    """Per record: producer key -> partition.  Null keys spread evenly."""
    p = get_partitioner(sc.partitioner)
    N = sc.partitions
    loads = [0.0] * N
    unkeyed = 0
    moved_keys, keys, split = set(), set(), {}
    moved_traffic = keyed_traffic = 0
    sep = sc.separator.encode()
    for r in df.iter_rows(named=True):
        key = r["key"]
        if key is None:
            unkeyed += 1
            continue
        k = key
        for f in sc.key_fields:
            if r[f] is not None:
                k = k + sep + r[f].encode()
        if sc.salt and k in salted:
            if sc.salt.by == "offset":
                data = struct.pack("<q", r["offset"])
            else:
                data = (r[sc.salt.by] or "").encode()
            k = k + b"#" + str(mmh3.hash(data, sc.salt.seed, signed=False) % sc.salt.buckets).encode()
        part = p.partition(k, N)
        if part is None:
            unkeyed += 1
            continue
        loads[part] += 1
        keys.add(key)
        keyed_traffic += 1
        split.setdefault(key, set()).add(part)
        if part != r["partition"]:
            moved_keys.add(key)
            moved_traffic += 1
    loads = [x + unkeyed / N for x in loads]
    return {
        "records": loads,
        "keys_total": len(keys),
        "keys_moved": len(moved_keys),
        "traffic_moved": moved_traffic / keyed_traffic if keyed_traffic else 0.0,
        "keys_split": sum(1 for s in split.values() if len(s) > 1),
        "unkeyed": unkeyed,
    }


def hot_composite(df: pl.DataFrame, sc: Scenario) -> set[bytes]:
    """The top-K composite keys by records, computed the slow way (ties: smaller key first)."""
    counts: dict[bytes, int] = {}
    sep = sc.separator.encode()
    for r in df.iter_rows(named=True):
        if r["key"] is None:
            continue
        k = r["key"]
        for f in sc.key_fields:
            if r[f] is not None:
                k = k + sep + r[f].encode()
        counts[k] = counts.get(k, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    total = sum(counts.values())
    if sc.salt.top is not None:
        return {k for k, _ in ranked[: sc.salt.top]}
    return {k for k, c in ranked if c / total >= sc.salt.share}


def make_sample(seed: int = 0, n: int = 20_000, keys: int = 3_000, partitions: int = 3, partitioner="murmur2"):
    """A hot key, a Zipf tail, a few null/empty/binary keys, two fields with nulls and non-ASCII."""
    rng = np.random.default_rng(seed)
    idx = np.where(rng.random(n) < 0.3, 0, rng.zipf(1.2, n) % keys + 1)
    names = [f"tenant-{i}".encode() for i in range(keys + 1)]
    names[5] = b"\xff\x00bin"  # not UTF-8
    names[6] = b""  # empty key: hashed by murmur2, random under consistent
    key_list = [None if rng.random() < 0.01 else names[i] for i in idx]
    users = [None if rng.random() < 0.05 else f"u{int(u)}é" for u in rng.integers(0, 50, n)]
    region = [["eu", "us", "ap"][int(x)] for x in rng.integers(0, 3, n)]
    keys_s = pl.Series("key", key_list, dtype=pl.Binary)
    today = partition_column(keys_s, partitions, partitioner)
    rand = pl.Series(rng.integers(0, partitions, n), dtype=pl.UInt32)
    part = pl.select(pl.coalesce(today, rand)).to_series().cast(pl.Int32)
    df = pl.DataFrame({"partition": part, "key": keys_s, "user_id": users, "region": region})
    df = df.with_columns(pl.int_range(pl.len()).over("partition").alias("offset"))
    return Sample.from_frame(df, topic="t", partition_count=partitions)


def assert_matches(w: WhatIf, sc: Scenario):
    res = w.evaluate(sc)
    df = w.sample.df
    salted = hot_composite(df, sc) if sc.salt else set()
    ref = brute_force(df, sc, salted)
    np.testing.assert_allclose(res.records, ref["records"], rtol=0, atol=1e-6)
    assert res.records.sum() == pytest.approx(df.height)
    assert res.keys_total == ref["keys_total"]
    assert res.keys_moved == ref["keys_moved"]
    assert res.traffic_moved_share == pytest.approx(ref["traffic_moved"], abs=1e-12)
    assert res.keys_split == ref["keys_split"]
    assert res.unkeyed_records == ref["unkeyed"]
    if sc.salt:
        assert {k for k, _ in res.salted_keys} == salted
    return res, ref


SCENARIOS = [
    Scenario(3, "murmur2"),
    Scenario(6, "murmur2"),
    Scenario(4, "murmur2"),
    Scenario(6, "consistent"),
    Scenario(5, "fnv1a"),
    Scenario(3, "murmur2", key_fields=("user_id",)),
    Scenario(6, "consistent", key_fields=("user_id", "region"), separator=":"),
    Scenario(3, "murmur2", salt=Salt(top=1, buckets=4, by="offset")),
    Scenario(3, "murmur2", salt=Salt(top=3, buckets=8, by="user_id", seed=7)),
    Scenario(6, "fnv1a", salt=Salt(share=0.01, buckets=2, by="region")),
    Scenario(4, "murmur2", key_fields=("region",), salt=Salt(top=2, buckets=4, by="offset", seed=3)),
    Scenario(3, "consistent", salt=Salt(top=2, buckets=9, by="offset")),  # 9 does not divide 840: per record
    Scenario(5, "murmur2", salt=Salt(top=1, buckets=7, by="offset", seed=1)),
    Scenario(3, "murmur2", key_fields=("region",), salt=Salt(top=2, buckets=4, by="user_id")),
]


@pytest.fixture(scope="module")
def whatif():
    return WhatIf(make_sample())


@pytest.mark.parametrize("sc", SCENARIOS, ids=lambda s: s.label)
def test_prediction_equals_brute_force(whatif, sc):
    assert_matches(whatif, sc)


def test_compiled_key_table_path_matches(monkeypatch):
    """Large samples group (key, partition) with analyze's compiled scan: same predictions."""
    import keyscope.whatif.engine as scn

    s = make_sample(seed=6, n=8_000, keys=1_500)
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    w = WhatIf(s)
    for sc in SCENARIOS:
        assert_matches(w, sc)


def test_hashed_group_by_equals_value_group_by():
    """Unit tables grouped on column hashes equal Polars' group-by on the values (null keys/fields, non-UTF-8)."""
    import keyscope.whatif.tables as scn

    df = make_sample(seed=8, n=6_000, keys=800).df
    sets = [("user_id",), ("region",), ("user_id", "region")]
    tables = scn.group_by_hashes(df, sets)
    assert tables is not None
    size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
    for fs, got in zip(sets, tables):
        cols = ["partition", "key", *fs]
        ref = df.group_by(cols).agg(pl.len().cast(pl.Int64).alias("n"), size.sum().alias("b"))
        assert got.height == ref.height
        assert got.sort(cols, nulls_last=True).equals(ref.select(got.columns).sort(cols, nulls_last=True))


def test_hash_collision_falls_back_to_value_group_by(monkeypatch):
    """When the hashes cannot group (a collision), the value group-by gives the same predictions."""
    import keyscope.whatif.engine as scn

    s = make_sample(seed=9, n=6_000, keys=800)
    monkeypatch.setattr(scn, "group_by_hashes", lambda df, sets: None)
    w = WhatIf(s, group_fields=("user_id", "region"))
    for sc in SCENARIOS:
        assert_matches(w, sc)


def test_small_sample_pure_python_path_matches():
    # under 2,000 distinct keys the partitioners hash in pure Python: same answers
    w = WhatIf(make_sample(seed=3, n=3_000, keys=300))
    for sc in SCENARIOS:
        assert_matches(w, sc)


def test_same_setup_reproduces_today(whatif):
    res = whatif.evaluate(Scenario(3, "murmur2"))
    today = whatif.today
    keyed_today = whatif.sample.df.filter(pl.col("key").is_not_null())
    # keyed records land exactly where they are; only null keys are spread
    assert res.keys_moved == 0 and res.traffic_moved_share == 0.0
    counts = np.bincount(keyed_today["partition"].to_numpy(), minlength=3)
    np.testing.assert_allclose(res.records - res.unkeyed_records / 3, counts)
    assert today.records.sum() == whatif.sample.df.height


def test_today_partitioner_is_detected():
    for name in ("murmur2", "consistent", "fnv1a"):
        w = WhatIf(make_sample(seed=1, n=5_000, partitioner=name))
        assert w.today_partitioner == name
        assert w.today_match == pytest.approx(1.0)
        assert w.notes == []


def test_unknown_placement_is_said():
    s = make_sample(seed=2, n=5_000)
    rng = np.random.default_rng(0)
    df = s.df.with_columns(pl.Series("partition", rng.integers(0, 3, s.df.height), dtype=pl.Int32))
    w = WhatIf(Sample.from_frame(df, partition_count=3))
    assert w.today_match < 0.6
    assert any("matches no known partitioner" in n for n in w.notes)


def test_keys_moved_matches_lcm_formula_on_many_keys():
    n = 60_000
    keys = pl.Series("key", [f"k{i}".encode() for i in range(n)], dtype=pl.Binary)
    for today in (3, 4, 6):
        part = partition_column(keys, today, "murmur2").cast(pl.Int32)
        w = WhatIf(Sample.from_frame(pl.DataFrame({"partition": part, "key": keys}), partition_count=today))
        for m in (2, 3, 4, 5, 6, 8, 12):
            r = w.evaluate(Scenario(m, "murmur2"))
            expected = 1 - min(today, m) / math.lcm(today, m)
            assert r.expected_keys_moved_share == pytest.approx(expected)
            # binomial standard error is at most 0.002 here
            assert abs(r.keys_moved_share - expected) < 0.01, (today, m, r.keys_moved_share)
            # every key weighs one record: traffic moved equals keys moved
            assert r.traffic_moved_share == pytest.approx(r.keys_moved_share)


def test_expected_keys_moved_values():
    assert expected_keys_moved(3, 6) == pytest.approx(0.5)
    assert expected_keys_moved(3, 4) == pytest.approx(0.75)
    assert expected_keys_moved(6, 3) == pytest.approx(0.5)
    assert expected_keys_moved(5, 5) == 0.0
    assert expected_keys_moved(3, 3, same_hash=False) == pytest.approx(2 / 3)


def test_interval_brackets_and_covers_the_truth():
    """Sample from a known topic many times: the 95% interval holds the true skew most of the time."""
    rng = np.random.default_rng(11)
    pool = [f"key-{i}".encode() for i in range(4_000)]
    weights = 1.0 / np.arange(1, len(pool) + 1) ** 0.8
    weights /= weights.sum()
    keys = pl.Series("key", pool, dtype=pl.Binary)
    part6 = partition_column(keys, 6, "murmur2").to_numpy()
    true_loads = np.bincount(part6, weights=weights, minlength=6)
    true_skew = true_loads.max() / true_loads.mean()
    part3 = partition_column(keys, 3, "murmur2").to_numpy()
    hits = 0
    trials = 40
    for t in range(trials):
        draw = rng.choice(len(pool), size=4_000, p=weights)
        df = pl.DataFrame({"partition": part3[draw].astype(np.int32), "key": keys.gather(draw)})
        r = WhatIf(Sample.from_frame(df, partition_count=3)).evaluate(Scenario(6, "murmur2"))
        assert r.skew_low <= r.skew <= r.skew_high
        hits += r.skew_low <= true_skew <= r.skew_high
    assert hits >= 0.85 * trials, hits


def test_interval_never_below_one_on_an_even_topic():
    n = 30_000
    keys = pl.Series("key", [f"k{i}".encode() for i in range(n)], dtype=pl.Binary)
    part = partition_column(keys, 3, "murmur2").cast(pl.Int32)
    w = WhatIf(Sample.from_frame(pl.DataFrame({"partition": part, "key": keys}), partition_count=3))
    for r in [w.today] + w.evaluate_all([Scenario(3, "consistent"), Scenario(6), Scenario(12, "fnv1a")]):
        assert 1.0 <= r.skew_low <= r.skew <= r.skew_high < 1.2


def test_interval_narrows_with_more_records():
    small = WhatIf(make_sample(seed=4, n=2_000)).evaluate(Scenario(6))
    large = WhatIf(make_sample(seed=4, n=40_000)).evaluate(Scenario(6))
    assert (large.skew_high - large.skew_low) < (small.skew_high - small.skew_low)


def test_unevenly_sampled_partitions_are_scaled_to_the_topic():
    # partition 0 holds 1,000 records of which 100 were read; partition 1 all of its 100
    df = pl.DataFrame(
        {
            "partition": [0] * 100 + [1] * 100,
            "key": [b"a"] * 100 + [b"b"] * 100,
        }
    )
    s = Sample.from_frame(df, partition_count=2)
    s.meta.partitions = {
        0: PartitionInfo(0, low=0, high=1000, records=100),
        1: PartitionInfo(1, low=0, high=100, records=100),
    }
    w = WhatIf(s, partitioner="murmur2")
    assert list(w.today.records) == [1000.0, 100.0]
    assert w.scaled and any("unevenly" in n for n in w.notes)
    r = w.evaluate(Scenario(2, "murmur2"))
    # the scaled prediction keeps each key's weight wherever it lands
    pa = get_partitioner("murmur2").partition(b"a", 2)
    assert r.records[pa] >= 1000.0
    assert r.skew_low <= r.skew <= r.skew_high


def test_evenly_sampled_partitions_are_not_scaled():
    s = make_sample(seed=5, n=3_000)
    counts = np.bincount(s.df["partition"].to_numpy(), minlength=3)
    s.meta.partitions = {p: PartitionInfo(p, low=0, high=int(c) * 10, records=int(c)) for p, c in enumerate(counts)}
    w = WhatIf(s)
    assert not w.scaled
    np.testing.assert_allclose(w.today.records, counts)


def test_consumer_loads_in_results(whatif):
    r = whatif.evaluate(Scenario(6))
    for c in whatif.consumers:
        for a in ("range", "roundrobin"):
            cl = r.consumer(c, a)
            assert cl is not None
            assert cl.busiest_load >= r.records.max() - 1e-9
    one = r.consumer(whatif.today_partitions, "range")
    assert one.busiest_share == pytest.approx(
        max(sum(r.records[p] for p in block) for block in ([0, 1], [2, 3], [4, 5])) / r.records.sum()
    )


def test_to_dict_is_strict_json(whatif):
    from keyscope.report.format import to_json

    import json

    for sc in SCENARIOS[:9]:
        doc = json.loads(to_json(whatif.evaluate(sc).to_dict()))
        assert doc["skew"]["low"] <= doc["skew"]["value"] <= doc["skew"]["high"]
        assert len(doc["records"]) == sc.partitions
    salted = whatif.evaluate(SCENARIOS[7]).to_dict()["order"]["salted_keys"]
    assert salted and salted[0]["key_encoding"] in ("utf8", "hex")


# ---------------------------------------------------------------- murmur3


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), min_size=1, max_size=50), st.integers(0, 2**32 - 1))
def test_murmur3_binary_matches_mmh3(values, seed):
    got = murmur3_binary(pl.Series(values, dtype=pl.Binary), seed)
    want = [mmh3.hash(v or b"", seed, signed=False) for v in values]
    assert got.tolist() == want


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=50), st.integers(0, 2**32 - 1))
def test_murmur3_int64_matches_mmh3(values, seed):
    got = murmur3_int64(np.array(values, dtype=np.int64), seed)
    assert got.tolist() == [mmh3.hash(struct.pack("<q", v), seed, signed=False) for v in values]


def test_murmur3_binary_long_values_hash_in_slices(monkeypatch):
    import keyscope.whatif.murmur as sc

    monkeypatch.setattr(sc, "_PAD_LIMIT", 64)
    values = [b"x" * 200, b"ab", None, "ü".encode() * 7, b"q" * 33]
    got = sc.murmur3_binary(pl.Series(values, dtype=pl.Binary), 5)
    assert got.tolist() == [mmh3.hash(v or b"", 5, signed=False) for v in values]


# ---------------------------------------------------------------- parsing and errors


def test_parse_salt():
    assert parse_salt("1") == Salt(top=1, buckets=4)
    assert parse_salt("3:8", by="user_id", seed=2) == Salt(top=3, buckets=8, by="user_id", seed=2)
    assert parse_salt("10%:2") == Salt(share=0.1, buckets=2)
    for bad in ("", "x", "1:1", "0:4", "150%", "1:4:2", "-1"):
        with pytest.raises(UsageError):
            parse_salt(bad)


def test_parse_key_by():
    assert parse_key_by("key") == ()
    assert parse_key_by("key, tenant_id ,region") == ("tenant_id", "region")
    for bad in ("tenant_id", "", "key,key", "region,key"):
        with pytest.raises(UsageError):
            parse_key_by(bad)


def test_bad_inputs_are_clear_errors(whatif):
    with pytest.raises(UsageError, match="unknown field 'nope'"):
        whatif.evaluate(Scenario(3, key_fields=("nope",)))
    with pytest.raises(UsageError, match="unknown field"):
        whatif.evaluate(Scenario(3, salt=Salt(top=1, by="nope")))
    with pytest.raises(UsageError):
        Scenario(0)
    with pytest.raises(UsageError):
        Scenario(3, "nonsense")
    empty = Sample.from_frame(pl.DataFrame({"partition": [], "key": []}, schema={"partition": pl.Int32, "key": pl.Binary}))
    with pytest.raises(InputError, match="no records"):
        WhatIf(empty)
    nulls = Sample.from_frame(pl.DataFrame({"partition": [0, 1], "key": [None, None]}, schema={"partition": pl.Int32, "key": pl.Binary}))
    with pytest.raises(InputError, match="null key"):
        WhatIf(nulls)
    with pytest.raises(UsageError):
        WhatIf(make_sample(n=500), consumers=[0])
