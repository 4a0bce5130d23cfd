"""`keyscope lag`'s "as your alert computes it" against the real pipeline: exporter -> Prometheus -> the rules.

One real Kafka (its own node: the cluster-wide ``topk(1)`` needs a cluster whose groups
this module controls), one kafka_exporter, one real Prometheus (Debian's 2.42, own config,
data dir and loopback port) scraping it every second and evaluating the deployed rules
verbatim (the issue's YAML, below) and keyscope's fixed set.  Each scenario sits on its
own group and topic; each asserts ``==`` on the floats Prometheus's HTTP API returns.

The exporter: ``KEYSCOPE_KAFKA_EXPORTER_BIN`` names a kafka_exporter 1.7.0 binary if you
have one; otherwise tests/peers/kafka_exporter/ builds our stand-in (same client library,
versions and value rules), because the Go module proxy serves no kafka_exporter version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from keyscope.prometheus.alert import prom_avg, stored_order

from .conftest import create_topic
from .peers.producers import build
from .peers.prometheus import free_port, prometheus, prometheus_binary, query, rule_groups_evaluated, stop, wait_http
from .test_json_schemas import assert_valid

from .conftest import missing_peer

HERE = Path(__file__).parent

# The deployed recording rules, verbatim from the incident (issue 11).
DEPLOYED_RULES = """\
groups:
- name: deployed
  rules:
  - record: kafka:group_partition_lag
    expr: max by (topic, consumergroup, partition) (kafka_consumergroup_lag)
  - record: kafka:group_skew_ratio
    expr: (max by (topic, consumergroup) (kafka:group_partition_lag)) / clamp_min(avg by (topic, consumergroup) (kafka:group_partition_lag), 0.001)
  - record: kafka:group_hottest_partition
    expr: topk(1, sum by (topic, consumergroup, partition) (kafka:group_partition_lag))
"""

# 12 partitions whose incremental mean, in the order Prometheus holds the series
# (0, 1, 10, 11, 2, ...), differs from sum/n and from the incremental mean in numeric order.
TWELVE = [19, 370, 5, 34, 2, 38, 25, 28, 39, 10, 39, 0]


def exporter_binary() -> Path:
    given = os.environ.get("KEYSCOPE_KAFKA_EXPORTER_BIN")
    if given:
        return Path(given)
    if shutil.which("go") is None:
        missing_peer("Go is not installed: cannot build the kafka_exporter stand-in")
    try:
        return Path(build("kafka_exporter"))
    except RuntimeError as e:
        raise AssertionError(f"building the kafka_exporter stand-in failed:\n{e}") from None


@dataclass
class Stack:
    bootstrap: str
    prometheus: str  # base URL
    ends: dict = field(default_factory=dict)  # topic -> partition -> records produced

    def query(self, expr: str) -> list[dict]:
        return query(self.prometheus, expr)

    def values(self, expr: str, *labels: str) -> dict:
        """label values -> float, exactly as the API wrote it (Go's shortest round-trip text)."""
        return {tuple(s["metric"][k] for k in labels): float(s["value"][1]) for s in self.query(expr)}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    prometheus_binary()  # missing: say so before building anything
    exporter = exporter_binary()
    from .kafka import KafkaCluster

    work = tmp_path_factory.mktemp("alert-stack")
    with KafkaCluster(1) as kafka:
        bs = kafka.bootstrap_server
        e_port = free_port()
        e_log = open(work / "exporter.log", "w")
        exp = subprocess.Popen(
            [str(exporter), f"--kafka.server={bs}", f"--web.listen-address=127.0.0.1:{e_port}", "--refresh.metadata=1s"],
            stdout=e_log, stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"http://127.0.0.1:{e_port}/metrics", exp, "kafka_exporter")
            (work / "deployed.yml").write_text(DEPLOYED_RULES)
            fixed = subprocess.run(
                [sys.executable, "-m", "keyscope", "rules", "--set", "fixed", "-g", "any", "-t", "any"],
                capture_output=True, text=True, timeout=60,
            )
            assert fixed.returncode == 0, fixed.stderr
            (work / "fixed.yml").write_text(fixed.stdout)
            with prometheus(work, "kafka", [f"127.0.0.1:{e_port}"], [work / "deployed.yml", work / "fixed.yml"]) as base:
                yield Stack(bs, base)
        finally:
            stop(exp)


def produce(bootstrap: str, topic: str, ends: dict[int, int]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition, n in ends.items():
        for i in range(n):
            p.produce(topic, value=b"v", key=f"k{i}".encode(), partition=partition)
    assert p.flush(30) == 0


def commit(bootstrap: str, group: str, offsets: dict[tuple[str, int], int]) -> None:
    """One OffsetCommit for all partitions (so they appear in one scrape), from a non-member, as a stopped consumer leaves it."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = {k: TopicPartition(*k) for k in offsets}
        c.assign(list(tps.values()))
        c.commit({tps[k]: OffsetAndMetadata(o, "", -1) for k, o in offsets.items()})
    finally:
        c.close(autocommit=False)


def committed_offsets(bootstrap: str, group: str, topics: dict[str, int]) -> dict:
    """Read with librdkafka (OffsetFetch, no join): independent of keyscope's client."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = c.committed([TopicPartition(t, p) for t, n in topics.items() for p in range(n)], timeout=10)
    finally:
        c.close()
    return {(tp.topic, tp.partition): tp.offset for tp in got}


def scenario(stack: Stack, lags_by_topic: dict[str, list[int | None]]) -> str:
    """Topics with the given lags (None: never committed; negative: committed ahead), one new group; returns it.

    A new topic gets end offsets of its lag plus a base (committed offsets are never 0 by
    accident); a topic made by an earlier scenario keeps its records.
    """
    group = f"lagalert-{uuid.uuid4().hex[:8]}"
    offsets = {}
    for topic, lags in lags_by_topic.items():
        if topic not in stack.ends:
            create_topic(stack.bootstrap, topic, len(lags))
            stack.ends[topic] = {p: 40 + max(lag or 0, 0) + 3 * p for p, lag in enumerate(lags)}
            produce(stack.bootstrap, topic, stack.ends[topic])
        ends = stack.ends[topic]
        offsets.update({(topic, p): ends[p] - lag for p, lag in enumerate(lags) if lag is not None})
    commit(stack.bootstrap, group, offsets)
    return group


def settle(stack: Stack, group: str, since: float, timeout: float = 60.0) -> None:
    """Wait until Prometheus scraped the group after ``since`` and evaluated the rules on that scrape."""
    g = json.dumps(group)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scraped = stack.values(f"timestamp(kafka_consumergroup_lag{{consumergroup={g}}})", "topic", "partition")
        if scraped and min(scraped.values()) > since:
            last = max(scraped.values())
            ratio = stack.values(f"timestamp(kafka:group_skew_ratio{{consumergroup={g}}})", "topic")
            hot = stack.values("timestamp(kafka:group_hottest_partition)")
            # Every rule group evaluated after that scrape: the deployed and the fixed (keyscope:*) groups
            # evaluate independently, and under CI load the fixed one once lagged a scrape behind.
            groups = rule_groups_evaluated(stack.prometheus)
            if (ratio and min(ratio.values()) > last and hot and min(hot.values()) > last
                    and groups and min(groups.values()) > last):
                return
        time.sleep(0.2)
    raise AssertionError(f"Prometheus did not evaluate fresh series for {group} within {timeout:.0f}s")


def keyscope_lag(stack: Stack, group: str, *extra: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-m", "keyscope", "lag", "-b", stack.bootstrap, "-g", group, "--format", "json", *extra],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def check_against_prometheus(stack: Stack, lags_by_topic: dict[str, list[int | None]]) -> dict:
    """Set up, let Prometheus catch up, run keyscope (read-only), and compare every series exactly."""
    group = scenario(stack, lags_by_topic)
    since = time.time()
    sizes = {t: len(lags) for t, lags in lags_by_topic.items()}
    before = committed_offsets(stack.bootstrap, group, sizes)
    settle(stack, group, since)
    doc = keyscope_lag(stack, group)
    assert committed_offsets(stack.bootstrap, group, sizes) == before  # read-only
    assert_valid("lag", doc)  # docs/schemas/lag.schema.json holds for sentinels and negative lags too

    g = json.dumps(group)
    prom_lag = stack.values(f"kafka:group_partition_lag{{consumergroup={g}}}", "topic", "partition")
    prom_ratio = stack.values(f"kafka:group_skew_ratio{{consumergroup={g}}}", "topic")
    prom_fixed = stack.values(f"keyscope:group_skew_ratio{{consumergroup={g}}}", "topic")
    prom_fixed_hot = stack.values(f"keyscope:group_hottest_partition{{consumergroup={g}}}", "topic", "partition")
    hottest = stack.query("kafka:group_hottest_partition")

    topics = {t["topic"]: t for t in doc["topics"]}
    assert set(topics) == set(lags_by_topic)
    for name, t in topics.items():
        mine = {(name, str(s["partition"])): s["value"] for s in t["kafka:group_partition_lag"]}
        assert mine == {k: v for k, v in prom_lag.items() if k[0] == name}
        assert t["kafka:group_skew_ratio"] == prom_ratio[(name,)]  # bit for bit
        assert t["keyscope:group_skew_ratio"] == prom_fixed.get((name,))  # the fixed rules = the corrected reading
        fixed_hot = [(p, v) for (tn, p), v in prom_fixed_hot.items() if tn == name]
        if t["keyscope:group_skew_ratio"] is None:
            assert fixed_hot == []
        else:
            (p, v), = fixed_hot
            assert {"partition": int(p), "value": v} in t["keyscope:group_hottest_partition"]
    # topk(1) without `by`: exactly one series for the whole cluster, and keyscope names the same one.
    assert len(hottest) == 1
    h = doc["kafka:group_hottest_partition"]
    m = hottest[0]["metric"]
    assert (h["consumergroup"], h["topic"], str(h["partition"]), h["value"]) == (
        m["consumergroup"], m["topic"], m["partition"], float(hottest[0]["value"][1]))
    return doc


def one(doc: dict) -> dict:
    (t,) = doc["topics"]
    return t


def topic() -> str:
    return f"lagalert-{uuid.uuid4().hex[:8]}"


def test_incident_0_0_339(stack):
    doc = check_against_prometheus(stack, {topic(): [0, 0, 339]})
    t = one(doc)
    assert t["kafka:group_skew_ratio"] == 3.0 and t["why_differ"] is None  # clean data: both readings agree
    assert t["keyscope:group_skew_ratio"] == 3.0


def test_lags_10_5_900(stack):
    doc = check_against_prometheus(stack, {topic(): [10, 5, 900]})
    t = one(doc)
    assert t["kafka:group_skew_ratio"] == t["keyscope:group_skew_ratio"] == 900 / prom_avg([10, 5, 900])


def test_one_partition_never_committed(stack):
    doc = check_against_prometheus(stack, {topic(): [10, None, 0]})
    t = one(doc)
    assert [s["value"] for s in t["kafka:group_partition_lag"]] == [10.0, -1.0, 0.0]
    assert t["kafka:group_skew_ratio"] > 3 > t["keyscope:group_skew_ratio"] == 2.0  # 3.33 as deployed, 2.0 true
    assert "partition 1 was never committed" in t["why_differ"] and "the real skew is 2" in t["why_differ"]


def test_two_partitions_never_committed(stack):
    doc = check_against_prometheus(stack, {topic(): [3, None, None]})
    t = one(doc)
    assert t["kafka:group_skew_ratio"] == 3 / prom_avg([3, -1, -1]) == 8.999999999999998  # "9.0": pending on 3 partitions
    assert t["keyscope:group_skew_ratio"] == 1.0
    assert "partitions 1, 2 were never committed" in t["why_differ"]


def test_committed_ahead_of_the_end(stack):
    doc = check_against_prometheus(stack, {topic(): [75, 0, -30]})
    t = one(doc)
    assert [s["value"] for s in t["kafka:group_partition_lag"]] == [75.0, 0.0, -30.0]
    assert t["kafka:group_skew_ratio"] == 5.0 and t["keyscope:group_skew_ratio"] == 2.0
    assert "committed 30 ahead" in t["why_differ"]
    row = {r["partition"]: r for r in t["partitions"]}[2]
    assert row["status"] == "committed ahead of end offset" and row["exporter_lag"] == -30 and row["in_ratio"] is False


def test_twelve_partitions_running_mean_is_not_sum_over_n(stack):
    in_order = [TWELVE[p] for p in stored_order(range(12))]
    ratio = max(TWELVE) / prom_avg(in_order)
    assert ratio != max(TWELVE) / (sum(TWELVE) / 12)  # the scenario distinguishes the two means...
    assert ratio != max(TWELVE) / prom_avg(TWELVE)  # ...and the order Prometheus holds the series in
    doc = check_against_prometheus(stack, {topic(): TWELVE})
    t = one(doc)
    assert t["kafka:group_skew_ratio"] == ratio
    assert [s["partition"] for s in t["kafka:group_partition_lag"]] == [0, 1, 10, 11, 2, 3, 4, 5, 6, 7, 8, 9]


def test_second_group_and_second_topic_and_the_cluster_wide_hottest(stack):
    shared, second = topic(), topic()
    other = scenario(stack, {shared: [7, 0, 0]})  # another group on the same topic
    others_before = committed_offsets(stack.bootstrap, other, {shared: 3})
    doc = check_against_prometheus(stack, {shared: [20, 30, 0], second: [5000, 1, 2]})
    assert committed_offsets(stack.bootstrap, other, {shared: 3}) == others_before  # the cluster scan only reads
    assert [t["topic"] for t in doc["topics"]] == sorted([shared, second])
    h = doc["kafka:group_hottest_partition"]  # larger than any lag elsewhere in this cluster
    assert (h["consumergroup"], h["topic"], h["partition"], h["value"]) == (doc["group"], second, 0, 5000.0)
    g = keyscope_lag(stack, other, "--topic", shared)
    assert g["kafka:group_hottest_partition"] == h  # the other group's report names the same cluster-wide series
    (t,) = g["topics"]
    prom = stack.values(f"kafka:group_skew_ratio{{consumergroup={json.dumps(other)}}}", "topic")
    assert t["kafka:group_skew_ratio"] == prom[(shared,)] == 7 / prom_avg([7, 0, 0]) != 3.0  # 3.0000000000000004


def test_all_lags_zero(stack):
    doc = check_against_prometheus(stack, {topic(): [0, 0, 0]})
    t = one(doc)
    assert t["kafka:group_skew_ratio"] == 0.0 == t["keyscope:group_skew_ratio"]  # 0 / clamp_min(0, 0.001), not NaN


def test_fail_on_skew_gates_on_the_alerts_reading_by_default(stack):
    group = scenario(stack, {topic(): [3, None, None]})  # 9.0 as deployed, 1.0 true
    base = [sys.executable, "-m", "keyscope", "lag", "-b", stack.bootstrap, "-g", group, "--fail-on-skew", "4"]
    alert = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert alert.returncode == 5 and "kafka:group_skew_ratio (as your alert computes it) 9.000" in alert.stderr, alert.stderr
    corrected = subprocess.run(base + ["--skew-reading", "corrected"], capture_output=True, text=True, timeout=120)
    assert corrected.returncode == 0, corrected.stderr
    assert "keyscope:group_skew_ratio cannot exceed 1" in corrected.stderr


def test_keyscope_rules_deployed_is_the_deployed_set_verbatim():
    r = subprocess.run([sys.executable, "-m", "keyscope", "rules", "--set", "deployed", "-g", "crm-events-sse",
                        "-t", "crm-events", "--for", "12m"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(r.stdout)
    assert doc["groups"][0]["rules"] == yaml.safe_load(DEPLOYED_RULES)["groups"][0]["rules"]
    (alert,) = [x for x in doc["groups"][1]["rules"] if x["alert"].endswith("HotKeySkewHigh")]
    assert alert["expr"] == 'kafka:group_skew_ratio{consumergroup="crm-events-sse"} > 4' and alert["for"] == "12m"
    assert "topk(1, ...) without `by` keeps ONE series for the whole cluster" in r.stdout  # the difference, commented
