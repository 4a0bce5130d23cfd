"""``keyscope scan`` and ``analyze/whatif/recommend PROFILE`` from the command line, on real Kafka.

JSON output against docs/schemas/scan.schema.json (with negative checks: a
real document altered as a regression would alter it must fail), the exit
codes of docs/exit-codes.md, progress on stderr, and SIGTERM mid-scan
writing only completed tasks (exit 6) or nothing (exit 130).
"""

from __future__ import annotations

import copy
import json
import re
import signal
import subprocess
import sys
import uuid
from collections import Counter

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from keyscope.cli import cli
from keyscope.scan import read_profile

from .conftest import create_topic
from .test_json_schemas import SCHEMAS, strict_json

RECORDS = 30_000


def _validator():
    s = json.loads((SCHEMAS / "scan.schema.json").read_text())
    Draft202012Validator.check_schema(s)
    return Draft202012Validator(s)


def _valid(doc):
    errors = list(_validator().iter_errors(doc))
    assert not errors, [e.message[:200] for e in errors[:5]]


def _invalid(doc):
    assert not _validator().is_valid(doc), "the scan schema accepted a broken document"


def _run(*args, code=0):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == code, (r.exit_code, r.output)
    return r


@pytest.fixture(scope="module")
def topic(kafka):
    from confluent_kafka import Producer

    name = f"scancli-{uuid.uuid4().hex[:8]}"
    create_topic(kafka.bootstrap_server, name, 3)
    p = Producer({"bootstrap.servers": kafka.bootstrap_server, "partitioner": "murmur2_random", "linger.ms": 50})
    for i in range(RECORDS):
        key = b"hot" if i % 5 == 0 else b"k%d" % (i % 997)
        p.produce(name, key=key, value=json.dumps({"tenant": f"t{i % 7}"}).encode())
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(30) == 0
    return kafka.bootstrap_server, name


@pytest.fixture(scope="module")
def profile(topic, tmp_path_factory):
    bs, name = topic
    out = tmp_path_factory.mktemp("scan") / "p.json"
    r = _run("scan", "-b", bs, "-t", name, "-o", out, "--workers", 1, "--partitions-max", 16,
             "--key-by", "key,tenant", "--field", "tenant=$.tenant", "--format", "json", "-q")
    return out, strict_json(r.stdout)


def test_scan_json_is_valid_and_counts_every_record(profile):
    path, doc = profile
    _valid(doc)
    assert doc["kind"] == "scan" and doc["records"] == RECORDS and doc["complete"]
    assert sum(p["records"] for p in doc["partitions"]) == RECORDS
    assert doc["today_partitioner"] == "murmur2" and doc["agreement"][0]["share"] == 1.0
    top = doc["expressions"][0]["top_keys"][0]
    assert top["key"] == "hot" and top["records"]["estimate"] == RECORDS // 5 and top["records"]["exact"]
    assert [e["name"] for e in doc["expressions"]] == ["key", "key+tenant"]
    assert read_profile(path).records == RECORDS
    for broken in (lambda d: d.pop("tasks"), lambda d: d.update(records=-1),
                   lambda d: d["expressions"][0]["top_keys"][0].pop("records"),
                   lambda d: d["partitions"][0].update(extra=1), lambda d: d.update(kind="sample")):
        bad = copy.deepcopy(doc)
        broken(bad)
        _invalid(bad)


def test_analyze_whatif_recommend_accept_a_profile(profile):
    path, scan = profile
    a = strict_json(_run("analyze", path, "--format", "json").stdout)
    _valid(a)
    assert a["kind"] == "profile-analysis" and a["partitions"] == scan["partitions"] and a["skew"]["exact"]
    text = _run("analyze", path).stdout
    assert "exact" in text and "HLL" in text
    # the hot key's tenant distribution: 7 tenants, RECORDS // 5 records, none cut (brute force: i % 7 over i % 5 == 0)
    hot = a["expressions"][0]["top_keys"][0]
    tenants = hot["fields"]["tenant"]
    assert hot["key"] == "hot" and tenants["cut"] == 0
    assert sum(n for _, n in tenants["values"]) + tenants["other"] == RECORDS // 5
    truth = Counter(f"t{i % 7}" for i in range(0, RECORDS, 5))
    assert tenants["values"][0] == [min(truth, key=lambda t: (-truth[t], t)), max(truth.values())]
    assert "tenant: t" in text
    w = strict_json(_run("whatif", path, "--partitions", "6,12", "--key-by", "key,tenant", "--format", "json").stdout)
    _valid(w)
    assert [s["name"] for s in w["scenarios"]] == ["6p murmur2 key+tenant", "12p murmur2 key+tenant"]
    assert all(s["exact"] and sum(s["records"]) == RECORDS for s in w["scenarios"])
    plain = strict_json(_run("whatif", path, "--partitions", "6", "--format", "json").stdout)
    p = read_profile(path)
    assert plain["scenarios"][0]["records"] == p.loads("key", "murmur2", 6)
    assert "exact" in _run("whatif", path, "--partitions", "6").stdout
    r = strict_json(_run("recommend", path, "--format", "json").stdout)
    _valid(r)
    assert r["kind"] == "profile-recommend"
    bad = copy.deepcopy(w)
    bad["scenarios"][0]["records"] = []
    _invalid(bad)
    # what a profile cannot answer, and counters it does not hold: exit 2
    assert "--field contact=PATH" in _run("whatif", path, "--salt-hot", "1:4", "--salt-by", "contact", code=2).output
    assert "sample" in _run("whatif", path, "--consumers", "3", code=2).output
    assert "--field nope=PATH" in _run("recommend", path, "--keep-order-by", "nope", code=2).output
    assert "partitions-max" in _run("whatif", path, "--partitions", "17", code=2).output
    assert "--key-by" in _run("whatif", path, "--key-by", "key,user", code=2).output


def test_exit_codes(topic, tmp_path):
    bs, name = topic
    out = tmp_path / "x.json"
    _run("scan", "-b", bs, "-t", "no-such-topic-here", "-o", out, "--workers", 1, "-q", code=4)
    assert not out.exists()
    _run("scan", "-b", bs, "-t", name, "-o", out, "--from", "yesterday-ish", code=2)
    _run("scan", "-b", bs, "-t", name, "-o", out, "--key-by", "key,tenant", code=2)  # no --field tenant
    _run("scan", "-b", bs, "-t", name, "-o", out, "--partitions-max", 0, code=2)
    out.write_text("{}")
    _run("scan", "-b", bs, "-t", name, "-o", out, code=2)  # exists, no --force
    _run("scan", "-b", bs, "-t", name, "-o", tmp_path / "nodir" / "p.json", code=3)
    damaged = tmp_path / "d.json"
    damaged.write_text('{"kind": "keyscope-profile", "version": 1, "topic": ')
    assert "profile" in _run("analyze", damaged, code=3).output
    # --to an offset: only offsets below it, in every partition
    r = strict_json(_run("scan", "-b", bs, "-t", name, "-o", tmp_path / "o.json", "--workers", 1, "--to", 100,
                         "--format", "json", "-q").stdout)
    assert r["records"] == 300 and all(p["last_offset"] == 99 for p in r["partitions"])


def test_progress_on_stderr_and_sigterm_keeps_completed_tasks(topic, tmp_path):
    bs, name = topic
    out = tmp_path / "p.json"
    proc = subprocess.Popen([sys.executable, "-m", "keyscope", "scan", "-b", bs, "-t", name, "-o", str(out),
                             "--workers", "1", "--tasks", "30", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stderr.readline().decode()  # a line per completed task (and per second within one), not a terminal
    assert first.startswith(f"scanning {name}: ") and "records/s" in first and "tasks " in first, first
    while "tasks 0/" in first:
        first = proc.stderr.readline().decode()
    # tasks complete in groups (one Fetch per leader, task.scan_group): the first count past 0 may be 2 or more
    done = re.search(r"tasks (\d+)/(\d+)", first)
    assert done and 1 <= int(done[1]) < int(done[2]), first
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    err = proc.stderr.read().decode()
    if rc == 0:  # every task had completed before the signal landed
        assert read_profile(out).complete
        return
    assert rc == 6, err
    p = read_profile(out)
    assert not p.complete and 1 <= len(p.tasks_done) < p.tasks_planned
    assert p.records == sum(s.records for s in p.partitions.values()) < RECORDS
    doc = strict_json(proc.stdout.read().decode())
    assert doc["complete"] is False and doc["tasks"]["done"] == len(p.tasks_done)


def test_progress_counts_records_within_a_task(topic, monkeypatch):
    """Records of a task under way are shown before it completes (in this process's threads)."""
    from keyscope.kafka.connection import resolve
    from keyscope.scan import ScanRequest, engine, run_scan

    monkeypatch.setattr(engine, "PROGRESS_S", 0.0)
    seen = []
    r = run_scan(resolve(topic[0]), ScanRequest(topic[1], workers=1), progress=seen.append)
    assert r.profile.records == RECORDS
    assert seen[0].tasks_done == 0 and 0 < seen[0].records < RECORDS and 0 < seen[0].offsets_done
    assert seen[0].bytes > 0 and all(p.records <= RECORDS for p in seen)
    last = max(seen, key=lambda p: p.tasks_done)
    assert last.tasks_done == last.tasks_total and last.records == RECORDS and last.offsets_done == last.offsets_total
    assert last.bytes == r.profile.bytes


def test_plan_splits_big_partitions_into_more_tasks():
    from keyscope.scan import plan_tasks

    tasks = plan_tasks({0: (0, 1_000_000), 1: (500, 600_500), 2: (7, 7)}, workers=2, min_task_records=10)
    assert [t.id for t in tasks] == list(range(len(tasks)))
    by = {p: [t for t in tasks if t.partition == p] for p in (0, 1, 2)}
    assert len(by[0]) > len(by[1]) >= 1 and not by[2]  # the hot partition gets more tasks; an empty one none
    for p, (a, b) in ((0, (0, 1_000_000)), (1, (500, 600_500))):
        spans = by[p]
        assert spans[0].start == a and spans[-1].stop == b  # contiguous, no gap, no overlap
        assert all(x.stop == y.start for x, y in zip(spans, spans[1:]))
    assert len(plan_tasks({0: (0, 100)}, tasks=10)) == 10
    assert len(plan_tasks({0: (0, 100)}, workers=8)) == 1  # below min_task_records: one task


def test_modulus_groups_cover_every_partition_count_once():
    import numpy as np

    from keyscope.scan.task import FOLD_BOUND, modulus_groups

    for n_max in (1, 7, 64, 1024):
        groups = modulus_groups(n_max)
        assert sorted(n for _, ns in groups for n in ns) == list(range(1, n_max + 1))
        assert all(m % n == 0 and m <= max(FOLD_BOUND, n) for m, ns in groups for n in ns)
    assert len(modulus_groups(64)) == 12
    # folding counts per x % M gives the counts per x % n
    x = np.random.default_rng(1).integers(0, 2**31, 5000)
    for m, ns in modulus_groups(64):
        per_m = np.bincount(x % m, minlength=m)
        for n in ns:
            assert (per_m.reshape(m // n, n).sum(axis=0) == np.bincount(x % n, minlength=n)).all()


def _brute_salted(n: int, buckets: int) -> list[int]:
    """The fixture's records, the hot key salted by mmh3(tenant) (the whatif rule), placed by murmur2 % n."""
    import mmh3

    from keyscope.partitioners import murmur2

    out = [0] * n
    for i in range(RECORDS):
        key = b"hot" if i % 5 == 0 else b"k%d" % (i % 997)
        if key == b"hot":
            key += b"#" + str(mmh3.hash(f"t{i % 7}".encode(), 0, signed=False) % buckets).encode()
        out[(murmur2(key) & 0x7FFFFFFF) % n] += 1
    return out


def test_salting_and_recommend_from_a_profile_are_exact_when_the_sketch_is(profile):
    """998 distinct keys: the frequent-items sketch is exact, and the hot key's tenant distribution is
    complete, so salting it by tenant from the profile equals the brute-force load record for record."""
    path, _ = profile
    w = strict_json(_run("whatif", path, "--partitions", "3,6", "--salt-hot", "1:4", "--salt-by", "tenant",
                         "--format", "json").stdout)
    _valid(w)
    for s in w["scenarios"]:
        assert s["salt"]["keys"] == ["hot"] and s["salt"]["basis"] == "exact" and s["exact"] and s["bounds"] is None
        assert s["records"] == _brute_salted(s["partitions"], 4), s["name"]
    off = strict_json(_run("whatif", path, "--partitions", "6", "--salt-hot", "1:4", "--format", "json").stdout)
    s = off["scenarios"][0]
    assert s["salt"]["basis"] == "expected" and not s["exact"] and sum(s["records"]) == RECORDS
    assert "expectation" in " ".join(off["notes"])
    text = _run("whatif", path, "--partitions", "6", "--salt-hot", "1:4").stdout
    assert "salt top1x4 by offset" in text and "<=" in text
    # recommend: with per-key order kept, counts and partitioners only; with none, salting and composite keys too
    keep = strict_json(_run("recommend", path, "--format", "json").stdout)
    assert not any(c.get("salt") for c in keep["ranked"])
    free = strict_json(_run("recommend", path, "--keep-order-by", "none", "--top", "40", "--format", "json").stdout)
    _valid(free)
    assert any(c["salt"] for c in free["ranked"]) and any(c["key_expression"] == "key+tenant" for c in free["ranked"])
    by_tenant = strict_json(_run("recommend", path, "--keep-order-by", "tenant", "--top", "40",
                                 "--format", "json").stdout)
    assert all(c["salt"] is None or c["salt"]["by"] == "tenant" for c in by_tenant["ranked"])
    bad = copy.deepcopy(w)
    bad["scenarios"][0]["salt"]["basis"] = "guessed"
    _invalid(bad)


def test_tracked_distributions_stay_within_their_caps():
    """Memory of the per-field distributions is bounded: at most TRACK_MAX keys per task, VALUES_MAX values
    per key and field, the rest counted in "other"; every tracked record is in a value or in "other"."""
    import numpy as np
    import pyarrow as pa

    from keyscope.sampling import parse_field
    from keyscope.scan.plan import Task
    from keyscope.scan.task import TRACK_MAX, TRACK_PER_CHUNK, VALUES_MAX, ScanSpec, _Accumulator

    spec = ScanSpec("t", 1, 4, fields=(parse_field("tenant=$.tenant"),))
    acc = _Accumulator(spec, Task(0, 0, 0, 10**9))
    rng = np.random.default_rng(5)
    off = 0
    truth: Counter = Counter()
    for _ in range(TRACK_MAX // TRACK_PER_CHUNK + 2):  # enough chunks to fill the tracked keys
        n = 20_000
        keys = [b"hot" if i % 2 == 0 else b"k%d" % k for i, k in enumerate(rng.integers(0, 3_000, n))]
        tenants = [f"v{x}" for x in rng.integers(0, 4 * VALUES_MAX, n)]
        truth.update(k for k in keys)
        acc.add([pa.table({
            "partition": pa.array(np.zeros(n, np.int32)), "offset": pa.array(np.arange(off, off + n)),
            "timestamp": pa.array(np.full(n, 1_700_000_000_000), pa.timestamp("ms", tz="UTC")),
            "key": pa.array(keys, pa.binary()), "key_size": pa.array([len(k) for k in keys], pa.int32()),
            "value_size": pa.array(np.full(n, 10, np.int32)), "tenant": pa.array(tenants, pa.string())})])
        off += n
    tracked = acc.result().expressions["key"].tracked
    assert TRACK_PER_CHUNK < len(tracked) <= TRACK_MAX
    for k, t in tracked.items():
        vals, other = t.fields["tenant"]
        assert len(vals) <= VALUES_MAX and sum(vals.values()) + other == t.records <= truth[k]
    hot = tracked[b"hot"]
    assert hot.records == truth[b"hot"] and hot.fields["tenant"][1] > 0  # complete, but past the value cap


@pytest.mark.parametrize("workers", ["2", "1"])
def test_ctrl_c_leaves_a_partial_profile_or_nothing(topic, tmp_path, workers):
    """SIGINT to the process group, as a terminal's Ctrl-C sends it (the forked workers get it too): exit 6 with
    a complete partial profile, or 130 with nothing; never a half-written file, never a worker's traceback."""
    import os

    bs, name = topic
    out = tmp_path / "p.json"
    proc = subprocess.Popen([sys.executable, "-m", "keyscope", "scan", "-b", bs, "-t", name, "-o", str(out),
                             "--workers", workers, "--tasks", "60", "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    line = proc.stderr.readline().decode()
    while line and "tasks 0/" in line:
        line = proc.stderr.readline().decode()
    assert line.startswith(f"scanning {name}: "), line
    os.killpg(proc.pid, signal.SIGINT)
    rc = proc.wait(60)
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["p.json"])  # no temporary file left behind
    if rc == 0:  # every task had completed before the signal landed
        assert read_profile(out).complete
        return
    if rc == 130:
        assert not out.exists()
        return
    assert rc == 6, (rc, err)
    p = read_profile(out)
    assert not p.complete and 1 <= len(p.tasks_done) < p.tasks_planned
    assert p.records == sum(s.records for s in p.partitions.values()) < RECORDS


def test_progress_counts_records_within_a_task_in_worker_processes(topic, monkeypatch):
    """--workers 2: records of tasks under way in the worker processes reach the progress callback."""
    from keyscope.kafka.connection import resolve
    from keyscope.scan import ScanRequest, engine, run_scan

    monkeypatch.setattr(engine, "PROGRESS_S", 0.0)  # the forked workers inherit it
    seen = []
    r = run_scan(resolve(topic[0]), ScanRequest(topic[1], workers=2, tasks=3), progress=seen.append)
    assert r.profile.records == RECORDS and r.engine == "processes:2"
    within = [p for p in seen if 0 < p.records and p.tasks_done == 0]
    assert within and all(p.records <= RECORDS and 0 < p.offsets_done <= p.offsets_total for p in within)
    assert min(p.records for p in within) < RECORDS  # seen part-way, not only once everything was read
    assert all(p.records <= RECORDS for p in seen)
    last = max(seen, key=lambda p: p.tasks_done)
    assert last.tasks_done == last.tasks_total and last.records == RECORDS and last.bytes == r.profile.bytes


def test_counting_memory_does_not_grow_with_distinct_keys():
    """A chunk's Python-heap peak (tracemalloc: Python objects and numpy arrays) and a task's retained state
    stay bounded as distinct keys grow: the distinct keys of a chunk are counted KEY_SLICE at a time (a
    chunk's 200,000 distinct keys as Python objects and whole-chunk operand arrays cost ~70 bytes a key),
    and after the first chunk more chunks of all-new keys keep no more state (sketches of fixed size)."""
    import tracemalloc

    import numpy as np
    import pyarrow as pa

    from keyscope.scan.plan import Task
    from keyscope.scan.task import CHUNK_RECORDS, ScanSpec, _Accumulator

    n = CHUNK_RECORDS

    def chunk(c: int, distinct: int):
        keys = pa.array([b"k%09d" % (c * n + i % distinct) for i in range(n)], pa.binary())
        return pa.table({
            "partition": pa.array(np.zeros(n, np.int32)), "offset": pa.array(np.arange(c * n, (c + 1) * n)),
            "timestamp": pa.array(np.full(n, 1_700_000_000_000), pa.timestamp("ms", tz="UTC")),
            "key": keys, "key_size": pa.array(np.full(n, 10, np.int32)),
            "value_size": pa.array(np.full(n, 100, np.int32))})

    def measure(distinct: int, chunks: int) -> tuple[int, list[int]]:
        tables = [chunk(c, distinct) for c in range(chunks)]
        acc = _Accumulator(ScanSpec("t", 3), Task(0, 0, 0, 10**9))
        peak, retained = 0, []
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            for t in tables:
                cur = tracemalloc.get_traced_memory()[0]
                tracemalloc.reset_peak()
                acc.add([t])
                now, top = tracemalloc.get_traced_memory()
                peak = max(peak, top - cur)
                retained.append(now - start)
        finally:
            tracemalloc.stop()
        freq = len(acc.result().expressions["key"].frequent)
        return peak, retained + [freq]

    few_peak, _ = measure(1_000, 1)
    many_peak, many = measure(n, 4)  # every record a new key, in every chunk
    assert many_peak - few_peak < 40 * n, (few_peak, many_peak)  # < 40 bytes per distinct key of the chunk
    *retained, freq = many
    assert max(retained[1:]) - retained[0] < 256 << 10, retained  # no state grown by the later chunks' new keys
    assert freq < 200 << 10  # the frequent-items sketch: at most 0.75 * 4096 items


def test_the_groups_of_one_process_count_at_most_two_chunks_at_a_time(topic, monkeypatch):
    """--workers 1 runs three groups in threads; a chunk's key table (Arrow's hash table and per-key
    arrays of up to CHUNK_RECORDS distinct keys) exists for at most COUNTING_SLOTS of them at a time: a
    chunk is counted holding the process's COUNTING semaphore, so the peak does not add up one table per
    group."""
    import threading

    from keyscope.kafka.connection import resolve
    from keyscope.scan import ScanRequest, engine, run_scan
    from keyscope.scan import task as task_mod

    assert engine.THREADS_HERE > task_mod.COUNTING_SLOTS
    add = task_mod._Accumulator.add
    mu = threading.Lock()
    at_once = [0, 0]  # counting now, most at once
    held = [0]
    under = []

    class Tracked(threading.BoundedSemaphore):
        def __enter__(self):
            r = super().__enter__()
            with mu:
                held[0] += 1
            return r

        def __exit__(self, *exc):
            with mu:
                held[0] -= 1
            return super().__exit__(*exc)

    monkeypatch.setattr(engine, "COUNTING", Tracked(task_mod.COUNTING_SLOTS))

    def counted(self, tables):
        with mu:
            at_once[0] += 1
            at_once[1] = max(at_once[1], at_once[0])
            under.append(held[0] >= at_once[0])
        try:
            add(self, tables)
        finally:
            with mu:
                at_once[0] -= 1

    monkeypatch.setattr(task_mod._Accumulator, "add", counted)
    r = run_scan(resolve(topic[0]), ScanRequest(topic[1], workers=1))
    assert r.profile.records == RECORDS
    assert under and all(under) and 1 <= at_once[1] <= task_mod.COUNTING_SLOTS


# Run in a fresh interpreter: records every module whose first import happens on a task thread.
_WATCH = r"""
import sys, threading
seen = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        t = threading.current_thread().name
        if t != "MainThread" and name not in sys.modules:
            seen.append((t, name))
        return None
sys.meta_path.insert(0, Watch())
from keyscope.cli import main
try:
    main(sys.argv[1:])
finally:
    print("FIRST-IMPORTS-ON-TASK-THREADS", sorted({n for t, n in seen if t.startswith("keyscope-scan")}))
"""


def test_no_module_is_first_imported_on_a_task_thread(topic, tmp_path):
    """Task threads import nothing for the first time: ``run_scan`` joins the preload and warms the tasks'
    lazy imports first (a first import raced on the scan's threads failed a CI run).  With --key-by and
    --field, the path that imports the most (Polars, composite keys, tracked fields), on 2 task threads."""
    bs, name = topic
    r = subprocess.run([sys.executable, "-c", _WATCH, "scan", "-b", bs, "-t", name, "-o", str(tmp_path / "p.json"),
                        "--workers", "1", "--tasks", "6", "--partitions-max", "16", "--key-by", "key,tenant",
                        "--field", "tenant=$.tenant", "--format", "json", "-q"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("FIRST-IMPORTS-ON-TASK-THREADS")]
    assert line == ["FIRST-IMPORTS-ON-TASK-THREADS []"], line or r.stdout[-500:]
