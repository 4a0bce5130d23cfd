"""`keyscope exporter` against real Kafka and a real Prometheus (Debian's package, own config, loopback, 1 s scrapes).

Producers write a hot key; /metrics (parsed by prometheus_client's parser) must show it with the
share a brute-force count of what was produced gives, within the sketch's published bound; the
series stay under the top-K cap; --hash-keys hides the key; Prometheus evaluates the shipped
hot-key rule and its alert names the key; SIGTERM exits 0; no group is created.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter

import pytest

from keyscope.prometheus.alert import prom_skew_ratio, stored_order
from keyscope.partitioners import partition_for

from .conftest import create_topic
from .peers.prometheus import free_port, prometheus, query, stop, wait_http
from .test_lag_alert_peers import commit, committed_offsets

PARTITIONS = 3
HOT = b"stark-industries"
TOP_K = 3


def produced_keys() -> list[bytes]:
    """550 hot records among 1000, the rest over 150 keys (Zipf-ish), interleaved."""
    others = [f"acct-{i % 150}".encode() for i in range(450)]
    keys: list[bytes] = []
    for i in range(1000):
        keys.append(HOT if i % 20 < 11 else others.pop())
    return keys


def metrics(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    out: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    out["_text"] = text
    return out


def start_exporter(bs: str, topic: str, port: int, *extra: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyscope", "exporter", "-b", bs, "-t", topic, "--listen", f"127.0.0.1:{port}",
         "--window", "60s", "--top-k", str(TOP_K), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, "keyscope exporter")
    return proc


def groups(bs: str) -> set:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bs})
    return {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}


def wait_records(url: str, want: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(url)
        got = sum(v for _, v in m.get("keyscope_partition_records_total", []))
        if got >= want or time.monotonic() > deadline:
            return m
        time.sleep(0.3)


@pytest.fixture(scope="module")
def run(kafka, tmp_path_factory):
    bs = kafka.bootstrap_server
    topic = f"exp-{time.time_ns() % 10**9}"
    create_topic(bs, topic, PARTITIONS)
    group = f"{topic}-g"
    commit(bs, group, {(topic, 0): 3, (topic, 1): 0})  # partition 2 never committed
    before = groups(bs)
    plain_port, hashed_port = free_port(), free_port()
    plain = start_exporter(bs, topic, plain_port, "--group", group, "--lag-interval", "1s")
    hashed = start_exporter(bs, topic, hashed_port, "--hash-keys", "--sketch-size", "8")
    procs = [plain, hashed]
    try:
        from confluent_kafka import Producer

        keys = produced_keys()
        p = Producer({"bootstrap.servers": bs, "partitioner": "murmur2_random", "linger.ms": 5})
        for i, k in enumerate(keys):
            p.produce(topic, key=k, value=b"v" * (i % 7))
        assert p.flush(30) == 0
        yield dict(bs=bs, topic=topic, group=group, keys=keys, plain=plain, hashed=hashed, before=before,
                   plain_url=f"http://127.0.0.1:{plain_port}/metrics", hashed_url=f"http://127.0.0.1:{hashed_port}/metrics",
                   plain_port=plain_port, work=tmp_path_factory.mktemp("exporter"))
    finally:
        for proc in procs:
            stop(proc)


def truth(keys):
    by_part: dict[int, Counter] = {p: Counter() for p in range(PARTITIONS)}
    for k in keys:
        by_part[partition_for(k, PARTITIONS, "murmur2")][k] += 1
    return by_part


def one(m: dict, name: str, **labels) -> float:
    hits = [v for lab, v in m.get(name, []) if all(lab.get(k) == v2 for k, v2 in labels.items())]
    assert len(hits) == 1, (name, labels, m.get(name))
    return hits[0]


def test_hot_key_share_matches_brute_force(run):
    m = wait_records(run["plain_url"], len(run["keys"]))
    by_part = truth(run["keys"])
    topic = run["topic"]
    for p, c in by_part.items():
        assert one(m, "keyscope_partition_records_total", topic=topic, partition=str(p)) == sum(c.values())
    hot_p = partition_for(HOT, PARTITIONS, "murmur2")
    err = one(m, "keyscope_hot_key_share_error", topic=topic)
    assert 0 <= err < 0.05
    true_topic = 550 / 1000
    assert abs(one(m, "keyscope_hot_key_topic_share", topic=topic, key=HOT.decode()) - true_topic) <= err + 1e-12
    part_share = one(m, "keyscope_hot_key_share", topic=topic, partition=str(hot_p), key=HOT.decode())
    assert abs(part_share - 550 / sum(by_part[hot_p].values())) <= err * 1000 / sum(by_part[hot_p].values()) + 1e-12
    # the alert's formula over the window's records per partition, in Prometheus's series order
    counts = [float(sum(by_part[p].values())) for p in stored_order(by_part)]
    assert one(m, "keyscope_skew_ratio", topic=topic) == pytest.approx(prom_skew_ratio(counts), rel=1e-12)
    assert one(m, "keyscope_partitioner_agreement_ratio", topic=topic, partitioner="murmur2") == 1.0
    assert one(m, "keyscope_partitioner_agreement_ratio", topic=topic, partitioner="consistent") < 1.0
    # murmur2 % 3 is what the producer did: the prediction for 3 partitions is the skew seen
    assert one(m, "keyscope_predicted_skew", topic=topic, partitions="3") == pytest.approx(prom_skew_ratio(counts), rel=1e-12)
    for n in (6, 9):
        parts = Counter(partition_for(k, n, "murmur2") for k in run["keys"])
        assert one(m, "keyscope_predicted_skew", topic=topic, partitions=str(n)) == pytest.approx(
            prom_skew_ratio([float(parts.get(i, 0)) for i in stored_order(range(n))]), rel=1e-12)
    # bytes: key + value
    want_bytes = sum(len(k) + i % 7 for i, k in enumerate(run["keys"]))
    assert sum(v for _, v in m["keyscope_partition_bytes_total"]) == want_bytes
    assert one(m, "keyscope_up") == 1.0


def test_series_under_the_cap(run):
    m = wait_records(run["plain_url"], len(run["keys"]))
    assert len(m["keyscope_hot_key_share"]) <= TOP_K
    assert len(m["keyscope_hot_key_topic_share"]) == TOP_K
    assert one(m, "keyscope_hot_keys_truncated", topic=run["topic"]) > 0  # 151 keys, 3 shown
    # the top 3 by brute force are the ones published (their counts 550 vs <= 3 each: far apart)
    shown = {lab["key"] for lab, _ in m["keyscope_hot_key_topic_share"]}
    assert HOT.decode() in shown


def test_hash_keys_and_small_sketch_bound(run):
    m = wait_records(run["hashed_url"], len(run["keys"]))
    assert HOT.decode() not in m["_text"] and "acct-" not in m["_text"]
    label = "sha256:" + hashlib.sha256(HOT).hexdigest()[:16]
    err = one(m, "keyscope_hot_key_share_error", topic=run["topic"])
    assert 0 < err <= 1 / 8 * 1.0000001 * 10  # 8 counters per bucket: bound > 0, at most 1/8 per summary summed
    share = one(m, "keyscope_hot_key_topic_share", topic=run["topic"], key=label)
    assert abs(share - 0.55) <= err + 1e-12


@pytest.fixture(scope="module")
def prom(run):
    """A real Prometheus scraping the plain exporter every second, evaluating `keyscope exporter --print-rules`."""
    work = run["work"]
    rules = subprocess.run([sys.executable, "-m", "keyscope", "exporter", "--print-rules"],
                           capture_output=True, text=True, timeout=60)
    assert rules.returncode == 0, rules.stderr
    (work / "rules.yml").write_text(rules.stdout)
    with prometheus(work, "keyscope", [f"127.0.0.1:{run['plain_port']}"], [work / "rules.yml"]) as base:
        yield base


def test_prometheus_alert_names_the_key(run, prom):
    base = prom
    wait_records(run["plain_url"], len(run["keys"]))
    hot_p = partition_for(HOT, PARTITIONS, "murmur2")
    deadline = time.monotonic() + 60
    alert = None
    while time.monotonic() < deadline and alert is None:
        with urllib.request.urlopen(f"{base}/api/v1/alerts", timeout=10) as r:
            doc = json.load(r)
        for a in doc["data"]["alerts"]:
            if a["labels"].get("alertname") == "KeyscopeHotKey" and a["labels"].get("topic") == run["topic"]:
                alert = a
        time.sleep(0.5)
    assert alert is not None, "KeyscopeHotKey never went pending"
    assert alert["state"] in ("pending", "firing")
    assert alert["labels"]["key"] == HOT.decode()
    assert alert["annotations"]["summary"] == f"stark-industries is 55% of {run['topic']}"
    desc = alert["annotations"]["description"]
    assert "stark-industries is 55%" in desc and f"of partition {hot_p}" in desc, desc
    res = query(base, f'keyscope_hot_key_topic_share{{topic="{run["topic"]}"}}')
    assert {s["metric"]["key"] for s in res} >= {HOT.decode()}


def dashboard_exprs() -> list[tuple[str, str]]:
    from pathlib import Path

    doc = json.loads((Path(__file__).parent.parent / "docs" / "grafana" / "keyscope.json").read_text())
    out = [(p["title"], t["expr"]) for p in doc["panels"] for t in p["targets"]]
    assert len(out) >= 8 and all(p["datasource"]["uid"] == "${datasource}" for p in doc["panels"])
    return out


def test_every_dashboard_panel_returns_data(run, prom):
    """Each panel's expr, with $topic as Grafana's All (.*), evaluated by the real Prometheus: never empty."""
    wait_records(run["plain_url"], len(run["keys"]))
    for title, expr in dashboard_exprs():
        concrete = expr.replace("$topic", ".*")
        deadline = time.monotonic() + 60
        while not (res := query(prom, concrete)) and time.monotonic() < deadline:
            time.sleep(0.5)  # rate() needs two scrapes
        assert res, f"panel {title!r}: {concrete} returned no data"
        for s in res:
            v = float(s["value"][1])
            assert v == v and abs(v) != float("inf"), (title, s)


def test_group_lag_series(run):
    """--group: kafka_exporter's value (-1 for a partition never committed) and the true lag, from keyscope.lag."""
    by_part = truth(run["keys"])
    ends = {p: sum(c.values()) for p, c in by_part.items()}
    want_kx = {"0": ends[0] - 3, "1": ends[1] - 0, "2": -1}
    want_true = {"0": ends[0] - 3, "1": ends[1]}
    deadline = time.monotonic() + 60
    while True:
        m = metrics(run["plain_url"])
        kx = {lab["partition"]: v for lab, v in m.get("kafka_consumergroup_lag", [])
              if lab["consumergroup"] == run["group"] and lab["topic"] == run["topic"]}
        if kx == want_kx or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert kx == want_kx
    true = {lab["partition"]: v for lab, v in m["keyscope_group_partition_lag"] if lab["consumergroup"] == run["group"]}
    assert true == want_true
    lags = [float(want_true[p]) for p in stored_order(want_true)]
    assert one(m, "keyscope_group_skew_ratio", consumergroup=run["group"], topic=run["topic"]) == prom_skew_ratio(lags)


def test_sigterm_and_ctrl_c_exit_zero_and_read_only(run):
    import signal

    for name, sig, how in (("plain", signal.SIGTERM, "SIGTERM"), ("hashed", signal.SIGINT, "Ctrl-C")):
        proc = run[name]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"exporter stopped ({how}) after 1,000 records" in err, err
        assert "Traceback" not in err
    assert groups(run["bs"]) == run["before"]  # no group joined or created
    got = committed_offsets(run["bs"], run["group"], {run["topic"]: PARTITIONS})
    assert {k: v for k, v in got.items() if v >= 0} == {(run["topic"], 0): 3, (run["topic"], 1): 0}  # never committed
