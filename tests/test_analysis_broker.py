"""Partitioner detection on topics real clients wrote to the embedded broker.

Each topic is produced by a real client (confluent-kafka with each librdkafka
hash partitioner, kafka-python with its default), read back over TCP with a
plain assign-mode consumer, turned into a Sample, and analyzed.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from keyscope.analysis import analyze
from keyscope.sample import Sample

from .conftest import create_topic
from .test_analysis_schema import validate

PARTITIONS = 6


def workload(seed: int, n_keys: int = 1200, records: int = 4000, nulls: int = 0):
    """Zipf-ish keyed records (one key per record), plus null keys if asked."""
    rng = np.random.default_rng(seed)
    w = 1 / np.arange(1, n_keys + 1) ** 1.1
    ids = rng.choice(n_keys, size=records, p=w / w.sum())
    keys: list[bytes | None] = [f"acct-{i}:{'é' if i % 7 == 0 else 'x'}".encode() for i in ids]
    keys += [None] * nulls
    return keys


def produce_confluent(bootstrap, topic, keys, partitioner):
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": partitioner, "linger.ms": 5})
    for k in keys:
        producer.produce(topic, key=k, value=b"{}")
        producer.poll(0)
    assert producer.flush(30) == 0


def produce_kafka_python(bootstrap, topic, keys):
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for k in keys:
        producer.send(topic, key=k, value=b"{}")
    producer.flush(30)
    producer.close()


def read_back(bootstrap, topic, want: int, partitions=PARTITIONS) -> Sample:
    """All ``want`` records of the topic, via assign() (no group, no commit).

    ``want`` is what the test produced: ListOffsets under-reports on Tansu
    when producers batch (shared/BROKER.md), so it cannot say when to stop.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    rows = {"partition": [], "offset": [], "key": [], "value_size": []}
    while len(rows["offset"]) < want:
        msgs = consumer.consume(min(1000, want - len(rows["offset"])), timeout=5)  # a short ask waits it all
        assert msgs, f"read {len(rows['offset'])} of {want} records"
        for m in msgs:
            assert m.error() is None, m.error()
            rows["partition"].append(m.partition())
            rows["offset"].append(m.offset())
            rows["key"].append(m.key())
            rows["value_size"].append(len(m.value() or b""))
    consumer.close()
    df = pl.DataFrame(rows, schema={"partition": pl.Int32, "offset": pl.Int64, "key": pl.Binary, "value_size": pl.Int32})
    return Sample.from_frame(df, topic=topic, partition_count=partitions, source="kafka")


@pytest.mark.parametrize(
    "client_partitioner,expected",
    [("consistent_random", "consistent"), ("murmur2_random", "murmur2"), ("fnv1a_random", "fnv1a")],
)
def test_confluent_kafka_partitioner_is_detected(broker, topic_name, client_partitioner, expected):
    create_topic(broker.bootstrap_server, topic_name, PARTITIONS)
    keys = workload(seed=len(expected), nulls=300)
    produce_confluent(broker.bootstrap_server, topic_name, keys, client_partitioner)
    sample = read_back(broker.bootstrap_server, topic_name, len(keys))
    assert len(sample) == len(keys)
    d = analyze(sample, reps=200).to_dict()
    validate(d)
    det = d["partitioner"]
    assert det["verdict"] == expected, det["explanation"]
    assert det["agreement"][expected]["fraction"] == 1.0
    from keyscope.partitioners import PARTITIONERS

    raw = PARTITIONERS[expected].hash_name
    others = [a["fraction"] for n, a in det["agreement"].items() if PARTITIONERS[n].hash_name != raw]
    assert max(others) < 0.5  # families of other hashes are near chance (1/6), not near 1
    # a mask and an abs of the same hash agree on about half the keys, never on all
    siblings = [a["fraction"] for n, a in det["agreement"].items() if n != expected and PARTITIONERS[n].hash_name == raw]
    assert siblings and max(siblings) < 1.0
    assert det["null_key_records"] == 300 and det["keyed_records"] == len(keys) - 300
    assert det["split_keys"] == 0
    # the hot key of a Zipf workload is the first one and it is found
    assert d["hot_keys"][0]["key"] == "acct-0:é"


def test_kafka_python_default_is_detected_as_murmur2(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, PARTITIONS)
    keys = workload(seed=11, records=2500)
    produce_kafka_python(broker.bootstrap_server, topic_name, keys)
    d = analyze(read_back(broker.bootstrap_server, topic_name, len(keys)), reps=200).to_dict()
    assert d["partitioner"]["verdict"] == "murmur2", d["partitioner"]["explanation"]
    assert d["partitioner"]["agreement"]["murmur2"]["matched_records"] == 2500


def test_two_producers_with_different_partitioners_are_mixed(broker, topic_name):
    """librdkafka's default and kafka-python write the same keys, taking turns."""
    create_topic(broker.bootstrap_server, topic_name, PARTITIONS)
    keys = workload(seed=12, n_keys=600, records=3000)
    for i in range(0, len(keys), 500):  # interleave in chunks
        chunk = keys[i : i + 500]
        if (i // 500) % 2:
            produce_kafka_python(broker.bootstrap_server, topic_name, chunk)
        else:
            produce_confluent(broker.bootstrap_server, topic_name, chunk, "consistent_random")
    d = analyze(read_back(broker.bootstrap_server, topic_name, len(keys)), reps=200).to_dict()
    validate(d)
    det = d["partitioner"]
    assert det["verdict"] == "mixed", det["explanation"]
    assert det["split_keys"] > 0
    assert det["mixed"]["likelier"] == "two-producers"
    assert sorted(det["mixed"]["partitioners"]) == ["consistent", "murmur2"]
    for name in ("consistent", "murmur2"):
        assert 0.3 < det["agreement"][name]["fraction"] < 1.0


def test_sample_and_analyze_in_one_go(broker, topic_name):
    """`keyscope analyze -b … -t …`: the sampler reads the topic, analyze reports on it."""
    import json

    from click.testing import CliRunner

    from keyscope.cli import cli
    from keyscope.partitioners import partition_for

    create_topic(broker.bootstrap_server, topic_name, 3)
    keys = [b"tenant-hot"] * 1500 + [f"tenant-{i}".encode() for i in range(1500)]
    produce_kafka_python(broker.bootstrap_server, topic_name, keys)
    r = CliRunner().invoke(
        cli, ["analyze", "-b", broker.bootstrap_server, "-t", topic_name, "--format", "json", "--timeout", "30"]
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    validate(d)
    assert d["topic"] == topic_name and d["partition_count"] == 3
    assert d["sample"]["records"] == 3000 and d["sample"]["source"] == "kafka"
    assert d["partitioner"]["verdict"] == "murmur2"
    hot = partition_for(b"tenant-hot", 3, "murmur2")
    assert d["skew"]["hottest_partition"] == hot
    assert d["hot_keys"][0]["key"] == "tenant-hot" and d["hot_keys"][0]["explains_excess"]
    # the watermarks the sampler recorded are the real record counts
    assert sum(p["retained"] for p in d["partitions"]) == 3000


def test_one_go_needs_a_reachable_cluster():
    from click.testing import CliRunner

    from keyscope.cli import cli

    r = CliRunner().invoke(cli, ["analyze", "-b", "127.0.0.1:1", "-t", "nope", "--timeout", "3"])
    assert r.exit_code == 4, r.output
    assert r.output.startswith("keyscope: error:") and "Traceback" not in r.output
    both = CliRunner().invoke(cli, ["analyze", "x.parquet", "-t", "nope"])
    assert both.exit_code == 2 and "not both" in both.output
