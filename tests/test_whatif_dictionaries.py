"""What-if from dictionaries: composite keys built from the key and field dictionaries (compiled
concat_parts), coded unit tables, hot keys grouped on integer ids and salted composite keys found from
per-record codes -- all equal to the pure-Python references and to the Polars (bytes) path."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import keyscope.whatif.engine as scn
from keyscope.advice import Constraints, recommend
from keyscope.sample import Sample
from keyscope.whatif import kernels as K
from keyscope.whatif.engine import WhatIf
from keyscope.whatif.spec import Salt, Scenario
from keyscope.whatif.tables import compose_keys, concat_binary
from tests.test_scenarios import SCENARIOS, assert_matches

# every byte layout a key or field value can have: empty, inline, long, not UTF-8, NUL bytes, the separators
VALUES = [b"", b"a", b"|", b"a|b", b"b|c", b"\xff\x00bin", b"\x00", "ключ-ü".encode(), b"x" * 40, b"::", b"tenant-1"]


def _random_column(rng, n: int, nulls: float) -> pl.Series:
    vals = [None if rng.random() < nulls else VALUES[int(i)] for i in rng.integers(0, len(VALUES), n)]
    return pl.Series(vals, dtype=pl.Binary)


@pytest.mark.parametrize("n,parts,seed", [(0, 2, 0), (1, 1, 1), (200, 3, 2), (1_000, 5, 3)])
def test_concat_parts_equals_reference(n, parts, seed):
    rng = np.random.default_rng(seed)
    spec = []
    for _ in range(parts):
        entries = [VALUES[int(i)] for i in rng.integers(0, len(VALUES), int(rng.integers(1, 20)))]
        off = np.zeros(len(entries) + 1, np.int64)
        off[1:] = np.cumsum([len(e) for e in entries])
        data = np.frombuffer(b"".join(entries), np.uint8)
        codes = rng.integers(-1, len(entries), n).astype(np.int64)
        spec.append((off, data, codes))
    got, want = K.concat_parts(spec, n), K.REFERENCES["concat_parts"](spec, n)
    assert got[0].tolist() == want[0].tolist()
    assert bytes(got[1]) == bytes(want[1])


def _py_compose(key, fields, sep: bytes):
    out = []
    for i, k in enumerate(key):
        if k is None:
            out.append(None)
            continue
        for f in fields:
            if f[i] is not None:
                k = k + sep + f[i]
        out.append(k)
    return out


@pytest.mark.parametrize("sep", ["|", "", "::", "é"])
@pytest.mark.parametrize("nfields,seed", [(1, 0), (2, 1), (3, 2)])
def test_compose_keys_equals_python(sep, nfields, seed):
    """Null keys stay null, null fields add no separator, empty values add one; any bytes."""
    rng = np.random.default_rng(seed)
    n = 500
    key = _random_column(rng, n, 0.1)
    fields = [_random_column(rng, n, 0.2) for _ in range(nfields)]
    text = [None if v is None or v == b"\xff\x00bin" else v.decode() for v in fields[-1].to_list()]
    fields[-1] = pl.Series(text, dtype=pl.String)  # a String field too
    got = compose_keys(key, fields, sep)
    want = _py_compose(key.to_list(), [f.cast(pl.Binary).to_list() for f in fields], sep.encode())
    assert got.dtype == pl.Binary and got.name == "ckey"
    assert got.to_list() == want


def test_concat_binary_nulls_and_empties():
    a = pl.Series([b"k", None, b"", b"\xff"], dtype=pl.Binary)
    b = pl.Series([b"#0", b"#1", b"", None], dtype=pl.Binary)
    assert concat_binary([a, b]).to_list() == [b"k#0", None, b"", None]
    assert concat_binary([a.head(0), b.head(0)]).to_list() == []


def _tricky_sample(seed: int, n: int = 6_000, sep_in_keys: bool = False) -> Sample:
    """Null, empty and non-UTF-8 keys, null fields; with ``sep_in_keys`` keys holding '|' whose composite
    keys collide with other pairs' (key 'a|b' + 'c' = key 'a' + 'b|c'), the hottest of them included."""
    rng = np.random.default_rng(seed)
    names = [f"t{i}".encode() for i in range(300)] + [b"", b"\xff\x00bin", "ключ".encode()]
    if sep_in_keys:
        names[:2] = [b"a|b", b"a"]
    idx = np.where(rng.random(n) < 0.25, 0, rng.zipf(1.3, n) % len(names))
    idx = np.where(rng.random(n) < 0.1, 1, idx)
    keys = pl.Series("key", [None if rng.random() < 0.02 else names[i] for i in idx], dtype=pl.Binary)
    region = [None if rng.random() < 0.1 else ["c", "eu", "b|c", "", "ü"][int(x)] for x in rng.integers(0, 5, n)]
    if sep_in_keys:  # the collision: 'a|b' with region 'c' and 'a' with region 'b|c'
        region = ["c" if k == b"a|b" and i % 2 else ("b|c" if k == b"a" and i % 2 else r)
                  for i, (k, r) in enumerate(zip(keys.to_list(), region))]
    users = [None if rng.random() < 0.05 else f"u{int(u)}" for u in rng.integers(0, 40, n)]
    part = pl.Series(rng.integers(0, 3, n), dtype=pl.Int32)
    df = pl.DataFrame({"partition": part, "key": keys, "user_id": users, "region": region})
    df = df.with_columns(pl.int_range(pl.len()).over("partition").alias("offset"))
    return Sample.from_frame(df, topic="t", partition_count=3)


EXTRA = [
    Scenario(6, "murmur2", key_fields=("region",), salt=Salt(top=3, buckets=8, by="offset")),
    Scenario(4, "consistent", key_fields=("region",), separator="", salt=Salt(top=2, buckets=4, by="offset")),
    Scenario(3, "murmur2", key_fields=("user_id", "region"), salt=Salt(top=2, buckets=2, by="offset")),
    Scenario(5, "fnv1a", key_fields=("region",), salt=Salt(top=2, buckets=4, by="user_id", seed=5)),
    Scenario(3, "murmur2", key_fields=("region",), salt=Salt(share=0.02, buckets=9, by="offset")),
]


def _same(a, b):
    assert np.array_equal(a.records, b.records) and np.array_equal(a.bytes, b.bytes)
    assert (a.keys_total, a.keys_moved, a.keys_split, a.salted_keys) == (b.keys_total, b.keys_moved, b.keys_split,
                                                                         b.salted_keys)
    assert (a.skew_low, a.skew_high, a.traffic_moved_share, a.order_lost_traffic_share) == (
        b.skew_low, b.skew_high, b.traffic_moved_share, b.order_lost_traffic_share)


@pytest.mark.parametrize("seed,sep_in_keys", [(0, False), (1, True), (2, False)])
def test_coded_path_equals_bytes_path(monkeypatch, seed, sep_in_keys):
    """Coded tables, composites from dictionaries, integer hot-key ids and per-record codes give the bytes
    path's figures exactly; keys holding the separator take the bytes grouping (and stay right)."""
    s = _tricky_sample(seed, sep_in_keys=sep_in_keys)
    fields = ("user_id", "region")
    by_bytes = WhatIf(s, group_fields=fields)
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    coded = WhatIf(s, group_fields=fields, record_fields=fields)
    assert coded._dicts is not None and "key" not in coded._table(("region",)).columns
    assert (coded._composite_ids(("region",), "|", coded._composite(("region",), "|")) is None) == sep_in_keys
    used = []
    original = WhatIf._hot_records_by_codes
    monkeypatch.setattr(WhatIf, "_hot_records_by_codes", lambda self, *a: used.append(a[0]) or original(self, *a))
    for sc in SCENARIOS + EXTRA:
        _same(by_bytes.evaluate(sc), coded.evaluate(sc))
        assert_matches(coded, sc)  # and both equal the record-by-record reference
    assert set(used) == {("region",)}  # a two-field table is built later, with its values: the bytes path


def test_key_units_gathers_one_keys_values(monkeypatch):
    s = _tricky_sample(3)
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    w = WhatIf(s, group_fields=("region",))
    full = w.units(("region",))
    assert full.columns == ["partition", "key", "region", "n", "b", "kid"]
    for key in (b"t0", b"", b"\xff\x00bin"):
        want = full.filter(pl.col("key") == key).sort("partition", "region", nulls_last=True)
        assert w.key_units(("region",), key).sort("partition", "region", nulls_last=True).equals(want)


@pytest.mark.parametrize("seed", [4, 5])
def test_recommend_coded_equals_bytes_path(monkeypatch, seed):
    s = _tricky_sample(seed)
    c = Constraints(keep_order_by="none")
    by_bytes = recommend(s, c).to_dict(top=100)
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    coded = recommend(s, c).to_dict(top=100)
    assert coded == by_bytes
    assert coded["evaluated"] > 20
