"""`keyscope rules`: the YAML parses, names the series `keyscope lag` prints, escapes labels, and
(when promtool is installed) Prometheus itself computes keyscope's numbers from exporter series."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import uuid

import pytest
import yaml

from keyscope import lag as lagmod
from keyscope.prometheus import rules as rulesmod
from keyscope.kafka.client import Watermarks

from .conftest import missing_peer

PROMTOOL = shutil.which("promtool")


@pytest.fixture
def needs_promtool():
    """promtool checks what keyscope writes: missing here skips, missing in CI fails (missing_peer)."""
    if PROMTOOL is None:
        missing_peer("promtool not installed (Debian: apt-get install prometheus)")

WEIRD_GROUP = 'crm "sse" \\ {{ $x }}\nend'


def run(*args):
    return subprocess.run([sys.executable, "-m", "keyscope", "rules", *args], capture_output=True, text=True, timeout=120)


def rule_file(*args) -> dict:
    r = run(*args)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def by_name(doc):
    out = {}
    for g in doc["groups"]:
        for rule in g["rules"]:
            out[rule.get("record") or rule["alert"]] = rule
    return out


def test_recording_rules_name_the_series_and_use_clamp_min():
    doc = rule_file("--group", "crm-events-sse", "--topic", "crm-events")  # the fixed set (default)
    rules = by_name(doc)
    records = [r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r]
    assert records == ["keyscope:group_partition_lag", "keyscope:group_skew_ratio", "keyscope:group_hottest_partition"]
    assert tuple(records) == lagmod.CORRECTED_SERIES
    skew = " ".join(rules["keyscope:group_skew_ratio"]["expr"].split())
    assert skew == (
        "max by (topic, consumergroup) (keyscope:group_partition_lag) / "
        "clamp_min(avg by (topic, consumergroup) (keyscope:group_partition_lag), 0.001)"
    )
    assert "kafka_consumergroup_lag >= 0" in rules["keyscope:group_partition_lag"]["expr"]
    assert rules["keyscope:group_hottest_partition"]["expr"] == (
        "topk by (topic, consumergroup) (1, keyscope:group_partition_lag)")
    deployed = rule_file("--set", "deployed", "--group", "crm-events-sse", "--topic", "crm-events")
    assert tuple(r["record"] for r in deployed["groups"][0]["rules"]) == lagmod.SERIES  # no name shared with fixed
    alert = rules["CrmEventsHotKeySkewHigh"]
    assert alert["expr"] == 'keyscope:group_skew_ratio{consumergroup="crm-events-sse", topic="crm-events"} > 4'
    assert alert["for"] == "10m" and alert["labels"] == {"severity": "warning"}
    assert {"summary", "description", "runbook"} <= set(alert["annotations"])
    assert "runbook_url" not in alert["annotations"]
    members = rules["CrmEventsUnderReplicatedConsumers"]
    assert 'kafka_consumergroup_members{consumergroup="crm-events-sse"}' in members["expr"]
    assert 'kafka_topic_partitions{topic="crm-events"}' in members["expr"]


def test_options_reach_the_alerts():
    doc = rule_file(
        "-g", "orders-svc", "-t", "orders.v2", "--threshold", "2.5", "--for", "1h30m",
        "--severity", "page", "--runbook-url", "https://wiki.example/runbooks/skew", "--alert-prefix", "Orders",
    )
    rules = by_name(doc)
    skew = rules["OrdersHotKeySkewHigh"]
    assert skew["expr"].endswith("> 2.5") and skew["for"] == "1h30m" and skew["labels"]["severity"] == "page"
    assert skew["annotations"]["runbook_url"] == "https://wiki.example/runbooks/skew"
    assert rules["OrdersUnderReplicatedConsumers"]["annotations"]["runbook_url"] == "https://wiki.example/runbooks/skew"
    assert rulesmod.default_alert_prefix("orders.v2") == "OrdersV2"
    alerts_only = rule_file("-g", "orders-svc", "-t", "orders.v2", "--no-recording")
    assert [g["name"] for g in alerts_only["groups"]] == ["keyscope-orders-svc-orders.v2"]


def test_label_values_are_escaped_and_never_templated():
    doc = rule_file("--group", WEIRD_GROUP, "--topic", "crm-events")
    rules = by_name(doc)
    for name in ("CrmEventsHotKeySkewHigh", "CrmEventsUnderReplicatedConsumers"):
        expr = rules[name]["expr"]
        literal = re.search(r'consumergroup=("(?:[^"\\]|\\.)*")', expr).group(1)
        assert ast.literal_eval(literal) == WEIRD_GROUP  # PromQL (Go) escapes round-trip
        for text in rules[name]["annotations"].values():
            assert "{{ $x }}" not in text and WEIRD_GROUP not in text
    assert "{{ $labels.consumergroup }}" in rules["CrmEventsHotKeySkewHigh"]["annotations"]["summary"]


def test_json_and_markdown_carry_the_same_rules():
    y = rule_file("-g", WEIRD_GROUP, "-t", "crm-events")
    j = run("-g", WEIRD_GROUP, "-t", "crm-events", "--format", "json")
    assert j.returncode == 0 and json.loads(j.stdout) == y
    md = run("-g", "a", "-t", "b", "--format", "markdown")
    assert md.stdout.startswith("```yaml\n") and md.stdout.rstrip().endswith("```")
    assert yaml.safe_load(md.stdout.strip().strip("`").removeprefix("yaml\n")) == rule_file("-g", "a", "-t", "b")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--for", "10x"], "--for must be a Prometheus duration"),
        (["--for", ""], "--for must be a Prometheus duration"),
        (["--threshold", "0"], "--threshold must be a positive number"),
        (["--threshold", "nan"], "--threshold must be a positive number"),
        (["--alert-prefix", "Crm-Events"], "--alert-prefix must be a valid Prometheus name"),
        (["--topic", "bad topic"], "is not a Kafka topic name"),
        (["--group", ""], "--group must not be empty"),
    ],
)
def test_bad_options_are_one_line_exit_2(args, message):
    base = {"--group": "g", "--topic": "t"}
    for flag in ("--group", "--topic"):
        if flag in args:
            base.pop(flag)
    argv = [x for kv in base.items() for x in kv] + args
    r = run(*argv)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_lag_json_carries_every_recorded_series(broker, topic_name):
    """The names in the rule file are keys of `keyscope lag --format json`, per topic."""
    from .conftest import create_topic
    from .test_lag import commit_as_non_member, produce_batched

    create_topic(broker.bootstrap_server, topic_name, 2)
    produce_batched(broker.bootstrap_server, topic_name, {0: 30, 1: 10})
    group = f"g-{uuid.uuid4().hex[:8]}"
    commit_as_non_member(broker.bootstrap_server, topic_name, group, {0: 5, 1: 10})
    r = subprocess.run(
        [sys.executable, "-m", "keyscope", "lag", "-b", broker.bootstrap_server, "-g", group, "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    topic = doc["topics"][0]
    records = [r["record"] for r in rule_file("-g", group, "-t", topic_name)["groups"][0]["rules"]]
    assert set(records) <= set(topic)  # the fixed set's series, per topic
    deployed = [r["record"] for r in rule_file("--set", "deployed", "-g", group, "-t", topic_name)["groups"][0]["rules"]]
    assert set(deployed) <= set(topic) | set(doc)  # the deployed series; the hottest is one for the cluster
    assert topic["keyscope:group_skew_ratio"] == topic["kafka:group_skew_ratio"] == 25 / 12.5


@pytest.mark.usefixtures("needs_promtool")
def test_promtool_accepts_the_rule_file(tmp_path):
    for group, rule_set in (("crm-events-sse", "fixed"), (WEIRD_GROUP, "fixed"), (WEIRD_GROUP, "deployed")):
        r = run("--set", rule_set, "-g", group, "-t", "crm-events", "--runbook-url", "https://wiki.example/skew")
        path = tmp_path / "rules.yml"
        path.write_text(r.stdout)
        check = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "SUCCESS: 5 rules found" in check.stdout


# Scenarios as (committed, end offsets); None = never committed (kafka-exporter then reports lag -1).
SCENARIOS = {
    "hot": ({0: 500, 1: 1000, 2: 900, 3: 1000, 4: None}, {0: 20000, 1: 1000, 2: 1000, 3: 1000, 4: 700}),
    "zero": ({0: 300, 1: 50, 2: 0}, {0: 300, 1: 50, 2: 0}),
    "seed": ({0: 0, 1: 12, 2: 40}, {0: 339, 1: 12, 2: 40}),
    # Multiples of lcm(1..7) = 420: every partial mean is an integer, so Prometheus'
    # avg gives the same float whatever order it visits the series in (Go maps
    # are unordered; with 7, 1, 339, ... the last digit changed between runs).
    "odd": ({p: 0 for p in range(7)}, {0: 420, 1: 0, 2: 2520, 3: 840, 4: 2520, 5: 0, 6: 1260}),
    WEIRD_GROUP: ({0: 0, 1: 3, 2: None}, {0: 9, 1: 3, 2: 5}),
}


def _series(metric, labels: dict) -> str:
    inner = ", ".join(f"{k}={rulesmod.promql_str(str(v))}" for k, v in labels.items())
    return f"{metric}{{{inner}}}"


def _keyscope_topic(committed, ends) -> lagmod.TopicLag:
    marks = {p: Watermarks(low=0, high=e, list_offsets_high=e) for p, e in ends.items()}
    return lagmod.summarize_topic("crm-events", committed, marks)


@pytest.mark.usefixtures("needs_promtool")
def test_prometheus_computes_keyscopes_numbers(tmp_path):
    """promtool evaluates the fixed rules on kafka-exporter series; results must equal keyscope's corrected
    reading, to the last digit (the deployed rules are checked against a live Prometheus: test_lag_alert_peers)."""
    (tmp_path / "rules.yml").write_text(run("-g", "crm-events-sse", "-t", "crm-events").stdout)
    inputs, lag_samples, skew_samples, hot_samples = [], [], [], []
    for group, (committed, ends) in SCENARIOS.items():
        for p, end in ends.items():
            c = committed[p]
            exporter_lag = -1 if c is None else end - c
            labels = {"consumergroup": group, "topic": "crm-events", "partition": p}
            inputs.append({"series": _series("kafka_consumergroup_lag", labels), "values": f"{exporter_lag}x20"})
        t = _keyscope_topic(committed, ends)
        for p, v in t.series.items():
            lag_samples.append({"labels": _series("keyscope:group_partition_lag", {"consumergroup": group, "partition": p, "topic": "crm-events"}), "value": v})
        skew_samples.append({"labels": _series("keyscope:group_skew_ratio", {"consumergroup": group, "topic": "crm-events"}), "value": t.skew_ratio})
        # topk by (…) (1, …) keeps one of tied partitions (which one: input order); its value is certain.
        hot_samples.append({"labels": _series("", {"consumergroup": group, "topic": "crm-events"}).lstrip(), "value": t.max_lag})
    assert _keyscope_topic(*SCENARIOS["hot"]).skew_ratio == 19500 / 4900
    assert [p for p in _keyscope_topic(*SCENARIOS["odd"]).hottest] == [2, 4]
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {"expr": "keyscope:group_partition_lag", "eval_time": "5m", "exp_samples": lag_samples},
                    {"expr": "keyscope:group_skew_ratio", "eval_time": "5m", "exp_samples": skew_samples},
                    {"expr": "max by (consumergroup, topic) (keyscope:group_hottest_partition)", "eval_time": "5m",
                     "exp_samples": hot_samples},
                    {"expr": "count by (consumergroup, topic) (keyscope:group_hottest_partition)", "eval_time": "5m",
                     "exp_samples": [dict(s, value=1) for s in hot_samples]},
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    r = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@pytest.mark.usefixtures("needs_promtool")
def test_alerts_fire_after_the_for_window_with_rendered_annotations(tmp_path):
    group, topic = WEIRD_GROUP, "crm-events"
    (tmp_path / "rules.yml").write_text(
        run("-g", group, "-t", topic, "--threshold", "4", "--for", "10m", "--runbook-url", "https://wiki.example/skew").stdout
    )
    doc = by_name(yaml.safe_load((tmp_path / "rules.yml").read_text()))
    lags = {0: 400, 1: 0, 2: 0, 3: 0, 4: 0}  # skew 400 / 80 = 5 > 4
    inputs = [
        {"series": _series("kafka_consumergroup_lag", {"consumergroup": group, "topic": topic, "partition": p}), "values": f"{v}x30"}
        for p, v in lags.items()
    ]
    inputs.append({"series": _series("kafka_consumergroup_members", {"consumergroup": group}), "values": "2x30"})
    inputs.append({"series": _series("kafka_topic_partitions", {"topic": topic}), "values": "5x30"})

    def rendered(annotations, value):
        out = {}
        for k, v in annotations.items():
            v = v.replace("{{ $labels.consumergroup }}", group).replace("{{ $labels.topic }}", topic)
            out[k] = v.replace('{{ $value | printf "%.2f" }}', f"{value:.2f}").replace("{{ $value }}", f"{value:g}")
        return out

    skew_alert = {
        "exp_labels": {"severity": "warning", "consumergroup": group, "topic": topic},
        "exp_annotations": rendered(doc["CrmEventsHotKeySkewHigh"]["annotations"], 5.0),
    }
    members_alert = {
        "exp_labels": {"severity": "warning", "consumergroup": group},
        "exp_annotations": rendered(doc["CrmEventsUnderReplicatedConsumers"]["annotations"], 2),
    }
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "CrmEventsHotKeySkewHigh", "exp_alerts": []},
                    {"eval_time": "15m", "alertname": "CrmEventsHotKeySkewHigh", "exp_alerts": [skew_alert]},
                    {"eval_time": "15m", "alertname": "CrmEventsUnderReplicatedConsumers", "exp_alerts": [members_alert]},
                ],
            }
        ],
    }
    assert _keyscope_topic({p: 0 for p in lags}, lags).skew_ratio == 5.000000000000001  # 400 / (incremental mean 79.99…)
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    r = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
