"""Every command's ``--format json`` output against its schema in docs/schemas (docs/json.md).

Real output only: the commands run on the shipped samples, on files from other
tools, on stdin, and against the embedded broker (lag, sample).  Each schema is
checked as Draft 2020-12 itself, and each has negative checks (a real document,
altered the way a regression would alter it, must fail), so a schema that
accepted anything could not pass here.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from keyscope.cli import cli

from .conftest import create_topic

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
SAMPLES = ROOT / "samples"
HOT = str(SAMPLES / "crm-events-hot-tenant.parquet")
BALANCED = str(SAMPLES / "web-events-balanced.parquet")
MIXED = str(SAMPLES / "orders-mixed-partitioners.parquet")
DRAFT = "https://json-schema.org/draft/2020-12/schema"
COMMANDS = ("analyze", "lag", "partition", "recommend", "rules", "sample", "scan", "whatif")


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def validator(name: str) -> Draft202012Validator:
    s = schema(name)
    Draft202012Validator.check_schema(s)
    return Draft202012Validator(s)


def strict_json(text: str):
    """json.loads that refuses NaN/Infinity (Python's json would accept them)."""

    def no_constants(name):
        raise AssertionError(f"non-finite number {name} in JSON output")

    return json.loads(text, parse_constant=no_constants)


def assert_valid(name: str, doc) -> None:
    errors = sorted(validator(name).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:10])


def assert_invalid(name: str, doc) -> None:
    assert not validator(name).is_valid(doc), f"{name} schema accepted a broken document"


def run(*args) -> object:
    r = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return strict_json(r.stdout)


def run_process(*args, stdin: bytes | None = None, ok=(0,)) -> str:
    """A real process, real pipes (stdin, and stdout not a terminal)."""
    r = subprocess.run([sys.executable, "-m", "keyscope", *args], input=stdin, capture_output=True, timeout=180)
    assert r.returncode in ok, r.stderr.decode()
    return r.stdout.decode()


# --------------------------------------------------------------------------- the schemas themselves


def test_one_schema_per_command():
    assert sorted(p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json")) == sorted(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_schema_is_valid_draft_2020_12(name):
    s = schema(name)
    assert s["$schema"] == DRAFT
    assert s["$id"].endswith(f"/{name}.schema.json") and s["title"].startswith(f"keyscope {name}")
    Draft202012Validator.check_schema(s)


def test_whatif_and_recommend_share_one_result_definition():
    assert schema("whatif")["$defs"] == schema("recommend")["$defs"]


def test_every_fixed_object_is_closed():
    """additionalProperties is stated wherever an object lists its properties: no silently open shape."""

    def walk(node, path):
        if isinstance(node, dict):
            if "properties" in node and "type" in node:
                assert "additionalProperties" in node, f"{path}: open object"
            for k, v in node.items():
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    for name in COMMANDS:
        if name != "analyze":  # analyze.schema.json predates this file; it is closed where it lists properties
            walk(schema(name), name)


# --------------------------------------------------------------------------- partition


@pytest.mark.parametrize(
    "args",
    [
        ["order-42", "-p", "6"],
        ["order-42", "", "-p", "3", "--partitioner", "librdkafka"],
        ["00ff", "616263", "-p", "12", "--key-encoding", "hex"],
        ["AP8=", "-p", "2", "--key-encoding", "base64", "--partitioner", "sarama"],
    ],
)
def test_partition_rows(args):
    rows = strict_json(run_process("partition", *args, "--format", "json"))
    assert rows
    assert_valid("partition", rows)


def test_partition_rows_from_stdin_with_empty_binary_and_odd_keys():
    keys = b"a\n\n\xff\x00\xfe\nx\r\n\xe2\x82\xac\nquote\"back\\slash\n" + b"".join(b"k%d\n" % i for i in range(3000))
    rows = strict_json(run_process("partition", "-p", "7", "--format", "json", stdin=keys))
    from keyscope.partitioners import KEYED

    assert len(rows) == len(KEYED) * 3006
    assert_valid("partition", rows)
    encodings = {r["key_encoding"] for r in rows}
    assert encodings == {"utf8", "hex"}
    assert any(r["hash"] is None and r["partition"] is None for r in rows)  # the empty key under consistent
    assert_valid("partition", strict_json(run_process("partition", "-p", "7", "--format", "json", stdin=b"")))


@pytest.mark.parametrize(
    "args, stdin",
    [
        (["order-42", "abc", "-p", "6"], None),
        (["-p", "3", "--partitioner", "consistent"], b"a\n\nb\n\xff\n"),
        (["-p", "5"], b""),
        (["-p", "4"], b"".join(b"user-%d\n" % i for i in range(5000))),
    ],
)
def test_partition_summary(args, stdin):
    doc = strict_json(run_process("partition", *args, "--summary", "--format", "json", stdin=stdin))
    assert_valid("partition", doc)
    for counts in doc["by_partitioner"].values():
        assert len(counts["records_per_partition"]) == doc["partitions"]


def test_partition_schema_rejects_broken_documents():
    rows = strict_json(run_process("partition", "abc", "", "-p", "3", "--format", "json"))
    assert_valid("partition", rows)
    for breakage in (
        lambda r: r[0].pop("partition"),
        lambda r: r[0].update(key=None),  # a null key with key_encoding utf8 is ambiguous
        lambda r: r[0].update(key_encoding="base64"),
        lambda r: r[0].update(hash=-1),
        lambda r: r[0].update(partition=None),  # hashed, yet no partition
        lambda r: r[0].update(extra=1),
    ):
        bad = copy.deepcopy(rows)
        breakage(bad)
        assert_invalid("partition", bad)
    summary = strict_json(run_process("partition", "abc", "-p", "3", "--summary", "--format", "json"))
    for breakage in (
        lambda d: d.pop("by_partitioner"),
        lambda d: d["by_partitioner"].update(crc16={"records_per_partition": [1], "unhashed": 0}),
        lambda d: d["by_partitioner"]["murmur2"].update(unhashed=0.5),
        lambda d: d.update(partitions=0),
    ):
        bad = copy.deepcopy(summary)
        breakage(bad)
        assert_invalid("partition", bad)


# --------------------------------------------------------------------------- info (and sample, below)


@pytest.mark.parametrize("path", [HOT, BALANCED, MIXED])
def test_info_on_the_shipped_samples(path):
    doc = run("info", path, "--format", "json")
    assert doc["file"] == path
    assert_valid("sample", doc)


def test_info_on_files_from_other_tools(tmp_path):
    csv = tmp_path / "export.csv"
    csv.write_text("partition,key,tenant\n0,a,x\n1,,y\n2,b,\n")
    kcat = tmp_path / "kcat.json"
    kcat.write_text(
        '{"topic":"t","partition":0,"offset":5,"tstype":"create","ts":1700000000000,"key":"a","payload":"x"}\n'
        '{"topic":"t","partition":2,"offset":9,"tstype":"create","ts":-1,"key":null,"payload":null}\n'
    )
    jsonl = tmp_path / "lines.jsonl"
    jsonl.write_text('{"partition":1,"key":"k","tenant":"a"}\n{"partition":0,"key":"k2","tenant":null}\n')
    for path, source in ((csv, "csv"), (kcat, "kcat-json"), (jsonl, "jsonl")):
        doc = run("info", str(path), "--format", "json")
        assert doc["meta"]["source"] == source
        assert_valid("sample", doc)


def test_info_schema_rejects_broken_documents():
    doc = run("info", HOT, "--format", "json")
    for breakage in (
        lambda d: d["summary"].pop("records"),
        lambda d: d.update(output="x.parquet"),  # info has `file`, sample has `output`: never both
        lambda d: d.pop("file"),
        lambda d: d["summary"].update(records=1.5),
        lambda d: d["summary"]["partitions"][0].update(low=-1),
        lambda d: d["meta"]["how"].update(stopped_by="boredom"),
        lambda d: d["meta"]["partitions"].update({"x": d["meta"]["partitions"]["0"]}),
        lambda d: d["meta"].update(source="carrier pigeon"),
    ):
        bad = copy.deepcopy(doc)
        breakage(bad)
        assert_invalid("sample", bad)


# --------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    "args",
    [
        ["-g", "crm-events-sse", "-t", "crm-events"],
        ["--set", "deployed", "-g", "crm-events-sse", "-t", "crm-events", "--for", "12m"],
        ["-g", "we{{ird\"group", "-t", "a.b_c", "--no-recording", "--runbook-url", "https://runbooks/x",
         "--alert-prefix", "Orders", "--for", "1h30m", "--threshold", "2.5", "--severity", "page"],
    ],
)
def test_rules(args):
    doc = run("rules", *args, "--format", "json")
    assert_valid("rules", doc)


def test_rules_schema_rejects_broken_documents():
    doc = run("rules", "-g", "g", "-t", "t", "--format", "json")
    for breakage in (
        lambda d: d["groups"][1]["rules"][0].pop("for"),
        lambda d: d["groups"][1]["rules"][0]["labels"].pop("severity"),
        lambda d: d["groups"][0]["rules"][0].update(record="kafka:lag"),
        lambda d: d["groups"][0]["rules"].pop(),
        lambda d: d.update(groups=[]),
    ):
        bad = copy.deepcopy(doc)
        breakage(bad)
        assert_invalid("rules", bad)


# --------------------------------------------------------------------------- whatif


@pytest.mark.parametrize(
    "path, args",
    [
        (HOT, ["-p", "6", "--key-by", "key,contact_id"]),
        (HOT, ["-p", "2,3,6", "--partitioner", "murmur2,consistent"]),  # 2 < today: the note path
        (HOT, ["--salt-hot", "1:4", "--salt-hot", "10%:8", "--salt-by", "contact_id", "--consumers", "2,5"]),
        (HOT, ["--salt-hot", "2", "--key-by", "key,event_type", "--separator", "#", "--fail-on-skew", "1.01"]),
        (MIXED, ["--partitioner", "fnv1a", "-p", "8", "--today-partitioner", "consistent"]),
        (BALANCED, ["-p", "12", "--fail-on-skew", "50"]),
    ],
)
def test_whatif(path, args):
    r = CliRunner().invoke(cli, ["whatif", path, *args, "--format", "json"], catch_exceptions=False)
    assert r.exit_code in (0, 5), r.output
    doc = strict_json(r.stdout)
    assert_valid("whatif", doc)
    assert ("fail_on_skew" in doc) == ("--fail-on-skew" in args)
    for result in [doc["today"], *doc["scenarios"]]:
        if all(isinstance(x, int) for x in result["records"]):  # whole loads print as integers everywhere
            for c in result["consumers"]:
                assert isinstance(c["busiest_load"], int)
                assert c["busiest_load"] == sum(result["records"][p] for p in c["busiest_partitions"])


def test_whatif_schema_rejects_broken_documents():
    doc = run("whatif", HOT, "-p", "6", "--salt-hot", "1:4", "--format", "json")
    assert doc["scenarios"][0]["order"]["salted_keys"]
    for breakage in (
        lambda d: d["today"].pop("skew"),
        lambda d: d["today"].update(scenario=d["scenarios"][0]["scenario"]),  # today is no scenario
        lambda d: d["scenarios"][0].update(scenario=None),
        lambda d: d["scenarios"][0].update(keys_moved=1.5),
        lambda d: d["scenarios"][0]["shares"].append(1.5),
        lambda d: d["scenarios"][0]["order"]["salted_keys"][0].update(key_encoding="base64"),
        lambda d: d["scenarios"][0]["scenario"]["salt"].update(top=None),  # neither top nor share
        lambda d: d["today"]["consumers"][0].update(assignor="sticky"),
        lambda d: d["sample"].update(load_unit="bananas"),
        lambda d: d.update(scenarios=[]),
    ):
        bad = copy.deepcopy(doc)
        breakage(bad)
        assert_invalid("whatif", bad)


# --------------------------------------------------------------------------- recommend


@pytest.mark.parametrize(
    "path, args",
    [
        (HOT, []),  # per-key order: nothing helps, relaxations listed
        (HOT, ["--keep-order-by", "contact_id"]),
        (HOT, ["--keep-order-by", "none", "--top", "3", "--consumers", "4"]),
        (HOT, ["--keep-order-by", "none", "--max-keys-moved", "0.01", "--max-partitions", "3"]),
        (MIXED, ["--target-skew", "1.5"]),
        (BALANCED, ["--keep-order-by", "user_id"]),
    ],
)
def test_recommend(path, args):
    doc = run("recommend", path, *args, "--format", "json")
    assert_valid("recommend", doc)


def test_recommend_covers_both_verdicts():
    helps = run("recommend", HOT, "--keep-order-by", "contact_id", "--format", "json")
    nothing = run("recommend", HOT, "--format", "json")
    assert helps["helps"] is True and nothing["helps"] is False
    for doc in (helps, nothing):
        assert_valid("recommend", doc)
    assert helps["constraints"]["target_skew"] == 1.25


def test_recommend_schema_rejects_broken_documents():
    doc = run("recommend", HOT, "--keep-order-by", "contact_id", "--format", "json")
    assert doc["helps"] is True
    for breakage in (
        lambda d: d["constraints"].pop("target_skew"),
        lambda d: d.update(producer_change={}),  # helps, yet no producer change
        lambda d: d.update(recommended=None),  # helps, yet nothing recommended
        lambda d: d.update(helps="yes"),
        lambda d: d["ranked"][0].pop("keys_moved_share"),
        lambda d: d["today"].update(name="yesterday"),
        lambda d: d["rejected"].update(odd=0.5),
        lambda d: d.update(evaluated=-1),
    ):
        bad = copy.deepcopy(doc)
        breakage(bad)
        assert_invalid("recommend", bad)
    nothing = run("recommend", HOT, "--format", "json")
    assert nothing["relax"]
    for breakage in (
        lambda d: d["relax"][0].update(constraint="--be-nice"),
        lambda d: d["producer_change"].update(java="..."),  # snippets only when it helps
    ):
        bad = copy.deepcopy(nothing)
        breakage(bad)
        assert_invalid("recommend", bad)


# --------------------------------------------------------------------------- analyze (schema kept, validated here too)


@pytest.mark.parametrize("path, args", [(HOT, []), (BALANCED, ["--by", "bytes"]), (MIXED, ["--top", "3"])])
def test_analyze_against_its_schema_with_jsonschema(path, args):
    doc = run("analyze", path, *args, "--format", "json")
    assert_valid("analyze", doc)


def test_analyze_schema_rejects_broken_documents():
    doc = run("analyze", HOT, "--format", "json")
    for breakage in (lambda d: d.pop("skew"), lambda d: d.update(by="keys"), lambda d: d.update(extra=True)):
        bad = copy.deepcopy(doc)
        breakage(bad)
        assert_invalid("analyze", bad)


# --------------------------------------------------------------------------- lag and sample, on a real broker


@pytest.fixture(scope="module")
def lagging_topic(broker):
    """crm-events-like topic, 3 partitions: group `hot` lags on one partition, `idle` on none, `half` misses one."""
    import uuid

    from keyscope.kafka.demo import StreamSpec, commit_group_lag, crm_events, produce

    bs = broker.bootstrap_server
    topic = f"t-{uuid.uuid4().hex[:10]}"
    create_topic(bs, topic, 3)
    produce(bs, topic, crm_events(StreamSpec(records=3000)))
    groups = {name: f"{name}-{uuid.uuid4().hex[:6]}" for name in ("hot", "idle", "half")}
    commit_group_lag(bs, topic, groups["hot"], {2: 0.6, 1: 0.05})
    commit_group_lag(bs, topic, groups["idle"], {})
    _commit_only(bs, topic, groups["half"], {0: 10, 1: 20})
    return bs, topic, groups


def _commit_only(bootstrap, topic, group, offsets):
    from keyscope.kafka.demo import commit_offsets

    commit_offsets(bootstrap, topic, group, offsets)


def test_lag_one_reading(lagging_topic):
    bs, topic, groups = lagging_topic
    hot = run("lag", "-b", bs, "-g", groups["hot"], "--format", "json")
    assert_valid("lag", hot)
    assert hot["topics"][0]["kafka:group_skew_ratio"] > 1

    idle = run("lag", "-b", bs, "-g", groups["idle"], "-t", topic, "--format", "json")
    assert_valid("lag", idle)
    t = idle["topics"][0]
    assert t["total_lag"] == 0 and t["kafka:group_skew_ratio"] == 0  # all-zero lag: 0, not NaN

    half = run("lag", "-b", bs, "-g", groups["half"], "--format", "json")
    assert_valid("lag", half)
    assert half["topics"][0]["why_differ"] and half["kafka:group_hottest_partition"] is not None
    unscanned = run("lag", "-b", bs, "-g", groups["half"], "--format", "json", "--no-cluster-scan")
    assert_valid("lag", unscanned)
    assert unscanned["kafka:group_hottest_partition"] is None and unscanned["alert_scan"]["error"]
    p2 = half["topics"][0]["partitions"][2]
    assert p2["committed_offset"] is None and p2["lag"] is None and p2["status"] == "no committed offset"
    assert half["topics"][0]["partitions_without_committed_offset"] == [2]


def test_lag_watch_in_a_pipe_is_one_document_per_line(lagging_topic):
    bs, _, groups = lagging_topic
    out = run_process("lag", "-b", bs, "-g", groups["hot"], "--format", "json", "--watch", "0.2", "--count", "3")
    lines = out.splitlines()
    assert len(lines) == 3
    docs = [strict_json(line) for line in lines]
    for doc in docs:
        assert_valid("lag", doc)
    assert all(p["trend"] is None for p in docs[0]["topics"][0]["partitions"])
    assert all(p["trend"]["direction"] == "steady" for p in docs[2]["topics"][0]["partitions"])


def test_lag_schema_rejects_broken_documents(lagging_topic):
    bs, _, groups = lagging_topic
    doc = run("lag", "-b", bs, "-g", groups["half"], "--format", "json")
    for breakage in (
        lambda d: d["topics"][0].pop("kafka:group_skew_ratio"),
        lambda d: d["topics"][0]["partitions"][0].update(lag="12"),
        lambda d: d["topics"][0]["partitions"][0].update(status="fine"),
        lambda d: d["topics"][0].update(total_lag=1.5),
        lambda d: d["topics"][0]["partitions"][0].update(trend={"seconds": 1}),
        lambda d: d.pop("members"),
        lambda d: d.update(topics=[]),
    ):
        bad = copy.deepcopy(doc)
        breakage(bad)
        assert_invalid("lag", bad)


def test_sample_report_and_whatif_on_a_capped_sample(lagging_topic, tmp_path):
    bs, topic, _ = lagging_topic
    out = tmp_path / "s.parquet"
    doc = run("sample", "-b", bs, "-t", topic, "-o", str(out), "--per-partition", "100",
              "--field", "tenant=$.tenant_id", "--field", "src=header:src", "--format", "json")
    assert doc["output"] == str(out) and doc["meta"]["how"]["stopped_by"] == "record limit"
    assert_valid("sample", doc)
    doc = run("sample", "-b", bs, "-t", topic, "-o", str(out), "--force", "--from", "earliest", "--partitions", "0,2",
              "--max-records", "500", "--format", "json")
    assert doc["meta"]["how"]["partitions"] == [0, 2]
    assert_valid("sample", doc)
    assert_valid("sample", run("info", str(out), "--format", "json"))
    for breakage in (lambda d: d.pop("output"), lambda d: d["meta"]["how"].pop("connection")):
        bad = copy.deepcopy(doc)
        breakage(bad)
        assert_invalid("sample", bad)
    # a sample capped per partition: load scaled to the topic, the other load_unit
    capped = tmp_path / "capped.parquet"
    run("sample", "-b", bs, "-t", topic, "-o", str(capped), "--from", "earliest", "--per-partition", "150",
        "--field", "contact=$.contact_id", "--format", "json")
    w = run("whatif", str(capped), "-p", "6", "--key-by", "key,contact", "--format", "json")
    assert w["sample"]["load_unit"].startswith("records, scaled")
    assert_valid("whatif", w)
    assert_valid("recommend", run("recommend", str(capped), "--keep-order-by", "contact", "--format", "json"))
