"""Read-only Kafka access against the real embedded broker."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from keyscope.kafka import client as kafka_io
from keyscope.kafka.connection import resolve
from keyscope.errors import KafkaError

from .conftest import create_topic


def test_true_high_watermark_despite_batched_list_offsets(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 3)
    p = Producer({"bootstrap.servers": broker.bootstrap_server, "linger.ms": 50, "partitioner": "murmur2_random"})
    for i in range(20000):
        p.produce(topic_name, key=f"k{i % 97}".encode(), value=b"x")
    assert p.flush(30) == 0
    c = kafka_io.open_consumer(resolve(broker.bootstrap_server))
    try:
        parts = kafka_io.topic_partitions(c, topic_name)
        wm = kafka_io.watermarks(c, topic_name, parts)
    finally:
        c.close()
    from keyscope.partitioners import partition_column

    keys = [f"k{i % 97}".encode() for i in range(20000)]
    expected = partition_column(keys, 3, "murmur2").value_counts().sort("partition")
    assert {p: w.high for p, w in wm.items()} == dict(zip(*expected.to_dict(as_series=False).values()))
    assert all(w.low == 0 for w in wm.values())


def test_unknown_topic_names_near_matches_and_creates_nothing(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 1)
    c = kafka_io.open_consumer(resolve(broker.bootstrap_server))
    try:
        with pytest.raises(KafkaError, match="does not exist; did you mean"):
            kafka_io.topic_partitions(c, topic_name + "x")
        assert topic_name + "x" not in kafka_io.list_topics(c)
    finally:
        c.close()


def test_unreachable_broker_fails_within_timeout():
    t = time.monotonic()
    with pytest.raises(KafkaError, match="cannot reach a Kafka broker"):
        kafka_io.open_consumer(resolve("127.0.0.1:1"), timeout_s=2)
    assert time.monotonic() - t < 15


def test_known_hint_names_few_counts_many_and_says_nothing_when_unknown():
    """An unknown topic or group names what the cluster has when that is short (no '1 topics'),
    a count otherwise, and nothing when the list could not be read (never '0 groups')."""
    from keyscope.kafka.client import known_hint

    assert known_hint("topics", ["b", "a"]) == "; topics on this cluster: a, b"
    assert known_hint("consumer groups", [f"g{i}" for i in range(6)]) == " (6 consumer groups on this cluster)"
    assert known_hint("topics", []) == ""
