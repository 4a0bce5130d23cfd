"""The compiled one-pass scan (keyscope._keytable) equals Polars' group_by, byte for byte."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyscope import _keytable
from keyscope.analysis import analyze, key_partition_table, scan_records
from keyscope.sample import Sample


def tricky_frame(n: int, seed: int = 0, timestamps: bool = True, n_keys: int = 3000) -> pl.DataFrame:
    """Keys at every layout edge: null, empty, inline (<= 12), 13..16, long, binary, shared prefixes."""
    rng = np.random.default_rng(seed)
    base = [None, b"", b"a", b"12345678", b"123456789012", b"1234567890123", b"1234567890123456",
            b"12345678901234567", b"x" * 40, b"x" * 41, b"\x00", b"\x00\x00", b"\xff" * 13,
            b"same-prefix-0000001", b"same-prefix-0000002", "ключ-ü".encode()]  # fmt: skip
    keys = base + [f"k-{i}".encode() * (1 + i % 5) for i in range(n_keys)]
    ids = rng.integers(0, len(keys), n)
    key = pl.Series("key", keys, dtype=pl.Binary).gather(ids)
    df = pl.DataFrame(
        {
            "key": key,
            "partition": rng.integers(0, 5, n).astype(np.int32),
            "value_size": pl.Series(rng.integers(0, 10_000, n), dtype=pl.Int32),
        }
    )
    if timestamps:
        ts = pl.Series(1_700_000_000_000 + rng.integers(0, 10**6, n)).cast(pl.Datetime("ms", "UTC"))
        df = df.with_columns(pl.when(pl.Series(rng.random(n) < 0.9)).then(ts).otherwise(None).alias("timestamp"))
    return Sample.from_frame(df, partition_count=5).df


def canon(kp: pl.DataFrame) -> pl.DataFrame:
    return kp.select("key", "partition", "records", "bytes", "bytes_sq").sort("key", "partition", nulls_last=True)


@pytest.mark.parametrize("threads", [1, 2])
def test_scan_equals_group_by(threads):
    df = tricky_frame(60_000)
    kp, ext = _keytable.scan(df, 5, threads=threads)
    ref = key_partition_table(df)
    assert canon(kp).equals(canon(ref))
    # the extremes equal Polars' over records with a timestamp
    g = (
        df.filter(pl.col("timestamp").is_not_null())
        .group_by("partition")
        .agg(pl.col("offset").min(), pl.col("offset").max().alias("omax"),
             pl.col("timestamp").min().dt.epoch("ms"), pl.col("timestamp").max().dt.epoch("ms").alias("tmax"))  # fmt: skip
        .sort("partition")
    )
    assert ext["omin"].tolist() == g["offset"].to_list()
    assert ext["omax"].tolist() == g["omax"].to_list()
    assert ext["tmin"].tolist() == g["timestamp"].to_list()
    assert ext["tmax"].tolist() == g["tmax"].to_list()


def test_scan_grows_its_table_and_handles_many_chunks():
    # > 16k distinct (key, partition) groups forces the table to grow mid-chunk;
    # a frame made of several chunks checks the row bookkeeping across them.
    parts = [tricky_frame(30_000, seed=s, timestamps=False, n_keys=20_000) for s in range(3)]
    df = pl.concat(parts, rechunk=False)
    assert df["key"].n_chunks() == 3
    for threads in (1, 2):
        kp, ext = _keytable.scan(df, 5, threads=threads)
        assert canon(kp).equals(canon(key_partition_table(df)))
        assert kp.height > 1 << 14
        assert (ext["tmin"] == _keytable.I64_MAX).all()  # no timestamps at all


def test_threads_give_the_same_table_in_the_same_order():
    df = tricky_frame(50_000, seed=3)
    a, _ = _keytable.scan(df, 5, threads=1)
    b, _ = _keytable.scan(df, 5, threads=2)
    assert a.equals(b)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=40)), min_size=1, max_size=300), st.integers(1, 4))
def test_scan_on_random_keys(keys, partitions):
    n = len(keys)
    df = Sample.from_frame(
        pl.DataFrame({"key": pl.Series(keys, dtype=pl.Binary), "partition": [i % partitions for i in range(n)]}),
        partition_count=partitions,
    ).df
    kp, _ = _keytable.scan(df, partitions, threads=1)
    assert canon(kp).equals(canon(key_partition_table(df)))


def test_analysis_is_the_same_on_both_paths():
    df = tricky_frame(40_000, seed=5)
    s = Sample.from_frame(df, partition_count=5)
    fast = analyze(s, top=20, compiled=True).to_dict()
    slow = analyze(s, top=20, compiled=False).to_dict()
    assert fast == slow
    kp_fast, ext = scan_records(s.df, 5, compiled=True)
    kp_slow, none = scan_records(s.df, 5, compiled=False)
    assert none is None and set(ext) == set(range(5))


def test_rates_come_from_the_metadata_when_it_has_the_times():
    """A `keyscope sample` file carries first/last times per partition: no pass over timestamps needed."""
    from keyscope.sample import PartitionInfo

    df = tricky_frame(30_000, seed=7)
    s = Sample.from_frame(df, partition_count=5)
    for p, info in s.meta.partitions.items():  # pretend the sampler saw 10 s per partition
        s.meta.partitions[p] = PartitionInfo(
            p, low=0, high=info.last + 1, first=info.first, last=info.last, records=info.records,
            first_timestamp_ms=1_000_000, last_timestamp_ms=1_010_000,
        )  # fmt: skip
    for compiled in (True, False):
        d = analyze(s, compiled=compiled).to_dict()
        for part in d["partitions"]:
            info = s.meta.partitions[part["partition"]]
            assert part["rate_per_s"] == pytest.approx((info.last - info.first) / 10.0)
    assert analyze(s, compiled=True).to_dict() == analyze(s, compiled=False).to_dict()
