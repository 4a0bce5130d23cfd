"""One display rule for every key and name, in every format (keyscope.model.keys).

A key with a terminal control or an invisible format character (C0, DEL, C1 such as
U+009B CSI, U+009D OSC, U+0085 NEL, bidi overrides) is shown as hex and labelled so;
a name (topic, from a file or a broker) keeps its text with those characters escaped;
JSON carries the same values with the characters as \\u escapes.  Nothing that reaches
a terminal can drive it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import polars as pl
import pytest

from keyscope.model import keys
from keyscope.report import format as render
from keyscope.sample import PartitionInfo, Sample

HOSTILE_KEYS = [
    "csi\u009b31m", "osc\u009d0;title\u0007", "nel\u0085line", "esc\x1b[2J", "bel\x07", "del\x7f",
    "bidi\u202eevil", "zero\u200bwidth", "bom\ufeff", "line\u2028sep",
]
PLAIN_KEYS = ["user-1", "élan", "日本", "emoji-🔥", "a b", "tab-free", ""]
# what a terminal could act on, or what hides/reorders text (newline allowed: it is the layout)
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


def test_one_rule_polars_and_python_agree():
    raw = [k.encode() for k in HOSTILE_KEYS + PLAIN_KEYS] + [b"\xff\xfe", None]
    shown, enc = keys.key_display(pl.Series(raw, dtype=pl.Binary))
    one = [keys.key_display_one(k) for k in raw]
    assert list(zip(shown.to_list(), enc.to_list())) == one
    assert all(e == "hex" for _, e in one[: len(HOSTILE_KEYS)])
    assert all(e == "utf8" for _, e in one[len(HOSTILE_KEYS): len(HOSTILE_KEYS) + len(PLAIN_KEYS)])
    # the renderers use the rule from keyscope.model.keys, not one of their own
    assert render.key_display is keys.key_display and render.key_display_one is keys.key_display_one


def test_names_are_escaped_and_json_keeps_the_value():
    name = "orders\x1b]0;pwned\x07\u009b2J"
    assert keys.display_name(name) == "orders\\x1b]0;pwned\\x07\\x9b2J"
    text = render.to_json({"topic": name})
    assert not RAW.search(text) and json.loads(text)["topic"] == name


def ks(*args):
    return subprocess.run([sys.executable, "-m", "keyscope", *args], capture_output=True, timeout=180)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("display")
    rows = []
    for i, k in enumerate(HOSTILE_KEYS):
        rows += [(i % 3, k.encode())] * (40 - i)  # every hostile key is a hot key
    for i in range(300):
        rows.append((i % 3, f"user-{i % 30}".encode()))
    df = pl.DataFrame({"partition": [r[0] for r in rows], "key": pl.Series([r[1] for r in rows], dtype=pl.Binary),
                       "tenant": [f"t\u009b{i % 5}" for i in range(len(rows))]})
    s = Sample.from_frame(df, topic="orders\x1b]0;pwned\x07\u009b2J", partition_count=3)
    counts = df.group_by("partition").len().sort("partition")["len"].to_list()
    s.meta.partitions = {p: PartitionInfo(p, low=0, high=c, first=0, last=c - 1, records=c) for p, c in enumerate(counts)}
    s.write(d / "hostile.parquet")
    csv = d / "two-topics.csv"
    csv.write_text("topic,partition,key\nok,0,a\nevil\x1b[31m\x07,1,b\n")
    return d / "hostile.parquet", csv


RUNS = [(["info"], "table"), (["info"], "json"), (["analyze", "--top", "20"], "table"),
        (["analyze", "--top", "20"], "markdown"), (["analyze", "--top", "20"], "json"),
        (["whatif", "-p", "6", "--salt-hot", "3"], "table"), (["whatif", "-p", "6", "--salt-hot", "3"], "json"),
        (["recommend", "--keep-order-by", "none"], "markdown"), (["recommend", "--keep-order-by", "none"], "json")]


@pytest.mark.parametrize("command, fmt", RUNS, ids=[f"{c[0]}-{f}" for c, f in RUNS])
def test_no_raw_control_characters_in_any_format(hostile, command, fmt):
    path, _ = hostile
    r = ks(command[0], str(path), *command[1:], "--format", fmt)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode("utf-8")
    assert not RAW.search(out), RAW.search(out)
    if fmt == "json":
        doc = json.loads(out)
        for k in doc.get("hot_keys", []):
            if any(h.encode().hex() == k["key"] for h in HOSTILE_KEYS):
                assert k["key_encoding"] == "hex"
        if command[0] == "analyze":
            shown = {(k["key"], k["key_encoding"]) for k in doc["hot_keys"]}
            assert ("csi\u009b31m".encode().hex(), "hex") in shown and ("nel\u0085line".encode().hex(), "hex") in shown
    elif command[0] in ("info", "analyze"):
        assert "orders\\x1b]0;pwned\\x07\\x9b2J" in out  # the name, escaped, never raw


def test_names_in_error_messages_are_escaped(hostile):
    _, csv = hostile
    r = ks("analyze", str(csv))
    err = r.stderr.decode()
    assert r.returncode == 3 and "2 topics" in err and "evil\\x1b[31m\\x07" in err
    assert not RAW.search(err)


def test_recommend_names_a_1_mib_key_by_its_size(tmp_path):
    big = b"K" * (1 << 20)
    rows = [big] * 400 + [b"k%d" % (i % 40) for i in range(400)]
    df = pl.DataFrame({"partition": [0] * 400 + [i % 3 for i in range(400)], "key": pl.Series(rows, dtype=pl.Binary)})
    s = Sample.from_frame(df, topic="big", partition_count=3)
    path = tmp_path / "big.parquet"
    s.write(path)
    r = ks("recommend", str(path), "--keep-order-by", "none")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert max(len(line) for line in out.splitlines()) < 400, max(len(line) for line in out.splitlines())
    assert "1.0 MiB key" in out and "too long to paste (1.0 MiB)" in out
