"""Kafka's range and round-robin assignors, and the floor one hot partition puts under any group."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyscope.model.assignors import consumer_load, range_assignment, round_robin_assignment
from keyscope.errors import UsageError


def test_range_gives_contiguous_blocks_first_members_one_extra():
    assert range_assignment(7, 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert range_assignment(6, 4) == [[0, 1], [2, 3], [4], [5]]
    assert range_assignment(3, 5) == [[0], [1], [2], [], []]


def test_round_robin_deals_in_order():
    assert round_robin_assignment(7, 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert round_robin_assignment(2, 3) == [[0], [1], []]


@given(st.integers(1, 64), st.integers(1, 70))
def test_every_partition_assigned_exactly_once(p, c):
    for parts in (range_assignment(p, c), round_robin_assignment(p, c)):
        assert len(parts) == c
        assert sorted(x for ps in parts for x in ps) == list(range(p))
        sizes = [len(ps) for ps in parts]
        assert max(sizes) - min(sizes) <= 1


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=40), st.integers(1, 50))
def test_busiest_consumer_never_below_hottest_partition_or_fair_share(loads, c):
    for a in ("range", "roundrobin"):
        cl = consumer_load(loads, c, a)
        assert cl.busiest_load >= max(loads) - 1e-6
        assert cl.busiest_load >= sum(loads) / c - 1e-6
        assert cl.idle == max(0, c - len(loads))


def test_more_consumers_cannot_split_a_hot_partition():
    loads = [10.0, 70.0, 20.0]  # partition 1 is hot
    shares = [consumer_load(loads, c, "range").busiest_share for c in (1, 2, 3, 6, 12)]
    assert shares == [1.0, 0.8, 0.7, 0.7, 0.7]
    cl = consumer_load(loads, 6, "roundrobin")
    assert cl.at_floor and cl.floor_share == pytest.approx(0.7) and cl.idle == 3
    assert not consumer_load(loads, 2, "range").at_floor  # partitions 0 and 1 share a member


def test_bad_counts():
    with pytest.raises(UsageError):
        range_assignment(0, 1)
    with pytest.raises(UsageError):
        round_robin_assignment(3, 0)
    with pytest.raises(UsageError):
        consumer_load([1.0], 1, "sticky")
