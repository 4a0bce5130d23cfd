"""Shared fixtures: real brokers over TCP on loopback, one of each kind per session.

``broker`` is real Apache Kafka (tests/kafka/, KRaft, from Maven Central). Tests
marked ``tansu`` run against the embedded Tansu broker too (the demo's broker),
as ``test_x[kafka]`` and ``test_x[tansu]``.  ``KEYSCOPE_TEST_BROKER=tansu`` runs
every broker test on Tansu alone, for a machine without Java.
"""

from __future__ import annotations

import os
import uuid

import pytest

from keyscope.kafka.broker import EmbeddedBroker


def pytest_configure(config):
    config.addinivalue_line("markers", "tansu: also run this broker test against the embedded Tansu broker")


def broker_kinds(metafunc) -> list[str]:
    only = os.environ.get("KEYSCOPE_TEST_BROKER")
    if only:
        return [only]
    return ["kafka", "tansu"] if metafunc.definition.get_closest_marker("tansu") else ["kafka"]


def pytest_generate_tests(metafunc):
    if "broker" in metafunc.fixturenames:
        metafunc.parametrize("broker", broker_kinds(metafunc), indirect=True, scope="session")


@pytest.fixture(scope="session")
def kafka():
    """A real single-node Apache Kafka 4.x (KRaft); logs kept if it fails."""
    from .kafka import KafkaCluster

    try:
        cluster = KafkaCluster(1)
    except RuntimeError as e:
        pytest.fail(f"{e}\n(real Kafka needs Java 17 + Maven; KEYSCOPE_TEST_BROKER=tansu runs the broker tests on Tansu)")
    with cluster:
        yield cluster


@pytest.fixture(scope="session")
def kafka_cluster():
    """Three real Kafka nodes (replication factor 3), for leader moves."""
    from .kafka import KafkaCluster

    with KafkaCluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tansu():
    """The embedded Tansu broker; stopped (only our pid) at session end."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture(scope="session")
def broker(request):
    """The broker of this parametrization: ``kafka`` (default) or ``tansu``."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def broker_kind(broker) -> str:
    return "tansu" if isinstance(broker, EmbeddedBroker) else "kafka"


@pytest.fixture
def topic_name():
    """A fresh topic name per test, so tests never see each other's records."""
    return f"t-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap: str, name: str, partitions: int, config: dict[str, str] | None = None,
                 replication: int = 1) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, replication, config=config or {})]).values():
        f.result(timeout=30)
    wait_for_topic(admin, name, partitions)


def wait_for_topic(admin, name: str, partitions: int, timeout: float = 15.0) -> None:
    """Until metadata shows every partition with a leader (real Kafka propagates asynchronously)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        t = admin.list_topics(name, timeout=5).topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 for p in t.partitions.values()
        ):
            return
        time.sleep(0.05)
    raise AssertionError(f"topic {name} has no leaders for its {partitions} partitions after {timeout}s")


def missing_peer(reason: str) -> None:
    """A peer the test compares against is not on this machine.

    On a developer's machine the test skips with the reason; in CI (``CI=true``,
    where .ci/run installed every peer) it fails: a skip must never stand in for
    a comparison that did not run.
    """
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"peer missing in CI: {reason}")
    pytest.skip(reason)
