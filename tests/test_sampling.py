"""`keyscope.sampling` against the real embedded broker, over TCP.

Data is produced with confluent-kafka (librdkafka: batched, every codec) and
kafka-python (gzip is the only codec it can encode or decode here: lz4, zstd
and snappy need packages that are not installed), and every test checks
exact offsets, keys, fields and metadata against what the producer reported.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Producer

from keyscope.kafka import client as kafka_io
from keyscope.kafka.broker import EmbeddedBroker
from keyscope.kafka.connection import resolve
from keyscope.errors import KafkaError
from keyscope.sample import read_sample
from keyscope.sampling import DEFAULT_MAX_RECORDS, SampleSpec, parse_field, sample_topic

from .conftest import create_topic

# The sampler is the code most exposed to broker differences: real Kafka and Tansu both.
pytestmark = pytest.mark.tansu


def produce(bootstrap: str, topic: str, messages: list[dict], **conf) -> list[tuple]:
    """Produce with librdkafka; returns (partition, offset, key, value, headers) as the broker acknowledged."""
    acked: list[tuple] = []
    errors: list = []

    def report(err, msg):
        if err is not None:
            errors.append(err)
        else:
            acked.append((msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers()))

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random", **conf})
    for m in messages:
        kw = {k: m[k] for k in ("key", "value", "headers", "partition") if m.get(k) is not None}
        p.produce(topic, on_delivery=report, **kw)
        p.poll(0)
    assert p.flush(60) == 0 and not errors
    return sorted(acked, key=lambda a: (a[0], a[1]))


def messages(n: int, seed: int = 0) -> list[dict]:
    out = []
    for i in range(n):
        if i % 97 == 0:
            key = None
        elif i % 89 == 0:
            key = b""
        else:
            key = f"user-{(i * 7 + seed) % 211}".encode()
        value = json.dumps({"tenant": f"t{i % 5}", "i": i}).encode() if i % 13 else b"not json %d" % i
        headers = [("trace", f"tr-{i}".encode())] if i % 3 == 0 else None
        out.append({"key": key, "value": value, "headers": headers})
    return out


def spec(topic, **kw) -> SampleSpec:
    kw.setdefault("timeout_s", 30)
    return SampleSpec(topic=topic, **kw)


def rows(sample) -> list[tuple]:
    return [(r["partition"], r["offset"], r["key"]) for r in sample.df.select("partition", "offset", "key").to_dicts()]


@pytest.mark.parametrize("codec", ["none", "gzip", "lz4", "zstd", "snappy"])
def test_sample_equals_what_librdkafka_wrote(broker, topic_name, codec):
    create_topic(broker.bootstrap_server, topic_name, 3)
    sent = messages(3000)
    by_value = {m["value"]: m for m in sent}  # values are unique; delivery reports carry no headers
    acked = produce(broker.bootstrap_server, topic_name, sent, **{"compression.type": codec})
    fields = [parse_field("tenant=$.tenant"), parse_field("trace=header:trace")]
    s = sample_topic(resolve(broker.bootstrap_server), spec(topic_name, start="earliest", max_records=10_000, fields=fields))
    assert rows(s) == [(p, o, k) for p, o, k, _, _ in acked]
    got = s.df.to_dicts()
    for r, (_, _, key, value, _) in zip(got, acked):
        headers = by_value[value]["headers"]
        assert r["value_size"] == len(value)
        assert r["key_size"] == (None if key is None else len(key))
        assert r["tenant"] == (None if value.startswith(b"not json") else json.loads(value)["tenant"])
        assert r["trace"] == (headers[0][1].decode() if headers else None)
    counts = {p: sum(1 for a in acked if a[0] == p) for p in range(3)}
    for p, info in s.meta.partitions.items():
        assert (info.low, info.high, info.first, info.last, info.records) == (0, counts[p], 0, counts[p] - 1, counts[p])
    assert s.meta.field_misses == {
        "tenant": sum(1 for m in sent if m["value"].startswith(b"not json")),
        "trace": sum(1 for m in sent if not m["headers"]),
    }
    assert not s.meta.partial and s.meta.how["stopped_by"] == "end of range"
    assert s.meta.partition_count == 3 and s.meta.source == "kafka"


def test_batched_high_watermarks_are_the_real_counts(broker, topic_name):
    """ListOffsets under-reports on the embedded broker when producers batch; the sample must not."""
    create_topic(broker.bootstrap_server, topic_name, 4)
    acked = produce(broker.bootstrap_server, topic_name, messages(20_000), **{"linger.ms": 100, "batch.num.messages": 5000})
    s = sample_topic(resolve(broker.bootstrap_server), spec(topic_name, start="latest", per_partition=10))
    for p, info in s.meta.partitions.items():
        real = sum(1 for a in acked if a[0] == p)
        assert info.high == real
        assert s.meta.how["list_offsets_high"][str(p)] <= real
        assert (info.first, info.last, info.records) == (real - 10, real - 1, 10)


def test_kafka_python_producer_gzip_headers_and_timestamps(broker, topic_name):
    from kafka import KafkaProducer

    create_topic(broker.bootstrap_server, topic_name, 2)
    sent = []
    # Timestamps within retention: real Kafka deletes a segment whose records are older than
    # retention.ms (7 days) by CreateTime as soon as it rolls, so 2023 timestamps vanish.
    base = int(time.time() * 1000) // 1000 * 1000 - 3_600_000
    for codec in (None, "gzip"):
        prod = KafkaProducer(bootstrap_servers=broker.bootstrap_server, linger_ms=20, compression_type=codec)
        futures = []
        for i in range(400):
            key = None if i % 50 == 0 else (b"" if i % 41 == 0 else b"kp-%d" % (i % 31))
            headers = [("trace", b"x%d" % i), ("trace", b"last-%d" % i)] if i % 2 else []
            ts = base + i * 1000
            futures.append((key, ts, prod.send(topic_name, key=key, value=b"v" * (i % 9), headers=headers,
                                               timestamp_ms=ts, partition=i % 2)))
        prod.flush()
        for key, ts, f in futures:
            md = f.get(10)
            sent.append((md.partition, md.offset, key, ts))
        prod.close()
    sent.sort()
    s = sample_topic(resolve(broker.bootstrap_server),
                     spec(topic_name, start="earliest", fields=[parse_field("trace=header:trace")]))
    got = s.df.with_columns(s.df["timestamp"].dt.epoch("ms").alias("ms")).to_dicts()
    assert [(r["partition"], r["offset"], r["key"], r["ms"]) for r in got] == sent
    # Java's lastHeader(): the last header of a repeated name wins.
    assert [r["trace"] for r in got if r["trace"] is not None][:3] == [f"last-{i}" for i in (1, 3, 5)]


@pytest.fixture
def uneven(broker, topic_name):
    """100 / 300 / 600 records in partitions 0 / 1 / 2, keys naming partition and position."""
    create_topic(broker.bootstrap_server, topic_name, 3)
    msgs = [{"key": f"p{p}-{i}".encode(), "value": b"x", "partition": p} for p, n in ((0, 100), (1, 300), (2, 600))
            for i in range(n)]
    produce(broker.bootstrap_server, topic_name, msgs)
    return topic_name


def _per_partition(s) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for p, o, k in rows(s):
        assert k == f"p{p}-{o}".encode()
        out.setdefault(p, []).append(o)
    return out


@pytest.mark.parametrize(
    "kw, want, stopped_by",
    [
        # the last N of each partition
        (dict(start="latest", per_partition=50), {0: (50, 100), 1: (250, 300), 2: (550, 600)}, "record limit"),
        # a total split in proportion to what each partition holds: 10/30/60 of 1,000
        (dict(start="latest", max_records=100), {0: (90, 100), 1: (270, 300), 2: (540, 600)}, "record limit"),
        (dict(start="latest"), {0: (0, 100), 1: (0, 300), 2: (0, 600)}, "end of range"),  # default cap > topic
        (dict(start="earliest", per_partition=50), {0: (0, 50), 1: (0, 50), 2: (0, 50)}, "record limit"),
        (dict(start="earliest", max_records=100), {0: (0, 10), 1: (0, 30), 2: (0, 60)}, "record limit"),
        # both: caps 100/200/200, then 300 in proportion: 60/120/120
        (dict(start="earliest", per_partition=200, max_records=300), {0: (0, 60), 1: (0, 120), 2: (0, 120)}, "record limit"),
        (dict(start="earliest", partitions=[0, 2]), {0: (0, 100), 2: (0, 600)}, "end of range"),
        (dict(start="latest", partitions=[1], per_partition=1), {1: (299, 300)}, "record limit"),
    ],
)
def test_modes_and_bounds_read_exact_ranges(broker, uneven, kw, want, stopped_by):
    s = sample_topic(resolve(broker.bootstrap_server), spec(uneven, **kw))
    got = _per_partition(s)
    assert {p: (o[0], o[-1] + 1) for p, o in got.items()} == want
    for p, offs in got.items():
        assert offs == list(range(want[p][0], want[p][1]))  # contiguous, in order
        info = s.meta.partitions[p]
        assert (info.first, info.last, info.records) == (want[p][0], want[p][1] - 1, len(offs))
    assert set(s.meta.partitions) == set(want)
    assert s.meta.partition_count == 3
    assert s.meta.how["stopped_by"] == stopped_by
    assert s.meta.how["per_partition"] == kw.get("per_partition")


def test_default_bound_is_documented_cap():
    assert SampleSpec(topic="t").effective_max_records == DEFAULT_MAX_RECORDS
    assert SampleSpec(topic="t", per_partition=5).effective_max_records is None


def test_from_time_uses_the_brokers_receive_time(broker, topic_name):
    """Tansu answers time lookups with the time it received each batch (BROKER.md), so the
    test separates two bursts in wall time rather than relying on producer timestamps."""
    create_topic(broker.bootstrap_server, topic_name, 2)
    produce(broker.bootstrap_server, topic_name, [{"key": b"old-%d" % i, "value": b"x"} for i in range(200)])
    time.sleep(1.2)
    cut_ms = int(time.time() * 1000)
    time.sleep(0.3)
    late = produce(broker.bootstrap_server, topic_name, [{"key": b"new-%d" % i, "value": b"x"} for i in range(150)])
    s = sample_topic(resolve(broker.bootstrap_server), spec(topic_name, start="time", from_time_ms=cut_ms))
    assert rows(s) == [(p, o, k) for p, o, k, _, _ in late]
    future = sample_topic(resolve(broker.bootstrap_server),
                          spec(topic_name, start="time", from_time_ms=int(time.time() * 1000) + 3_600_000))
    assert len(future) == 0 and future.meta.how["stopped_by"] == "end of range"


def test_max_bytes_stops_after_the_first_answer(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 1)
    produce(broker.bootstrap_server, topic_name, [{"key": b"k%d" % i, "value": b"v" * 200} for i in range(40_000)])
    s = sample_topic(resolve(broker.bootstrap_server), spec(topic_name, start="earliest", max_bytes=1, max_records=10**9))
    offs = s.df["offset"].to_list()
    assert 0 < len(offs) < 40_000 and offs == list(range(len(offs)))
    assert s.meta.how["stopped_by"] == "max-bytes" and not s.meta.partial
    assert s.meta.partitions[0].high == 40_000


def test_timeout_before_any_fetch_gives_an_empty_complete_sample(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 2)
    produce(broker.bootstrap_server, topic_name, [{"key": b"k", "value": b"v"}] * 50)
    s = sample_topic(resolve(broker.bootstrap_server), SampleSpec(topic=topic_name, timeout_s=0.001))
    assert len(s) == 0 and s.meta.how["stopped_by"] == "timeout" and not s.meta.partial
    assert sum(i.high for i in s.meta.partitions.values()) == 50


def test_empty_topic_gives_an_empty_valid_sample(broker, topic_name, tmp_path):
    create_topic(broker.bootstrap_server, topic_name, 3)
    s = sample_topic(resolve(broker.bootstrap_server), spec(topic_name, start="earliest", fields=[parse_field("a=$.a")]))
    assert len(s) == 0 and s.df.columns[-1] == "a"
    assert {p: (i.low, i.high, i.records) for p, i in s.meta.partitions.items()} == {p: (0, 0, 0) for p in range(3)}
    back = read_sample(s.write(tmp_path / "empty.parquet"))
    assert len(back) == 0 and back.meta == s.meta and back.df.schema == s.df.schema


def test_idle_partitions_do_not_hold_the_sample(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 6)
    produce(broker.bootstrap_server, topic_name, [{"key": b"k", "value": b"v", "partition": 4}] * 30)
    s = sample_topic(resolve(broker.bootstrap_server), spec(topic_name, start="earliest", timeout_s=60))
    assert len(s) == 30 and s.meta.how["stopped_by"] == "end of range"  # not "timeout"


def test_sampling_is_read_only(broker, topic_name):
    from kafka import KafkaAdminClient, KafkaConsumer, OffsetAndMetadata, TopicPartition

    create_topic(broker.bootstrap_server, topic_name, 2)
    produce(broker.bootstrap_server, topic_name, messages(500))
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_server)
    try:
        # Control: a consumer that does commit shows up, so the check below can fail.
        control = f"control-{uuid.uuid4().hex[:6]}"
        c = KafkaConsumer(bootstrap_servers=broker.bootstrap_server, group_id=control, enable_auto_commit=False)
        c.assign([TopicPartition(topic_name, 0)])
        c.commit({TopicPartition(topic_name, 0): OffsetAndMetadata(3, "", -1)})
        c.close()
        assert control in _group_ids(admin)
        groups_before = _group_ids(admin)
        topics_before = set(admin.list_topics())
        for mode in ("latest", "earliest"):
            sample_topic(resolve(broker.bootstrap_server), spec(topic_name, start=mode))
        with pytest.raises(KafkaError):
            sample_topic(resolve(broker.bootstrap_server), spec(topic_name + "-nope"))
        assert _group_ids(admin) == groups_before
        assert set(admin.list_topics()) == topics_before
        # across every group on the broker, the only committed offset on the topic is the control's
        got = admin.list_group_offsets({g: None for g in _group_ids(admin)})
        committed = {
            (g, tp.partition): om.offset for g, offs in got.items() for tp, om in offs.items() if tp.topic == topic_name
        }
        assert committed == {(control, 0): 3}
    finally:
        admin.close()


def _group_ids(admin) -> set[str]:
    return {g["group_id"] if isinstance(g, dict) else g[0] for g in admin.list_groups()}


def test_unknown_topic_is_named_and_not_created(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 1)
    with pytest.raises(KafkaError, match=f"topic '{topic_name}x' does not exist; did you mean {topic_name}"):
        sample_topic(resolve(broker.bootstrap_server), spec(topic_name + "x"))
    c = kafka_io.open_consumer(resolve(broker.bootstrap_server))
    try:
        assert topic_name + "x" not in kafka_io.list_topics(c)
    finally:
        c.close()


def test_missing_partition_is_refused(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 3)
    with pytest.raises(KafkaError, match=r"has partitions 0-2; --partitions asked for 7"):
        sample_topic(resolve(broker.bootstrap_server), spec(topic_name, partitions=[1, 7]))


def test_unreachable_broker_fails_within_the_timeout():
    t = time.monotonic()
    with pytest.raises(KafkaError, match="cannot reach a Kafka broker at 127.0.0.1:1"):
        sample_topic(resolve("127.0.0.1:1"), SampleSpec(topic="t", timeout_s=2))
    assert time.monotonic() - t < 20  # generous: the point is that it returns, not how fast


def test_field_misses_are_counted_not_fatal(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 1)
    values = [b'{"a":{"b":"x"}}', b'{"a":{}}', b"plain text", b'{"a":{"b":null}}', b"\xff\xfe{", None,
              b'{"a":{"b":7}}', b'{"a":{"b":"\\u00e9"}}']
    hdrs = [[("h", b"ok")], [("h", None)], [("h", b"\xff")], [], [("other", b"1")], [("h", "é".encode())], None, None]
    produce(broker.bootstrap_server, topic_name,
            [{"key": b"k", "value": v, "headers": h, "partition": 0} for v, h in zip(values, hdrs)])
    s = sample_topic(resolve(broker.bootstrap_server),
                     spec(topic_name, start="earliest", fields=[parse_field("b=$.a.b"), parse_field("h=header:h")]))
    assert s.df["b"].to_list() == ["x", None, None, None, None, None, "7", "é"]
    assert s.df["h"].to_list() == ["ok", None, None, None, None, "é", None, None]
    assert s.meta.field_misses == {"b": 5, "h": 6}
    assert s.meta.fields == {"b": "$.a.b", "h": "header:h"}


def test_secrets_never_reach_the_sample(broker, topic_name, tmp_path):
    create_topic(broker.bootstrap_server, topic_name, 1)
    produce(broker.bootstrap_server, topic_name, [{"key": b"k", "value": b"v"}] * 5)
    conn = resolve(broker.bootstrap_server, overrides=[
        "sasl.mechanism=PLAIN",
        'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="svc" password="hunter2-s3cret";',
        "ssl.key.password=k3y-s3cret",
    ])  # security.protocol stays PLAINTEXT, so the embedded broker accepts the connection
    s = sample_topic(conn, spec(topic_name, start="earliest"))
    path = s.write(tmp_path / "s.parquet")
    raw = path.read_bytes()
    assert b"hunter2-s3cret" not in raw and b"k3y-s3cret" not in raw
    assert s.meta.how["connection"]["sasl_plain_password"] == "***"
    assert s.meta.how["connection"]["sasl_plain_username"] == "svc"
    assert "s3cret" not in read_sample(path).meta.to_json()


def test_live_sample_round_trips_through_parquet(broker, topic_name, tmp_path):
    create_topic(broker.bootstrap_server, topic_name, 2)
    produce(broker.bootstrap_server, topic_name, messages(700))
    s = sample_topic(resolve(broker.bootstrap_server), spec(topic_name, start="earliest", fields=[parse_field("tenant=$.tenant")]))
    back = read_sample(s.write(tmp_path / "s.parquet"))
    assert back.meta == s.meta and back.df.equals(s.df)


def test_watermarks_work_on_codecs_kafka_python_cannot_decode(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 2)
    acked = produce(broker.bootstrap_server, topic_name, messages(2000), **{"compression.type": "zstd"})
    c = kafka_io.open_consumer(resolve(broker.bootstrap_server))
    try:
        wm = kafka_io.watermarks(c, topic_name, [0, 1])
    finally:
        c.close()
    assert {p: w.high for p, w in wm.items()} == {p: sum(1 for a in acked if a[0] == p) for p in (0, 1)}


# ---------------------------------------------------------------- cut short: keep what was read


@pytest.fixture
def own_broker():
    """A broker of this test's own, so killing it does not disturb the others."""
    b = EmbeddedBroker().start()
    try:
        yield b
    finally:
        b.stop()


def _big_topic(bootstrap: str, topic: str) -> int:
    create_topic(bootstrap, topic, 3)
    n = 180_000  # ~12 MB per partition: several fetches each
    produce(bootstrap, topic, [{"key": b"key-%d" % (i % 1000), "value": b"v" * 200} for i in range(n)])
    return n


def _assert_contiguous_prefix(s):
    for p, info in s.meta.partitions.items():
        offs = s.df.filter(s.df["partition"] == p)["offset"].to_list()
        assert offs == list(range(info.low, info.low + len(offs)))
        assert info.records == len(offs)


def test_lost_broker_keeps_what_was_read(own_broker, topic_name, tmp_path):
    n = _big_topic(own_broker.bootstrap_server, topic_name)
    calls = []

    def kill_on_first(progress):
        calls.append(progress.records)
        if len(calls) == 1:
            own_broker.stop()

    s = sample_topic(resolve(own_broker.bootstrap_server),
                     SampleSpec(topic=topic_name, start="earliest", max_records=n, timeout_s=60, retry_s=1.0),
                     progress=kill_on_first)
    assert s.meta.partial and s.meta.partial_reason.startswith("lost the broker")
    assert 0 < len(s) < n
    _assert_contiguous_prefix(s)
    back = read_sample(s.write(tmp_path / "partial.parquet"))
    assert back.meta.partial and len(back) == len(s)


def test_ctrl_c_keeps_what_was_read(own_broker, topic_name):
    n = _big_topic(own_broker.bootstrap_server, topic_name)

    def interrupt(progress):
        raise KeyboardInterrupt

    s = sample_topic(resolve(own_broker.bootstrap_server),
                     SampleSpec(topic=topic_name, start="earliest", max_records=n, timeout_s=60), progress=interrupt)
    assert s.meta.partial and s.meta.partial_reason == "interrupted (Ctrl-C)"
    assert 0 < len(s) < n and s.meta.how["stopped_by"] == "partial"
    _assert_contiguous_prefix(s)


def test_many_partitions_are_split_over_several_requests(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 40)  # more than one request's worth (32)
    acked = produce(broker.bootstrap_server, topic_name,
                    [{"key": b"k%d" % i, "value": b"v", "partition": i % 40} for i in range(4000)])
    s = sample_topic(resolve(broker.bootstrap_server), spec(topic_name, start="earliest"))
    assert rows(s) == [(p, o, k) for p, o, k, _, _ in acked]
    assert s.meta.how["fetch_requests"] >= 2 and len(s.meta.partitions) == 40
