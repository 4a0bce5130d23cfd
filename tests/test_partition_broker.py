"""Every key's real partition on a real broker equals keyscope's prediction.

confluent-kafka (librdkafka) produces with each of its hash partitioners and
kafka-python with its default; we read back where the broker put each key.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from keyscope.partitioners import partition_column

from .conftest import create_topic

N_KEYS = 2500
PARTITIONS = 6


def _keys():
    # Mixed lengths (tail bytes 0..3), non-ASCII and binary keys.
    keys = [f"tenant-{i}:evt".encode() for i in range(N_KEYS - 500)]
    keys += [f"ключ-{i}-ü".encode() for i in range(250)]
    keys += [bytes([i % 256, (i * 7) % 256, 0, 255]) + i.to_bytes(4, "big") for i in range(250)]
    return keys


@pytest.mark.parametrize(
    "client_partitioner,ours",
    [("consistent_random", "consistent"), ("murmur2_random", "murmur2"), ("fnv1a_random", "fnv1a")],
)
def test_confluent_kafka_partitioners_match(broker, topic_name, client_partitioner, ours):
    create_topic(broker.bootstrap_server, topic_name, PARTITIONS)
    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_server, "partitioner": client_partitioner, "linger.ms": 5}
    )
    placed: dict[bytes, int] = {}

    def on_delivery(err, msg):
        assert err is None, err
        placed[msg.key()] = msg.partition()

    keys = _keys()
    for k in keys:
        producer.produce(topic_name, key=k, value=b"v", on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert len(placed) == len(keys)
    predicted = partition_column(keys, PARTITIONS, ours).to_list()
    mismatches = [k for k, p in zip(keys, predicted) if placed[k] != p]
    assert mismatches == []
    # the keys really spread: a wrong-but-constant predictor cannot pass
    assert len(set(placed.values())) == PARTITIONS


def test_kafka_python_default_partitioner_matches(broker, topic_name):
    from kafka import KafkaProducer

    create_topic(broker.bootstrap_server, topic_name, PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_server, linger_ms=5)
    keys = _keys()
    futures = [producer.send(topic_name, key=k, value=b"v") for k in keys]
    producer.flush(30)
    placed = {k: f.get(timeout=30).partition for k, f in zip(keys, futures)}
    producer.close()
    predicted = partition_column(keys, PARTITIONS, "kafka-python").to_list()
    assert [placed[k] for k in keys] == predicted
    assert len(set(placed.values())) == PARTITIONS
