"""`keyscope analyze` as a user runs it: files on disk, the three formats, exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from keyscope.cli import cli
from keyscope.errors import EXIT_INPUT, EXIT_SKEW
from keyscope.partitioners import partition_column
from keyscope.sample import Sample

from .test_analysis_schema import validate


@pytest.fixture(scope="module")
def hot_sample(tmp_path_factory):
    """murmur2 topic, 6 partitions, one tenant with 40% of the records, a long binary key too."""
    rng = np.random.default_rng(9)
    n_keys = 800
    names = [f"tenant-{i}".encode() for i in range(n_keys)] + [b"\x00\x01" + b"\xfe" * 40]
    keys = pl.Series("key", names, dtype=pl.Binary)
    place = partition_column(keys, 6, "murmur2").cast(pl.Int32).to_numpy()
    ids = np.concatenate([np.zeros(8000, dtype=np.int64), np.full(1500, n_keys), rng.integers(1, n_keys, 10500)])
    df = pl.DataFrame({"key": keys.gather(ids), "partition": place[ids], "value_size": rng.integers(0, 900, ids.size)})
    path = tmp_path_factory.mktemp("samples") / "hot.parquet"
    Sample.from_frame(df, topic="crm-events", partition_count=6).write(path)
    return path, int(place[0])


def invoke(*args):
    return CliRunner().invoke(cli, ["analyze", *map(str, args)], catch_exceptions=False)


def test_table_fits_100_columns_with_a_bar_per_partition(hot_sample):
    path, hot_partition = hot_sample
    r = invoke(path, "--top", 12)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert max(len(line) for line in lines) <= 100
    bars = [line for line in lines if "█" in line]
    assert len(bars) == 6  # one per partition
    assert f"hottest partition {hot_partition}" in r.output
    assert "tenant-0" in r.output and "alone" in r.output
    assert "cause: hot-key" in r.output
    assert "partitioner: murmur2" in r.output
    assert "0x0001fefe" in r.output  # binary key shown as hex, truncated to fit


def test_json_validates_against_the_schema(hot_sample):
    path, hot_partition = hot_sample
    r = invoke(path, "--format", "json", "--top", 5)
    assert r.exit_code == 0
    doc = json.loads(r.output)
    validate(doc)
    assert doc["skew"]["hottest_partition"] == hot_partition
    assert doc["hot_keys"][0]["key"] == "tenant-0"
    assert len(doc["hot_keys"]) == 5
    assert "fail_on_skew" not in doc


def test_markdown_pastes_into_an_incident_doc(hot_sample):
    path, hot_partition = hot_sample
    r = invoke(path, "--format", "markdown")
    assert r.exit_code == 0
    out = r.output
    assert out.startswith("### keyscope analyze: `crm-events`")
    assert "| partition | records |" in out and "|---|---:|" in out
    assert f"| **{hot_partition}** |" in out
    assert "| 1 | `tenant-0` |" in out
    # every table row has the same number of cells as its header
    for block in out.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({row.count(" | ") for row in rows if not row.startswith("|---")}) == 1


def test_fail_on_skew_exit_code(hot_sample):
    path, _ = hot_sample
    doc = json.loads(invoke(path, "--format", "json").output)
    ratio = doc["skew"]["ratio"]
    above = invoke(path, "--format", "json", "--fail-on-skew", round(ratio - 0.1, 2))
    assert above.exit_code == EXIT_SKEW == 5
    assert json.loads(above.stdout)["fail_on_skew"] == {"threshold": round(ratio - 0.1, 2), "exceeded": True}
    assert "above --fail-on-skew" in above.stderr
    below = invoke(path, "--fail-on-skew", round(ratio + 0.1, 2))
    assert below.exit_code == 0
    assert "--fail-on-skew" in below.output and "ok" in below.output


def test_by_bytes_and_top_zero(hot_sample):
    path, _ = hot_sample
    doc = json.loads(invoke(path, "--format", "json", "--by", "bytes", "--top", 0).output)
    validate(doc)
    assert doc["by"] == "bytes" and doc["hot_keys"] == []
    assert doc["skew"]["ratio"] == pytest.approx(doc["skew"]["bytes_ratio"])


@pytest.mark.parametrize("fmt", ["table", "json", "markdown"])
@pytest.mark.parametrize("kind", ["empty", "all-null", "one-partition"])
def test_degenerate_samples_render_in_every_format(tmp_path, fmt, kind):
    if kind == "empty":
        df = pl.DataFrame({"partition": pl.Series([], dtype=pl.Int32), "key": pl.Series([], dtype=pl.Binary)})
        s = Sample.from_frame(df, partition_count=3)
    elif kind == "all-null":
        s = Sample.from_frame(
            pl.DataFrame({"partition": [0, 1, 1], "key": pl.Series([None] * 3, dtype=pl.Binary), "value_size": [0, 0, 0]}),
            partition_count=2,
        )
    else:
        s = Sample.from_frame(pl.DataFrame({"partition": [0, 0], "key": [b"a", b""]}), partition_count=1)
    path = s.write(tmp_path / "s.parquet")
    r = invoke(path, "--format", fmt)
    assert r.exit_code == 0, r.output
    assert not re.search(r"\b(nan|inf|infinity)\b", r.output.lower())
    if fmt == "json":
        validate(json.loads(r.output))


def test_unreadable_sample_is_one_line_exit_3(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    r = subprocess.run(
        [sys.executable, "-m", "keyscope", "analyze", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == EXIT_INPUT == 3
    assert r.stderr.startswith("keyscope: error:") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    missing = invoke(tmp_path / "nope.parquet")
    assert missing.exit_code == 3 and "no such file" in missing.output


def test_bad_options_exit_2(hot_sample):
    path, _ = hot_sample
    assert invoke(path, "--by", "weight").exit_code == 2
    assert invoke(path, "--top", -1).exit_code == 2
    assert invoke(path, "--fail-on-skew", "high").exit_code == 2
    r = invoke(path, "--load", "rate")  # no timestamps in this sample
    assert r.exit_code == 2 and "needs a rate" in r.output


def test_help_documents_exit_codes():
    r = invoke("--help")
    assert r.exit_code == 0
    for code in ("0", "2", "3", "5"):
        assert f"  {code}  " in r.output
    assert "clamp_min" in r.output


def test_capped_sample_reports_rates(tmp_path):
    from .test_analysis import capped_sample

    path = capped_sample().write(tmp_path / "capped.parquet")
    r = invoke(path)
    assert r.exit_code == 0
    header = next(line for line in r.output.splitlines() if line.startswith("partition "))
    assert "load = real rate" in r.output and "rate/s" in header and "95% CI" in header
    assert max(len(line) for line in r.output.splitlines()) <= 100
    doc = json.loads(invoke(path, "--format", "json").output)
    validate(doc)
    assert doc["load_basis"] == "rate" and doc["skew"]["hottest_partition"] == 0
    flat = json.loads(invoke(path, "--format", "json", "--load", "sample").output)
    assert flat["load_basis"] == "sample" and flat["skew"]["ratio"] == pytest.approx(1.0)


def test_mixed_verdict_is_told_in_words():
    from pathlib import Path

    mixed = Path(__file__).resolve().parent.parent / "samples" / "orders-mixed-partitioners.parquet"
    r = CliRunner().invoke(cli, ["analyze", str(mixed)], catch_exceptions=False)
    assert r.exit_code == 0
    line = " ".join(r.output.split("mixed, likelier:")[1].split())
    assert line.startswith("two producers with different partitioners (murmur2 and consistent)")
    assert "a switch from murmur2 to consistent" in line
