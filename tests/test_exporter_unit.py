"""keyscope.exporter without a broker: bounded memory over many buckets of distinct keys, window expiry,
option parsing and the CLI's one-line errors."""

from __future__ import annotations

import socket
import subprocess
import sys

import pyarrow as pa
import pytest

from keyscope.errors import UsageError
from keyscope.exporter import BUCKETS, Exporter, ExporterSpec, _PartState, _TopicState, key_label, parse_duration, parse_listen


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def chunk(keys: list[bytes]):
    return pa.table({"key": pa.array(keys, pa.binary()), "key_size": pa.array([len(k) for k in keys], pa.int32()),
                     "value_size": pa.array([1] * len(keys), pa.int32())})


def exporter(clock, capacity=32):
    e = Exporter(None, ExporterSpec(topics=("t",), window_s=10.0, top_k=5, capacity=capacity), clock=clock)
    e.topics["t"] = _TopicState("t", {0: _PartState(0), 1: _PartState(0)}, (2, 4))
    return e


def test_memory_bounded_over_a_million_distinct_keys():
    clock = Clock()
    e = exporter(clock)
    n = 0
    for step in range(50):  # 5 window lengths, 20k distinct keys a step: 1M distinct keys in all
        clock.t += 1.0
        for p in (0, 1):
            keys = [f"user-{n + i}".encode() for i in range(10_000)] + [b"hot"] * 2_000
            n += 10_000
            e.observe("t", p, chunk(keys))
        held = sum(b.sketch.memory_items() for ps in e.topics["t"].partitions.values() for b in ps.buckets.values())
        assert held <= 2 * BUCKETS * (32 + 4 * 32 + 17)
        assert all(len(ps.buckets) <= BUCKETS for ps in e.topics["t"].partitions.values())
    assert n == 1_000_000
    snap = e.snapshot()["t"]
    assert snap["top"][0][0] == b"hot"
    # the window holds the last 10 buckets: 10 x 2 x 12,000 records, hot 1/6 of them
    assert snap["merged"].total == 10 * 2 * 12_000
    assert abs(snap["top"][0][1] - 1 / 6) <= snap["share_error"]
    assert len(snap["top"]) == 5 and snap["truncated"] > 0


def test_window_expires():
    clock = Clock()
    e = exporter(clock)
    e.observe("t", 0, chunk([b"a"] * 10))
    assert e.snapshot()["t"]["partitions"][0]["window_records"] == 10
    clock.t += 10.0  # a full window later: out of it, still in the counter
    d = e.snapshot()["t"]
    assert d["partitions"][0]["window_records"] == 0 and d["partitions"][0]["records_total"] == 10
    assert d["top"] == [] and d["skew"] == 0.0


def test_key_labels():
    assert key_label(b"stark-industries", False) == "stark-industries"
    assert key_label(b"\x00\xff", False) == "0x00ff"
    assert key_label(b"x" * 500, False).endswith("…") and len(key_label(b"x" * 500, False)) == 120
    h = key_label(b"stark-industries", True)
    assert h.startswith("sha256:") and len(h) == 23 and h == key_label(b"stark-industries", True)


def test_parsing():
    assert parse_listen("127.0.0.1:9309") == ("127.0.0.1", 9309)
    assert parse_listen("[::1]:80") == ("::1", 80)
    assert parse_duration("5m") == 300 and parse_duration("10s") == 10 and parse_duration("250ms") == 0.25
    for bad in ("0s", "x", "-1m", "inf", "nan"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    with pytest.raises(UsageError):
        parse_listen("9309")


def run(*args):
    return subprocess.run([sys.executable, "-m", "keyscope", "exporter", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args,needle", [
    (["-b", "127.0.0.1:1", "-t", "x", "--window", "0"], "--window"),
    (["-b", "127.0.0.1:1", "-t", "x", "--listen", "nope"], "--listen"),
    (["-b", "127.0.0.1:1"], "--topic"),
    (["-b", "127.0.0.1:1", "-t", "x", "--top-k", "1000"], "--top-k"),
    (["-b", "127.0.0.1:1", "-t", "x", "--predict-partitions", "a,b"], "--predict-partitions"),
    (["-b", "127.0.0.1:1", "-t", "x", "--timeout", "0"], "--timeout"),
    (["-b", "127.0.0.1:1", "-t", "x", "--timeout", "nan"], "--timeout"),
])
def test_bad_options_one_line_exit_2(args, needle):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unreachable_broker_within_timeout_exit_4():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        r = run("-b", f"127.0.0.1:{s.getsockname()[1]}", "-t", "x", "--timeout", "1", "--listen", "127.0.0.1:0")
    assert r.returncode == 4, r.stderr
    assert "within 1s" in r.stderr and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_listen_address_in_use_exit_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        r = run("-b", "127.0.0.1:1", "-t", "x", "--listen", f"127.0.0.1:{s.getsockname()[1]}")
    assert r.returncode == 2 and "--listen" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_print_rules_needs_no_broker():
    import yaml

    r = run("--print-rules")
    assert r.returncode == 0
    doc = yaml.safe_load(r.stdout)
    names = [rule["alert"] for g in doc["groups"] for rule in g["rules"]]
    assert names == ["KeyscopeHotKey", "KeyscopeExporterDown"]


def test_published_shares_match_brute_force_of_the_window():
    """Zipf keys over 2 partitions and 25 buckets (the window turns over 2.5 times), 16 counters per bucket so the
    bound is > 0: every published topic and partition share is within its bound of an exact count of the records
    in the window's live buckets, and the true top key is published."""
    import numpy as np

    from collections import Counter

    clock = Clock()
    e = exporter(clock, capacity=16)
    rng = np.random.default_rng(16)
    log = []  # (bucket index, partition, key)
    for step in range(25):
        clock.t += 1.0  # one bucket a step (window 10 s, 10 buckets)
        for p in (0, 1):
            keys = [b"k%d" % (r % 5000 + 1000 * p) for r in rng.zipf(1.3, 3000).tolist()]
            e.observe("t", p, chunk(keys))
            log += [(int(clock.t // 1.0), p, k) for k in keys]
    now = int(clock.t // 1.0)
    live = [(p, k) for i, p, k in log if now - BUCKETS < i <= now]
    topic_true = Counter(k for _, k in live)
    part_true = {p: Counter(k for q, k in live if q == p) for p in (0, 1)}
    d = e.snapshot()["t"]
    total = len(live)
    assert d["merged"].total == total and d["merged"].bound > 0
    assert d["top"][0][0] == topic_true.most_common(1)[0][0]
    for k, share in d["top"]:
        assert abs(share - topic_true[k] / total) <= d["share_error"] + 1e-12, k
    assert len(d["partition_top"]) == 5
    for p, k, share in d["partition_top"]:
        w = d["partitions"][p]["window_records"]
        assert w == sum(part_true[p].values())
        bound = d["partitions"][p]["merged"].bound
        assert abs(share - part_true[p][k] / w) <= bound / w + 1e-12, (p, k)


def test_memory_flat_from_n_to_2n_distinct_keys():
    """Everything the exporter allocates from Python (buckets, sketches, heaps, predictions), traced: once the
    window is full, twice as many distinct keys must not grow it (a dict of every key seen would add tens of MB)."""
    import gc
    import tracemalloc

    clock = Clock()
    e = exporter(clock, capacity=64)
    n = 0

    def feed(steps):
        nonlocal n
        for _ in range(steps):
            clock.t += 1.0
            for p in (0, 1):
                e.observe("t", p, chunk([b"user-%d" % (n + i) for i in range(5_000)] + [b"hot"] * 500))
                n += 5_000

    feed(BUCKETS)  # fill the window first: steady state from here on
    tracemalloc.start()
    try:
        feed(10)
        gc.collect()
        at_n, keys_n = tracemalloc.get_traced_memory()[0], n
        feed(20)
        gc.collect()
        at_2n = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert n - keys_n >= 200_000  # 200k more distinct keys between the readings (a set of them: ~20 MB)
    assert at_2n - at_n < 512 * 1024, (at_n, at_2n)
    assert e.snapshot()["t"]["top"][0][0] == b"hot"


def test_promtool_checks_the_printed_rules(tmp_path):
    import shutil

    from .conftest import missing_peer

    promtool = shutil.which("promtool")
    if promtool is None:
        missing_peer("promtool not installed (Debian: apt-get install prometheus)")
    r = run("--print-rules")
    (tmp_path / "rules.yml").write_text(r.stdout)
    chk = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True, timeout=60)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    assert "SUCCESS: 2 rules found" in chk.stdout, chk.stdout
