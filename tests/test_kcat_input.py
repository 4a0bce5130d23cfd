"""`--stdin-format kcat`: kcat's `-f '%K:%k\\n'` records, null keys kept apart, any byte in a key."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from keyscope.errors import InputError
from keyscope.model.keys import keys_from_kcat
from keyscope.partitioners import partition_for


def kcat_records(keys) -> bytes:
    """What kcat prints with -f '%K:%k\\n' (a null key: length -1, no key bytes)."""
    return b"".join(b"-1:\n" if k is None else b"%d:%s\n" % (len(k), k) for k in keys)


def test_records_are_read_exactly():
    keys = [b"abc", None, b"", b"a\nb:c", b"\x00\xff\n", b"12:not-a-length", None]
    assert keys_from_kcat(kcat_records(keys)).to_list() == keys
    assert keys_from_kcat(b"").to_list() == []


@pytest.mark.parametrize(
    "data,needle",
    [(b"x:abc\n", "not kcat"), (b"9:abc\n", "cut short"), (b"3:abcd\n", "no newline"), (b"-2:\n", "not kcat")],
)
def test_bad_records_are_one_clear_error(data, needle):
    with pytest.raises(InputError, match=needle):
        keys_from_kcat(data)


def run(*args, stdin=b""):
    return subprocess.run([sys.executable, "-m", "keyscope", *args], input=stdin, capture_output=True, timeout=120)


def test_summary_counts_null_keys_as_unhashed_not_as_the_empty_key():
    keys = [f"k{i}".encode() for i in range(300)] + [None] * 40 + [b""] * 5
    r = run("partition", "-p", "4", "--summary", "--stdin-format", "kcat", "--partitioner", "java", "--format", "json",
            stdin=kcat_records(keys))  # fmt: skip
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)["by_partitioner"]["murmur2"]
    expected = [0] * 4
    for k in keys:
        if k is not None:
            expected[partition_for(k, 4)] += 1
    assert got == {"records_per_partition": expected, "unhashed": 40}


def test_bad_kcat_input_exits_3_with_one_line():
    r = run("partition", "-p", "4", "--stdin-format", "kcat", stdin=b"5:ab\n")
    assert r.returncode == 3
    err = r.stderr.decode()
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
