"""Shared fixtures: one real Tansu broker per test session, over TCP on loopback."""

from __future__ import annotations

import uuid

import pytest

from keyscope.broker import EmbeddedBroker


@pytest.fixture(scope="session")
def broker():
    """A running embedded broker; stopped (only our pid) at session end."""
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def topic_name():
    """A fresh topic name per test, so tests never see each other's records."""
    return f"t-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        f.result(timeout=30)
