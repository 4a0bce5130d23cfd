"""The sampler against what only real Apache Kafka does (issue 9): fetch limits honoured,
transactions, compaction and deletion, time lookups on both timestamp types, and a
sample cut short that stays proportional (issue 12).

Every test compares keyscope's sample with what a real client saw: the producer's
delivery reports or a confluent-kafka (librdkafka) consumer reading the same topic
with the same isolation level.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from keyscope.kafka.connection import resolve
from keyscope.sampling import PACE_RATIO, PACE_STEP, SampleSpec, parse_field, sample_topic

from .conftest import create_topic


# --------------------------------------------------------------------------- peers


def produce(bootstrap: str, topic: str, messages, **conf) -> list[tuple]:
    """librdkafka producer; (partition, offset, key, value) per acknowledged record, in offset order."""
    acked, errors = [], []

    def report(err, msg):
        (errors if err is not None else acked).append(err or (msg.partition(), msg.offset(), msg.key(), msg.value()))

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    for m in messages:
        p.produce(topic, on_delivery=report, **m)
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors
    return sorted(acked, key=lambda a: (a[0], a[1]))


def consume_all(bootstrap: str, topic: str, partitions: int, isolation: str = "read_committed") -> list[dict]:
    """Everything a librdkafka consumer in assign() mode sees, to the end of each partition.

    ``enable.partition.eof`` marks the end (the last stable offset under read_committed).
    Nothing is committed; the group id is never joined (assign only)."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"peer-{time.time_ns()}", "enable.auto.commit": False,
        "enable.partition.eof": True, "isolation.level": isolation, "auto.offset.reset": "earliest",
    })
    try:
        c.assign([TopicPartition(topic, p, -2) for p in range(partitions)])  # -2: OFFSET_BEGINNING
        out, eof = [], set()
        deadline = time.monotonic() + 60
        while len(eof) < partitions and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == -191:  # _PARTITION_EOF
                    eof.add(m.partition())
                    continue
                raise AssertionError(m.error())
            eof.discard(m.partition())
            ts_type, ts = m.timestamp()
            out.append({"partition": m.partition(), "offset": m.offset(), "key": m.key(), "value": m.value(),
                        "headers": m.headers(), "timestamp": ts, "timestamp_type": ts_type})
        assert len(eof) == partitions, "the peer consumer did not reach the end"
        return sorted(out, key=lambda r: (r["partition"], r["offset"]))
    finally:
        c.close()


def rows(sample) -> list[tuple]:
    return [(r["partition"], r["offset"], r["key"]) for r in sample.df.select("partition", "offset", "key").to_dicts()]


def peer_rows(records) -> list[tuple]:
    return [(r["partition"], r["offset"], r["key"]) for r in records]


def sample(broker, topic, progress=None, **kw):
    kw.setdefault("timeout_s", 60)
    kw.setdefault("start", "earliest")
    kw.setdefault("max_records", 10**9)
    return sample_topic(resolve(broker.bootstrap_server), SampleSpec(topic=topic, **kw), progress=progress)


def stable(read_peer, read_mine, tries: int = 10):
    """(peer, mine) read while the log did not change: the peer before and after agree.

    The cleaner and retention run on their own schedule; a comparison is only fair
    between two reads of the same log."""
    for _ in range(tries):
        before = read_peer()
        mine = read_mine()
        if read_peer() == before:
            return before, mine
    raise AssertionError("the log kept changing under the reads")


def wait_until(what: str, check, timeout: float = 60.0, every: float = 0.3):
    """Poll the broker until ``check()`` is true (broker-side background work: cleaner, retention)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout}s")


# --------------------------------------------------------------------------- 1. fetch limits


def _log_bytes(bootstrap: str, topic: str, partitions: int) -> int:
    """The record batches' bytes, from one Fetch per partition with room for all of them."""
    return sum(_fetch_once(bootstrap, topic, partitions).values())


def _fetch_once(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Bytes one Fetch from offset 0 with a 64 MiB limit brings, per partition."""
    from keyscope.kafka import client as kafka_io

    c = kafka_io.open_consumer(resolve(bootstrap))
    try:
        c.partitions_for_topic(topic)
        f = kafka_io.RawFetcher(c, topic)
        wait_until("metadata", lambda: all(f.leader(p) is not None for p in range(partitions)))
        out = {}
        for p in range(partitions):
            f.send(p, f.leader(p), {p: (0, 64 << 20)}, max_bytes=64 << 20)
            _, answer, exc = f.answers.get(timeout=30)
            assert exc is None and answer[0].error_code == 0
            out[p] = len(answer[0].records)
        return out
    finally:
        c.close()


def test_fetch_limits_truncated_batches_and_a_batch_bigger_than_the_limit(broker, topic_name):
    """Small fetch limits: answers end in a cut batch; one batch is bigger than any limit and
    comes whole; not one record lost or read twice."""
    create_topic(broker.bootstrap_server, topic_name, 2, {"max.message.bytes": str(1 << 20)})
    small = [{"key": b"k%d" % i, "value": b"v" * 300, "partition": i % 2} for i in range(2000)]
    acked = produce(broker.bootstrap_server, topic_name, small, **{"batch.num.messages": 25})
    big = [{"key": b"big%d" % i, "value": b"B" * 1000, "partition": 1} for i in range(200)]  # one ~200 KB batch
    acked += produce(broker.bootstrap_server, topic_name, big,
                     **{"batch.num.messages": 1000, "batch.size": 1 << 20, "linger.ms": 1000})
    acked += produce(broker.bootstrap_server, topic_name, small[:200], **{"batch.num.messages": 25})
    acked.sort()
    log_bytes = _log_bytes(broker.bootstrap_server, topic_name, 2)
    assert log_bytes > 200_000
    s = sample(broker, topic_name, fetch_max_bytes=30_000, partition_fetch_bytes=20_000)
    assert rows(s) == [(p, o, k) for p, o, k, _ in acked]
    assert s.meta.how["stopped_by"] == "end of range" and not s.meta.partial
    # answers of at most ~30 KB but the big batch's: many requests, and the cut batches
    # at the ends of answers were fetched again (more bytes than the log holds)
    assert s.meta.how["fetch_requests"] >= log_bytes // 30_000
    assert s.meta.how["bytes_fetched"] > log_bytes
    assert {p: (i.low, i.high, i.records) for p, i in s.meta.partitions.items()} == {
        0: (0, 1100, 1100), 1: (0, 1300, 1300)}
    assert "notes" not in s.meta.how


@pytest.fixture
def small_fetch_kafka():
    """A broker of its own whose fetch.max.bytes (not dynamic) caps every answer at ~40 KB."""
    from .kafka import KafkaCluster

    with KafkaCluster(1, properties={"fetch.max.bytes": "40000"}) as cluster:
        yield cluster


def test_broker_fetch_max_bytes_caps_answers_and_nothing_is_lost(small_fetch_kafka, topic_name):
    broker = small_fetch_kafka
    create_topic(broker.bootstrap_server, topic_name, 3)
    msgs = [{"key": b"k%d" % i, "value": b"v" * 300, "partition": i % 3} for i in range(3000)]
    acked = produce(broker.bootstrap_server, topic_name, msgs, **{"batch.num.messages": 30})
    acked += produce(broker.bootstrap_server, topic_name,  # one ~100 KB batch: more than an answer may hold
                     [{"key": b"big%d" % i, "value": b"B" * 1000, "partition": 0} for i in range(100)],
                     **{"batch.num.messages": 1000, "linger.ms": 1000})
    acked.sort()
    once = _fetch_once(broker.bootstrap_server, topic_name, 3)
    assert once == {0: 40_000, 1: 40_000, 2: 40_000}  # the cap is on: ~330 KB asked, 40 KB given, a batch cut
    s = sample(broker, topic_name)  # keyscope's own limits are far larger: the broker's cap decides
    assert rows(s) == [(p, o, k) for p, o, k, _ in acked]
    assert s.meta.how["fetch_requests"] >= 3 * 330_000 // 40_000
    assert not s.meta.partial and "notes" not in s.meta.how


def test_max_bytes_is_respected_within_one_batch(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 3)
    msgs = [{"key": b"k%d" % i, "value": b"v" * 200, "partition": i % 3} for i in range(6000)]
    produce(broker.bootstrap_server, topic_name, msgs, **{"batch.num.messages": 40})  # batches ~9 KB
    batch = 40 * 230 + 200
    for max_bytes in (60_000, 150_000):
        s = sample(broker, topic_name, max_bytes=max_bytes)
        assert s.meta.how["stopped_by"] == "max-bytes"
        assert max_bytes <= s.meta.how["bytes_fetched"] <= max_bytes + batch
        for p, offs in s.df.group_by("partition").agg("offset").iter_rows():
            assert offs == list(range(len(offs)))  # a contiguous run from the start, per partition
    # less than one batch: the broker still returns one whole batch, and that is all
    s = sample(broker, topic_name, max_bytes=100)
    assert 0 < s.meta.how["bytes_fetched"] <= batch and 0 < len(s) <= 40


# --------------------------------------------------------------------------- 2. transactions


def _transactions(bootstrap: str, topic: str) -> Producer:
    """Committed and aborted transactions over 3 partitions, plain records between them,
    and one transaction left open on partition 2."""
    tx = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"tx-{topic}", "linger.ms": 5,
                   "logger": _quiet()})
    tx.init_transactions(30)
    plain = []
    for n, commit in enumerate([True, False, True, False, False, True]):
        tx.begin_transaction()
        for i in range(30):
            tx.produce(topic, key=b"tx%d-%d" % (n, i), value=b"c" if commit else b"a", partition=i % 3)
        tx.flush(30)  # sent before the outcome: an abort then leaves records and a marker in the log
        (tx.commit_transaction if commit else tx.abort_transaction)(30)
        plain += [{"key": b"plain%d-%d" % (n, i), "value": b"p", "partition": i % 3} for i in range(9)]
        produce(bootstrap, topic, plain[-9:])
    tx.begin_transaction()
    for i in range(7):
        tx.produce(topic, key=b"open-%d" % i, value=b"o", partition=2)
    tx.flush(30)
    return tx


def _quiet():
    import logging

    log = logging.getLogger("keyscope.tests.librdkafka")
    log.addHandler(logging.NullHandler())
    log.propagate = False
    return log


def test_transactions_read_committed_by_default_and_read_uncommitted_on_request(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 3)
    tx = _transactions(broker.bootstrap_server, topic_name)
    try:
        committed = consume_all(broker.bootstrap_server, topic_name, 3, "read_committed")
        everything = consume_all(broker.bootstrap_server, topic_name, 3, "read_uncommitted")
        s = sample(broker, topic_name)
        assert rows(s) == peer_rows(committed)
        assert not any(k.startswith(b"open") for _, _, k in rows(s))
        assert {v for v in (r["value"] for r in committed)} == {b"c", b"p"}
        assert s.meta.how["isolation"] == "read_committed"
        # partition 2 ends at its last stable offset: the open transaction is past it
        p2 = s.meta.partitions[2]
        opened = min(r["offset"] for r in everything if r["key"].startswith(b"open"))
        assert p2.last_stable == opened and p2.high == opened + 7 and p2.read_to == opened
        assert s.meta.how["ranges"]["2"] == [0, opened]
        assert [n for n in s.meta.how["notes"]] == [
            f"partition 2: read up to the last stable offset {opened:,}: an open transaction holds the records after it"]
        for p in (0, 1):
            assert s.meta.partitions[p].last_stable == s.meta.partitions[p].high
        u = sample(broker, topic_name, isolation="read_uncommitted")
        assert rows(u) == peer_rows(everything)
        assert u.meta.how["isolation"] == "read_uncommitted" and "notes" not in u.meta.how
        # transaction markers are never records: offsets missing from both are the markers
        markers = sum(i.high - i.low for i in u.meta.partitions.values()) - len(u)
        assert markers == 3 * 6  # one per transaction and partition
    finally:
        tx.commit_transaction(30)
    after = sample(broker, topic_name)
    assert rows(after) == peer_rows(consume_all(broker.bootstrap_server, topic_name, 3))
    assert sum(k.startswith(b"open") for _, _, k in rows(after)) == 7 and "notes" not in after.meta.how


def test_latest_budget_counts_offsets_up_to_the_last_stable_offset(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 3)
    tx = _transactions(broker.bootstrap_server, topic_name)
    try:
        s = sample(broker, topic_name, start="latest", per_partition=20)
        committed = consume_all(broker.bootstrap_server, topic_name, 3)
        for p in range(3):
            stop = s.meta.how["ranges"][str(p)][1]
            want = [r for r in committed if r["partition"] == p and stop - 20 <= r["offset"] < stop]
            assert [o for pp, o, _ in rows(s) if pp == p] == [r["offset"] for r in want]
    finally:
        tx.abort_transaction(30)


# --------------------------------------------------------------------------- 3. compaction, deletion, retention


def test_compacted_topic_after_the_cleaner_ran(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 2, {
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100", "min.compaction.lag.ms": "0",
    })
    msgs = [{"key": b"key-%d" % (i % 40), "value": b"v%d" % i, "partition": i % 2} for i in range(2000)]
    msgs += [{"key": b"key-%d" % i, "value": None, "partition": i % 2} for i in range(0, 40, 4)]  # tombstones
    produce(broker.bootstrap_server, topic_name, msgs)

    def cleaned():
        # roll the active segment (the cleaner never touches it) and look for the offset gaps
        produce(broker.bootstrap_server, topic_name, [{"key": b"roll", "value": b"r", "partition": p} for p in (0, 1)])
        got = consume_all(broker.bootstrap_server, topic_name, 2)
        return got if len(got) < 600 else None

    wait_until("log compaction", cleaned)
    peer, s = stable(lambda: consume_all(broker.bootstrap_server, topic_name, 2), lambda: sample(broker, topic_name))
    assert rows(s) == peer_rows(peer)
    # timestamps too: cleaned batches may carry a delete horizon in their base timestamp (KIP-534)
    assert s.df.select(pl_epoch()).to_series().to_list() == [r["timestamp"] for r in peer]
    offs = s.df["offset"].to_list()
    assert any(b - a > 1 for a, b in zip(offs, offs[1:]))  # the cleaner left gaps
    highs = _watermarks(broker.bootstrap_server, topic_name, 2)
    assert {p: (i.low, i.high) for p, i in s.meta.partitions.items()} == highs
    for p, i in s.meta.partitions.items():
        mine = [r for r in peer if r["partition"] == p]
        assert (i.first, i.last, i.records) == (mine[0]["offset"], mine[-1]["offset"], len(mine))
        assert i.read_to == i.high
    assert "notes" not in s.meta.how


def _watermarks(bootstrap: str, topic: str, partitions: int) -> dict[int, tuple[int, int]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "peer-watermarks", "enable.auto.commit": False})
    try:
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in range(partitions)}
    finally:
        c.close()


def test_delete_records_moves_the_log_start(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 2)
    acked = produce(broker.bootstrap_server, topic_name,
                    [{"key": b"k%d" % i, "value": b"v", "partition": i % 2} for i in range(1000)])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_server})
    for f in admin.delete_records([TopicPartition(topic_name, 0, 123), TopicPartition(topic_name, 1, 400)]).values():
        f.result(timeout=30)
    s = sample(broker, topic_name)
    cut = {0: 123, 1: 400}
    assert rows(s) == [(p, o, k) for p, o, k, _ in acked if o >= cut[p]]
    assert {p: (i.low, i.high, i.first) for p, i in s.meta.partitions.items()} == {0: (123, 500, 123), 1: (400, 500, 400)}
    assert s.meta.how["ranges"] == {"0": [123, 500], "1": [400, 500]}
    latest = sample(broker, topic_name, start="latest", max_records=200)  # 200 of 377 + 100 offsets: 158 / 42
    assert {p: (i.first, i.records) for p, i in latest.meta.partitions.items()} == {0: (500 - 158, 158), 1: (500 - 42, 42)}


def test_retention_removed_the_oldest_segments(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 1, {"retention.ms": "1000", "segment.ms": "100"})
    old = produce(broker.bootstrap_server, topic_name, [{"key": b"old%d" % i, "value": b"v"} for i in range(300)])

    def expired():
        produce(broker.bootstrap_server, topic_name, [{"key": b"tick", "value": b"t"}])  # rolls a segment
        low, high = _watermarks(broker.bootstrap_server, topic_name, 1)[0]
        return (low, high) if low >= 300 else None

    wait_until("retention", expired)
    # keep what comes now: retention off, then records retention must not take
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": broker.bootstrap_server})
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    new = produce(broker.bootstrap_server, topic_name, [{"key": b"new%d" % i, "value": b"v"} for i in range(100)])
    peer, s = stable(lambda: consume_all(broker.bootstrap_server, topic_name, 1), lambda: sample(broker, topic_name))
    assert rows(s) == peer_rows(peer) and not any(k.startswith(b"old") for _, _, k in rows(s))
    i = s.meta.partitions[0]
    assert i.low >= 300 and (i.low, i.high) == (peer[0]["offset"], peer[-1]["offset"] + 1) and len(old) == 300
    assert [k for _, _, k in rows(s)][-100:] == [k for _, _, k, _ in new]


# --------------------------------------------------------------------------- 4. time


def test_from_time_on_a_create_time_topic(broker, topic_name):
    """CreateTime: the producer's timestamps decide, however long ago they are."""
    create_topic(broker.bootstrap_server, topic_name, 2, {"message.timestamp.type": "CreateTime"})
    t0 = int(time.time() * 1000) - 3 * 86_400_000  # three days ago
    msgs = [{"key": b"k%d" % i, "value": b"v", "partition": i % 2, "timestamp": t0 + i * 60_000} for i in range(600)]
    produce(broker.bootstrap_server, topic_name, msgs)
    cut = t0 + 400 * 60_000 + 1  # records 401.. are at or after it
    s = sample(broker, topic_name, start="time", from_time_ms=cut)
    peer = consume_all(broker.bootstrap_server, topic_name, 2)
    want = [r for r in peer if r["timestamp"] >= cut]
    assert rows(s) == peer_rows(want) and len(want) == 199
    assert s.df["timestamp"].dt.epoch("ms").to_list() == [r["timestamp"] for r in want]


def test_from_time_on_a_log_append_time_topic(broker, topic_name):
    """LogAppendTime: the broker's clock decides; the producer's timestamps are overwritten."""
    create_topic(broker.bootstrap_server, topic_name, 2, {"message.timestamp.type": "LogAppendTime"})
    long_ago = 1_000_000_000_000  # 2001: what the producer claims
    produce(broker.bootstrap_server, topic_name,
            [{"key": b"early%d" % i, "value": b"v", "partition": i % 2, "timestamp": long_ago} for i in range(300)])
    peer = consume_all(broker.bootstrap_server, topic_name, 2)
    cut = max(r["timestamp"] for r in peer) + 1
    wait_until("the broker clock to pass the cut", lambda: time.time() * 1000 > cut + 5, every=0.01)
    late = produce(broker.bootstrap_server, topic_name,
                   [{"key": b"late%d" % i, "value": b"v", "partition": i % 2, "timestamp": long_ago} for i in range(200)])
    s = sample(broker, topic_name, start="time", from_time_ms=cut)
    assert rows(s) == [(p, o, k) for p, o, k, _ in late]
    peer = consume_all(broker.bootstrap_server, topic_name, 2)
    assert {r["timestamp_type"] for r in peer} == {TIMESTAMP_LOG_APPEND_TIME}
    by = {(r["partition"], r["offset"]): r["timestamp"] for r in peer}
    got = s.df.select("partition", "offset", pl_epoch()).rows()
    assert all(ts == by[(p, o)] and ts >= cut for p, o, ts in got)


def pl_epoch():
    import polars as pl

    return pl.col("timestamp").dt.epoch("ms")


# --------------------------------------------------------------------------- 8. codecs, headers, tombstones, idempotence


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_codecs_headers_tombstones_idempotent_producer(broker, topic_name, codec):
    create_topic(broker.bootstrap_server, topic_name, 3)
    msgs = []
    for i in range(1500):
        headers = [("h", b"h%d" % i), ("h", b"last%d" % i)] if i % 3 == 0 else [("n", None)] if i % 3 == 1 else None
        value = None if i % 10 == 0 else b'{"t": "t%d", "pad": "%s"}' % (i % 7, b"x" * (i % 50))
        m = {"key": None if i % 11 == 0 else b"user-%d" % (i % 97), "value": value}
        if headers:
            m["headers"] = headers
        msgs.append(m)
    produce(broker.bootstrap_server, topic_name, msgs, **{
        "compression.type": codec, "enable.idempotence": True, "acks": "all", "partitioner": "murmur2_random"})
    peer = consume_all(broker.bootstrap_server, topic_name, 3)
    s = sample(broker, topic_name, fields=[parse_field("h=header:h"), parse_field("n=header:n"), parse_field("t=$.t")])
    assert rows(s) == peer_rows(peer) and len(s) == 1500
    got = s.df.to_dicts()
    for mine, theirs in zip(got, peer):
        value = theirs["value"]
        hs = dict(theirs["headers"] or [])  # the last of a repeated name wins
        assert mine["value_size"] == (len(value) if value is not None else 0)
        assert mine["key_size"] == (len(theirs["key"]) if theirs["key"] is not None else None)
        assert mine["h"] == (hs["h"].decode() if "h" in hs else None)
        assert mine["n"] is None  # a header with a null value is no value
        assert mine["t"] == (None if value is None else value.split(b'"')[3].decode())
        assert round(mine["timestamp"].timestamp() * 1000) == theirs["timestamp"]
    assert sum(r["value"] is None for r in peer) == 150 == int((s.df["value_size"] == 0).sum())


# --------------------------------------------------------------------------- Tansu's notes stay Tansu's


@pytest.mark.tansu
def test_notes_appear_only_when_the_thing_happened(broker, broker_kind, topic_name, tmp_path):
    from click.testing import CliRunner

    from keyscope.cli import cli

    create_topic(broker.bootstrap_server, topic_name, 2)
    produce(broker.bootstrap_server, topic_name,
            [{"key": b"k%d" % i, "value": b"v" * 50} for i in range(5000)], **{"batch.num.messages": 500})
    out = tmp_path / "s.parquet"
    r = CliRunner().invoke(cli, ["sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    from keyscope.sample import read_sample

    s = read_sample(out)
    under = {p: i.high for p, i in s.meta.partitions.items() if s.meta.how["list_offsets_high"][str(p)] < i.high}
    assert sum(i.high for i in s.meta.partitions.values()) == 5000
    if broker_kind == "kafka":
        assert not under and "notes" not in s.meta.how  # real Kafka's ListOffsets is right
        assert "note:" not in r.output and "ListOffsets" not in r.output
    else:  # Tansu answers with the last batch's base offset + 1 when producers batch
        worst = max(i.high - s.meta.how["list_offsets_high"][str(p)] for p, i in s.meta.partitions.items())
        plural = "s 0, 1" if len(under) == 2 else f" {next(iter(under))}"
        assert s.meta.how["notes"] == [
            f"end offsets come from fetch responses: ListOffsets under-reported partition{plural} by up to {worst:,}"]
        assert r.output.count("note: ") == 1


# --------------------------------------------------------------------------- issue 12: cut short, still proportional


@pytest.fixture(scope="module")
def hot_topic(kafka):
    """4 partitions, partition 2 holding 70% of the records."""
    name = f"hot-{time.time_ns()}"
    create_topic(kafka.bootstrap_server, name, 4)
    counts = {0: 400, 1: 400, 2: 2800, 3: 400}
    msgs = [{"key": b"k%d-%d" % (p, i), "value": b"v" * 80, "partition": p} for p, n in counts.items() for i in range(n)]
    produce(kafka.bootstrap_server, name, msgs, **{"batch.num.messages": 20})
    return kafka, name, counts


def _shares(s) -> dict[int, float]:
    n = len(s)
    return {p: i.records / n for p, i in s.meta.partitions.items()}


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9])
def test_a_sample_cut_short_keeps_the_partition_shares(hot_topic, cut):
    broker, topic, counts = hot_topic
    real = {p: n / sum(counts.values()) for p, n in counts.items()}
    budget = 2000

    def ctrl_c_at(p):
        if p.records >= cut * budget:
            raise KeyboardInterrupt

    s = sample(broker, topic, max_records=budget, progress=ctrl_c_at)
    assert s.meta.partial and cut * budget <= len(s) < budget
    full = sample(broker, topic, max_records=budget)
    assert {p: i.budget for p, i in s.meta.partitions.items()} == {0: 200, 1: 200, 2: 1400, 3: 200}
    for shares in (_shares(s), _shares(full)):
        assert max(abs(shares[p] - real[p]) for p in real) <= 0.03, shares
    assert max(_shares(s), key=_shares(s).get) == 2
    read = [i.records / i.budget for i in s.meta.partitions.values()]  # share of its budget each has read
    assert max(read) <= min(read) * PACE_RATIO + PACE_STEP + 1 / 200, read
    # the same, cut by --max-bytes at that share of what the whole sample fetched
    b = sample(broker, topic, max_records=budget, max_bytes=int(cut * full.meta.how["bytes_fetched"]))
    assert b.meta.how["stopped_by"] == "max-bytes" and 0 < len(b) < budget
    assert max(abs(_shares(b)[p] - real[p]) for p in real) <= 0.03, _shares(b)
    for p, i in b.meta.partitions.items():  # what was read is a contiguous run up to read_to
        assert i.read_to == i.last + 1 and i.records == i.read_to - i.first


@pytest.mark.tansu
def test_aborted_transactions_note_only_where_the_broker_does_not_list_them(broker, broker_kind, topic_name):
    """Real Kafka lists aborted transactions in Fetch answers: they are left out, silently.
    Tansu 0.6 lists none: its aborted records stay in, and the sample says so."""
    create_topic(broker.bootstrap_server, topic_name, 1)
    tx = Producer({"bootstrap.servers": broker.bootstrap_server, "transactional.id": f"tx-{topic_name}",
                   "logger": _quiet()})
    tx.init_transactions(30)
    for n, commit in enumerate([True, False, True]):
        tx.begin_transaction()
        for i in range(10):
            tx.produce(topic_name, key=b"tx%d-%d" % (n, i), value=b"c" if commit else b"a", partition=0)
        tx.flush(30)
        (tx.commit_transaction if commit else tx.abort_transaction)(30)
    s = sample(broker, topic_name)
    aborted = [k for _, _, k in rows(s) if k.startswith(b"tx1-")]
    unlisted = [n for n in s.meta.how.get("notes", []) if "did not list the aborted transaction" in n]
    if broker_kind == "kafka":
        assert len(s) == 20 and not aborted and not unlisted
        assert rows(s) == peer_rows(consume_all(broker.bootstrap_server, topic_name, 1))
    else:
        assert len(s) == 30 and len(aborted) == 10 and len(unlisted) == 1


def test_cli_isolation_option_notes_and_schema(broker, topic_name, tmp_path):
    import json

    from click.testing import CliRunner

    from keyscope.cli import cli

    from .test_json_schemas import assert_valid

    create_topic(broker.bootstrap_server, topic_name, 3)
    tx = _transactions(broker.bootstrap_server, topic_name)
    try:
        out = tmp_path / "s.parquet"
        base = ["sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out), "--force", "-q",
                "--from", "earliest"]
        r = CliRunner().invoke(cli, base)
        assert r.exit_code == 0, r.output
        assert "note: partition 2: read up to the last stable offset" in r.output and r.output.count("note:") == 1
        committed = consume_all(broker.bootstrap_server, topic_name, 3)
        r = CliRunner().invoke(cli, base + ["--format", "json"])
        doc = json.loads(r.output)
        assert_valid("sample", doc)
        assert doc["summary"]["records"] == len(committed) and doc["meta"]["how"]["isolation"] == "read_committed"
        info = CliRunner().invoke(cli, ["info", str(out)])
        assert "note: partition 2: read up to the last stable offset" in info.output
        assert_valid("sample", json.loads(CliRunner().invoke(cli, ["info", str(out), "--format", "json"]).output))
        r = CliRunner().invoke(cli, base + ["--isolation", "read_uncommitted", "--format", "json"])
        doc = json.loads(r.output)
        assert_valid("sample", doc)
        everything = consume_all(broker.bootstrap_server, topic_name, 3, "read_uncommitted")
        assert doc["summary"]["records"] == len(everything) > len(committed)
        assert "notes" not in doc["meta"]["how"]
        r = CliRunner().invoke(cli, base + ["--isolation", "dirty"])
        assert r.exit_code == 2 and "--isolation" in r.output
    finally:
        tx.abort_transaction(30)
