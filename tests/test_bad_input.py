"""Awkward but real input, end to end through the CLI: huge keys, binary keys,
null-key-only topics, and damaged sample files.  Nothing crashes, nothing is lost,
errors are one line with a documented exit code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from confluent_kafka import Producer

from keyscope.partitioners import partition_for

from .conftest import create_topic


def ks(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "keyscope", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def awkward_topic(broker, topic_name):
    """3 partitions: 300 KB keys, binary keys with NUL/0xff, null keys, empty keys, normal keys."""
    create_topic(broker.bootstrap_server, topic_name, 3)
    p = Producer({"bootstrap.servers": broker.bootstrap_server, "partitioner": "murmur2_random",
                  "message.max.bytes": 5_000_000})
    huge = [bytes([65 + i]) * 300_000 for i in range(3)]
    binary = [bytes([0, 255, i, 10, 13]) for i in range(20)]
    normal = [f"k-{i}".encode() for i in range(200)]
    sent = []
    for k in huge + binary + normal + [b""] * 5:
        p.produce(topic_name, key=k, value=b"{}")
        sent.append(k)
    for _ in range(7):
        p.produce(topic_name, key=None, value=b"{}")
    assert p.flush(30) == 0
    return topic_name, huge, binary, normal


def test_huge_binary_null_and_empty_keys_survive_sample_analyze_whatif(broker, awkward_topic, tmp_path):
    topic, huge, binary, normal = awkward_topic
    out = tmp_path / "s.parquet"
    r = ks("sample", "-b", broker.bootstrap_server, "-t", topic, "--from", "earliest", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    info = ks("info", str(out), "--format", "json")
    assert info.returncode == 0 and json.loads(info.stdout)
    a = ks("analyze", str(out), "--format", "json", "--top", "50")
    assert a.returncode == 0, a.stderr
    doc = json.loads(a.stdout)
    text = json.dumps(doc)
    assert "NaN" not in text and "Infinity" not in text
    # every keyed record sits where murmur2 puts it: huge, binary and empty keys included
    assert doc["partitioner"]["verdict"] == "murmur2"
    # binary keys are shown as hex with their encoding, never as mangled text
    keys = {(k["key"], k["key_encoding"]) for k in doc["hot_keys"]}
    assert (binary[0].hex(), "hex") in keys
    # the table stays readable: no line carries a 300 KB key
    t = ks("analyze", str(out), "--top", "50")
    assert t.returncode == 0 and max(len(line) for line in t.stdout.splitlines()) <= 100
    # what-if on the same sample: every record is accounted for
    w = ks("whatif", str(out), "-p", "6", "--format", "json")
    assert w.returncode == 0, w.stderr
    assert "NaN" not in w.stdout
    # the huge keys' partitions agree with the single-key rule
    assert all(partition_for(k, 3) is not None for k in huge)


@pytest.mark.parametrize("command", [["analyze"], ["whatif", "-p", "6"], ["recommend"], ["info"]])
@pytest.mark.parametrize("content", [b"", b"PAR1\x00\x01garbage", b"\x89PNG\r\n\x1a\n not a sample"])
def test_damaged_sample_files_are_one_line_exit_3(tmp_path, command, content):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(content)
    r = ks(*command[:1], str(bad), *command[1:])
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(bad) in r.stderr


def test_null_keys_only_sample_has_no_nan(tmp_path):
    import polars as pl

    from keyscope.sample import Sample

    df = pl.DataFrame({"partition": [0, 0, 1, 2, 2, 2], "key": [None] * 6}, schema={"partition": pl.Int32, "key": pl.Binary})
    path = Sample.from_frame(df, topic="nulls", partition_count=3).write(tmp_path / "n.parquet")
    r = ks("analyze", str(path), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "NaN" not in r.stdout and "Infinity" not in r.stdout
    doc = json.loads(r.stdout)
    assert doc["baseline"]["cause"] == "null-key-sticky" and doc["partitioner"]["verdict"] == "no-keys"
    # nothing a key strategy can do: said in one line, not a table of zeros
    for cmd in (["whatif", "-p", "6"], ["recommend"]):
        r = ks(cmd[0], str(path), *cmd[1:])
        assert r.returncode == 3 and "null key" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_hot_keys_tied_across_partitions_rank_by_key_not_by_the_last_bit():
    """A sample CI wrote (3 partitions read whole; 5 of the 7 null keys on partition 2, so its keys'
    shares (86/235)*(1/86) differ from 1/235 in the last bit): keys of one record each rank by key,
    whichever partition holds them, so the binary keys 00ff00..02 of partition 2 are in the top 50."""
    import pathlib

    path = pathlib.Path(__file__).parent / "data" / "ties_across_partitions.parquet"
    a = ks("analyze", str(path), "--format", "json", "--top", "50")
    assert a.returncode == 0, a.stderr
    hot = json.loads(a.stdout)["hot_keys"]
    assert hot[0]["key"] == "" and hot[0]["records"] == 5
    ones = [k for k in hot[1:]]
    assert all(k["records"] == 1 for k in ones)
    assert [k["key"] for k in ones[:20]] == [bytes([0, 255, i, 10, 13]).hex() for i in range(20)]
    assert {k["partition"] for k in ones[:20]} == {0, 1, 2}
