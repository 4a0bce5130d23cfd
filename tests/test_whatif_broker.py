"""Fidelity on the real broker: what `whatif` predicts is what Kafka does.

The same keyed records (one hot tenant plus a Zipf tail, JSON values) are
produced with confluent-kafka to a 3-partition topic and to topics set up the
way each scenario says (6 partitions; a composite key; salted hot keys).  The
3-partition topic is read back whole with a plain consumer in assign mode and
turned into a Sample; each prediction must equal the other topic's real
per-partition counts exactly, and the keys-moved figure must equal a
brute-force comparison of where each key really landed on both topics.
"""

from __future__ import annotations

import json
import struct

import mmh3
import numpy as np
import polars as pl
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from keyscope.sample import Sample
from keyscope.whatif.engine import WhatIf
from keyscope.whatif.spec import Salt, Scenario

from .conftest import create_topic

RECORDS = 12_000
TENANTS = 600
HOT = "tenant-hot"


def _records(seed: int = 5) -> list[tuple[bytes, bytes, dict]]:
    rng = np.random.default_rng(seed)
    hot = rng.random(RECORDS) < 0.35
    tail = rng.zipf(1.15, RECORDS) % TENANTS
    users = rng.integers(0, 40, RECORDS)
    out = []
    for i in range(RECORDS):
        tenant = HOT if hot[i] else f"tenant-{tail[i]:04d}"
        value = {"tenant_id": tenant, "event_id": f"e{i}", "type": "contact.updated"}
        if i % 13:  # some records lack user_id: composite keys keep the plain key for them
            value["user_id"] = f"user-{users[i]}"
        out.append((tenant.encode(), json.dumps(value).encode(), value))
    return out


def _produce(bootstrap: str, topic: str, keyed: list[tuple[bytes, bytes]], partitioner: str) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "partitioner": partitioner, "linger.ms": 5, "enable.idempotence": True}
    )
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)

    for k, v in keyed:
        producer.produce(topic, key=k, value=v, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0
    assert errors == []


def _read_all(bootstrap: str, topic: str, partitions: int, expected: int) -> pl.DataFrame:
    """Every record of the topic, in assign mode (no group join, no commit)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "keyscope-test-reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    rows = {"partition": [], "offset": [], "key": [], "value": []}
    idle = 0
    try:
        while len(rows["key"]) < expected and idle < 20:
            msgs = consumer.consume(num_messages=5000, timeout=0.5)
            idle = 0 if msgs else idle + 1
            for m in msgs:
                assert m.error() is None, m.error()
                rows["partition"].append(m.partition())
                rows["offset"].append(m.offset())
                rows["key"].append(m.key())
                rows["value"].append(m.value())
    finally:
        consumer.close()
    assert len(rows["key"]) == expected
    return pl.DataFrame(
        rows, schema={"partition": pl.Int32, "offset": pl.Int64, "key": pl.Binary, "value": pl.Binary}
    )


def _counts(df: pl.DataFrame, partitions: int) -> list[int]:
    return np.bincount(df["partition"].to_numpy(), minlength=partitions).tolist()


def _topic(broker, topic_name: str, suffix: str, partitions: int) -> str:
    name = f"{topic_name}-{suffix}"
    create_topic(broker.bootstrap_server, name, partitions)
    return name


@pytest.fixture(scope="module")
def records():
    return _records()


@pytest.mark.parametrize(
    "client_partitioner,ours", [("murmur2_random", "murmur2"), ("consistent_random", "consistent")]
)
def test_whatif_predicts_real_topics_exactly(broker, topic_name, records, client_partitioner, ours):
    bs = broker.bootstrap_server
    plain = [(k, v) for k, v, _ in records]
    three = _topic(broker, topic_name, "p3", 3)
    six = _topic(broker, topic_name, "p6", 6)
    _produce(bs, three, plain, client_partitioner)
    _produce(bs, six, plain, client_partitioner)

    # the whole 3-partition topic, as `keyscope sample` would capture it with --field
    got = _read_all(bs, three, 3, RECORDS)
    fields = pl.DataFrame([json.loads(v) for v in got["value"].to_list()]).select("tenant_id", "user_id", "event_id")
    df = pl.concat([got.drop("value"), fields], how="horizontal")
    sample = Sample.from_frame(df, topic=three, partition_count=3)
    w = WhatIf(sample)
    assert w.today_partitioner == ours and w.today_match == 1.0

    # ---- 3 -> 6 partitions: exact per-partition counts
    real6 = _read_all(bs, six, 6, RECORDS)
    pred6 = w.evaluate(Scenario(6, ours))
    assert [int(x) for x in pred6.records] == _counts(real6, 6)
    assert pred6.records.max() > pred6.records.min()  # a constant predictor cannot pass

    # keys moved against a brute-force comparison of where each key really is on both topics
    where3 = dict(got.select("key", "partition").unique().iter_rows())
    where6 = dict(real6.select("key", "partition").unique().iter_rows())
    assert set(where3) == set(where6)
    moved = sum(1 for k in where3 if where3[k] != where6[k])
    assert pred6.keys_moved == moved
    assert pred6.keys_total == len(where3)
    moved_records = sum(1 for k, p in zip(got["key"].to_list(), got["partition"].to_list()) if where6[k] != p)
    assert pred6.traffic_moved_share == pytest.approx(moved_records / RECORDS)

    # ---- composite key tenant|user_id at 6 partitions (null user_id keeps the plain key)
    comp = _topic(broker, topic_name, "comp", 6)
    composite = [
        (k + b"|" + val["user_id"].encode() if "user_id" in val else k, v) for k, v, val in records
    ]
    _produce(bs, comp, composite, client_partitioner)
    pred_c = w.evaluate(Scenario(6, ours, key_fields=("user_id",), separator="|"))
    assert [int(x) for x in pred_c.records] == _counts(_read_all(bs, comp, 6, RECORDS), 6)
    assert pred_c.keys_split > 0  # the hot tenant now spreads

    # ---- salting the hottest key over 4 sub-keys by a field (the producer applies the documented rule)
    salted_f = _topic(broker, topic_name, "saltf", 3)
    sc = Scenario(3, ours, salt=Salt(top=1, buckets=4, by="event_id", seed=9))
    pred_s = w.evaluate(sc)
    assert [k for k, _ in pred_s.salted_keys] == [HOT.encode()]
    rule = [
        (k + b"#" + str(mmh3.hash(val["event_id"].encode(), 9, signed=False) % 4).encode() if k == HOT.encode() else k, v)
        for k, v, val in records
    ]
    _produce(bs, salted_f, rule, client_partitioner)
    assert [int(x) for x in pred_s.records] == _counts(_read_all(bs, salted_f, 3, RECORDS), 3)

    # ---- salting by offset: the salt comes from each record's offset in the sampled topic
    salted_o = _topic(broker, topic_name, "salto", 3)
    sc_o = Scenario(3, ours, salt=Salt(top=1, buckets=8, by="offset"))
    pred_o = w.evaluate(sc_o)
    by_offset = [
        (
            k + b"#" + str(mmh3.hash(struct.pack("<q", off), 0, signed=False) % 8).encode() if k == HOT.encode() else k,
            v,
        )
        for k, v, off in zip(got["key"].to_list(), got["value"].to_list(), got["offset"].to_list())
    ]
    _produce(bs, salted_o, by_offset, client_partitioner)
    assert [int(x) for x in pred_o.records] == _counts(_read_all(bs, salted_o, 3, RECORDS), 3)
    assert len({p for p in pred_o.records if p > 0}) == 3


def test_sample_then_whatif_end_to_end(broker, topic_name, records, tmp_path):
    """The commands a user runs: `keyscope sample` the 3-partition topic, `keyscope whatif` it."""
    from click.testing import CliRunner

    from keyscope.cli import cli

    bs = broker.bootstrap_server
    plain = [(k, v) for k, v, _ in records]
    three = _topic(broker, topic_name, "p3", 3)
    six = _topic(broker, topic_name, "p6", 6)
    comp = _topic(broker, topic_name, "comp", 6)
    _produce(bs, three, plain, "consistent_random")
    _produce(bs, six, plain, "consistent_random")
    _produce(
        bs, comp, [(k + b":" + val["user_id"].encode() if "user_id" in val else k, v) for k, v, val in records],
        "consistent_random",
    )
    path = tmp_path / "s.parquet"
    r = CliRunner().invoke(
        cli,
        ["sample", "-b", bs, "-t", three, "--from", "earliest", "--max-records", str(RECORDS),
         "--field", "user_id=$.user_id", "-o", str(path)],
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(
        cli,
        ["whatif", str(path), "-p", "6", "--key-by", "key", "--key-by", "key,user_id", "--separator", ":",
         "--format", "json"],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["sample"]["records"] == RECORDS
    assert doc["sample"]["today_partitioner"]["name"] == "consistent"
    plain6, comp6 = doc["scenarios"]
    assert plain6["records"] == _counts(_read_all(bs, six, 6, RECORDS), 6)
    assert comp6["records"] == _counts(_read_all(bs, comp, 6, RECORDS), 6)

    # a capped sample (the same number from each partition) is scaled back to the topic by its watermarks
    capped = tmp_path / "capped.parquet"
    r = CliRunner().invoke(
        cli, ["sample", "-b", bs, "-t", three, "--from", "earliest", "--per-partition", "500", "-o", str(capped)]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["whatif", str(capped), "-p", "6", "--format", "json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["today"]["records"] == _counts(_read_all(bs, three, 3, RECORDS), 3)
    assert any("unevenly" in n for n in doc["sample"]["notes"])
