"""``keyscope scan`` on real Kafka: every exact figure against a brute-force count of what was produced.

One module-scoped data set: RECORDS records (a Zipf tail over many distinct
keys, one hot key, null and empty keys, JSON values with a tenant field)
produced with confluent-kafka to a 3-partition topic (murmur2_random, plus
"legacy" keys put on their crc32 partition as an old client would) and the
same records to a 6-partition topic (murmur2_random).  Delivery reports give
each record's real partition; Python's own zlib.crc32 and keyscope's
pure-Python murmur2 reference (not the compiled kernels the scan uses) give
the brute-force operands.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter

import numpy as np
import pytest

from keyscope.kafka.connection import resolve
from keyscope.partitioners import murmur2
from keyscope.scan import ScanRequest, merge, plan_tasks, run_scan, scan_task
from keyscope.scan.answers import analyze_profile, whatif_profile
from keyscope.scan.engine import resolve_ranges
from keyscope.scan.task import ScanSpec
from keyscope.sampling import parse_field

from .conftest import create_topic

# A million records, not "a few million": every check here is a brute-force count in Python over every
# record (and the data set is produced three times, to 3, 6 and 12 partitions); at 1M records the module
# took 1m43 s of CPU (7 min wall at load 15; 300k records took 1.5 min wall), at 3M it would take ~3x that
# of a CI budget the whole suite shares.
# A million is already past what one task holds (CHUNK_RECORDS = 200,000; 8 tasks of ~125k offsets), past
# the sketch's exact regime (30,000 distinct keys > 0.75 * 4096) and past one fetch per partition.
RECORDS = 1_000_000
DISTINCT = 30_000
NMAX = 64
TASKS = 8


def _data(seed=7):
    rng = np.random.default_rng(seed)
    tail = rng.zipf(1.1, RECORDS) % DISTINCT
    kind = rng.random(RECORDS)
    tenants = rng.integers(0, 50, RECORDS)
    pads = rng.integers(0, 60, RECORDS)
    keys, values = [], []
    for i in range(RECORDS):
        k = kind[i]
        if k < 0.01:
            key = None
        elif k < 0.015:
            key = b""
        elif k < 0.09:
            key = b"hot-tenant"
        elif k < 0.10:
            key = b"legacy-%d" % (tail[i] % 300)
        else:
            key = b"user-%06d" % tail[i]
        keys.append(key)
        values.append(json.dumps({"tenant": f"t{tenants[i]}", "pad": "x" * int(pads[i])}).encode())
    return keys, values


def _produce(bootstrap, topic, keys, values, partitions_of_legacy=None):
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 100,
                  "batch.num.messages": 100_000, "batch.size": 4_000_000, "queue.buffering.max.messages": 2_000_000,
                  "queue.buffering.max.kbytes": 2_000_000, "compression.type": "lz4", "enable.idempotence": False})
    where = [None] * len(keys)

    def cb(i):
        def done(err, msg):
            assert err is None, err
            where[i] = msg.partition()
        return done

    for i, (k, v) in enumerate(zip(keys, values)):
        kw = {}
        if partitions_of_legacy and k is not None and k.startswith(b"legacy-"):
            kw["partition"] = zlib.crc32(k) % partitions_of_legacy  # an old librdkafka client's CRC32 placement
        while True:
            try:
                p.produce(topic, key=k, value=v, on_delivery=cb(i), **kw)
                break
            except BufferError:
                p.poll(0.05)
        if i % 50_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return where


@pytest.fixture(scope="module")
def data(kafka):
    import uuid

    keys, values = _data()
    t3, t6 = f"scan3-{uuid.uuid4().hex[:8]}", f"scan6-{uuid.uuid4().hex[:8]}"
    create_topic(kafka.bootstrap_server, t3, 3)
    create_topic(kafka.bootstrap_server, t6, 6)
    where3 = _produce(kafka.bootstrap_server, t3, keys, values, partitions_of_legacy=3)
    where6 = _produce(kafka.bootstrap_server, t6, keys, values)
    conn = resolve(kafka.bootstrap_server)
    base = run_scan(conn, ScanRequest(t3, workers=1, tasks=TASKS, partitions_max=NMAX,
                                      key_by=((), ("tenant",)), fields=(parse_field("tenant=$.tenant"),)))
    return {"keys": keys, "values": values, "t3": t3, "t6": t6, "where3": where3, "where6": where6, "conn": conn,
            "base": base, "bootstrap": kafka.bootstrap_server}


def _exact(profile) -> dict:
    """Every exact part of a profile (sketch bytes and notes left out)."""
    d = profile.to_dict()
    for e in d["expressions"].values():
        e.pop("frequent")
        e.pop("distinct")
    d.pop("sizes")
    d.pop("notes")
    return d


def _assert_exact(p, keys, values, where, partitions):
    """Every exact figure of ``p`` (a scan of ``keys``/``values`` placed on ``where``) against a brute-force count."""
    assert p.complete
    assert p.records == len(keys)
    # per partition: records, bytes, null keys
    for part in range(partitions):
        idx = [i for i, w in enumerate(where) if w == part]
        s = p.partitions[part]
        assert s.records == len(idx)
        assert s.bytes == sum(len(keys[i] or b"") + len(values[i]) for i in idx)
        assert s.null_keys == sum(keys[i] is None for i in idx)
        assert s.empty_keys == sum(keys[i] == b"" for i in idx)
    # loads per operand % n, records and bytes, for murmur2 and consistent (crc32; the empty key unhashed)
    per_key_n: Counter = Counter()
    per_key_b: Counter = Counter()
    for k, v in zip(keys, values):
        per_key_n[k] += 1
        per_key_b[k] += len(k or b"") + len(v)
    distinct = [k for k in per_key_n if k is not None]
    ops = {"murmur2": np.array([murmur2(k) & 0x7FFFFFFF for k in distinct], np.int64),
           "consistent": np.array([zlib.crc32(k) for k in distinct], np.int64)}
    cnt = np.array([per_key_n[k] for k in distinct], np.int64)
    byt = np.array([per_key_b[k] for k in distinct], np.int64)
    empty = np.array([k == b"" for k in distinct])
    for rule, op in ops.items():
        w_n = np.where(empty, 0, cnt) if rule == "consistent" else cnt
        w_b = np.where(empty, 0, byt) if rule == "consistent" else byt
        for n in range(1, NMAX + 1):
            assert p.loads("key", rule, n) == np.bincount(op % n, weights=w_n, minlength=n).astype(int).tolist(), (rule, n)
            assert p.loads("key", rule, n, "bytes") == np.bincount(op % n, weights=w_b, minlength=n).astype(int).tolist()
        un = per_key_n[None] + (per_key_n[b""] if rule == "consistent" else 0)
        assert p.expressions["key"].unhashed[rule][0] == un
    # agreement: records whose real partition is the rule's
    m = sum(1 for k, w in zip(keys, where) if k is not None and (murmur2(k) & 0x7FFFFFFF) % partitions == w)
    hashed = sum(1 for k in keys if k is not None)
    assert p.agreement["murmur2"] == [m, hashed]
    assert m < hashed  # the legacy keys sit on their crc32 partition
    c = sum(1 for k, w in zip(keys, where) if k and zlib.crc32(k) % partitions == w)
    assert p.agreement["consistent"] == [c, sum(1 for k in keys if k)]
    # composite key: key|tenant, brute force
    comp: Counter = Counter()
    for k, v in zip(keys, values):
        if k is not None:
            comp[k + b"|" + json.loads(v)["tenant"].encode()] += 1
    cops = np.array([murmur2(k) & 0x7FFFFFFF for k in comp], np.int64)
    cw = np.array(list(comp.values()), np.int64)
    for n in (1, 3, 6, 12, NMAX):
        assert p.loads("key+tenant", "murmur2", n) == np.bincount(cops % n, weights=cw, minlength=n).astype(int).tolist()


def test_exact_counters_equal_brute_force(data):
    assert not data["base"].partial
    _assert_exact(data["base"].profile, data["keys"], data["values"], data["where3"], 3)


def test_exact_counters_of_a_twelve_partition_topic(data):
    """The same records on 12 partitions (legacy keys on crc32 % 12), scanned by two workers."""
    import uuid

    t12 = f"scan12-{uuid.uuid4().hex[:8]}"
    create_topic(data["bootstrap"], t12, 12)
    where12 = _produce(data["bootstrap"], t12, data["keys"], data["values"], partitions_of_legacy=12)
    assert len(set(where12)) == 12
    r = run_scan(data["conn"], ScanRequest(t12, workers=2, tasks=TASKS, partitions_max=NMAX,
                                           key_by=((), ("tenant",)), fields=(parse_field("tenant=$.tenant"),)))
    assert not r.partial and len(r.profile.partitions) == 12
    _assert_exact(r.profile, data["keys"], data["values"], where12, 12)


def test_three_to_six_equals_the_real_six_partition_topic(data):
    p3 = data["base"].profile
    r6 = run_scan(data["conn"], ScanRequest(data["t6"], workers=1, partitions_max=8))
    real = [s.records - s.null_keys for _, s in sorted(r6.profile.partitions.items())]  # null keys: random
    assert p3.loads("key", "murmur2", 6) == real
    # and whatif from the profile says the same, exactly
    w = whatif_profile(p3, partitions=[6], partitioners=["murmur2"])
    assert w.scenarios[0].records == real
    assert w.scenarios[0].unhashed_records == p3.expressions["key"].null_keys
    # the 6-partition topic was produced by murmur2_random only: agreement is total
    m, h = r6.profile.agreement["murmur2"]
    assert m == h == RECORDS - data["keys"].count(None)


def test_hot_keys_within_the_sketch_bound(data):
    import datasketches as ds

    p = data["base"].profile
    truth = Counter(k for k in data["keys"] if k is not None)
    fs = p.frequent_sketch("key")
    assert fs.total_weight == sum(truth.values())
    eps_w = fs.epsilon * fs.total_weight
    above = {k for k, c in truth.items() if c > eps_w}
    assert b"hot-tenant" in above and len(truth) > 0.75 * (1 << p.lg_max_k)  # the sketch is not exact here
    items = {i[0].encode("latin-1"): i for i in fs.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)}
    for k in above:
        _, est, lb, ub = items[k]
        assert lb <= truth[k] <= ub and ub - lb <= eps_w
    a = analyze_profile(p, top=len(above))
    listed = {h.key.encode() for h in a.expressions[0].top_keys}
    assert listed == above or len(listed & above) >= len(above) - sum(  # ties at the edge of the top-K
        1 for k in above if items[k][2] <= a.expressions[0].top_keys[-1].records.high)
    assert a.expressions[0].top_keys[0].key == max(truth, key=truth.get).decode()
    d = a.expressions[0].distinct_keys
    assert d.low <= len(truth) <= d.high and not d.exact


def test_same_profile_from_one_two_workers_and_dask(data, monkeypatch):
    from distributed import Client, LocalCluster

    from keyscope.scan import engine

    monkeypatch.setattr(engine, "PROGRESS_S", 0.0)  # here: every progress event the workers send is shown
    seen = []

    base = _exact(data["base"].profile)
    req = dict(tasks=TASKS, partitions_max=NMAX, key_by=((), ("tenant",)), fields=(parse_field("tenant=$.tenant"),))
    two = run_scan(data["conn"], ScanRequest(data["t3"], workers=2, **req))
    assert two.engine == "processes:2"
    assert _exact(two.profile) == base
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, Client(lc) as c:
        viadask = run_scan(data["conn"], ScanRequest(data["t3"], dask=c, **req), progress=seen.append)
        # a task that fails half-way is run again and counted once
        faulty = run_scan(data["conn"], ScanRequest(data["t3"], dask=c, fault={2: "raise"}, **req))
    assert viadask.engine == "dask"
    # records of tasks under way on the Dask workers (Dask events), besides one report per completed task
    assert len(seen) > viadask.profile.tasks_planned and any(p.records > 0 and p.tasks_done == 0 for p in seen)
    assert all(p.records <= viadask.profile.records for p in seen)
    assert _exact(viadask.profile) == base
    assert faulty.retried == 1 and _exact(faulty.profile) == base
    # the sketches merged in task order: byte for byte the same frequent-items and HLL
    for other in (two, viadask, faulty):
        for name, e in data["base"].profile.expressions.items():
            assert other.profile.expressions[name].frequent == e.frequent
            assert other.profile.expressions[name].distinct == e.distinct


def test_a_worker_killed_mid_task_is_retried_without_double_counting(data):
    req = dict(tasks=TASKS, partitions_max=NMAX, key_by=((), ("tenant",)), fields=(parse_field("tenant=$.tenant"),))
    r = run_scan(data["conn"], ScanRequest(data["t3"], workers=2, fault={1: "exit"}, **req))
    assert r.retried >= 1
    assert _exact(r.profile) == _exact(data["base"].profile)


def test_merge_in_any_order_gives_the_same_profile(data):
    import itertools
    import random

    conn = data["conn"]
    n, ranges = resolve_ranges(conn, ScanRequest(data["t3"]))
    tasks = plan_tasks(ranges, tasks=6)
    spec = ScanSpec(data["t3"], n, 16, fields=(parse_field("tenant=$.tenant"),), tasks_planned=len(tasks))
    parts = [scan_task(conn, spec, t) for t in tasks]
    ref = merge(parts)
    assert ref.records == RECORDS and ref.complete
    rng = random.Random(3)
    for _ in range(4):
        order = parts[:]
        rng.shuffle(order)
        # and grouped differently: ((a+b)+c)+... against a+(b+(c+...))
        left = list(itertools.accumulate(order, lambda a, b: merge([a, b])))[-1]
        right = order[-1]
        for x in reversed(order[:-1]):
            right = merge([x, right])
        for m in (merge(order), left, right):
            assert _exact(m) == _exact(ref) and m.expressions["key"].tracked  # per-field distributions are sums
            assert m.distinct_sketch().get_estimate() == ref.distinct_sketch().get_estimate()
    with pytest.raises(ValueError, match="counted twice"):
        merge([parts[0], parts[1], parts[0]])
    # a profile round-trips through its file
    from keyscope.scan.profile import Profile

    again = Profile.from_dict(json.loads(json.dumps(ref.to_dict())))
    assert _exact(again) == _exact(ref) and again.expressions["key"].frequent == ref.expressions["key"].frequent


def _truth_by_tenant(keys, values) -> dict:
    """Brute force: records per (key, tenant value) over every produced record."""
    out: dict = {}
    for k, v in zip(keys, values):
        if k is not None:
            c = out.setdefault(k, Counter())
            c[json.loads(v).get("tenant")] += 1
    return out


def test_field_distributions_of_the_top_keys(data):
    """For the top keys, records per tenant value equal a brute-force count (the cut counted, never guessed)."""
    from keyscope.scan.profile import KEEP_TRACKED_KEYS

    p = data["base"].profile
    truth = _truth_by_tenant(data["keys"], data["values"])
    e = p.expressions["key"]
    assert b"hot-tenant" in e.tracked and 0 < len(e.tracked) <= KEEP_TRACKED_KEYS
    complete = 0
    for k, t in e.tracked.items():
        vals, other = t.fields["tenant"]
        assert t.records <= sum(truth[k].values())  # tracked from the chunk the key was first hot in
        assert sum(vals.values()) + other == t.records
        for v, n in vals.items():
            assert n <= truth[k][v]
        if t.records == sum(truth[k].values()):
            complete += 1
            assert vals == dict(truth[k]) and other == 0
    hot = e.tracked[b"hot-tenant"]
    assert hot.records == sum(truth[b"hot-tenant"].values()) and hot.fields["tenant"][0] == dict(truth[b"hot-tenant"])
    assert complete >= 10
    # the composite expression tracks no field it already holds
    assert all("tenant" not in t.fields for t in p.expressions["key+tenant"].tracked.values())
    # the same distributions through the file, from 2 workers and whatever the merge order (sums)
    from keyscope.scan.profile import Profile

    again = Profile.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again.expressions["key"].tracked == e.tracked


def test_salting_from_a_profile_brackets_the_brute_force_load(data):
    """whatif --salt-hot 1:4 --salt-by tenant from the profile: every partition's brute-force load lies in
    the bounds, and the salted hot key's records are placed exactly (its distribution is complete)."""
    import mmh3

    from keyscope.whatif.spec import parse_salt

    p = data["base"].profile
    keys, values = data["keys"], data["values"]
    counts = Counter(k for k in keys if k is not None)
    hottest = max(counts, key=counts.get)  # the Zipf tail's first key
    assert p.expressions["key"].tracked[hottest].records == counts[hottest]  # its distribution is complete
    for by in ("tenant", "offset"):
        w = whatif_profile(p, partitions=[6], partitioners=["murmur2"], salts=[parse_salt("1:4", by=by)])
        s = w.scenarios[0]
        assert s.salt["keys"] == [hottest.decode()] and not s.exact and s.bounds is not None
        if by == "offset":
            assert s.salt["basis"] == "expected"
            continue
        assert s.salt["basis"] == "bounded"  # 30k distinct keys: the sketch's hot-key count carries a bound
        real = [0] * 6
        for k, v in zip(keys, values):
            if k is None:
                continue
            if k == hottest:
                t = json.loads(v).get("tenant")
                k = k + b"#" + str(mmh3.hash((t or "").encode(), 0, signed=False) % 4).encode()
            real[(murmur2(k) & 0x7FFFFFFF) % 6] += 1
        for i in range(6):
            assert s.bounds["low"][i] <= real[i] <= s.bounds["high"][i], (i, real, s.bounds)
        assert sum(abs(a - b) for a, b in zip(s.records, real)) <= 2 * p.frequent_sketch().epsilon * sum(real) + 6
