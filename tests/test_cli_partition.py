"""`keyscope partition` as a user runs it: a real subprocess, real stdin."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keyscope.partitioners import murmur2, partition_for


def run(*args, stdin: bytes | None = None):
    return subprocess.run(
        [sys.executable, "-m", "keyscope", *args], input=stdin, capture_output=True, timeout=120
    )


def test_json_output_for_keys():
    r = run("partition", "abc", "foobar", "-p", "6", "--partitioner", "java", "--format", "json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [row["key"] for row in rows] == ["abc", "foobar"]
    assert rows[0] == {
        "key": "abc",
        "key_encoding": "utf8",
        "partitioner": "murmur2",
        "hash": murmur2(b"abc") & 0x7FFFFFFF,
        "partition": (murmur2(b"abc") & 0x7FFFFFFF) % 6,
    }


def test_all_partitioners_table_explains_the_rule():
    r = run("partition", "order-42", "-p", "3")
    assert r.returncode == 0
    out = r.stdout.decode()
    for name in ("murmur2", "consistent", "fnv1a"):
        assert name in out
    assert "crc32(key) % 3" in out
    line = next(l for l in out.splitlines() if " consistent " in l)
    assert line.split()[3] == str(partition_for(b"order-42", 3, "consistent"))


def test_hex_and_base64_keys():
    hexed = run("partition", "00ff10", "-p", "5", "--key-encoding", "hex", "--partitioner", "fnv1a", "--format", "json")
    b64 = run("partition", "AP8Q", "-p", "5", "--key-encoding", "base64", "--partitioner", "fnv1a", "--format", "json")
    a, b = json.loads(hexed.stdout)[0], json.loads(b64.stdout)[0]
    assert a == b
    assert a["key_encoding"] == "hex" and a["key"] == "00ff10"
    assert a["partition"] == partition_for(b"\x00\xff\x10", 5, "fnv1a")


def test_stdin_bulk_matches_single_key_rule():
    keys = [f"user-{i}" for i in range(5000)]
    r = run("partition", "-p", "7", "--partitioner", "murmur2", "--format", "json", stdin="\n".join(keys).encode())
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == 5000
    assert [row["partition"] for row in rows] == [partition_for(k.encode(), 7) for k in keys]


def test_stdin_summary_counts_every_key():
    keys = b"".join(f"k{i % 50}\n".encode() for i in range(10000)) + b"\n"  # one empty key
    r = run("partition", "-p", "3", "--summary", "--format", "json", stdin=keys)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)["by_partitioner"]
    assert sum(summary["murmur2"]["records_per_partition"]) == 10001
    assert summary["consistent"]["unhashed"] == 1  # librdkafka: empty key is random
    expected = [0, 0, 0]
    for i in range(10000):
        expected[partition_for(f"k{i % 50}".encode(), 3)] += 1
    expected[partition_for(b"", 3)] += 1
    assert summary["murmur2"]["records_per_partition"] == expected


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["partition", "a", "-p", "0"], 2, "positive integer"),
        (["partition", "a", "-p", "-3"], 2, "positive integer"),
        (["partition", "a", "-p", "3", "--partitioner", "rendezvous"], 2, "unknown partitioner"),
        (["partition", "zz", "-p", "3", "--key-encoding", "hex"], 3, "not valid hex"),
        (["partition", "@@@", "-p", "3", "--key-encoding", "base64"], 3, "not valid base64"),
    ],
)
def test_bad_input_one_line_error_no_traceback(args, code, needle):
    r = run(*args)
    assert r.returncode == code
    err = r.stderr.decode()
    assert needle in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_version_and_help():
    assert run("--version").stdout.decode().startswith("keyscope, version")
    helptext = run("partition", "--help").stdout.decode()
    for alias in ("java", "sarama", "librdkafka", "confluent"):
        assert alias in helptext


@pytest.mark.parametrize("stdin", [None, b"a\n\nb\n"])
def test_empty_key_note_fits_100_columns(stdin):
    """The 'random' note under the table (arguments and stdin paths) wraps like the rest: <= 100 columns."""
    args = ("partition", "-p", "3") if stdin else ("partition", "", "order-42", "-p", "3")
    r = run(*args, stdin=stdin)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "'random': null keys" in out and "sticky or at random" in out
    assert max(len(line) for line in out.splitlines()) <= 100
