"""`keyscope lag` against the real embedded broker: numbers, read-only-ness, errors, --watch."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer as CKConsumer
from confluent_kafka import Producer
from confluent_kafka import TopicPartition as CKTopicPartition

from keyscope import lag as lagmod
from keyscope.kafka.connection import resolve
from keyscope.errors import KafkaError

from .conftest import create_topic
from .ptys import read_until


def run(bootstrap, *args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "keyscope", "lag", "-b", bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def strict_json(text):
    def no_constants(name):
        raise AssertionError(f"non-finite number {name} in JSON output")

    return json.loads(text, parse_constant=no_constants)


def produce_batched(bootstrap, topic, counts: dict[int, int]):
    """Many records per batch: the case where ListOffsets under-reports the end offset."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.num.messages": 10000})
    for partition, n in counts.items():
        for i in range(n):
            p.produce(topic, key=f"k{i}".encode(), value=b"v", partition=partition)
    assert p.flush(30) == 0


def commit_as_non_member(bootstrap, topic, group, offsets: dict[int, int]):
    """assign() + commit on an idle group, as a stopped consumer leaves things."""
    from keyscope.kafka.demo import commit_offsets

    commit_offsets(bootstrap, topic, group, offsets)


def committed_by_other_client(bootstrap, topic, group, partitions):
    """Committed offsets read with librdkafka (OffsetFetch, no join), independent of keyscope's client."""
    c = CKConsumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([CKTopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        c.close()
    return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in got}


def skew(lags):
    mean = sum(lags) / len(lags)
    return max(lags) / (mean if mean > 0.001 else 0.001)


@pytest.fixture
def hot_group(broker, topic_name):
    """5 partitions, partition 0 hot; the group is caught up except there; partition 4 never committed."""
    produced = {0: 20000, 1: 1000, 2: 1000, 3: 1000, 4: 700}
    create_topic(broker.bootstrap_server, topic_name, 5)
    produce_batched(broker.bootstrap_server, topic_name, produced)
    group = f"g-{uuid.uuid4().hex[:8]}"
    committed = {0: 500, 1: 1000, 2: 900, 3: 1000}
    commit_as_non_member(broker.bootstrap_server, topic_name, group, committed)
    return topic_name, group, produced, committed


@pytest.mark.tansu
def test_json_numbers_equal_the_recording_rule_formulas(broker, broker_kind, hot_group):
    topic, group, produced, committed = hot_group
    r = run(broker.bootstrap_server, "--group", group, "--topic", topic, "--format", "json")
    assert r.returncode == 0, r.stderr
    doc = strict_json(r.stdout)
    assert doc["group"] == group and [t["topic"] for t in doc["topics"]] == [topic]
    t = doc["topics"][0]

    # End offsets are the real record counts, also where ListOffsets was wrong (Tansu, batched topic).
    assert {row["partition"]: row["end_offset"] for row in t["partitions"]} == produced
    if broker_kind == "tansu":
        assert any(row["list_offsets_end"] < row["end_offset"] for row in t["partitions"]), "quirk not exercised"
    else:  # real Kafka's ListOffsets is right
        assert all(row["list_offsets_end"] == row["end_offset"] for row in t["partitions"])

    # Corrected (keyscope:*): true lags only; the uncommitted partition has none.
    expected_lag = {p: produced[p] - c for p, c in committed.items()}
    assert {s["partition"]: s["value"] for s in t["keyscope:group_partition_lag"]} == expected_lag
    rows = {row["partition"]: row for row in t["partitions"]}
    assert rows[4]["committed_offset"] is None and rows[4]["lag"] is None and rows[4]["in_ratio"] is False
    assert t["partitions_without_committed_offset"] == [4]

    lags = list(expected_lag.values())
    assert t["keyscope:group_skew_ratio"] == skew(lags)  # 19500 / 4900, uncommitted partition left out
    assert t["keyscope:group_hottest_partition"] == [{"partition": 0, "value": 19500}]
    assert t["max_lag"] == 19500 and t["total_lag"] == sum(lags) and t["avg_lag"] == sum(lags) / 4
    assert doc["members"] == 0 and t["members_below_partitions"] is True

    # As the alert computes it (kafka:*): kafka_exporter's values, ListOffsets' end offsets, -1 for partition 4.
    exporter = {row["partition"]: row["list_offsets_end"] - (committed.get(row["partition"]) or 0) for row in t["partitions"]}
    exporter[4] = -1
    assert {s["partition"]: s["value"] for s in t["kafka:group_partition_lag"]} == exporter
    assert [row["exporter_lag"] for row in t["partitions"]] == [exporter[p] for p in range(5)]
    vals = [exporter[p] for p in range(5)]
    mean = vals[0]
    for n, v in enumerate(vals[1:], start=2):
        mean += v / n - mean / n  # Prometheus 2.42's avg
    assert t["kafka:group_skew_ratio"] == max(vals) / max(mean, 0.001) != t["keyscope:group_skew_ratio"]
    assert "partition 4 was never committed" in t["why_differ"]


def test_table_shows_uncommitted_partition_as_such_and_the_three_series(broker, hot_group):
    topic, group, _, _ = hot_group
    r = run(broker.bootstrap_server, "--group", group, "--topic", topic)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for name in ("kafka:group_partition_lag", "kafka:group_skew_ratio", "kafka:group_hottest_partition"):
        assert name in out
    cols = next(line for line in out.splitlines() if line.strip().startswith("4 ")).split()
    assert cols[:6] == ["4", "-", "700", "-", "-1", "-"] and "no committed offset" in " ".join(cols)  # alert lag -1
    assert repr(skew([19500, 0, 100, 0])) in out  # the corrected ratio, every digit
    flat = " ".join(line.strip() for line in out.splitlines())
    assert "why they differ: kafka:group_skew_ratio is" in flat and "partition 4 was never committed" in flat
    assert "█" in out  # a bar for the hot partition
    md = run(broker.bootstrap_server, "--group", group, "--topic", topic, "--format", "markdown")
    assert md.returncode == 0 and "| kafka:group_skew_ratio |" in md.stdout


def test_lag_is_read_only(broker, hot_group):
    topic, group, _, committed = hot_group
    before = committed_by_other_client(broker.bootstrap_server, topic, group, range(5))
    assert before == {**committed, 4: None}
    for _ in range(2):
        assert run(broker.bootstrap_server, "--group", group, "--topic", topic, "--format", "json").returncode == 0
    g = lagmod.read_group_lag(resolve(broker.bootstrap_server), group, topic)
    assert committed_by_other_client(broker.bootstrap_server, topic, group, range(5)) == before
    assert g.members == 0  # never joined: the group still has no member


def test_fail_on_skew_exit_code(broker, hot_group):
    topic, group, _, _ = hot_group
    ratio = skew([19500, 0, 100, 0])  # 3.98, the corrected reading
    corrected = ["--skew-reading", "corrected"]
    over = run(broker.bootstrap_server, "--group", group, "--topic", topic, "--fail-on-skew", "3.5", *corrected)
    assert over.returncode == 5, over.stderr
    assert "keyscope:group_skew_ratio (corrected)" in over.stderr and "above --fail-on-skew 3.5" in over.stderr
    under = run(broker.bootstrap_server, "--group", group, "--topic", topic, "--fail-on-skew", f"{ratio + 0.01}", *corrected)
    assert under.returncode == 0, under.stderr
    # 4 true lags: the corrected ratio can never exceed 4, and keyscope says so.
    cannot = run(broker.bootstrap_server, "--group", group, "--topic", topic, "--fail-on-skew", "4", *corrected)
    assert cannot.returncode == 0 and "cannot exceed 4" in cannot.stderr
    # By default it gates on the alert's reading: partition 4's -1 pulls the mean down, the ratio goes past 4.
    alert = run(broker.bootstrap_server, "--group", group, "--topic", topic, "--fail-on-skew", f"{ratio + 0.01}")
    assert alert.returncode == 5 and "kafka:group_skew_ratio (as your alert computes it)" in alert.stderr


def test_all_lags_zero_gives_finite_numbers(broker, topic_name):
    create_topic(broker.bootstrap_server, topic_name, 3)
    produce_batched(broker.bootstrap_server, topic_name, {0: 300, 1: 50})
    group = f"g-{uuid.uuid4().hex[:8]}"
    commit_as_non_member(broker.bootstrap_server, topic_name, group, {0: 300, 1: 50, 2: 0})
    r = run(broker.bootstrap_server, "--group", group, "--format", "json")  # no --topic: every committed topic
    assert r.returncode == 0, r.stderr
    t = strict_json(r.stdout)["topics"][0]
    assert t["topic"] == topic_name
    assert t["kafka:group_skew_ratio"] == 0.0 == t["keyscope:group_skew_ratio"]  # 0 / clamp_min(0, 0.001)
    assert [s["value"] for s in t["keyscope:group_partition_lag"]] == [0, 0, 0]
    assert [s["value"] for s in t["kafka:group_partition_lag"]] == [0, 0, 0]
    assert [h["partition"] for h in t["keyscope:group_hottest_partition"]] == [0, 1, 2]  # a tie, all listed
    assert t["why_differ"] is None
    table = run(broker.bootstrap_server, "--group", group)
    assert table.returncode == 0 and "nan" not in table.stdout.lower() and "inf" not in table.stdout.lower()


def test_unknown_group_and_unknown_topic_are_exit_4_with_one_line(broker, hot_group):
    topic, group, _, _ = hot_group
    r = run(broker.bootstrap_server, "--group", group + "x", "--topic", topic)
    assert r.returncode == 4
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert f"consumer group '{group}x' has no committed offsets for topic '{topic}'" in r.stderr

    r = run(broker.bootstrap_server, "--group", group + "x")
    assert r.returncode == 4 and f"did you mean {group}" in r.stderr

    r = run(broker.bootstrap_server, "--group", group, "--topic", topic + "y")
    assert r.returncode == 4 and "does not exist; did you mean" in r.stderr and topic in r.stderr


def test_group_with_offsets_elsewhere_names_its_topics(broker, hot_group, topic_name):
    topic, group, _, _ = hot_group
    other = topic_name + "-other"
    create_topic(broker.bootstrap_server, other, 1)
    with pytest.raises(KafkaError, match=f"has no committed offsets for topic '{other}' \\(it has offsets for: {topic}\\)"):
        lagmod.read_group_lag(resolve(broker.bootstrap_server), group, other)


def test_unreachable_broker_is_exit_4_fast():
    t = time.monotonic()
    r = run("127.0.0.1:1", "--group", "g", "--timeout", "2")
    assert r.returncode == 4 and "cannot reach" in r.stderr
    assert time.monotonic() - t < 30


def test_member_count_of_a_live_group(broker, topic_name):
    from kafka import KafkaConsumer

    create_topic(broker.bootstrap_server, topic_name, 3)
    produce_batched(broker.bootstrap_server, topic_name, {0: 100, 1: 100, 2: 100})
    group = f"g-{uuid.uuid4().hex[:8]}"
    member = KafkaConsumer(
        topic_name,
        bootstrap_servers=broker.bootstrap_server,
        group_id=group,
        session_timeout_ms=6000,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=40,
    )
    try:
        deadline = time.monotonic() + 30
        got = 0
        while got < 40 and time.monotonic() < deadline:
            got += sum(len(v) for v in member.poll(timeout_ms=500).values())
        assert got >= 40
        member.commit()
        committed = committed_by_other_client(broker.bootstrap_server, topic_name, group, range(3))
        assert sum(o or 0 for o in committed.values()) == got
        g = lagmod.read_group_lag(resolve(broker.bootstrap_server), group, topic_name)
        assert g.members == 1 and g.state == "Stable"
        t = g.topic(topic_name)
        assert {p.partition: p.committed for p in t.partitions} == committed
        assert t.series == {p: 100 - o for p, o in committed.items() if o is not None}
    finally:
        member.close(autocommit=False)


def test_trend_between_readings_draining(broker, hot_group):
    topic, group, produced, committed = hot_group
    with lagmod.LagReader(resolve(broker.bootstrap_server), group, topic) as reader:
        first = reader.read()
        time.sleep(0.3)
        commit_as_non_member(broker.bootstrap_server, topic, group, {0: 10500})  # consumer caught up 10,000
        produce_batched(broker.bootstrap_server, topic, {2: 40})
        second = reader.read()
    tr = lagmod.trends(first, second)
    dt = second.monotonic - first.monotonic
    assert tr[(topic, 0)].direction == "draining"
    assert tr[(topic, 0)].lag_rate == pytest.approx(-10000 / dt)
    assert tr[(topic, 0)].consume_rate == pytest.approx(10000 / dt)
    assert tr[(topic, 2)].direction == "growing" and tr[(topic, 2)].produce_rate == pytest.approx(40 / dt)
    assert tr[(topic, 1)].direction == "steady"
    assert tr[(topic, 4)].direction is None and tr[(topic, 4)].lag_rate is None  # never committed


def test_watch_appends_one_json_object_per_reading_when_piped(broker, hot_group):
    topic, group, _, _ = hot_group
    r = run(broker.bootstrap_server, "--group", group, "--topic", topic, "--format", "json", "--watch", "0.2", "--count", "3")
    assert r.returncode == 0, r.stderr
    docs = [strict_json(line) for line in r.stdout.splitlines()]
    assert len(docs) == 3 and "\x1b[" not in r.stdout
    assert all(row["trend"] is None for row in docs[0]["topics"][0]["partitions"])
    hot = docs[2]["topics"][0]["partitions"][0]["trend"]
    assert hot["direction"] == "steady" and hot["lag_per_s"] == 0.0 and hot["seconds"] > 0.15
    blocks = run(broker.bootstrap_server, "--group", group, "--topic", topic, "--watch", "0.2", "--count", "2")
    assert blocks.returncode == 0 and blocks.stdout.count("consumer group ") == 2 and "trend" in blocks.stdout


def test_watch_redraws_in_place_on_a_terminal(broker, hot_group):
    topic, group, _, _ = hot_group
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyscope", "lag", "-b", broker.bootstrap_server, "-g", group, "-t", topic,
         "--watch", "0.2", "--count", "2"],
        stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    out = read_until(leader, None, wait=60, proc=proc)
    os.close(leader)
    assert proc.wait(30) == 0, proc.stderr.read()
    assert out.count(b"\x1b[H\x1b[J") == 2 and out.count(b"consumer group ") == 2


def test_partitions_without_a_series_never_enter_the_ratios():
    """Pure: no committed offset, or committed ahead of the end (topic recreated) -> no series, flagged."""
    from keyscope.kafka.client import Watermarks

    marks = {p: Watermarks(low=0, high=h, list_offsets_high=h) for p, h in {0: 100, 1: 50, 2: 10, 3: 7}.items()}
    t = lagmod.summarize_topic("t", {0: 40, 1: 50, 2: 900, 3: -1}, marks)
    rows = {p.partition: p for p in t.partitions}
    assert rows[2].lag == -890 and not rows[2].in_ratio and rows[2].status == "committed ahead of end offset"
    assert rows[3].committed is None and rows[3].lag is None and rows[3].status == "no committed offset"
    assert t.series == {0: 60, 1: 0} and t.skew_ratio == 60 / 30 and t.hottest == [0]
    nothing = lagmod.summarize_topic("t", {}, marks)
    assert nothing.series == {} and nothing.skew_ratio is None and nothing.hottest == []
    g = lagmod.GroupLag("g", [nothing], None, None, "DescribeGroups failed: x", 0.0, 0.0)
    doc = strict_json(json.dumps(lagmod.to_dict(g), allow_nan=False))
    assert doc["topics"][0]["kafka:group_skew_ratio"] is None and doc["members"] is None


@pytest.mark.parametrize("extra, code", [([], 0), (["--fail-on-skew", "2"], 5)])
def test_ctrl_c_ends_watch_with_the_last_readings_verdict(broker, hot_group, extra, code):
    import signal

    topic, group, _, _ = hot_group
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyscope", "lag", "-b", broker.bootstrap_server, "-g", group, "-t", topic,
         "--watch", "0.3", "--format", "json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()  # one full reading is out
        assert strict_json(first)["group"] == group
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert all(strict_json(line)["group"] == group for line in out.splitlines())


def test_table_notes_and_trend_fit_100_columns():
    """Pure: long notes (many uncommitted partitions, corrected end offsets, a missing topic) wrap
    at 100 columns; the facts stay in the text; markdown keeps one list item per note."""
    from keyscope.report.lag import _render
    from keyscope.kafka.client import Watermarks

    marks = {p: Watermarks(low=0, high=40_449 + p, list_offsets_high=40_286) for p in range(12)}
    committed = {0: 3_881, 1: 15_670, 2: 28_314}
    t = lagmod.summarize_topic("crm-events", committed, marks)
    g = lagmod.GroupLag("crm-events-sse", [t], 0, "Empty", None, 0.0, 0.0,
                        notes=["committed topic crm-events-old-with-a-long-name no longer exists: left out of every figure"])
    text = _render(g, None, False, None)
    assert max(len(line) for line in text.splitlines()) <= 100, text
    flat = " ".join(line.strip() for line in text.splitlines())
    assert "partitions 3, 4, 5, 6, 7, 8, 9, 10, 11 have no committed offset" in flat
    assert "by up to 174." in flat and "left out of every figure" in flat
    md = _render(g, None, True, None)
    assert sum(line.startswith("- ") for line in md.splitlines()) == 3
    assert "\n\n- partitions 3" in md  # a blank line ends the table before the list


def test_a_crawling_drain_gives_no_absurd_eta():
    from keyscope.report.lag import _duration

    assert _duration(90) == "90s" and _duration(3 * 3600 + 120) == "3h02m"
    assert _duration(2743484224 * 3600) == "more than a week"
