"""Option parsing and the record budget split (no broker)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyscope.errors import UsageError
from keyscope.sampling import FieldSpec, SampleSpec, parse_field, parse_partitions, parse_size, parse_time, plan_budgets

NOW = 1_800_000_000_000


@pytest.mark.parametrize(
    "text, want",
    [
        ("2h", NOW - 7_200_000),
        ("90s", NOW - 90_000),
        ("1h30m", NOW - 5_400_000),
        ("7d", NOW - 7 * 86_400_000),
        ("1w", NOW - 604_800_000),
        ("250ms", NOW - 250),
        ("1.5h", NOW - 5_400_000),
        ("2026-11-28T10:00:00Z", 1795860000000),
        ("2026-11-28T10:00:00", 1795860000000),  # no zone: UTC
        ("2026-11-28T11:00:00+01:00", 1795860000000),
        ("2026-11-28", 1795824000000),
    ],
)
def test_parse_time(text, want):
    assert parse_time(text, now_ms=NOW) == want


@pytest.mark.parametrize("text", ["yesterday", "2x", "h", "", "2026-13-01", "-2h"])
def test_parse_time_rejects(text):
    with pytest.raises(UsageError, match="--from-time"):
        parse_time(text, now_ms=NOW)


@pytest.mark.parametrize(
    "text, want",
    [("1000", 1000), ("64KB", 64 << 10), ("256MiB", 256 << 20), ("1g", 1 << 30), ("1.5M", 3 << 19), ("2 GB", 2 << 30)],
)
def test_parse_size(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["lots", "0", "-5MB", "12XB", ""])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError, match="--max-bytes"):
        parse_size(text)


def test_parse_partitions():
    assert parse_partitions("0,2,5-7, 3") == [0, 2, 3, 5, 6, 7]
    assert parse_partitions("4,4") == [4]
    for bad in ("a", "1-", "3-1", "", "1,,2"):
        with pytest.raises(UsageError, match="--partitions"):
            parse_partitions(bad)


def test_parse_field():
    assert parse_field("tenant=$.tenant_id") == FieldSpec("tenant", "$.tenant_id")
    assert parse_field(" trace = header:trace-id ").header == "trace-id"
    assert parse_field("x=$.a.b").header is None
    for bad, msg in [("tenant", "NAME=PATH"), ("=$.a", "must start with"), ("1x=$.a", "must start with"),
                     ("offset=$.a", "taken"), ("t=tenant", "JSON path starting with \\$"), ("t=header:", "header name"),
                     ("t=$[", "invalid JSON path")]:
        with pytest.raises(UsageError, match=msg):
            parse_field(bad)


def test_spec_validation():
    with pytest.raises(UsageError, match="given twice"):
        SampleSpec(topic="t", fields=[FieldSpec("a", "$.a"), FieldSpec("a", "$.b")]).validate()
    with pytest.raises(UsageError, match="--max-records must be at least 1"):
        SampleSpec(topic="t", max_records=0).validate()
    with pytest.raises(UsageError, match="--timeout"):
        SampleSpec(topic="t", timeout_s=float("inf")).validate()
    with pytest.raises(UsageError, match="--from"):
        SampleSpec(topic="t", start="middle").validate()


def test_plan_budgets_examples():
    avail = {0: 100, 1: 300, 2: 600}
    assert plan_budgets(avail, 100, None) == {0: 10, 1: 30, 2: 60}
    assert plan_budgets(avail, None, 50) == {0: 50, 1: 50, 2: 50}
    assert plan_budgets(avail, 300, 200) == {0: 60, 1: 120, 2: 120}
    assert plan_budgets(avail, 5000, None) == avail
    assert plan_budgets({0: 1, 1: 1, 2: 1}, 2, None) == {0: 1, 1: 1, 2: 0}  # ties: lowest partition first
    assert plan_budgets({0: 0, 1: 10}, 4, None) == {0: 0, 1: 4}


@given(st.dictionaries(st.integers(0, 50), st.integers(0, 10**7), max_size=30),
       st.one_of(st.none(), st.integers(1, 10**6)), st.one_of(st.none(), st.integers(1, 10**6)))
def test_plan_budgets_properties(avail, max_records, per_partition):
    out = plan_budgets(avail, max_records, per_partition)
    caps = {p: a if per_partition is None else min(a, per_partition) for p, a in avail.items()}
    assert set(out) == set(avail)
    assert all(0 <= out[p] <= caps[p] for p in out)
    total = sum(caps.values())
    want = total if max_records is None else min(total, max_records)
    assert sum(out.values()) == want
    if max_records is not None and total > max_records:
        for p in out:  # proportional, within one record
            assert abs(out[p] - max_records * caps[p] / total) < 1 + 1e-9
