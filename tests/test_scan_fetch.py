"""One Fetch request for several partitions of a leader (``keyscope.scan.task.scan_group``), on real Kafka.

A 3-node cluster leads a 6-partition topic (2 partitions per node); the records include an aborted
and a committed transaction (control batches: offset gaps a task must stop past by offset, not by
count).  The Fetch requests the scan's own client sends are recorded (the real broker answers them);
the per-partition fetch size is made small so every partition takes many rounds.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from keyscope.kafka import lean
from keyscope.kafka.connection import resolve
from keyscope.scan import ScanRequest, plan_tasks, run_scan, scan_task
from keyscope.scan import task as task_mod
from keyscope.scan.engine import resolve_ranges
from keyscope.scan.task import ScanSpec, scan_group

from .conftest import create_topic

PARTITIONS = 6
PER_PARTITION = 3_000
ABORTED = 400


def _produce(bootstrap: str, topic: str) -> dict:
    """Keyed records on explicit partitions plus transactions; {partition: Counter(key)} of what a
    read_committed reader must count."""
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 200})
    truth: dict[int, Counter] = {q: Counter() for q in range(PARTITIONS)}
    for i in range(PER_PARTITION * PARTITIONS):
        q = i % PARTITIONS
        k = b"k-%d" % (i % 997)
        p.produce(topic, key=k, value=b"v" * (i % 50), partition=q)
        truth[q][k] += 1
        if i % 5000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    tx = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}", "linger.ms": 5})
    tx.init_transactions(30)
    tx.begin_transaction()
    for i in range(ABORTED):
        tx.produce(topic, key=b"aborted-%d" % i, value=b"{}", partition=i % PARTITIONS)
    tx.flush(30)
    tx.abort_transaction(30)
    tx.begin_transaction()
    for q in range(PARTITIONS):
        tx.produce(topic, key=b"committed", value=b"{}", partition=q)
        truth[q][b"committed"] += 1
    tx.commit_transaction(30)
    for q in range(PARTITIONS):  # records after the markers: a task's range runs past the gaps
        p.produce(topic, key=b"after", value=b"x", partition=q)
        truth[q][b"after"] += 1
    assert p.flush(60) == 0
    return truth


@pytest.fixture(scope="module")
def spread(kafka_cluster):
    topic = f"scanfetch-{uuid.uuid4().hex[:8]}"
    create_topic(kafka_cluster.bootstrap_server, topic, PARTITIONS, replication=1)
    truth = _produce(kafka_cluster.bootstrap_server, topic)
    return {"topic": topic, "truth": truth, "conn": resolve(kafka_cluster.bootstrap_server)}


@pytest.fixture
def requests(monkeypatch):
    """Every Fetch the lean client sends to read records: (node, partitions).  The watermarks' probes (one
    byte per partition, one request per leader as well) are left out."""
    seen: list[tuple[int, tuple[int, ...]]] = []
    real = lean.Fetcher.send

    def send(self, tag, node_id, offsets, *a, **kw):
        if any(b > 1 for _, b in offsets.values()):
            seen.append((node_id, tuple(sorted(offsets))))
        return real(self, tag, node_id, offsets, *a, **kw)

    monkeypatch.setattr(lean.Fetcher, "send", send)
    # many rounds per partition (a batch is ~7 KB: Kafka leaves a partition empty when its first batch is over its
    # limit and it is not the first partition of the answer)
    monkeypatch.setattr(task_mod, "PARTITION_FETCH_BYTES", 16384)
    return seen


def _exact(profile) -> dict:
    d = profile.to_dict()
    for e in d["expressions"].values():
        e.pop("frequent")
        e.pop("distinct")
    for k in ("sizes", "notes", "tasks"):
        d.pop(k, None)
    return d


def test_one_fetch_per_leader_covers_its_partitions_and_counts_exactly(spread, requests):
    conn, topic, truth = spread["conn"], spread["topic"], spread["truth"]
    n, ranges = resolve_ranges(conn, ScanRequest(topic))
    tasks = plan_tasks(ranges, tasks=PARTITIONS)
    assert len(tasks) == PARTITIONS and {t.partition for t in tasks} == set(range(PARTITIONS))
    spec = ScanSpec(topic, n, 16, tasks_planned=len(tasks))
    client = task_mod._consumer(conn)
    client.metadata([topic])
    leaders = {p: client.leader(topic, p) for p in range(PARTITIONS)}
    assert len(set(leaders.values())) == 3  # two partitions per node

    # every task alone: one partition per request
    alone = {t.id: scan_task(conn, spec, t) for t in tasks}
    single = len(requests)
    assert all(len(ps) == 1 for _, ps in requests)
    requests.clear()

    todo = [(t, 0) for t in tasks]
    got: dict = {}

    def take(busy, wait, room):
        got = [x for x in todo if x[0].partition not in busy][:room]
        for x in got:
            todo.remove(x)
        return got

    scan_group(conn, spec, take, lambda t, res: got.setdefault(t.id, res), width=PARTITIONS)
    assert set(got) == {t.id for t in tasks}
    # each request goes to the leader of every partition it names, and a leader's two partitions share one
    for node, ps in requests:
        assert {leaders[p] for p in ps} == {node}
    assert max(len(ps) for _, ps in requests) == 2
    assert len(requests) < 0.7 * single  # ~half the requests of one task at a time
    # the counts: the brute force (aborted records left out, markers skipped by offset), and the same
    # profile, counter for counter and sketch byte for sketch byte, as each task read alone
    for t in tasks:
        p = got[t.id]
        s = p.partitions[t.partition]
        assert s.records == sum(truth[t.partition].values())
        assert s.last_offset is not None and s.last_offset < t.stop <= s.last_offset + 2  # after the markers
        assert _exact(p) == _exact(alone[t.id])
        assert p.expressions["key"].frequent == alone[t.id].expressions["key"].frequent


def test_a_group_splits_by_leader_and_retries_a_failed_task_alone(spread, requests):
    """run_scan in this process (two groups): tasks of several partitions per leader in each request, and a
    task failed half-way is run again and counted once."""
    conn, topic, truth = spread["conn"], spread["topic"], spread["truth"]
    base = run_scan(conn, ScanRequest(topic, workers=1, tasks=PARTITIONS, partitions_max=16))
    assert base.profile.records == sum(sum(c.values()) for c in truth.values())
    for q in range(PARTITIONS):
        assert base.profile.partitions[q].records == sum(truth[q].values())
    client = task_mod._consumer(conn)
    client.metadata([topic])
    leaders = {p: client.leader(topic, p) for p in range(PARTITIONS)}
    assert requests and all({leaders[p] for p in ps} == {node} for node, ps in requests)
    assert any(len(ps) > 1 for _, ps in requests)  # tasks handed out by leader: a group's share one
    faulty = run_scan(conn, ScanRequest(topic, workers=1, tasks=PARTITIONS, partitions_max=16, fault={3: "raise"}))
    assert faulty.retried == 1
    assert _exact(faulty.profile) == _exact(base.profile)
    assert faulty.profile.expressions["key"].frequent == base.profile.expressions["key"].frequent
