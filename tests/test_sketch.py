"""keyscope.sketch: Space-Saving's bound holds on adversarial and Zipf streams, merged over buckets, in bounded memory."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest

from keyscope.sketch import SpaceSaving, merge


def check(summaries, truth: Counter) -> None:
    m = merge(summaries)
    assert m.total == sum(truth.values())
    held = {e.key: e for e in m.estimates}
    for k, true in truth.items():
        e = held.get(k)
        if e is None:
            assert true <= m.bound, (k, true, m.bound)
            continue
        assert e.lower <= true <= e.upper, (k, true, e)
        assert abs(e.count - true) <= m.bound, (k, true, e.count, m.bound)
    # every key above the bound is among the estimates: no heavy hitter missed
    assert all(k in held for k, n in truth.items() if n > m.bound)
    # the classic guarantee: bound <= N / capacity per summary, summed
    assert m.bound <= sum(s.total // s.capacity for s in summaries)


def test_exact_while_not_full():
    s = SpaceSaving(10)
    s.update([("a", 5), ("b", 3), ("a", 2)])
    m = merge([s])
    assert m.bound == 0
    assert [(e.key, e.count) for e in m.estimates] == [("a", 7), ("b", 3)]


def test_zipf_stream_buckets_merged():
    rng = np.random.default_rng(7)
    truth: Counter = Counter()
    buckets = []
    for _ in range(6):
        s = SpaceSaving(50)
        keys = rng.zipf(1.3, 20_000) % 100_000
        for k in keys.tolist():
            s.add(k)
        truth.update(keys.tolist())
        buckets.append(s)
    check(buckets, truth)
    m = merge(buckets)
    top = truth.most_common(1)[0]
    assert m.estimates[0].key == top[0]


def test_adversarial_streams():
    """Distinct keys flooding between hot ones, hot key last, and a rotating set just above capacity."""
    truth: Counter = Counter()
    s = SpaceSaving(16)
    stream = [f"u{i}" for i in range(5000)] + ["hot"] * 400 + [f"v{i}" for i in range(3000)] + ["late"] * 300
    for k in stream:
        s.add(k)
    truth.update(stream)
    check([s], truth)
    held = {e.key for e in merge([s]).estimates}
    assert {"hot", "late"} <= held
    r = SpaceSaving(16)
    rot = [f"r{i % 17}" for i in range(17 * 200)]  # every key evicted again and again
    for k in rot:
        r.add(k)
    check([r], Counter(rot))


def test_weighted_updates_random():
    rnd = random.Random(3)
    for _ in range(20):
        cap = rnd.randint(1, 20)
        parts = []
        truth: Counter = Counter()
        for _ in range(rnd.randint(1, 5)):
            s = SpaceSaving(cap)
            for _ in range(rnd.randint(0, 300)):
                k, w = rnd.randint(0, 60), rnd.randint(1, 9)
                s.add(k, w)
                truth[k] += w
            parts.append(s)
        check(parts, truth)


def test_memory_bounded_whatever_the_key_count():
    s = SpaceSaving(32)
    for i in range(200_000):
        s.add(i)
        if i % 10_000 == 0:
            assert len(s) <= 32 and s.memory_items() <= 32 + 4 * 32 + 17
    assert len(s) == 32 and s.memory_items() <= 32 + 4 * 32 + 17
    assert s.total == 200_000


def test_capacity_checked():
    with pytest.raises(ValueError):
        SpaceSaving(0)
