"""Composite producer keys hashed from the dictionaries (whatif.tables.CodedKeys, the compiled
_kernels.hash_coded) equal composing the whole column and hashing it (the old path): nulls, empty values,
non-ASCII, the separator inside keys and fields, keys of every length around the 12-byte inline limit,
thread splits, every partitioner."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import keyscope.whatif.engine as scn
import keyscope.whatif.tables as T
from keyscope.partitioners import KEYED, PARTITIONERS, hash_column
from keyscope.whatif.engine import WhatIf
from keyscope.whatif.spec import Scenario
from keyscope.whatif.tables import CodedKeys, compose_codes
from tests.test_whatif_dictionaries import _tricky_sample

KEYS = [b"", b"a", b"|", b"a|b", "ключ-ü".encode(), b"\xff\x00bin", b"x" * 40, b"k" * 12, b"k" * 13, b"t|"]
FIELD = ["", "b|c", "|", "ü", "ключ", "eu", "y" * 30, "c"]


def _coded(rng, n: int, nfields: int, sep: str) -> CodedKeys:
    key_dict = pl.Series(KEYS, dtype=pl.Binary)
    kid = np.where(rng.random(n) < 0.1, -1, rng.integers(0, len(KEYS), n)).astype(np.int64)
    fields = []
    for _ in range(nfields):
        d = pl.Series(FIELD, dtype=pl.String)
        code = np.where(rng.random(n) < 0.15, -1, rng.integers(0, len(FIELD), n)).astype(np.int32)
        fields.append((d, code))
    return CodedKeys(key_dict, kid, fields, sep)


def _old(ck: CodedKeys, partitioner: str) -> tuple[np.ndarray, np.ndarray]:
    """The old path: the whole column composed, then WhatIf._hash's conversion."""
    h = hash_column(compose_codes(ck.key_dict, ck.kid, ck.fields, ck.sep), partitioner)
    return h.fill_null(0).to_numpy().astype(np.int64), h.is_not_null().to_numpy()


@pytest.mark.parametrize("threads_from", [1, 1 << 30])  # the rows split over HASH_THREADS, and on one thread
@pytest.mark.parametrize("nfields,sep,seed", [(1, "|", 0), (2, "::", 1), (1, "", 2), (3, "é", 3), (0, "|", 4)])
def test_hash_equals_whole_column(monkeypatch, threads_from, nfields, sep, seed):
    monkeypatch.setattr(T, "HASH_THREADS_MIN_ROWS", threads_from)
    ck = _coded(np.random.default_rng(seed), 6_001, nfields, sep)
    for p in (*KEYED, "random"):
        op, valid = ck.hash(p)
        want_op, want_valid = _old(ck, p)
        assert op.dtype == np.int64 and valid.dtype == np.bool_
        assert np.array_equal(valid, want_valid), p
        assert np.array_equal(op, want_op), p
        assert valid.any() or PARTITIONERS[p].key_independent


def test_compose_slices_equal_whole_column():
    ck = _coded(np.random.default_rng(9), 3_000, 2, "|")
    whole = compose_codes(ck.key_dict, ck.kid, ck.fields, ck.sep).to_list()
    assert ck.compose().to_list() == whole
    assert ck.compose(1_000, 1_777).to_list() == whole[1_000:1_777]
    assert ck.compose(5, 5).to_list() == []
    # null key -> null producer key; a null field adds no separator; an empty field adds one
    assert all(v is None for v, k in zip(whole, ck.kid) if k < 0)
    assert None not in [v for v, k in zip(whole, ck.kid) if k >= 0]


def test_empty():
    ck = CodedKeys(pl.Series([], dtype=pl.Binary), np.zeros(0, np.int64), [], "|")
    op, valid = ck.hash("murmur2")
    assert len(op) == len(valid) == 0


@pytest.mark.parametrize("seed,sep_in_keys", [(0, False), (1, True)])
def test_whatif_rows_hash_the_codes_not_a_column(monkeypatch, seed, sep_in_keys):
    """An unsalted composite scenario on coded tables hashes CodedKeys (no full ``ckey`` column is built),
    with the operands of hashing that column."""
    monkeypatch.setattr(scn, "COMPILED_MIN_ROWS", 1)
    monkeypatch.setattr(T, "HASH_THREADS_MIN_ROWS", 100)
    w = WhatIf(_tricky_sample(seed, sep_in_keys=sep_in_keys), group_fields=("user_id", "region"))
    for fields, p in [(("region",), "murmur2"), (("region",), "fnv1a"), (("user_id",), "consistent")]:
        sc = Scenario(6, p, key_fields=fields)
        w.evaluate(sc)
        rows = w._rows(sc)
        assert isinstance(rows.keys, CodedKeys)
        assert ("composite", fields, "|") not in w._cache
        op, valid = w._hash(("rows", fields, "|", None), rows.keys, p)
        h = hash_column(w._composite(fields, "|")["ckey"], p)  # the old path's producer keys
        del w._cache[("composite", fields, "|")]
        assert np.array_equal(valid, h.is_not_null().to_numpy())
        assert np.array_equal(op, h.fill_null(0).to_numpy().astype(np.int64))
