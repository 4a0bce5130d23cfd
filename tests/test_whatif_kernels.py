"""What-if's compiled kernels (LLVM IR) equal their pure-Python references, on random and edge inputs.

Null keys (-1), empty inputs, split tracking on and off, operands of both
signs, and the dtypes the callers pass (int32 key ids and cells, int64 sizes).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyscope.whatif import kernels as K

REF = K.REFERENCES


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and np.array_equal(x, y)


def _rng(seed):
    return np.random.default_rng(seed)


sizes = st.integers(0, 400)
seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(n=sizes, keys=st.integers(1, 50), S=st.integers(1, 7), N=st.integers(1, 13), seed=seeds,
       track=st.booleans(), null_share=st.sampled_from([0.0, 0.3, 1.0]))
def test_scenario_pass_equals_reference(n, keys, S, N, seed, track, null_share):
    r = _rng(seed)
    valid = r.random(n) >= null_share
    args = (r.integers(0, S, n), r.integers(-2**40, 2**40, n), valid, r.random(n) * 9, r.random(n) * 900,
            np.where(valid, r.integers(0, keys, n), -1), r.random(S) + 0.5, S, N, keys, track)
    got, want = K.scenario_pass(*args), REF["scenario_pass"](*args)
    for f in ("cells_n", "cells_b", "unkeyed_n", "unkeyed_b"):
        assert np.array_equal(getattr(got, f), getattr(want, f)), f
    for f in ("keys_present", "keys_moved", "keys_split", "keyed_weighted", "moved_weighted", "lost_weighted"):
        assert getattr(got, f) == getattr(want, f), f  # same order of sums: bit-for-bit
    if not track:
        assert got.keys_split == 0 and got.lost_weighted == 0.0


def test_scenario_pass_counts_what_it_names():
    """Two keys: key 0 stays on partition 0, key 1 (today 0) goes to 0 and 1 -- moved and split; a null row."""
    src = np.array([0, 0, 0, 1])
    op = np.array([4, 7, 8, 0])  # N = 2: partitions 0, 1, 0
    valid = np.array([True, True, True, False])
    kid = np.array([0, 1, 1, -1])
    f = K.scenario_pass(src, op, valid, np.ones(4), np.full(4, 10.0), kid, np.array([1.0, 2.0]), 2, 2, 2, True)
    assert f.cells_n.tolist() == [2.0, 1.0, 0.0, 0.0] and f.unkeyed_n.tolist() == [0.0, 1.0]
    assert (f.keys_present, f.keys_moved, f.keys_split) == (2, 1, 1)
    assert (f.keyed_weighted, f.moved_weighted, f.lost_weighted) == (3.0, 1.0, 2.0)


@settings(max_examples=60, deadline=None)
@given(n=sizes, keys=st.integers(1, 60), hot=st.integers(0, 20), seed=seeds)
def test_pick_rows_equals_reference(n, keys, hot, seed):
    r = _rng(seed)
    kid = np.where(r.random(n) < 0.2, -1, r.integers(0, keys, n)).astype(np.int32)
    lut = np.full(keys, -1, np.int64)
    chosen = r.choice(keys, min(hot, keys), replace=False)
    lut[chosen] = np.arange(len(chosen))
    _same(K.pick_rows(kid, lut), REF["pick_rows"](kid, lut))


def _cells_case(r, n, S):
    F = 3
    widths = r.integers(2, 7, F).astype(np.int64)
    codes = np.stack([np.where(r.random(n) < 0.15, -1, r.integers(0, widths[f] - 1, n)) for f in range(F)])
    codes = codes.astype(np.int32).reshape(F, n)
    members = np.array([[-1, -1, -1], [0, -1, -1], [1, 2, -1], [2, 0, 1]], np.int64)
    return r.integers(0, S, n).astype(np.int32), codes, widths, members


@settings(max_examples=60, deadline=None)
@given(n=sizes, S=st.integers(1, 9), seed=seeds)
def test_make_cells_equals_reference(n, S, seed):
    part, codes, widths, members = _cells_case(_rng(seed), n, S)
    got = K.make_cells(part, S, codes, widths, members)
    assert got.dtype == np.int32 and np.array_equal(got, REF["make_cells"](part, S, codes, widths, members))


def test_make_cells_takes_one_array_per_field():
    """The fields' codes as separate arrays (as read from a sample's pages, never copied into one 2-D array),
    any of them a strided view, give the cells of the same codes as one 2-D array; a field whose codes are
    short, or a member with no codes, is refused before the kernel reads past an array."""
    part, codes, widths, members = _cells_case(_rng(5), 1000, 4)
    want = K.make_cells(part, 4, codes, widths, members)
    apart = [codes[0].copy(), np.repeat(codes[1], 2)[::2], codes[2].astype(np.int64)]
    assert np.array_equal(K.make_cells(part, 4, apart, widths, members), want)
    assert np.array_equal(want, REF["make_cells"](part, 4, apart, widths, members))
    with pytest.raises(ValueError, match="len\\(part\\)"):
        K.make_cells(part, 4, [codes[0], codes[1][:-1], codes[2]], widths, members)
    with pytest.raises(ValueError, match="no codes"):
        K.make_cells(part, 4, codes[:2], widths, members)


@settings(max_examples=60, deadline=None)
@given(n=sizes, keys=st.integers(1, 40), S=st.integers(1, 5), seed=seeds)
def test_sort_and_group_equal_reference(n, keys, S, seed):
    r = _rng(seed)
    part, codes, widths, members = _cells_case(r, n, S)
    cells = K.make_cells(part, S, codes, widths, members)
    kid = np.where(r.random(n) < 0.2, -1, r.integers(0, keys, n)).astype(np.int32)
    size = r.integers(0, 2**31 - 1, n).astype(np.int32)
    sorted_ = K.sort_by_key(kid, keys, cells[1:], size)
    _same(sorted_, REF["sort_by_key"](kid, keys, cells[1:], size))
    start, s_cells, s_size = sorted_
    W = int(S * np.prod(widths))
    for row in range(cells.shape[0]):
        _same(K.dense_cells(kid, keys, cells[row], W, size), REF["dense_cells"](kid, keys, cells[row], W, size))
    for row in range(s_cells.shape[0]):
        _same(K.group_cells(start, s_cells[row], W, s_size), REF["group_cells"](start, s_cells[row], W, s_size))


@settings(max_examples=40, deadline=None)
@given(n=sizes, keys=st.integers(1, 40), seed=seeds)
def test_sort_on_two_threads_equals_the_reference(n, keys, seed):
    """The halves counted and scattered on their own threads: the same stable order as one pass."""
    r = _rng(seed)
    kid = np.where(r.random(n) < 0.2, -1, r.integers(0, keys, n)).astype(np.int32)
    cells = r.integers(0, 1 << 20, (2, n)).astype(np.int32)
    size = r.integers(0, 2**31 - 1, n).astype(np.int32)
    old = K.SORT_THREADS_MIN_ROWS
    K.SORT_THREADS_MIN_ROWS = 0
    try:
        got = K.sort_by_key(kid, keys, cells, size)
    finally:
        K.SORT_THREADS_MIN_ROWS = old
    _same(got, REF["sort_by_key"](kid, keys, cells, size))


def test_group_cells_grows_its_output():
    """More groups than the first capacity (1024): the kernel stops at a key and resumes after the caller grows."""
    keys, per = 300, 7
    kid = np.repeat(np.arange(keys), per).astype(np.int32)
    cell = np.tile(np.arange(per), keys).astype(np.int32)
    size = np.arange(kid.size, dtype=np.int32)
    start, s_cells, s_size = K.sort_by_key(kid, keys, cell[None, :], size)
    got = K.group_cells(start, s_cells[0], per, s_size)
    assert len(got[0]) == keys * per > 1024
    _same(got, REF["group_cells"](start, s_cells[0], per, s_size))


def test_bytes_are_summed_past_int32():
    """Sizes are int32 (a record's length is), their sums int64: three near-2^31 records do not wrap."""
    size = np.full(3, 2**31 - 1, np.int32)
    _, _, cnt, byt = K.dense_cells(np.zeros(3, np.int32), 1, np.zeros(3, np.int32), 1, size)
    assert cnt.tolist() == [3] and byt.tolist() == [3 * (2**31 - 1)]
    start, s_cells, s_size = K.sort_by_key(np.zeros(3, np.int32), 1, np.zeros((1, 3), np.int32), size)
    assert K.group_cells(start, s_cells[0], 1, s_size)[3].tolist() == [3 * (2**31 - 1)]


@pytest.mark.parametrize("name", ["scenario_pass", "pick_rows", "make_cells", "sort_by_key", "dense_cells", "group_cells"])
def test_empty_inputs(name):
    e32, e64, ef = np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0)
    cases = {
        "scenario_pass": (e64, e64, np.empty(0, bool), ef, ef, e64, np.ones(2), 2, 3, 4, True),
        "pick_rows": (e32, np.array([0, -1], np.int64)),
        "make_cells": (e32, 3, np.empty((1, 0), np.int32), np.array([2], np.int64), np.array([[0]], np.int64)),
        "sort_by_key": (e32, 3, np.empty((2, 0), np.int32), e32),
        "dense_cells": (e32, 3, e32, 4, e32),
        "group_cells": (np.zeros(5, np.int64), e32, 4, e32),
    }
    got, want = getattr(K, name)(*cases[name]), REF[name](*cases[name])
    if name == "scenario_pass":
        assert got.cells_n.tolist() == want.cells_n.tolist() == [0.0] * 6 and got.keys_present == 0
    elif name == "make_cells":
        assert got.shape == want.shape == (1, 0)
    else:
        _same(got, want)


def test_signatures_checked_at_load():
    """The IR and the Python declarations agree (the loader checks; here: it loaded every declared function)."""
    lib = K._LIB.get()
    assert {f.name for f in K._FNS} <= set(lib.functions)
