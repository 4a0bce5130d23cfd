"""The kafka-python partitioner classes that `recommend` prints place keys as keyscope predicts, on a real broker."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from keyscope.advice import snippets
from keyscope.partitioners import partition_column
from keyscope.whatif.spec import Scenario

from .conftest import create_topic

PARTITIONS = 6


@pytest.mark.parametrize("name,cls", [("consistent", "Crc32Partitioner"), ("fnv1a", "Fnv1aPartitioner")])
def test_kafka_python_partitioner_snippet_matches_prediction(broker, topic_name, name, cls):
    code = snippets(Scenario(PARTITIONS, name), PARTITIONS, topic=topic_name)["kafka-python"]
    ns: dict = {}
    exec(code.split("\nproducer = ")[0], ns)
    create_topic(broker.bootstrap_server, topic_name, PARTITIONS)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_server, partitioner=ns[cls](), linger_ms=5)
    keys = [f"tenant-{i}:ü".encode() for i in range(600)] + [bytes([i, 255, i ^ 0x55]) for i in range(200)]
    futures = [producer.send(topic_name, key=k, value=b"v") for k in keys]
    producer.flush(30)
    placed = [f.get(timeout=30).partition for f in futures]
    producer.close()
    assert placed == partition_column(keys, PARTITIONS, name).to_list()
    assert len(set(placed)) == PARTITIONS
