"""`keyscope whatif` and `keyscope recommend` from the command line: formats, exit codes, errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from keyscope.cli import cli
from keyscope.errors import EXIT_SKEW
from keyscope.partitioners import partition_column
from keyscope.sample import Sample
from keyscope.whatif.engine import WhatIf
from keyscope.whatif.spec import Scenario


@pytest.fixture(scope="module")
def sample_path(tmp_path_factory):
    rng = np.random.default_rng(3)
    n = 20_000
    tenant = np.where(rng.random(n) < 0.4, 0, rng.zipf(1.3, n) % 1500 + 1)
    keys = pl.Series("key", [f"tenant-{t}".encode() for t in tenant], dtype=pl.Binary)
    df = pl.DataFrame(
        {
            "partition": partition_column(keys, 3, "murmur2").cast(pl.Int32),
            "key": keys,
            "user_id": [f"u{u}" for u in rng.integers(0, 300, n)],
            "region": [["eu", "us"][r] for r in rng.integers(0, 2, n)],
        }
    )
    path = tmp_path_factory.mktemp("whatif") / "orders.parquet"
    Sample.from_frame(df, topic="orders", partition_count=3).write(path)
    return str(path)


def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _one_line_error(result, code, text):
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("keyscope: error: ") and text in lines[-1], result.output
    assert "Traceback" not in result.output


def test_whatif_table(sample_path):
    r = run("whatif", sample_path, "-p", "6", "--key-by", "key,user_id", "--consumers", "3,6")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "today" in out and "6p murmur2 key+user_id" in out
    assert "3 consumers" in out and "6 consumers" in out and "range / round-robin" in out
    assert "adding consumers cannot split a partition" in out
    assert "█" in out  # before/after bars
    # today: 3 rows with a value; rows 3..5 only after
    assert "records per partition, today -> predicted" in out


@pytest.mark.parametrize(
    "args",
    [
        ["-p", "6"],
        ["-p", "4,6", "--key-by", "key,user_id", "--salt-hot", "1:4"],
        ["-p", "1,2,3,4,6,8,12,24", "--partitioner", "murmur2,consistent,fnv1a", "--consumers", "1,2,3,4,5,6,8,12,24"],
        ["-p", "12", "--key-by", "key,user_id,region", "--key-by", "key", "--salt-hot", "2%:8", "--salt-by", "user_id"],
    ],
)
def test_whatif_table_fits_100_columns(sample_path, args):
    """The text table fits a 100-column terminal and still carries every figure the JSON has."""
    r = run("whatif", sample_path, *args)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    doc = json.loads(run("whatif", sample_path, *args, "--format", "json").output)
    out = r.output
    for i, d in enumerate([doc["today"]] + doc["scenarios"]):
        sid = "today" if i == 0 else f"S{i}"
        row = next(line for line in lines if line.split()[:1] == [sid] and "(" in line)
        skew = d["skew"]
        assert f"{skew['value']:.2f} ({skew['low']:.2f}–{skew['high']:.2f})" in row
        hot = d["hottest_partition"]
        assert f"{hot}: {100 * d['shares'][hot]:.1f}%" in row
        if i:
            assert f"{100 * d['keys_moved_share']:.1f}%" in row and f"{100 * d['traffic_moved_share']:.1f}%" in row
            assert f"{d['order']['keys_split']:,}" in row
            assert f"{sid}: {d['name']}" in out or f"{sid}: {d['name'][:60]}" in out
        assert f"order kept {d['order']['kept']}" in " ".join(out.split())
        for c in {x["consumers"] for x in d["consumers"]}:
            cells = [x for x in d["consumers"] if x["consumers"] == c]
            shown = " / ".join(
                f"{100 * x['busiest_share']:.1f}%" + ("*" if x["limited_by_one_partition"] else "")
                for x in sorted(cells, key=lambda x: x["assignor"] != "range")
            )
            assert any(line.split()[:1] == [sid] and shown in line for line in lines), (sid, c, shown)
        for rec in d["records"]:
            assert f"{rec:,}" in out


def test_whatif_json_equals_library(sample_path):
    from keyscope.sample import read_sample

    r = run("whatif", sample_path, "-p", "4,6", "--partitioner", "murmur2,librdkafka", "--format", "json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    names = [s["name"] for s in doc["scenarios"]]
    assert names == ["4p murmur2", "4p consistent", "6p murmur2", "6p consistent"]
    w = WhatIf(read_sample(sample_path))
    for s in doc["scenarios"]:
        sc = s["scenario"]
        lib = w.evaluate(Scenario(sc["partitions"], sc["partitioner"]))
        assert s["records"] == [int(x) for x in lib.records]
        assert s["keys_moved"] == lib.keys_moved
    assert doc["today"]["records"] == [int(x) for x in w.today.records]
    assert doc["sample"]["today_partitioner"] == {"name": "murmur2", "match_share": 1.0}


def test_whatif_says_partitions_cannot_shrink(sample_path):
    r = run("whatif", sample_path, "-p", "2,6", "--format", "json")
    assert r.exit_code == 0
    notes = json.loads(r.output)["sample"]["notes"]
    assert any("cannot reduce" in n and "2 partition" in n for n in notes)


def test_whatif_markdown(sample_path):
    r = run("whatif", sample_path, "--salt-hot", "1:4", "--salt-by", "user_id", "--format", "markdown")
    assert r.exit_code == 0, r.output
    assert r.output.startswith("### keyscope whatif: `orders`")
    assert "| scenario | parts |" in r.output
    assert "salted: tenant-0" in r.output and "mmh3.hash" in r.output


def test_fail_on_skew_applies_to_the_best_scenario(sample_path):
    base = ["whatif", sample_path, "--format", "json"]
    # key+user_id evens the load out; 6 plain partitions do not
    both = run(*base, "-p", "3", "--key-by", "key", "--key-by", "key,user_id", "--fail-on-skew", "1.3")
    assert both.exit_code == 0, both.output
    assert json.loads(both.output)["fail_on_skew"]["exceeded"] is False
    bad = CliRunner().invoke(cli, base + ["-p", "6", "--fail-on-skew", "1.3"])
    assert bad.exit_code == EXIT_SKEW
    assert "above --fail-on-skew 1.3" in bad.stderr
    doc = json.loads(bad.stdout)
    assert doc["fail_on_skew"]["exceeded"] is True and doc["fail_on_skew"]["best_scenario"] == "6p murmur2"


@pytest.mark.parametrize(
    "args,code,text",
    [
        ([], 2, "give at least one scenario"),
        (["--key-by", "key,nope"], 2, "unknown field 'nope'"),
        (["--key-by", "user_id"], 2, "starts with 'key'"),
        (["-p", "six"], 2, "not a whole number"),
        (["-p", "0"], 2, "at least 1"),
        (["--partitioner", "kafka-go"], 2, "unknown partitioner"),
        (["--salt-hot", "x"], 2, "expected K[:D]"),
        (["--salt-by", "user_id", "-p", "6"], 2, "--salt-by only applies with --salt-hot"),
        (["--salt-hot", "1", "--salt-by", "nope"], 2, "unknown field 'nope'"),
    ],
)
def test_whatif_usage_errors(sample_path, args, code, text):
    _one_line_error(CliRunner().invoke(cli, ["whatif", sample_path, *args]), code, text)


def test_unreadable_sample(tmp_path):
    _one_line_error(CliRunner().invoke(cli, ["whatif", str(tmp_path / "missing.parquet"), "-p", "6"]), 3, "no such file")
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    _one_line_error(CliRunner().invoke(cli, ["recommend", str(bad)]), 3, "not a readable Parquet file")


def test_plot_without_matplotlib_is_a_clear_error(sample_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    r = CliRunner().invoke(cli, ["whatif", sample_path, "-p", "6", "--plot", str(tmp_path / "x.png")])
    _one_line_error(r, 2, "--plot needs matplotlib")
    assert not (tmp_path / "x.png").exists()


def test_plot_writes_png(sample_path, tmp_path):
    pytest.importorskip("matplotlib")  # optional extra `plot`
    out = tmp_path / "x.png"
    r = run("whatif", sample_path, "-p", "6", "--salt-hot", "1:4", "--plot", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recommend_table_with_snippets(sample_path):
    r = run("recommend", sample_path, "--keep-order-by", "none", "--max-partitions", "6")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "Recommended:" in out
    for part in ("Why:", "Cost:", "Producer change:", "[kafka-python]", "[confluent-kafka]", "[java]", "Migration:"):
        assert part in out, part
    assert "Allowed scenarios, best first" in out


def test_recommend_json_and_markdown(sample_path):
    r = run("recommend", sample_path, "--keep-order-by", "user_id", "--format", "json", "--top", "3")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["helps"] is True
    assert doc["constraints"] == {"keep_order_by": "user_id", "max_partitions": 6, "max_keys_moved": 1.0, "target_skew": 1.25}
    assert set(doc["recommended"]["scenario"]["key_fields"]) <= {"user_id"}
    assert len(doc["ranked"]) == 3
    assert set(doc["producer_change"]) >= {"kafka-python", "confluent-kafka", "java"}
    assert doc["evaluated"] >= 30
    md = run("recommend", sample_path, "--keep-order-by", "none", "--format", "markdown")
    assert md.exit_code == 0
    assert "```python" in md.output and "```java" in md.output


def test_recommend_nothing_helps_names_the_constraint(sample_path):
    r = run("recommend", sample_path, "--max-partitions", "3")
    assert r.exit_code == 0, r.output
    assert "No recommendation: nothing under these constraints" in r.output
    assert "Relaxing a constraint:" in r.output and "--keep-order-by" in r.output


@pytest.mark.parametrize(
    "args,text",
    [
        (["--max-partitions", "2"], "below today's 3"),
        (["--keep-order-by", "nope"], "unknown field 'nope'"),
    ],
)
def test_recommend_usage_errors(sample_path, args, text):
    _one_line_error(CliRunner().invoke(cli, ["recommend", sample_path, *args]), 2, text)


def test_help_documents_exit_codes():
    for cmd in ("whatif", "recommend"):
        r = run(cmd, "--help")
        assert r.exit_code == 0
        assert "Exit codes:" in r.output and "--format" in r.output


HOT_SAMPLE = str(__import__("pathlib").Path(__file__).resolve().parent.parent / "samples" / "crm-events-hot-tenant.parquet")


def test_consumers_alone_answers_does_adding_consumers_help():
    r = run("whatif", HOT_SAMPLE, "--consumers", "1,2,3,6")
    assert r.exit_code == 0, r.output
    doc = json.loads(run("whatif", HOT_SAMPLE, "--consumers", "1,2,3,6", "--format", "json").output)
    assert doc["scenarios"] == []
    loads = {c["consumers"]: c for c in doc["today"]["consumers"] if c["assignor"] == "range"}
    hottest = max(doc["today"]["shares"])
    # one consumer holds everything; with 3 or 6 the busiest is stuck with the hottest partition
    assert loads[1]["busiest_share"] == pytest.approx(1.0)
    for c in (3, 6):
        assert loads[c]["busiest_share"] == pytest.approx(hottest, abs=1e-4)
        assert loads[c]["limited_by_one_partition"]
    assert "adding consumers cannot split a partition" in r.output


@pytest.mark.parametrize("keep", ["key", "contact_id", "none"])
def test_recommend_table_fits_100_columns(keep):
    r = run("recommend", HOT_SAMPLE, "--keep-order-by", keep)
    assert r.exit_code == 0, r.output
    assert max(len(line) for line in r.output.splitlines()) <= 100, max(r.output.splitlines(), key=len)


def test_recommend_json_never_recommends_a_change_that_does_not_help():
    doc = json.loads(run("recommend", HOT_SAMPLE, "--format", "json").output)  # per-key order: nothing helps
    assert doc["helps"] is False
    assert doc["recommended"] is None
    assert doc["best_allowed"] is not None and doc["best_allowed"]["skew"]["high"] >= doc["today"]["skew"]["low"]
    ok = json.loads(run("recommend", HOT_SAMPLE, "--keep-order-by", "contact_id", "--format", "json").output)
    assert ok["helps"] is True and ok["recommended"] == ok["best_allowed"]


def test_empty_list_items_are_refused():
    r = run("whatif", HOT_SAMPLE, "--partitions", "4,,6")
    assert r.exit_code == 2 and "empty item" in r.output
