"""`keyscope exporter` through a broker restart: the gap is reported (keyscope_up, keyscope_fetch_errors_total,
keyscope_broker_unreachable_seconds_total, /healthz 503) while the exporter keeps serving, and reading resumes where
it stopped when the broker is back; records deleted under it while it was away are counted as skipped."""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request

import pytest

from .conftest import create_topic
from .test_exporter import metrics, start_exporter, stop
from .peers.prometheus import free_port


def value(m: dict, name: str) -> float:
    return sum(v for _, v in m.get(name, []))


def until(what: str, check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.3)
    pytest.fail(f"never saw: {what}")


def health(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def produce(bs: str, topic: str, n: int, start: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bs, "partitioner": "murmur2_random"})
    for i in range(start, start + n):
        p.produce(topic, key=f"k{i % 5}".encode(), value=b"x")
    assert p.flush(60) == 0


def test_broker_restart_reported_and_recovered():
    from .kafka import KafkaCluster

    with KafkaCluster(1) as kafka:
        bs = kafka.bootstrap_server
        create_topic(bs, "restart", 1)
        port = free_port()
        url = f"http://127.0.0.1:{port}/metrics"
        proc = start_exporter(bs, "restart", port)
        try:
            produce(bs, "restart", 100, 0)
            until("100 records", lambda: value(metrics(url), "keyscope_partition_records_total") >= 100)
            assert value(metrics(url), "keyscope_up") == 1
            killed = time.monotonic()
            kafka.kill_node(1)
            m = until("keyscope_up 0", lambda: (lambda m: m if value(m, "keyscope_up") == 0 else None)(metrics(url)))
            assert value(m, "keyscope_fetch_errors_total") > 0
            assert health(port) == 503
            kafka.start_node(1)
            until("keyscope_up 1 again", lambda: value(metrics(url), "keyscope_up") == 1)
            outage = time.monotonic() - killed
            gap = value(metrics(url), "keyscope_broker_unreachable_seconds_total")
            assert 0 < gap <= outage, (gap, outage)
            produce(bs, "restart", 100, 100)
            until("200 records", lambda: value(metrics(url), "keyscope_partition_records_total") >= 200)
            assert value(metrics(url), "keyscope_partition_records_total") == 200  # none twice, none lost
            assert health(port) == 200
            assert value(metrics(url), "keyscope_broker_unreachable_seconds_total") == gap  # closed: it stops growing
            assert value(metrics(url), "keyscope_partition_skipped_records_total") == 0
            # Away again (stopped), while 100 more records land and the first 250 are deleted: 50 were never seen.
            os.kill(proc.pid, signal.SIGSTOP)
            try:
                time.sleep(1.0)  # its last fetch (200 ms long poll) has been answered: it asks again only when resumed
                produce(bs, "restart", 100, 200)
                from confluent_kafka import TopicPartition
                from confluent_kafka.admin import AdminClient

                admin = AdminClient({"bootstrap.servers": bs})
                for f in admin.delete_records([TopicPartition("restart", 0, 250)]).values():
                    f.result(timeout=30)
            finally:
                os.kill(proc.pid, signal.SIGCONT)
            until("50 skipped", lambda: value(metrics(url), "keyscope_partition_skipped_records_total") == 50)
            until("250 read", lambda: value(metrics(url), "keyscope_partition_records_total") == 250)
            proc.terminate()
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, err
        finally:
            stop(proc)
