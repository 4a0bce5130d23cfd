"""Leader moves on a real 3-node Kafka cluster: `keyscope sample` and `keyscope lag` with a node killed.

Partition 0 holds ~18 MB, so keyscope needs several fetches for it, and a
real broker quota (consumer_byte_rate for the sample's own client id, so
nothing else is throttled) makes its leader hold keyscope back after the
first ones.  The test waits for the first progress line (the CLI runs on a
pseudo-terminal, where it shows progress), stops keyscope (SIGSTOP, our own
child), lifts the quota, kills the leader of partition 0 and lets keyscope go
on.  It must finish from the new leader (exit 0; Kafka fences the dead broker
after ~9-15 s here, keyscope waits up to 30 s) with every produced record, at
its produced offset, exactly once.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
import uuid

from .conftest import create_topic

PARTITIONS = 3
PER_PARTITION = {0: 36_000, 1: 2_000, 2: 2_000}  # partition 0 holds ~18 MB: several 4 MB fetches
RECORDS = sum(PER_PARTITION.values())


def set_consumer_quota(bootstrap: str, client_id: str, rate: float | None) -> None:
    """consumer_byte_rate for one client id (None removes it), through AlterClientQuotas."""
    from kafka import KafkaAdminClient
    from kafka.protocol.admin.client_quotas import AlterClientQuotasRequest as Req

    E = Req.EntryData
    op = E.OpData(key="consumer_byte_rate", value=float(rate or 0.0), remove=rate is None)
    req = Req(entries=[E(entity=[E.EntityData(entity_type="client-id", entity_name=client_id)], ops=[op])],
              validate_only=False)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        resp = admin._manager.run(admin._manager.send, req)
    finally:
        admin.close()
    assert all(e.error_code == 0 for e in resp.entries), resp


def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p: pm.leader for p, pm in md.topics[topic].partitions.items()}


def wait_in_sync(bootstrap: str, topics: list[str], replicas: int = 3, timeout: float = 90.0) -> None:
    """Until every partition of ``topics`` has all its replicas in sync.

    A node restarted by an earlier test rejoins the ISR only after catching
    up; killing another node before that would kill the only in-sync copy.
    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=10)
        lagging = [(t, p) for t in topics if t in md.topics
                   for p, pm in md.topics[t].partitions.items() if len(pm.isrs) < replicas]
        if not lagging and all(t in md.topics for t in topics):
            return
        assert time.monotonic() < deadline, f"replicas not in sync after {timeout}s: {lagging[:5]}"
        time.sleep(0.2)


def produce_numbered(bootstrap: str, topic: str, per_partition: dict[int, int]) -> dict[tuple[int, int], bytes]:
    """Records with unique keys, acks=all; returns {(partition, offset): key} as the broker acknowledged."""
    from confluent_kafka import Producer

    acked: dict[tuple[int, int], bytes] = {}
    errors = []

    def done(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked[(msg.partition(), msg.offset())] = msg.key()

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True})
    i = 0
    for part, n in per_partition.items():
        for _ in range(n):
            p.produce(topic, key=b"key-%06d" % i, value=b'{"i": %d, "pad": "%s"}' % (i, b"x" * 480),
                      partition=part, on_delivery=done)
            i += 1
            if i % 5000 == 0:
                p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:3]
    assert len(acked) == i
    return acked


def progress_records(line: str) -> int:
    """Records read so far, from keyscope's progress line ('sampling T: 1,234 records, ...'); 0 if none."""
    if not line.startswith("sampling ") or " records," not in line:
        return 0
    return int(line.split(" records,")[0].rsplit(" ", 1)[-1].replace(",", ""))


def run_cli_on_pty(args: list[str], on_progress) -> tuple[int, str, str]:
    """Run keyscope with stderr on a pseudo-terminal (so it shows progress); ``on_progress(proc, line)`` once."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "keyscope", *args], stdout=subprocess.PIPE,
                            stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    err = b""
    called = False
    try:
        while True:
            r, _, _ = select.select([master], [], [], 0.5)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed its end
                    chunk = b""
                if not chunk:
                    break
                err += chunk
                line = err.rsplit(b"\r", 1)[-1].decode(errors="replace").replace("\x1b[K", "")
                if not called and progress_records(line):
                    called = True
                    on_progress(proc, line)
            elif proc.poll() is not None:
                break
        out = proc.stdout.read().decode()
        rc = proc.wait(timeout=120)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, out, err.decode(errors="replace")


def test_sample_survives_leader_kill(kafka_cluster, tmp_path):
    import polars as pl

    bs = kafka_cluster.bootstrap_server
    topic = f"lm-{uuid.uuid4().hex[:8]}"
    create_topic(bs, topic, PARTITIONS, config={"min.insync.replicas": "2"}, replication=3)
    produced = produce_numbered(bs, topic, PER_PARTITION)
    client_id = f"keyscope-lm-{uuid.uuid4().hex[:6]}"
    # 1 MB/s: after two 4 MB fetches of partition 0 its leader throttles keyscope for seconds,
    # so the sample is surely unfinished when the first progress line shows.
    set_consumer_quota(bs, client_id, 1_000_000)
    wait_in_sync(bs, [topic])
    victim = leaders(bs, topic)[0]
    seen = {}

    def kill_leader(proc, line):
        proc.send_signal(signal.SIGSTOP)  # keyscope holds still while the leader dies
        seen["line"] = line
        set_consumer_quota(bs, client_id, None)
        kafka_cluster.kill_node(victim)
        proc.send_signal(signal.SIGCONT)

    out_file = tmp_path / "s.parquet"
    try:
        rc, out, err = run_cli_on_pty(
            ["sample", "-b", bs, "-t", topic, "--from", "earliest", "-o", str(out_file), "--format", "json",
             "-X", f"client.id={client_id}", "--timeout", "120"],
            kill_leader,
        )
        after = leaders(",".join(f"127.0.0.1:{n.port}" for n in kafka_cluster.nodes if n.alive), topic)
    finally:
        kafka_cluster.start_node(victim)  # the session cluster stays whole for the other tests
    assert "line" in seen, f"keyscope finished before any progress line: rc={rc} {err[-500:]}"
    # Mid-sample: at the kill, keyscope had read some records, not all (the quota saw to it).
    got_then = progress_records(seen["line"])
    assert 0 < got_then < RECORDS, seen["line"]
    # It finished from the new leader: exit 0, not a partial sample.
    assert rc == 0, (rc, err[-800:])
    assert after[0] != victim  # the partition really moved
    report = json.loads(out)
    assert report["summary"]["partial"] is False
    assert report["meta"]["how"]["stopped_by"] == "end of range"
    s = pl.read_parquet(out_file)
    rows = list(zip(s["partition"].to_list(), s["offset"].to_list(), s["key"].to_list()))
    # Not one record lost, duplicated or invented: each at the offset it was produced at.
    assert len(rows) == RECORDS
    assert {(p, o): k for p, o, k in rows} == produced


def test_lag_with_the_coordinator_dead(kafka_cluster):
    """`keyscope lag` with the group's coordinator killed: one clear line at first, the right lags once Kafka moves the group."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from kafka import KafkaAdminClient

    bs = kafka_cluster.bootstrap_server
    topic, group = f"lc-{uuid.uuid4().hex[:8]}", f"gc-{uuid.uuid4().hex[:8]}"
    create_topic(bs, topic, PARTITIONS, replication=3)
    p = Producer({"bootstrap.servers": bs, "acks": "all"})
    for i in range(3000):
        p.produce(topic, key=b"%d" % i, value=b"v", partition=i % PARTITIONS)
    assert p.flush(30) == 0
    committed = {0: 100, 1: 900, 2: 1000}
    c = Consumer({"bootstrap.servers": bs, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, q, o) for q, o in committed.items()], asynchronous=False)
    c.close()
    wait_in_sync(bs, [topic, "__consumer_offsets"])
    admin = KafkaAdminClient(bootstrap_servers=bs)
    try:  # FindCoordinator, as every client asks it
        victim = admin._manager.run(admin._find_coordinator_id, group)
    finally:
        admin.close()
    kafka_cluster.kill_node(victim)
    lag = [sys.executable, "-m", "keyscope", "lag", "-b", bs, "-g", group, "--format", "json"]
    try:
        # At once, with a short --timeout: Kafka has not moved the group yet, so one clear line (exit 4).
        quick = subprocess.run(lag + ["--timeout", "2"], capture_output=True, text=True, timeout=120)
        # With time to wait: keyscope asks FindCoordinator again until another broker has the group.
        r = subprocess.run(lag + ["--timeout", "60"], capture_output=True, text=True, timeout=180)
    finally:
        kafka_cluster.start_node(victim)
    assert "Traceback" not in quick.stderr + r.stderr
    if quick.returncode != 0:
        assert quick.returncode == 4, quick.stderr
        line = quick.stderr.strip()
        assert len(line.splitlines()) == 1 and "coordinator broker is unreachable" in line, line
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    lags = {row["partition"]: row["lag"] for row in doc["topics"][0]["partitions"]}
    assert lags == {q: 1000 - o for q, o in committed.items()}
