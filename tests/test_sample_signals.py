"""Nothing lost: two samplers racing for one file, a second Ctrl-C, SIGTERM (as `timeout` sends).

Real processes, a real Apache Kafka broker, a pseudo-terminal where the user's terminal would be.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest
from confluent_kafka import Producer

from keyscope.sample import OutputTaken, Sample, read_sample

from .conftest import create_topic
from .ptys import drain, open_pty, read_until

RECORDS = 400_000


def _fill(bootstrap, topic, n, partitions=4, pad=150):
    create_topic(bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"})
    value = b'{"tenant":"t1","pad":"%s"}' % (b"x" * pad)
    for i in range(n):
        while True:
            try:
                p.produce(topic, key=b"user-%d" % (i % 101), value=value)
                break
            except BufferError:  # the local queue is full: let the broker catch up
                p.poll(0.1)
    assert p.flush(60) == 0


@pytest.fixture(scope="module")
def big_topic(broker):
    name = f"signals-{os.getpid()}"
    _fill(broker.bootstrap_server, name, RECORDS)
    return name


def _sampler_on_pty(bootstrap, topic, out):
    master, slave = open_pty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyscope", "sample", "-b", bootstrap, "-t", topic, "-o", str(out),
         "--from", "earliest", "--max-records", str(RECORDS)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    os.close(slave)
    return proc, master


@pytest.mark.parametrize("signals, reason", [
    ((signal.SIGINT, signal.SIGINT), b"interrupted (Ctrl-C)"),  # an impatient second Ctrl-C
    ((signal.SIGTERM,), b"terminated (SIGTERM)"),  # `timeout 30 keyscope sample ...`
    ((signal.SIGTERM, signal.SIGTERM), b"terminated (SIGTERM)"),
    ((signal.SIGINT, signal.SIGTERM), b"interrupted (Ctrl-C)"),
])
def test_signals_keep_what_was_read_and_exit_6(broker, big_topic, tmp_path, signals, reason):
    out = tmp_path / "partial.parquet"
    proc, master = _sampler_on_pty(broker.bootstrap_server, big_topic, out)
    try:
        seen = read_until(master, b"sampling " + big_topic.encode())
        assert b"sampling " in seen, seen
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.05)  # well within the ~0.3 s in which a second Ctrl-C used to lose the sample
            proc.send_signal(sig)
        stdout, _ = proc.communicate(timeout=120)
        seen = drain(master, seen)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert proc.returncode == 6, (proc.returncode, seen[-2000:])
    assert b"Traceback" not in seen
    assert b"keyscope: error: sample is partial (" + reason + b")" in seen, seen[-1000:]
    s = read_sample(out)
    assert s.meta.partial and 0 < len(s) < RECORDS
    assert s.meta.partial_reason == reason.decode()
    assert b"PARTIAL" in stdout
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def _write_race(args):
    path, i = args
    s = Sample.from_frame(pl.DataFrame({"partition": [0] * (i + 1), "key": [b"w%d" % i] * (i + 1)}), topic="race")
    try:
        s.write(path, overwrite=False)
        return ("won", i, None)
    except OutputTaken as e:
        return ("kept", i, str(e.kept))


def test_racing_writers_one_wins_the_others_keep_their_samples(tmp_path):
    path = str(tmp_path / "same.parquet")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_write_race, [(path, i) for i in range(8)])
    winners = [r for r in results if r[0] == "won"]
    assert len(winners) == 1
    s = read_sample(path)
    assert len(s) == winners[0][1] + 1  # the winner's file, whole
    for _, i, kept in (r for r in results if r[0] == "kept"):
        assert len(read_sample(kept)) == i + 1
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    # --force: an atomic replace, last writer wins, the file is always whole
    Sample.from_frame(pl.DataFrame({"partition": [1], "key": [b"x"]}), topic="race").write(path, overwrite=True)
    assert len(read_sample(path)) == 1


def test_two_sample_runs_for_one_file_one_wins(broker, topic_name, tmp_path):
    create_topic(broker.bootstrap_server, topic_name, 3)
    p = Producer({"bootstrap.servers": broker.bootstrap_server})
    for i in range(3000):
        p.produce(topic_name, key=b"k%d" % (i % 50), value=b"{}")
    assert p.flush(30) == 0
    out = tmp_path / "shared.parquet"
    cmd = [sys.executable, "-m", "keyscope", "sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out),
           "--from", "earliest", "-q", "--format", "json"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stdout.read().decode(), p.stderr.read().decode()) for p in procs]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[0] == 2)
    assert "Traceback" not in loser[2] and len(loser[2].strip().splitlines()) == 1
    assert "exists" in loser[2] or "created by another process" in loser[2]
    assert len(read_sample(out)) == 3000
    if "kept in" in loser[2]:
        kept = loser[2].strip().rsplit("kept in ", 1)[1]
        assert len(read_sample(kept)) == 3000
    winner = json.loads(next(r for r in results if r[0] == 0)[1])
    assert winner["output"] == str(out)
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
