"""keyscope.analysis on synthetic samples whose truth is known by construction."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from keyscope.analysis import analyze
from keyscope.errors import UsageError
from keyscope.partitioners import partition_column
from keyscope.report.format import to_json
from keyscope.sample import PartitionInfo, Sample

from .test_analysis_schema import validate

P = 6


def zipf_weights(k: int, s: float = 1.1) -> np.ndarray:
    w = 1 / np.arange(1, k + 1) ** s
    return w / w.sum()


def keyed_sample(key_ids, partitions=P, partitioner="murmur2", values=None, topic="t", prefix="tenant-"):
    """Records for key ids placed by a real partitioner (columnar)."""
    uniq = np.unique(key_ids)
    names = pl.Series("key", [f"{prefix}{i}".encode() for i in uniq], dtype=pl.Binary)
    place = partition_column(names, partitions, partitioner).cast(pl.Int32).to_numpy()
    pos = np.searchsorted(uniq, key_ids)
    df = pl.DataFrame({"key": names.gather(pos), "partition": place[pos]})
    if values is not None:
        df = df.with_columns(pl.Series("value_size", values, dtype=pl.Int32))
    return Sample.from_frame(df, topic=topic, partition_count=partitions)


def all_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from all_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def check_clean(result):
    """Strict JSON (no NaN/Inf), schema-valid, every share in [0, 1]."""
    d = result.to_dict()
    to_json(d)  # raises on NaN/Inf
    assert all(math.isfinite(x) for x in all_numbers(d))
    validate(d)
    return d


# ------------------------------------------------------------------ hot keys


def test_planted_hot_key_is_found_and_explains_the_excess():
    rng = np.random.default_rng(1)
    k = 3000
    p = zipf_weights(k) * 0.7
    p = np.concatenate([[0.3], p])  # key 0 carries 30% of the topic
    ids = rng.choice(k + 1, size=50_000, p=p)
    r = analyze(keyed_sample(ids), top=5, reps=200)
    d = check_clean(r)
    top = d["hot_keys"][0]
    assert top["key"] == "tenant-0" and top["key_encoding"] == "utf8"
    lo, hi = top["share_interval"]
    assert lo <= 0.3 <= hi
    assert top["partition"] == d["skew"]["hottest_partition"]
    assert top["explains_excess"] is True
    assert d["baseline"]["cause"] == "hot-key"
    assert d["hottest"]["keys_to_explain_excess"] == 1
    assert "tenant-0" in d["baseline"]["explanation"]
    # share of its partition is exactly its records over the partition's records
    part = d["partitions"][top["partition"]]
    assert top["share_of_partition"] == pytest.approx(top["records"] / part["records"])
    # the floor: no placement of these keys can beat 30% on one of 6 partitions
    assert d["baseline"]["floor_ratio"] == pytest.approx(P * top["records"] / d["sample"]["records"])
    assert d["partitioner"]["verdict"] == "murmur2"


def test_hot_key_share_interval_coverage_through_analyze():
    """Repeated samples of a known Zipf topic with a planted hot key: ~95% of intervals cover it."""
    rng = np.random.default_rng(5)
    k = 400
    p = np.concatenate([[0.12], zipf_weights(k) * 0.88])
    names = pl.Series("key", [f"tenant-{i}".encode() for i in range(k + 1)], dtype=pl.Binary)
    place = partition_column(names, P, "murmur2").cast(pl.Int32).to_numpy()
    hits, reps = 0, 200
    for _ in range(reps):
        ids = rng.choice(k + 1, size=1500, p=p)
        s = Sample.from_frame(pl.DataFrame({"key": names.gather(ids), "partition": place[ids]}), partition_count=P)
        d = analyze(s, top=3, reps=50).to_dict()
        row = next((h for h in d["hot_keys"] if h["key"] == "tenant-0"), None)
        assert row is not None  # at 12% it is always among the top 3
        hits += row["share_interval"][0] <= 0.12 <= row["share_interval"][1]
    assert 0.90 <= hits / reps <= 0.99


def test_skew_ratio_is_the_alert_rule_on_partition_counts():
    ids = np.repeat(np.arange(60), 10)
    s = keyed_sample(ids)
    d = analyze(s, reps=50).to_dict()
    counts = np.array([p["records"] for p in d["partitions"]])
    assert counts.sum() == 600
    assert d["skew"]["ratio"] == pytest.approx(counts.max() / max(counts.mean(), 0.001))
    lo, hi = d["skew"]["interval"]
    assert lo <= d["skew"]["ratio"] <= hi


def test_by_bytes_ranks_fat_keys_first():
    ids = np.array([1] * 900 + [2] * 100)
    values = np.array([10] * 900 + [10_000] * 100)
    s = keyed_sample(ids, values=values)
    by_rec = analyze(s, by="records", reps=50).to_dict()
    by_bytes = analyze(s, by="bytes", reps=50).to_dict()
    assert by_rec["hot_keys"][0]["key"] == "tenant-1"
    assert by_bytes["hot_keys"][0]["key"] == "tenant-2"
    key_bytes = 100 * (10_000 + len(b"tenant-2"))
    total = 900 * (10 + 8) + key_bytes
    assert by_bytes["hot_keys"][0]["bytes"] == key_bytes
    assert by_bytes["hot_keys"][0]["share"] == pytest.approx(key_bytes / total)
    lo, hi = by_bytes["hot_keys"][0]["share_interval"]
    assert lo <= key_bytes / total <= hi
    check_clean(analyze(s, by="bytes", reps=50))


# ------------------------------------------------------------------ causes


def test_null_key_sticky_traffic_is_named():
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 5000, size=6000)  # even keyed traffic
    keyed = keyed_sample(ids).df
    nulls = pl.DataFrame({"key": pl.Series([None] * 4000, dtype=pl.Binary), "partition": pl.Series([2] * 4000, dtype=pl.Int32)})
    s = Sample.from_frame(pl.concat([keyed.select("key", "partition"), nulls]), partition_count=P)
    d = check_clean(analyze(s, reps=100))
    assert d["skew"]["hottest_partition"] == 2
    assert d["baseline"]["cause"] == "null-key-sticky"
    assert d["sample"]["null_key_records"] == 4000
    assert d["partitioner"]["null_key_records"] == 4000
    assert d["partitioner"]["keyed_records"] == 6000
    assert d["partitioner"]["verdict"] == "murmur2"  # null keys do not count against it


def test_many_keys_stacked_on_one_partition_is_not_a_hot_key():
    # 60 equal keys; a custom placement stacks 25 of them on partition 0
    ids = np.repeat(np.arange(60), 50)
    part = np.where(np.arange(60) < 25, 0, 1 + np.arange(60) % 5)[ids].astype(np.int32)
    df = pl.DataFrame({"key": [f"k{i}".encode() for i in ids], "partition": part})
    d = check_clean(analyze(Sample.from_frame(df, partition_count=P), reps=500))
    assert d["skew"]["hottest_partition"] == 0
    assert d["baseline"]["cause"] == "unlucky-hashing"
    assert d["hottest"]["keys_to_explain_excess"] > 3
    assert d["baseline"]["beyond_random_hashing"] is True
    assert d["partitioner"]["verdict"] == "unknown"


def test_even_topic_is_balanced():
    ids = np.tile(np.arange(3000), 20)
    d = check_clean(analyze(keyed_sample(ids), reps=100))
    assert d["skew"]["ratio"] < 1.2
    assert d["baseline"]["cause"] == "balanced"
    assert not any("too small" in w for w in d["warnings"])


# ------------------------------------------------------------------ no NaN, ever


def test_empty_sample_with_partition_count():
    s = Sample.from_frame(pl.DataFrame({"partition": pl.Series([], dtype=pl.Int32), "key": pl.Series([], dtype=pl.Binary)}), partition_count=3)
    d = check_clean(analyze(s))
    assert d["sample"]["records"] == 0
    assert d["skew"]["ratio"] == 0.0 and d["skew"]["interval"] is None
    assert d["baseline"]["cause"] == "no-data"
    assert d["partitioner"]["verdict"] == "no-keys"
    assert len(d["partitions"]) == 3
    assert any("empty" in w for w in d["warnings"])


def test_empty_sample_without_metadata():
    s = Sample.from_frame(pl.DataFrame({"partition": pl.Series([], dtype=pl.Int32), "key": pl.Series([], dtype=pl.Binary)}))
    d = check_clean(analyze(s))
    assert d["partition_count"] == 0 and d["partitions"] == [] and d["hot_keys"] == []


def test_one_partition():
    s = Sample.from_frame(pl.DataFrame({"partition": [0] * 50, "key": [b"a", b"b"] * 25}), partition_count=1)
    d = check_clean(analyze(s))
    assert d["skew"]["ratio"] == pytest.approx(1.0)
    assert d["skew"]["chi_square"] is None
    assert d["baseline"]["cause"] == "single-partition"
    assert d["partitioner"]["verdict"] == "ambiguous"


def test_all_null_keys():
    s = Sample.from_frame(
        pl.DataFrame({"partition": [0, 0, 0, 1, 2] * 20, "key": pl.Series([None] * 100, dtype=pl.Binary)}),
        partition_count=3,
    )
    d = check_clean(analyze(s))
    assert d["hot_keys"] == [] and d["sample"]["distinct_keys"] == 0
    assert d["partitioner"]["verdict"] == "no-keys"
    assert d["baseline"]["cause"] == "null-key-sticky"
    assert any("null key" in w for w in d["warnings"])


@pytest.mark.parametrize("by", ["records", "bytes"])
def test_zero_size_values_and_null_keys(by):
    s = Sample.from_frame(
        pl.DataFrame(
            {
                "partition": [0, 1, 2, 0],
                "key": pl.Series([None] * 4, dtype=pl.Binary),
                "value_size": [0, 0, 0, 0],
            }
        ),
        partition_count=3,
    )
    d = check_clean(analyze(s, by=by))
    if by == "bytes":  # no bytes at all: ratio 0 / clamp_min(0, 0.001)
        assert d["skew"]["ratio"] == 0.0 and d["baseline"]["cause"] == "no-data"
    assert any("too small" in w for w in d["warnings"])


def test_small_sample_warns_and_widens():
    ids = np.arange(20)
    d = check_clean(analyze(keyed_sample(ids)))
    assert any("too small" in w for w in d["warnings"])
    lo, hi = d["skew"]["interval"]
    assert hi / max(lo, 1e-9) > 1.5


def test_bad_options_are_usage_errors():
    s = keyed_sample(np.arange(10))
    with pytest.raises(UsageError):
        analyze(s, by="weight")
    with pytest.raises(UsageError):
        analyze(s, load="lag")
    with pytest.raises(UsageError, match="rate"):
        analyze(s, load="rate")  # no timestamps: no rates


def test_deterministic_for_a_seed():
    ids = np.random.default_rng(0).choice(500, size=5000, p=zipf_weights(500))
    s = keyed_sample(ids)
    assert analyze(s, seed=3).to_dict() == analyze(s, seed=3).to_dict()


# ------------------------------------------------------------------ real load from offsets


def capped_sample(per_partition=200, rates=(100.0, 10.0, 10.0), t0=1_700_000_000_000):
    """Last N records of each partition, like `keyscope sample --from latest`: equal counts,
    but partition 0 advanced its offsets 10x faster (records/s).  No watermarks (they would
    be the real counts, the first choice): the rates re-weight it."""
    frames = []
    infos = {}
    for p, rate in enumerate(rates):
        span_ms = per_partition / rate * 1000
        ts = t0 + np.linspace(0, span_ms, per_partition).astype(np.int64)
        offsets = 10_000 + np.arange(per_partition)
        key_ids = np.arange(per_partition) % 20 + 100 * p
        frames.append(
            pl.DataFrame(
                {
                    "partition": np.full(per_partition, p, dtype=np.int32),
                    "offset": offsets,
                    "timestamp": pl.Series(ts).cast(pl.Datetime("ms", "UTC")),
                    "key": [f"k{i}".encode() for i in key_ids],
                }
            )
        )
        infos[p] = PartitionInfo(p, first=10_000, last=10_000 + per_partition - 1, records=per_partition)
    s = Sample.from_frame(pl.concat(frames), topic="crm", partition_count=len(rates), how={"per_partition": per_partition})
    s.meta.partitions = infos
    return s


def test_capped_sample_uses_real_rates():
    s = capped_sample()
    d = check_clean(analyze(s, reps=100))
    assert d["load_basis"] == "rate"
    rates = [p["rate_per_s"] for p in d["partitions"]]
    # offsets advanced (N-1) over the time between first and last record
    expected = [(199) / ((int(200 / r * 1000)) / 1000) for r in (100.0, 10.0, 10.0)]
    assert rates == pytest.approx(expected, rel=1e-3)
    assert d["skew"]["ratio"] == pytest.approx(max(rates) / (sum(rates) / 3))
    assert d["skew"]["hottest_partition"] == 0
    lo, hi = d["skew"]["interval"]  # the rate basis has an interval too (each rate rests on 200 records)
    assert 1.0 <= lo < d["skew"]["ratio"] < hi
    # the sample's counts alone say "even"; the report must not
    assert d["skew"]["records_ratio"] == pytest.approx(max(rates) / (sum(rates) / 3))
    # a key on partition 0 carries (1/20) of that partition's rate
    top = d["hot_keys"][0]
    assert top["partition"] == 0
    assert top["share"] == pytest.approx(rates[0] / sum(rates) / 20)
    lo, hi = top["share_interval"]
    assert lo <= top["share"] <= hi
    # forcing the sample's own counts shows the sampler's cap
    flat = analyze(s, load="sample", reps=100).to_dict()
    assert flat["skew"]["ratio"] == pytest.approx(1.0)


def test_capped_sample_without_timestamps_or_watermarks_is_refused():
    from keyscope.errors import EXIT_UNFAIR, UnfairSample

    s = capped_sample()
    s.df = s.df.with_columns(pl.lit(None, dtype=pl.Datetime("ms", "UTC")).alias("timestamp"))
    for i in s.meta.partitions.values():
        i.first_timestamp_ms = i.last_timestamp_ms = None
    with pytest.raises(UnfairSample, match="capped per partition") as e:
        analyze(s, reps=50)
    assert e.value.exit_code == EXIT_UNFAIR == 7
    assert analyze(s, load="sample", reps=50).load_basis == "sample"  # asked for: the counts as they are


# ------------------------------------------------------------------ partitioner detection (synthetic)


def test_partition_count_change_is_told_from_the_offsets():
    """Old records (offsets first) placed at 3 partitions, new ones at 6, same keys."""
    rng = np.random.default_rng(4)
    keys = pl.Series("key", [f"order-{i}".encode() for i in range(600)], dtype=pl.Binary)
    old_ids, new_ids = rng.integers(0, 600, 3000), rng.integers(0, 600, 3000)
    old_p = partition_column(keys.gather(old_ids), 3, "murmur2").cast(pl.Int32)
    new_p = partition_column(keys.gather(new_ids), 6, "murmur2").cast(pl.Int32)
    df = pl.DataFrame(
        {"key": pl.concat([keys.gather(old_ids), keys.gather(new_ids)]), "partition": pl.concat([old_p, new_p])}
    ).with_columns(pl.int_range(pl.len()).over("partition").alias("offset"))  # old first in each partition
    d = check_clean(analyze(Sample.from_frame(df, partition_count=6), reps=50))
    det = d["partitioner"]
    assert det["verdict"] == "mixed"
    assert det["split_keys"] > 0
    assert det["mixed"]["likelier"] == "partition-count-changed"
    assert det["mixed"]["previous_partition_count"] == 3
    assert det["mixed"]["majority_partitioner"] == "murmur2"
    assert det["mixed"]["interleaved_chance"] < 1e-3


def test_two_producers_interleaved():
    rng = np.random.default_rng(6)
    keys = pl.Series("key", [f"user-{i}".encode() for i in range(500)], dtype=pl.Binary)
    ids = rng.integers(0, 500, 6000)
    which = rng.random(6000) < 0.6
    pa_ = partition_column(keys.gather(ids), 6, "murmur2").cast(pl.Int32).to_numpy()
    pb = partition_column(keys.gather(ids), 6, "consistent").cast(pl.Int32).to_numpy()
    df = pl.DataFrame({"key": keys.gather(ids), "partition": np.where(which, pa_, pb)})
    d = check_clean(analyze(Sample.from_frame(df, partition_count=6), reps=50))
    det = d["partitioner"]
    assert det["verdict"] == "mixed"
    assert det["mixed"]["likelier"] == "two-producers"
    assert sorted(det["mixed"]["partitioners"]) == ["consistent", "murmur2"]
    assert det["mixed"]["switched_from"] is None  # both write all along
    assert det["mixed"]["interleaved_chance"] > 1e-3


def test_producers_switching_partitioner_is_told_from_the_offsets():
    """fnv1a (Sarama) wrote first, then consistent (librdkafka) took over: a client migration."""
    rng = np.random.default_rng(10)
    keys = pl.Series("key", [f"user-{i}".encode() for i in range(400)], dtype=pl.Binary)
    old_ids, new_ids = rng.integers(0, 400, 2500), rng.integers(0, 400, 3500)
    old_p = partition_column(keys.gather(old_ids), 6, "fnv1a").cast(pl.Int32)
    new_p = partition_column(keys.gather(new_ids), 6, "consistent").cast(pl.Int32)
    df = pl.DataFrame(
        {"key": pl.concat([keys.gather(old_ids), keys.gather(new_ids)]), "partition": pl.concat([old_p, new_p])}
    ).with_columns(pl.int_range(pl.len()).over("partition").alias("offset"))
    d = check_clean(analyze(Sample.from_frame(df, partition_count=6), reps=50))
    mixed = d["partitioner"]["mixed"]
    assert d["partitioner"]["verdict"] == "mixed"
    assert mixed["likelier"] == "two-producers"
    assert (mixed["switched_from"], mixed["switched_to"]) == ("fnv1a", "consistent")
    assert mixed["interleaved_chance"] < 1e-3
    assert "switched from fnv1a to consistent" in mixed["explanation"]


def test_shipped_mixed_sample_is_a_switch_from_murmur2_to_consistent():
    """samples/orders-mixed-partitioners.parquet: kafka-python first, then confluent-kafka's default."""
    from pathlib import Path

    from keyscope.sample import read_sample

    path = Path(__file__).resolve().parent.parent / "samples" / "orders-mixed-partitioners.parquet"
    if not path.exists():
        pytest.fail(f"{path} is missing (samples/generate.py makes it)")
    d = check_clean(analyze(read_sample(path)))
    mixed = d["partitioner"]["mixed"]
    assert d["partitioner"]["verdict"] == "mixed"
    assert (mixed["switched_from"], mixed["switched_to"]) == ("murmur2", "consistent")


def test_hot_key_named_even_when_not_listed():
    ids = np.array([0] * 600 + list(range(1, 601)))
    d = check_clean(analyze(keyed_sample(ids), top=0, reps=50))
    assert d["hot_keys"] == []
    assert d["baseline"]["cause"] == "hot-key"
    assert "'tenant-0' alone explains" in d["baseline"]["explanation"]


def test_custom_placement_is_unknown():
    rng = np.random.default_rng(8)
    ids = rng.integers(0, 1000, 5000)
    df = pl.DataFrame({"key": [f"x{i}".encode() for i in ids], "partition": ((ids * 7 + 3) % 6).astype(np.int32)})
    d = check_clean(analyze(Sample.from_frame(df, partition_count=6), reps=50))
    assert d["partitioner"]["verdict"] == "unknown"
    assert d["partitioner"]["split_keys"] == 0


def test_few_keys_match_is_flagged_as_possibly_chance():
    s = keyed_sample(np.array([1, 1, 2, 2, 3]), partitioner="fnv1a")
    d = analyze(s).to_dict()
    assert d["partitioner"]["verdict"] in ("fnv1a", "ambiguous")
    assert d["partitioner"]["chance_match_probability"] > 1e-3
    if d["partitioner"]["verdict"] == "fnv1a":
        assert any("chance" in w for w in d["warnings"])


def test_binary_keys_are_shown_as_hex():
    df = pl.DataFrame({"key": [b"\x00\xff\x10"] * 30 + [b"ok"] * 10, "partition": [0] * 30 + [1] * 10})
    d = check_clean(analyze(Sample.from_frame(df, partition_count=2)))
    assert d["hot_keys"][0]["key"] == "00ff10" and d["hot_keys"][0]["key_encoding"] == "hex"
    assert d["hot_keys"][1]["key"] == "ok" and d["hot_keys"][1]["key_encoding"] == "utf8"


def test_hot_key_cause_says_which_share_is_of_the_partition_and_which_of_all():
    """The cause line gives the hot key's share of its partition (the table's 'of partition')
    and of all load (the table's 'share'), each named: 'of the load there' read as either."""
    from pathlib import Path

    from keyscope.sample import read_sample

    path = Path(__file__).resolve().parent.parent / "samples" / "crm-events-hot-tenant.parquet"
    d = check_clean(analyze(read_sample(path)))
    top = d["hot_keys"][0]
    assert top["key"] == "stark-industries" and top["explains_excess"]
    of_part = f"{100 * top['share_of_partition']:.1f}% of partition 2's load"
    of_all = f"{100 * top['share']:.1f}% of all load"
    assert of_part in d["baseline"]["explanation"] and of_all in d["baseline"]["explanation"]
    assert "there" not in d["baseline"]["explanation"]


@pytest.mark.parametrize("placement", [[0, 1, 2, 2], [0, 1, 2], [0, 0, 0]])
def test_skew_interval_never_below_one(placement):
    """max/mean >= 1 for any load: a tiny or near-even sample's interval starts at 1 at the
    lowest (as whatif's does), never 0.35; one partition is exactly 1."""
    parts = max(placement) + 1 if max(placement) else 1
    df = pl.DataFrame(
        {"key": [f"k{i}".encode() for i in range(len(placement))], "partition": placement},
        schema={"key": pl.Binary, "partition": pl.Int32},
    )
    d = check_clean(analyze(Sample.from_frame(df, topic="t", partition_count=parts), reps=50))
    lo, hi = d["skew"]["interval"]
    assert 1.0 <= lo <= d["skew"]["ratio"] <= hi <= parts
    assert not any("uncertain: 0." in w for w in d["warnings"])
