"""A sample cut short must stay fair or say so (issue 12, section 1, the analysis half).

One rule (keyscope.analysis.partition_weights) for analyze, whatif and recommend: a sample
whose partitions were not read in proportion is re-weighted by their real record counts
(watermarks), with intervals widened to match; where no weights exist, the verdict is
refused (exit 7).  End to end on real Apache Kafka: a topic with one hot partition, samples
cut at 10%, 50% and 90% of the full sample's budget.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from keyscope.analysis import analyze, partition_weights
from keyscope.cli import cli
from keyscope.errors import EXIT_UNFAIR, UnfairSample
from keyscope.partitioners import partition_for
from keyscope.sample import PartitionInfo, Sample, read_sample
from keyscope.whatif.engine import WhatIf

from .conftest import create_topic

HOT, SPREAD, BUDGET = 10_000, 6_000, 8_000  # partition 1: 12,000 records; 0 and 2: 2,000 each


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def hot_topic(broker):
    name = "fair-hot-partition"
    create_topic(broker.bootstrap_server, name, 3)
    hot = next(b"hot-%d" % i for i in range(100) if partition_for(b"hot-%d" % i, 3, "murmur2") == 1)
    spread = [b"user-%d" % i for i in range(3000)]
    per = np.bincount([partition_for(k, 3, "murmur2") for k in spread], minlength=3)
    # whole rounds of the spread keys, then top up so that partitions 0 and 2 hold 2,000 each
    keys = [hot] * HOT + spread + spread
    for p in range(3):
        extra = [k for k in spread if partition_for(k, 3, "murmur2") == p]
        keys += extra[: max(0, SPREAD // 3 - 2 * int(per[p]))]
    prod = Producer({"bootstrap.servers": broker.bootstrap_server, "partitioner": "murmur2_random",
                     "batch.size": 16384, "linger.ms": 5})
    rng = np.random.default_rng(7)
    for i in rng.permutation(len(keys)):
        prod.produce(name, key=keys[i], value=b'{"pad":"%s"}' % (b"x" * 200))
    assert prod.flush(60) == 0
    counts = np.bincount([partition_for(k, 3, "murmur2") for k in keys], minlength=3)
    return name, hot, counts


def _sample(broker, topic, path, *extra):
    r = run("sample", "-b", broker.bootstrap_server, "-t", topic, "-o", path, "--max-records", BUDGET, "-q",
            "--format", "json", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


@pytest.mark.parametrize("cut", ["10%", "50%", "90%", "per-partition"])
def test_cut_sample_gives_the_full_samples_answer(broker, hot_topic, tmp_path, cut):
    topic, hot, counts = hot_topic
    assert counts[1] > 4 * counts[0]
    full_doc = _sample(broker, topic, tmp_path / "full.parquet")
    full = json.loads(run("analyze", tmp_path / "full.parquet", "--format", "json").stdout)
    assert full["skew"]["hottest_partition"] == 1 and full["load_basis"] == "sample"
    truth = float(counts.max() / counts.mean())
    assert full["skew"]["ratio"] == pytest.approx(truth, rel=0.01)

    cut_path = tmp_path / "cut.parquet"
    if cut == "per-partition":  # the same number from each: the hot partition read least, in proportion
        _sample(broker, topic, cut_path, "--per-partition", 500)
    else:  # stopped by --max-bytes at a share of what the full sample fetched
        fraction = int(cut[:-1]) / 100
        _sample(broker, topic, cut_path, "--max-bytes", max(1, int(fraction * full_doc["meta"]["how"]["bytes_fetched"])))
    cut = read_sample(cut_path)
    assert 0 < len(cut) <= BUDGET

    r = run("analyze", cut_path, "--format", "json")
    unread = [p for p in range(3) if not (cut.df["partition"] == p).any()]
    if unread:
        # a sampler that reads partitions one after another can stop before reaching the hot one
        # (the fetch loop is another lane's): then no fair answer exists, and none is given
        assert r.exit_code == EXIT_UNFAIR, r.output
        assert f"partition(s) {', '.join(map(str, unread))} hold records" in r.stderr
        assert run("whatif", cut_path, "-p", "6").exit_code == EXIT_UNFAIR
        return
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    lo, hi = doc["skew"]["interval"]
    assert doc["skew"]["hottest_partition"] == 1
    assert lo <= full["skew"]["ratio"] <= hi, (lo, full["skew"]["ratio"], hi)
    assert doc["hot_keys"][0]["key"] == hot.decode() and doc["baseline"]["cause"] == "hot-key"
    # read out of proportion (the hot partition under-read): re-weighted, and said so
    read = np.array([p["records"] for p in doc["partitions"]], dtype=float)
    if abs(read[1] / read.sum() - counts[1] / counts.sum()) > 0.05:
        assert doc["load_basis"] == "watermarks"
        assert any("re-weighted" in w for w in doc["warnings"])

    # whatif and recommend follow the same rule: today's layout is the topic's, not the sample's
    w = json.loads(run("whatif", cut_path, "-p", "6", "--format", "json").stdout)
    today = w["today"]
    assert today["hottest_partition"] == 1
    assert today["skew"]["low"] <= full["skew"]["ratio"] <= today["skew"]["high"]
    rec = json.loads(run("recommend", cut_path, "--format", "json").stdout)
    assert rec["today"]["hottest_partition"] == 1


# ------------------------------------------------------------------ the rule, offline


def _uneven(read=(100, 1000, 100), spans=(1000, 10000, 1000), timestamps=False):
    frames, infos = [], {}
    for p, (n, s) in enumerate(zip(read, spans)):
        frames.append(pl.DataFrame({
            "partition": np.full(n, p, dtype=np.int32), "offset": np.arange(n, dtype=np.int64),
            "key": [b"k%d-%d" % (p, i % 17) for i in range(n)],
        }))
        infos[p] = PartitionInfo(p, low=0, high=s, first=0 if n else None, last=n - 1 if n else None, records=n)
    s = Sample.from_frame(pl.concat(frames), topic="t", partition_count=len(read),
                          how={"mode": "earliest", "stopped_by": "timeout"})
    s.meta.partitions = infos
    return s


def test_reweighted_by_real_counts_and_intervals_widened():
    s = _uneven(read=(500, 100, 500), spans=(1000, 10000, 1000))  # the hot partition read 1%
    w = partition_weights(s)
    assert w.basis == "watermarks" and list(w.w) == [2.0, 100.0, 2.0]
    d = analyze(s, reps=50).to_dict()
    assert d["skew"]["hottest_partition"] == 1
    assert d["skew"]["ratio"] == pytest.approx(10000 / (12000 / 3))
    lo, hi = d["skew"]["interval"]
    assert lo <= d["skew"]["ratio"] <= hi
    fair = _uneven(read=(92, 916, 92), spans=(1000, 10000, 1000))  # as many records, read in proportion
    assert partition_weights(fair).basis == "sample"
    flo, fhi = analyze(fair, reps=50).to_dict()["skew"]["interval"]
    assert hi - lo > 1.2 * (fhi - flo)  # 100x weights on 100 records: less known than the same 1,100 in proportion
    wi = WhatIf(s)
    assert wi.load_basis == "watermarks" and list(wi.today.records) == pytest.approx([1000, 10000, 1000])


def test_refused_when_a_partition_with_records_was_not_read():
    s = _uneven(read=(100, 0, 100), spans=(1000, 10000, 1000))
    with pytest.raises(UnfairSample, match="partition\\(s\\) 1 hold records"):
        analyze(s)
    with pytest.raises(UnfairSample):
        WhatIf(s)


def test_refused_without_watermarks_when_cut_short(tmp_path):
    s = _uneven()
    for i in s.meta.partitions.values():
        i.low = i.high = None
    path = tmp_path / "cut.parquet"
    s.write(path)
    for command in (["analyze"], ["whatif", "-p", "6"], ["recommend"]):
        r = CliRunner().invoke(cli, [command[0], str(path), *command[1:]])
        assert r.exit_code == EXIT_UNFAIR == 7, r.output
        assert "cut short" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # a file from another tool says nothing of how it was read: taken as it is
    s.meta.how, s.meta.partial = {}, False
    assert partition_weights(s).basis == "sample"
