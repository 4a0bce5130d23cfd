"""``keyscope scan --spark``: a PySpark job over Spark's own Kafka source, on real Kafka, gives the same profile.

One Spark session for the module (``local[2]``, Spark's Kafka connector from
Maven Central through tests/peers/spark-kafka/fetch.sh).  The topic holds a
Zipf tail of keys, null and empty keys, JSON values (one not UTF-8), a
header field (sometimes twice: the last wins; once not UTF-8), and an
aborted transaction that ``read_committed`` leaves out, so Spark's reader
meets transaction markers (offset gaps) too.  The profile from Spark must
equal the one from ``--workers 1``: every exact counter, agreement count and
per-partition figure; the sketches within their bounds.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from keyscope.kafka.connection import resolve
from keyscope.sampling import parse_field
from keyscope.scan import ScanRequest, read_profile, run_scan

from .conftest import create_topic
from .test_scan_cli import _valid

RECORDS = 40_000
ABORTED = 500
FETCH = Path(__file__).parent / "peers" / "spark-kafka" / "fetch.sh"
FIELDS = (parse_field("tenant=$.tenant"), parse_field("region=header:region"))
REQ = dict(partitions_max=64, key_by=((), ("tenant",), ("region",)), fields=FIELDS)


@pytest.fixture(scope="module")
def spark():
    """One local[2] session for the module (starting one costs 20-40 s here)."""
    from keyscope.scan.spark import _session

    r = subprocess.run(["bash", str(FETCH), sys.executable], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    os.environ["KEYSCOPE_SPARK_JARS"] = r.stdout.strip()
    s = _session("local[2]", "tests")
    yield s
    s.stop()


def _records():
    rng = np.random.default_rng(11)
    tail = rng.zipf(1.2, RECORDS) % 5_000
    out = []
    for i in range(RECORDS):
        k = rng.random()
        key = None if k < 0.01 else b"" if k < 0.015 else b"hot" if k < 0.08 else b"user-%05d" % tail[i]
        value = json.dumps({"tenant": f"t{i % 37}", "pad": "x" * int(tail[i] % 50)}).encode()
        if i == 123:
            value = b"\xff\xfe not utf-8"
        headers = [("region", f"r{i % 5}".encode())]
        if i % 11 == 0:
            headers.append(("region", b"second"))  # the last of a name wins
        if i == 77:
            headers = [("region", b"\xc3\x28")]  # not UTF-8: a null field
        out.append((key, value, headers))
    return out


@pytest.fixture(scope="module")
def topic(kafka):
    from confluent_kafka import Producer

    name = f"scanspark-{uuid.uuid4().hex[:8]}"
    create_topic(kafka.bootstrap_server, name, 3)
    recs = _records()
    p = Producer({"bootstrap.servers": kafka.bootstrap_server, "partitioner": "murmur2_random", "linger.ms": 50,
                  "compression.type": "lz4"})
    for i, (k, v, h) in enumerate(recs):
        while True:
            try:
                p.produce(name, key=k, value=v, headers=h)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(60) == 0
    tx = Producer({"bootstrap.servers": kafka.bootstrap_server, "transactional.id": f"tx-{name}", "linger.ms": 5})
    tx.init_transactions(30)
    tx.begin_transaction()
    for i in range(ABORTED):
        tx.produce(name, key=b"aborted-%d" % i, value=b"{}")
    tx.flush(30)
    tx.abort_transaction(30)
    tx.begin_transaction()
    tx.produce(name, key=b"committed", value=b"{}", partition=0)
    tx.commit_transaction(30)
    conn = resolve(kafka.bootstrap_server)
    base = run_scan(conn, ScanRequest(name, workers=1, **REQ))
    return {"name": name, "conn": conn, "base": base, "bootstrap": kafka.bootstrap_server}


def _exact(profile) -> dict:
    """Every exact part of a profile: sketch bytes, notes and the task split (engine-specific) left out."""
    d = profile.to_dict()
    for e in d["expressions"].values():
        e.pop("frequent")
        e.pop("distinct")
        e.pop("tracked", None)  # which keys a task tracks, and from when, depends on the split: checked apart
    for k in ("sizes", "notes", "tasks"):
        d.pop(k)
    return d


def _groups(admin) -> set:
    return {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}


def test_spark_gives_the_profile_of_workers_1(spark, topic):
    from keyscope.scan.spark import run_spark

    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": topic["bootstrap"]})
    before = (set(admin.list_topics(timeout=30).topics), _groups(admin))
    base = topic["base"].profile
    r = run_spark(topic["conn"], ScanRequest(topic["name"], tasks=7, **REQ), spark)
    assert (set(admin.list_topics(timeout=30).topics), _groups(admin)) == before  # read-only: no topic, no group
    p = r.profile
    assert r.engine == "spark" and p.complete
    assert p.tasks_planned >= 7  # minPartitions: the 3 partitions split into more Spark tasks
    assert base.records == RECORDS + 1  # the aborted transaction is left out, the committed record kept
    assert _exact(p) == _exact(base)
    assert p.expressions["key+region"].records == RECORDS + 1
    # sketches: the same keys, split differently, so within each sketch's bound rather than byte for byte
    for name, e in base.expressions.items():
        fa, fb = base.frequent_sketch(name), p.frequent_sketch(name)
        assert fa.total_weight == fb.total_weight
        bound = fa.epsilon * fa.total_weight + fb.epsilon * fb.total_weight
        import datasketches as ds

        tops = {i[0] for s in (fa, fb) for i in s.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)}
        if name == "key":
            assert "hot" in tops
        for k in tops:
            assert abs(fa.get_estimate(k) - fb.get_estimate(k)) <= bound, (name, k)
        ha, hb = base.distinct_sketch(name), p.distinct_sketch(name)
        assert hb.get_lower_bound(2) <= ha.get_estimate() <= hb.get_upper_bound(2), name
    # per-field distributions: the hot key is tracked by both, never with more records than it has
    hot_high = base.frequent_sketch("key").get_upper_bound("hot")
    for prof in (base, p):
        t = prof.expressions["key"].tracked[b"hot"]
        assert 0 < t.records <= hot_high
        for f, (vals, other) in t.fields.items():
            assert sum(vals.values()) + other == t.records, f
    ka, kb = base.sizes_sketch(), p.sizes_sketch()
    assert (ka.n, ka.get_min_value(), ka.get_max_value()) == (kb.n, kb.get_min_value(), kb.get_max_value())
    eps = ka.normalized_rank_error(False) + kb.normalized_rank_error(False)
    for q in (0.5, 0.9, 0.99):  # sizes repeat: q must fall in the rank interval of Spark's quantile, give or take eps
        v = kb.get_quantile(q)
        assert ka.get_rank(v, inclusive=False) - eps <= q <= ka.get_rank(v, inclusive=True) + eps, q


def test_a_sub_range_and_the_header_field(spark, topic):
    """--from/--to as offsets: the range Spark reads is the profile's, and the header field's last value wins."""
    from keyscope.scan import parse_bound
    from keyscope.scan.spark import run_spark

    req = dict(REQ, start=parse_bound("1000", "--from", "earliest"), stop=parse_bound("9000", "--to", "latest"))
    local = run_scan(topic["conn"], ScanRequest(topic["name"], workers=1, **req)).profile
    viaspark = run_spark(topic["conn"], ScanRequest(topic["name"], **req), spark).profile
    assert local.records == 3 * 8000
    assert _exact(viaspark) == _exact(local)
    fs = viaspark.frequent_sketch("key+region")
    assert fs.get_estimate("hot|second") > 0 and fs.get_estimate("hot|r0") > 0


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "keyscope", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env or os.environ)


def test_cli_scan_spark_writes_the_same_profile(spark, topic, tmp_path):
    """In-process (the module's session is this process's active one: used, and left running)."""
    from click.testing import CliRunner

    from keyscope.cli import cli

    out = tmp_path / "p.json"
    r = CliRunner().invoke(cli, ["scan", "-b", topic["bootstrap"], "-t", topic["name"], "--spark", "local[1]", "-o",
                                 str(out), "--format", "json", "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output[-3000:]
    doc = json.loads(r.stdout)
    _valid(doc)  # docs/schemas/scan.schema.json
    assert doc["engine"] == "spark" and doc["records"] == RECORDS + 1
    p = read_profile(out)
    base = topic["base"].profile
    assert p.partitions == base.partitions and p.agreement == base.agreement
    assert p.loads("key", "murmur2", 12) == base.loads("key", "murmur2", 12)
    assert not spark.sparkContext._jsc.sc().isStopped()


@pytest.mark.parametrize("extra, says", [
    (["--workers", "2"], "--workers"),
    (["--dask", "tcp://127.0.0.1:1"], "--dask"),
    ([" "], "master URL"),
])
def test_cli_spark_misuse_is_one_line_exit_2(extra, says, tmp_path):
    args = ["scan", "-b", "127.0.0.1:1", "-t", "x", "-o", tmp_path / "p.json", "--spark"]
    r = _cli(*(args + (extra if extra == [" "] else ["local[1]"] + extra)), timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_cli_spark_without_pyspark_says_how_to_install(tmp_path):
    """A pyspark that cannot be imported (shadowed on PYTHONPATH): one line, exit 2, the extra to install."""
    shadow = tmp_path / "shadow" / "pyspark"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named pyspark')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "shadow"))
    r = _cli("scan", "-b", "127.0.0.1:1", "-t", "x", "-o", tmp_path / "p.json", "--spark", "local[1]", env=env,
             timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "pip install 'keyscope[spark]'" in r.stderr


def test_cli_spark_without_the_connector_is_one_line_exit_4(spark, topic, tmp_path):
    """A Spark without the Kafka connector (the jars given lack it): one line naming it, exit 4, nothing written."""
    jars = [j for j in os.environ["KEYSCOPE_SPARK_JARS"].split(",") if "spark-sql-kafka" not in j]
    env = dict(os.environ, KEYSCOPE_SPARK_JARS=",".join(jars))
    out = tmp_path / "p.json"
    r = _cli("scan", "-b", topic["bootstrap"], "-t", topic["name"], "--spark", "local[1]", "-o", out, "-q", env=env)
    assert r.returncode == 4, (r.returncode, r.stderr[-3000:])
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("keyscope:") and "spark-sql-kafka-0-10" in last and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert not out.exists()


def test_ctrl_c_keeps_the_spark_tasks_that_completed(spark, topic):
    """Ctrl-C (KeyboardInterrupt in the driver's main thread) once a Spark task has completed: the job is
    cancelled and the completed tasks' profile comes back marked partial, each counted once; the session lives."""
    import _thread

    from keyscope.scan import engine
    from keyscope.scan import spark as spark_engine
    from keyscope.scan.spark import run_spark

    fired = threading.Event()

    def progress(p):
        if p.tasks_done >= 1 and not fired.is_set():
            fired.set()
            _thread.interrupt_main()

    old = engine.PROGRESS_S, spark_engine.PROGRESS_S
    spark_engine.PROGRESS_S = 0.05
    try:
        r = run_spark(topic["conn"], ScanRequest(topic["name"], tasks=40), spark, progress=progress)
    except KeyboardInterrupt:  # no task had completed when the interrupt landed: nothing kept
        assert fired.is_set()
        return
    finally:
        spark_engine.PROGRESS_S = old[1]
    assert fired.is_set()
    p = r.profile
    if not r.partial:  # every task had completed before the interrupt landed
        assert p.complete and p.records == RECORDS + 1
        return
    assert not p.complete and 1 <= len(p.tasks_done) < p.tasks_planned
    assert 0 < p.records == sum(s.records for s in p.partitions.values()) < RECORDS + 1
    assert p.expressions["key"].records == p.records
    assert not spark.sparkContext._jsc.sc().isStopped()
    # the session still runs jobs after the cancelled one
    assert spark.range(3).count() == 3
