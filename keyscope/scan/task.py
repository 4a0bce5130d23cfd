"""Tasks: offset ranges of partitions, read read-only into one-task :class:`Profile` s.

Read with keyscope's own Fetch client (:mod:`keyscope.kafka.lean`) and
RecordBatch decoder (:mod:`keyscope.sampling`), as ``keyscope sample`` does,
in groups (:func:`scan_group`): one Fetch request per leader for all the
partitions of a group's tasks.  Each task's records are counted in chunks of
exactly CHUNK_RECORDS: grouped by key with pyarrow (Polars for composite keys
and per-field distributions only), the distinct keys hashed with the compiled
column kernels and counted per ``operand % n`` with numpy: no Python work per
record, Python work per distinct key of a chunk only for the sketches.

The functions are plain and picklable (dataclasses in, dataclasses out), so a
process pool and Dask run the same code.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from ..errors import KafkaError
from .plan import Task
from .profile import HLL_LG_K, KLL_K, LG_MAX_K, Expression, PartitionStats, Profile, Tracked, load_offset

DEFAULT_COUNTER_RULES = ("murmur2", "consistent", "fnv1a")
CHUNK_RECORDS = 200_000  # decoded records grouped at once: bounds a task's memory (3 tasks at once in one process)
PARTITION_FETCH_BYTES = 8 << 20
RETRY_S = 30.0
# Per-field distributions of the top keys (only when --field is given): each chunk's TRACK_PER_CHUNK
# hottest keys are tracked from that chunk on, up to TRACK_MAX keys per task and expression, with at most
# VALUES_MAX values per key and field (later values are counted in "other").  A hot key is hot in its
# task's first chunk, so its distribution is normally complete; what a key had before it was tracked is
# the "cut", which the answers carry as a bound.  Memory: <= TRACK_MAX * VALUES_MAX entries per field.
TRACK_PER_CHUNK = 32
TRACK_MAX = 128
VALUES_MAX = 512
KEY_SLICE = 16384  # distinct keys of a chunk counted at once (Python objects for the sketches, operands, indices)
FOLD_BOUND = 4096  # largest modulus counted at once: bincounts of <= 4096 slots stay in cache


@functools.lru_cache(maxsize=16)
def modulus_groups(n_max: int, bound: int = FOLD_BOUND) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Moduli M covering n = 1..n_max, each M a common multiple of its n's: counts per ``operand % M``
    fold into the counts per ``operand % n`` for every n dividing M, since (x % M) % n == x % n.
    For n_max = 64, 12 bincounts per pass instead of 64 (1M records, 1M distinct keys: -30% CPU)."""
    groups: list[list] = []
    for n in range(n_max, 0, -1):
        for g in groups:
            m = math.lcm(g[0], n)
            if m <= max(bound, n):
                g[0] = m
                g[1].append(n)
                break
        else:
            groups.append([n, [n]])
    return tuple((m, tuple(sorted(ns))) for m, ns in groups)


@dataclass(frozen=True)
class ScanSpec:
    topic: str
    partition_count: int
    partitions_max: int = 64
    key_by: tuple[tuple[str, ...], ...] = ((),)  # () is the plain key
    fields: tuple = ()  # FieldSpec for the fields the expressions use
    separator: str = "|"
    counter_rules: tuple[str, ...] = DEFAULT_COUNTER_RULES
    isolation: str = "read_committed"
    tasks_planned: int = 0
    # For tests only: {task id: "raise" | "exit"} fails the task's first attempt after its first fetch.
    fault: dict = field(default_factory=dict)


def expression_name(fields: tuple[str, ...]) -> str:
    return "+".join(("key",) + tuple(fields))


# one consumer per process and connection: a task opens none when its process already has one
_CONSUMERS: dict = {}
_CONSUMERS_LOCK = threading.Lock()


def _consumer(conn):
    """This process's scan client of ``conn`` (keyscope.kafka.lean: no kafka-python, no thread)."""
    from ..kafka import lean

    key = (conn.bootstrap_servers, repr(sorted(conn.kwargs.items())), repr(sorted(conn.tls.items())),
           repr(sorted(conn.sasl.items())), os.getpid())
    with _CONSUMERS_LOCK:  # tasks in threads share one consumer (its IO thread serves every fetcher)
        c = _CONSUMERS.get(key)
        if c is None:
            c = _CONSUMERS[key] = lean.Client(conn, timeout_s=30.0)
    return c


def close_consumers() -> None:
    """Close this process's cached consumers (after an in-process scan)."""
    while _CONSUMERS:
        _, c = _CONSUMERS.popitem()
        try:
            c.close()
        except Exception:  # a consumer whose broker is gone must not fail the scan
            pass


_ARROW_READY: list = []
_ZERO: dict = {}  # Arrow zero scalars by type, made once: a Python 0 in a compute call is converted each time


def _zero(arrow_type):
    """A zero scalar of ``arrow_type``.  Each conversion of a Python number asks pyarrow's C++ side to import
    pandas again (it remembers success only), so the scalars are made once, in :func:`arrow_without_pandas`."""
    z = _ZERO.get(str(arrow_type))
    if z is None:
        import pyarrow as pa

        z = _ZERO[str(arrow_type)] = pa.scalar(0, arrow_type)
    return z


def warm_imports(spec: ScanSpec) -> None:
    """Import in the calling thread what a task imports inside its functions, before task threads start, so
    no module's first import runs on several threads at once (one such race failed a scan in CI).  Polars and
    the composite-key code only when an expression or a tracked field needs them (Polars is ~0.3 s)."""
    import datasketches  # noqa: F401
    import pyarrow.compute  # noqa: F401

    from .. import _kernels, partitioners, sampling  # noqa: F401
    from ..kafka import client, lean  # noqa: F401

    if any(spec.key_by) or spec.fields:
        import polars  # noqa: F401

        from ..io import arrow_c, pages, parquet  # noqa: F401  (composite keys' bytes to and from Polars)
        from ..whatif import kernels, tables  # noqa: F401


def arrow_without_pandas() -> None:
    """Make pyarrow decide once, before decoding, that pandas is not there (when it is not imported yet).

    pyarrow imports pandas (0.23 s of a 1,000-record scan's 0.86 s CPU, -X importtime) the first time
    ``pa.array`` meets a numpy array, only to ask whether it is a pandas object; a scan never hands it
    one.  pandas stays importable: only pyarrow's shim keeps the answer."""
    import sys

    if _ARROW_READY or "pandas" in sys.modules:
        return
    import pyarrow as pa

    class _NoPandas:
        def find_spec(self, name, path=None, target=None):
            if name == "pandas":
                raise ModuleNotFoundError("pandas is not needed by a scan")
            return None

    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array(np.zeros(1, np.int32))
        for t in (pa.int32(), pa.int64()):
            _zero(t)
    finally:
        sys.meta_path.remove(finder)
    _ARROW_READY.append(True)


def scan_task(conn, spec: ScanSpec, task: Task, attempt: int = 0, progress=None) -> Profile:
    """Read ``task``'s range and summarise it.  Raises KafkaError when the range cannot be read.

    ``progress(task id, offsets done, records, bytes)`` after each fetch, for tasks run in this
    process, or relayed by a worker process).  One task is a group of one (:func:`scan_group`)."""
    if task.span == 0:
        return _Accumulator(spec, task).result()
    todo = [(task, attempt)]
    out: list = []
    scan_group(conn, spec, lambda busy, wait, room: [todo.pop()] if todo else [],
               lambda t, res: out.append(res), progress)
    if isinstance(out[0], BaseException):
        raise out[0]
    return out[0]


GROUP_WIDTH = 8  # partitions read at once by one group: one Fetch request per leader covers them all
# A request's whole answer; each partition's share is bounded by its own limit (PARTITION_FETCH_BYTES), so this
# only keeps a wide group's answer under Kafka's fetch.max.bytes (55 MB).  Not the sum of the partitions' limits:
# Kafka stops filling an answer at its limit, and a batch larger than a partition's limit would leave the
# partitions after it empty.
GROUP_FETCH_BYTES = 48 << 20


class _Run:
    """One task under way in a group: its counters, where it has read to, what it has not counted yet."""

    def __init__(self, spec: ScanSpec, task: Task, attempt: int):
        self.task, self.attempt = task, attempt
        self.acc = _Accumulator(spec, task)
        self.state = SimpleNamespace(next=task.start, txn_open=set(), notes=[])  # what _skip_aborted keeps
        self.fetch_bytes = PARTITION_FETCH_BYTES
        self.error_since: float | None = None
        self.pending: list = []
        self.pending_n = 0
        self.seen_n = self.seen_b = 0  # for progress
        self.fault = spec.fault.get(task.id) if attempt == 0 else None
        self.over = False  # the range is read (or the log ended before its stop)

    def feed(self, table) -> None:
        """Count whole chunks of exactly CHUNK_RECORDS records (the last one shorter): the chunks, hence the
        sketches' bytes and the tracked keys, depend on the task's records only, not on how fetches split them."""
        import pyarrow as pa

        if table is not None and table.num_rows:
            self.pending.append(table)
            self.pending_n += table.num_rows
        while self.pending_n >= CHUNK_RECORDS or (self.over and self.pending_n):
            t = pa.concat_tables(self.pending, promote_options="default") if len(self.pending) > 1 else self.pending[0]
            k = min(CHUNK_RECORDS, t.num_rows)
            self.acc.add([t.slice(0, k)])
            rest = t.slice(k)
            self.pending = [rest] if rest.num_rows else []
            self.pending_n = rest.num_rows


# Held while a group counts a chunk, by the local engine's groups of one process (scan_group's ``counting``):
# a chunk's key table (Arrow's hash table of up to 200,000 distinct keys, ~15 MB, and its per-key arrays)
# exists for at most two groups at a time, not for all three; the others fetch and decode meanwhile.  Two,
# not one: counting releases the GIL in Arrow, and a one-slot lock made `--workers 1` 15% slower on 5M
# records from real Kafka (1.83 -> 2.11 s, 3 interleaved rounds, load 1.4) for 16 MB less peak RSS; two
# slots: 1.94 s against 2.05 s unlocked, 483 against 497 MB (the same run's rounds, load 1.2).
COUNTING_SLOTS = 2
COUNTING = threading.BoundedSemaphore(COUNTING_SLOTS)


def scan_group(conn, spec: ScanSpec, take, on_result, progress=None, width: int = GROUP_WIDTH,
               stopped=None, counting=None) -> None:
    """Read several tasks at once, one Fetch request per leader for all their partitions (Kafka's Fetch is
    per broker, with many partitions), each partition stopped at its task's end offset.

    Why: one request per task and partition left the broker answering one small fetch at a time per
    thread; a request covering every partition of a leader brings them all in one round trip.

    Tasks stay the unit of work: ``take(busy partitions, wait, room)`` gives up to ``room`` more
    ``(task, attempt)`` on partitions not busy here (empty: none now; with ``wait``, none left), so at
    most ``width`` at once, at most one task per partition at a time; ``on_result(task, Profile | KafkaError)`` as each task ends, so a
    failed task is retried alone and a completed one is kept alone.  ``stopped()``: true when the caller
    gives up (Ctrl-C): the group returns, its tasks unfinished and unreported.  ``counting``: a lock held
    while a chunk is counted (:data:`COUNTING`), or None."""
    from ..kafka import client as kafka_io
    from ..kafka import lean
    from ..sampling import _decode, _FieldPlan, _skip_aborted

    arrow_without_pandas()
    plan = _FieldPlan(list(spec.fields))
    committed = spec.isolation == "read_committed"
    active: dict[int, _Run] = {}  # partition -> its task under way
    flying: dict[int, tuple[int, int]] = {}  # partition -> (tag, offset) of the fetch it is in
    busy_nodes: dict[int, int] = {}  # node -> tag of its fetch in flight
    sent: dict[int, list[int]] = {}  # tag -> partitions
    fetcher = None
    tag = 0

    def finish(r: _Run, res) -> None:
        active.pop(r.task.partition, None)
        on_result(r.task, res)

    def failed(r: _Run, why: str) -> bool:
        """A retryable error on r's partition: True when it has lasted RETRY_S (the task is given up)."""
        r.error_since = r.error_since or time.monotonic()
        if time.monotonic() - r.error_since > RETRY_S:
            finish(r, KafkaError(why))
            return True
        return False

    def send_ready() -> None:
        nonlocal tag
        by_node: dict[int, dict[int, tuple[int, int]]] = {}
        order = sorted(active)
        if order:  # rotated each request: a full answer (max bytes) starves no partition for long
            order = order[tag % len(order):] + order[: tag % len(order)]
        for p in order:
            r = active[p]
            if p in flying or r.over:  # over: counted and reported next, nothing more to ask for
                continue
            node = fetcher.leader(p)
            if node is None:
                fetcher.refresh_metadata()
                failed(r, f"partition {p} of {spec.topic!r} has no leader")
                continue
            if node not in busy_nodes:
                by_node.setdefault(node, {})[p] = (r.state.next, r.fetch_bytes)
        for node, offsets in by_node.items():
            tag += 1
            fetcher.send(tag, node, offsets, max_bytes=max(GROUP_FETCH_BYTES, max(b for _, b in offsets.values())),
                         max_wait_ms=500, isolation_level=1 if committed else 0)
            busy_nodes[node] = tag
            sent[tag] = list(offsets)
            for p, (off, _) in offsets.items():
                flying[p] = (tag, off)

    try:
        while True:
            if stopped is not None and stopped():
                return
            room = width - len(active)
            while room > 0:
                got = take(set(active) | set(flying), not active and not flying, room)
                if not got:
                    break
                for t, attempt in got:
                    if t.span == 0:
                        on_result(t, _Accumulator(spec, t).result())
                        continue
                    active[t.partition] = _Run(spec, t, attempt)
                room = width - len(active)
            if not active and not flying:
                return
            if fetcher is None:
                fetcher = lean.Fetcher(_consumer(conn), spec.topic)
            send_ready()
            if not sent:
                time.sleep(0.1)  # no partition has a leader now
                continue
            got_tag, answer, exc = fetcher.answers.get(timeout=60)
            parts = sent.pop(got_tag, [])
            for node, t_ in list(busy_nodes.items()):
                if t_ == got_tag:
                    del busy_nodes[node]
            offs = {p: flying.pop(p)[1] for p in parts if p in flying}
            if exc is not None:
                for p in parts:
                    r = active.get(p)
                    if r is not None and r.state.next == offs.get(p):
                        failed(r, f"fetch from {spec.topic!r} partition {p} failed: {exc}")
                fetcher.refresh_metadata()
                time.sleep(0.2)
                continue
            by_p = {a.partition: a for a in answer}
            decoded: list[tuple[_Run, object]] = []
            retry = False
            for p in parts:
                r = active.get(p)
                fp = by_p.get(p)
                if r is None or fp is None or r.state.next != offs.get(p):
                    continue  # a task given up since, or the partition left out of the answer: asked again
                task, state = r.task, r.state
                if fp.error_code == 1:  # OFFSET_OUT_OF_RANGE: retention removed records while we read
                    if fp.log_start_offset > state.next:
                        r.acc.notes.append(f"partition {p}: offsets {state.next}..{fp.log_start_offset - 1} "
                                           "were deleted by retention during the scan")
                        state.next = fp.log_start_offset
                        continue
                    r.acc.notes.append(f"partition {p}: offset {state.next} out of range")
                    r.over = True
                    decoded.append((r, None))
                    continue
                if fp.error_code in (29, 31):  # not authorized (topic, cluster): no retry makes it readable
                    finish(r, KafkaError(f"fetch from {spec.topic!r} partition {p}: "
                                         f"{kafka_io.error_name(fp.error_code)}"))
                    continue
                if fp.error_code != 0:
                    retry = True
                    failed(r, f"fetch from {spec.topic!r} partition {p} failed: {kafka_io.error_name(fp.error_code)}")
                    continue
                r.error_since = None
                records = fp.records
                if not records:
                    if 0 <= fp.high_watermark <= state.next or (committed and 0 <= fp.last_stable_offset <= state.next):
                        r.acc.notes.append(f"partition {p}: the log ended at {state.next:,} before {task.stop:,}")
                        r.over = True
                        decoded.append((r, None))
                    continue
                try:
                    if committed:
                        records = _skip_aborted(records, fp.aborted, state)
                    c = _decode(p, records, state.next, task.stop, 1 << 40, plan)
                except KafkaError as e:
                    finish(r, e)
                    continue
                if c.next is None:  # one batch larger than we asked for: ask for more
                    r.fetch_bytes = min(r.fetch_bytes * 4, 256 << 20)
                    continue
                if c.next <= state.next:
                    finish(r, KafkaError(f"partition {p}: the broker returned nothing new at offset {state.next}"))
                    continue
                state.next = c.next
                r.over = state.next >= task.stop
                decoded.append((r, c))
            if retry:
                fetcher.refresh_metadata()
                if not decoded:
                    time.sleep(0.2)
            # Ask for the next chunks now: the broker answers while these are counted (cProfile, 1M
            # records: 0.48 s of 3.1 s waited on answers with one fetch at a time).
            send_ready()
            for r, c in decoded:
                task = r.task
                if c is not None and c.table is not None and progress is not None:
                    import pyarrow.compute as pc

                    r.seen_n += c.n
                    r.seen_b += int(pc.sum(c.table["key_size"]).as_py() or 0)
                    r.seen_b += int(pc.sum(c.table["value_size"]).as_py() or 0)
                    progress(task.id, r.state.next - task.start, r.seen_n, r.seen_b)
                if counting is None:
                    r.feed(c.table if c is not None else None)
                else:
                    with counting:
                        r.feed(c.table if c is not None else None)
                if r.fault and c is not None:  # after records were read and counted, before the result
                    if r.fault == "exit":
                        os._exit(17)  # a worker process dying mid-task
                    finish(r, KafkaError(f"injected failure in task {task.id} at offset {r.state.next}"))
                    continue
                if r.over:
                    r.acc.notes += [f"partition {task.partition}: {n}" for n in r.state.notes]
                    finish(r, r.acc.result())
    finally:
        if fetcher is not None:
            fetcher.close()


def _np(col) -> np.ndarray:
    """A numpy view of an Arrow column without nulls: ChunkedArray.to_numpy goes through pyarrow's pandas shim."""
    import pyarrow as pa

    if hasattr(col, "combine_chunks"):
        col = col.combine_chunks()
    if col.type == pa.bool_():  # bit-packed: unpacked here (to_numpy's copy goes through the shim too)
        bits = np.frombuffer(col.buffers()[1], np.uint8)
        out = np.unpackbits(bits, bitorder="little")[col.offset: col.offset + len(col)].astype(bool)
        if col.null_count:
            out &= _np(col.is_valid())
        return out
    dtype = {pa.int64(): np.int64, pa.int32(): np.int32, pa.uint64(): np.uint64, pa.uint32(): np.uint32}.get(col.type)
    if col.null_count or dtype is None:
        return col.to_numpy(zero_copy_only=False)
    return np.frombuffer(col.buffers()[1], dtype)[col.offset: col.offset + len(col)]


def _operands(keys, family: str) -> np.ndarray:
    """Modulo operands (uint32) of non-null keys (an Arrow binary array), every key hashed, the empty key
    too: what ``partitioners.hash_column`` gives, without its Polars Series."""
    from .. import _kernels
    from ..partitioners import _FAMILY_KERNEL

    kernel, step = _FAMILY_KERNEL[family]
    if not len(keys):
        return np.zeros(0, np.uint32)
    ops = _kernels.hash_arrow(keys, kernel)
    if step == "mask":
        ops &= np.uint32(0x7FFFFFFF)
    elif step == "abs":
        ops = np.abs(ops.view(np.int32)).view(np.uint32)  # int32 min stays 2**31
    return np.ascontiguousarray(ops, np.uint32)


class _Accumulator:
    """Exact counters as numpy arrays, sketches as live DataSketches objects, for one task."""

    def __init__(self, spec: ScanSpec, task: Task):
        import datasketches as ds

        from ..partitioners import KEYED, PARTITIONERS

        self.spec = spec
        self.task = task
        self.stats = PartitionStats()
        self.rules = [PARTITIONERS[r] for r in KEYED]
        self.agreement = {r.name: [0, 0] for r in self.rules}
        self.n_max = max(spec.partitions_max, spec.partition_count)
        size = load_offset(self.n_max + 1)
        self.exprs = {}
        self.groups = modulus_groups(self.n_max)
        # (expression, rule) -> records and bytes per operand % M for each modulus group, folded in result()
        self.folded: dict[tuple[str, str], tuple[list[np.ndarray], list[np.ndarray]]] = {}
        for fields in spec.key_by:
            e = Expression(tuple(fields), spec.separator)
            for r in spec.counter_rules:
                e.load_records[r] = np.zeros(size, np.int64)
                e.load_bytes[r] = np.zeros(size, np.int64)
                e.unhashed[r] = [0, 0]
                self.folded[(expression_name(fields), r)] = ([np.zeros(m, np.int64) for m, _ in self.groups],
                                                             [np.zeros(m, np.int64) for m, _ in self.groups])
            self.exprs[expression_name(fields)] = (e, ds.frequent_strings_sketch(LG_MAX_K), ds.hll_sketch(HLL_LG_K, ds.tgt_hll_type.HLL_8))
        self.kll = ds.kll_ints_sketch(KLL_K)
        self.notes: list[str] = []
        self.captured = [f.name for f in spec.fields]  # every --field: distributions of the top keys

    def add(self, tables) -> None:
        """Count one chunk.  The plain key is grouped and hashed with pyarrow and the compiled kernels
        only: importing Polars cost ~0.3 s of a scan's start-up (-X importtime), so it is imported only
        for composite keys and per-field distributions (--key-by, --field)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        t = pa.concat_tables(tables, promote_options="default")
        ks = t["key_size"].cast(pa.int64())
        ks = pc.fill_null(ks, _zero(pa.int64()))
        vs = t["value_size"].cast(pa.int64())
        size = pc.add(ks, vs)
        st = self.stats
        st.records += t.num_rows
        st.key_bytes += int(pc.sum(ks).as_py() or 0)
        st.value_bytes += int(pc.sum(vs).as_py() or 0)
        st.bytes += int(pc.sum(size).as_py() or 0)
        key = t["key"]
        st.null_keys += key.null_count
        st.empty_keys += int(pc.sum(pc.equal(pc.binary_length(key), _zero(pa.int32()))).as_py() or 0)
        ts = pc.min_max(t["timestamp"].cast(pa.int64()))
        if ts["min"].is_valid:
            lo, hi = int(ts["min"].as_py()), int(ts["max"].as_py())
            st.min_timestamp = lo if st.min_timestamp is None else min(lo, st.min_timestamp)
            st.max_timestamp = hi if st.max_timestamp is None else max(hi, st.max_timestamp)
        off = pc.min_max(t["offset"])
        o_lo, o_hi = int(off["min"].as_py()), int(off["max"].as_py())
        st.first_offset = o_lo if st.first_offset is None else min(st.first_offset, o_lo)
        st.last_offset = o_hi if st.last_offset is None else max(st.last_offset, o_hi)
        self.kll.update(np.ascontiguousarray(_np(size), dtype=np.int32))
        df = None  # the chunk as a Polars frame, for composite keys and tracking only
        for name, (e, freq, hll) in self.exprs.items():
            if e.fields:
                import polars as pl

                from ..whatif.tables import compose_keys

                if df is None:
                    df = pl.from_arrow(t.append_column("_size", size))
                ckey = compose_keys(df["key"], [df[f] if f in df.columns else pl.Series(f, [None] * df.height, pl.String)
                                                for f in e.fields], e.separator)
                pg = pl.DataFrame({"key": ckey, "_size": df["_size"]}).group_by("key", maintain_order=True).agg(
                    pl.len().alias("n"), pl.col("_size").sum().alias("b"))  # same order each run: same sketch bytes
                keys, n, b = pg["key"].to_arrow(), pg["n"].to_numpy(), pg["b"].to_numpy()
                src_key = ckey
            else:
                # Distinct keys in first-seen order (the order Table.group_by on one thread gave, so the same
                # sketch bytes), their records and bytes by bincount.  Not group_by: it imports pyarrow.acero
                # and pyarrow.dataset, which import pandas (0.2 s of a small scan's CPU, -X importtime).
                enc = pc.dictionary_encode(key.combine_chunks() if hasattr(key, "combine_chunks") else key,
                                           null_encoding="encode")
                keys, idx = enc.dictionary, _np(enc.indices)
                n = np.bincount(idx, minlength=len(keys))
                b = np.bincount(idx, weights=_np(size).astype(np.float64), minlength=len(keys)).astype(np.int64)
                src_key = None
            self._count(name, e, freq, hll, keys, np.asarray(n, np.int64), np.asarray(b, np.int64),
                        agreement=not e.fields)
            track = [f for f in self.captured if f not in e.fields]
            if track:
                import polars as pl

                if df is None:
                    df = pl.from_arrow(t.append_column("_size", size))
                if src_key is None:
                    src_key = df["key"]
                grouped = pl.DataFrame({"key": pl.Series("key", keys), "n": n})
                self._track(e, src_key, grouped, pl.DataFrame(
                    [df[f] if f in df.columns else pl.Series(f, [None] * df.height, pl.String) for f in track]))

    def _track(self, e: Expression, key, g, values) -> None:
        """Count the tracked keys' records per value of each captured field (see TRACK_PER_CHUNK)."""
        import polars as pl

        t = e.tracked
        if len(t) < TRACK_MAX:
            hot = g.filter(pl.col("key").is_not_null()).sort(["n", "key"], descending=[True, False])
            for k in hot["key"].head(TRACK_PER_CHUNK).to_list():
                if k not in t and len(t) < TRACK_MAX:
                    t[k] = Tracked(0, {f: ({}, 0) for f in values.columns})
        if not t:
            return
        frame = values.with_columns(key.alias("_key"))
        sub = frame.join(pl.DataFrame({"_key": pl.Series(list(t), dtype=pl.Binary)}), on="_key", how="semi")
        if not sub.height:
            return
        for k, n in sub.group_by("_key").agg(pl.len()).iter_rows():
            t[k].records += n
        for f in values.columns:
            cnt = sub.group_by("_key", f).agg(pl.len().alias("_n")).sort(
                ["_n", f], descending=[True, False], nulls_last=True)  # the cap keeps the same values each run
            for k, v, n in cnt.iter_rows():
                vals, other = t[k].fields[f]
                if v in vals:
                    vals[v] += n
                elif len(vals) < VALUES_MAX:
                    vals[v] = n
                else:
                    t[k].fields[f] = (vals, other + n)

    def _count(self, name: str, e: Expression, freq, hll, keys, n_all, b_all, agreement: bool) -> None:
        """Counters and sketches from one chunk's distinct keys (``keys``, an Arrow array) with their
        records ``n_all`` and bytes ``b_all``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from ..partitioners import family_partition

        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        e.records += int(n_all.sum())
        e.bytes += int(b_all.sum())
        is_null = _np(keys.is_null())
        null_n, null_b = int(n_all[is_null].sum()), int(b_all[is_null].sum())
        e.null_keys += null_n
        if null_n:
            keep = ~is_null
            keys = keys.filter(pa.array(keep, pa.bool_()))
            n, b = n_all[keep], b_all[keep]
        else:
            n, b = n_all, b_all
        empty = _np(pc.equal(pc.binary_length(keys), _zero(pa.int32())))
        empty_n, empty_b = int(n[empty].sum()), int(b[empty].sum())
        P = self.spec.partition_count
        actual = self.task.partition
        from ..partitioners import get_partitioner

        counters = [(rname, get_partitioner(rname)) for rname in self.spec.counter_rules]
        matched = {r.name: [0, 0] for r in self.rules} if agreement else {}
        # The distinct keys in slices of KEY_SLICE: their Python objects (sketches), operands and bincount
        # indices exist for one slice at a time, not for a chunk's 200,000 distinct keys (tracemalloc: -14 MB
        # per group; 3 groups run at once).  Same keys in the same order: the same sketches' bytes; sums.
        for i in range(0, len(keys), KEY_SLICE):
            ks, ns, bs = keys.slice(i, KEY_SLICE), n[i: i + KEY_SLICE], b[i: i + KEY_SLICE]
            # sketches: one update per distinct key of the chunk, weighted
            for k, c in zip(ks.to_pylist(), ns.tolist()):
                s = k.decode("latin-1")
                freq.update(s, c)
                hll.update(s)
            fam_ops: dict[str, np.ndarray] = {}

            def ops_of(rule):
                if rule.family not in fam_ops:
                    # uint32 operands: numpy's remainder by a scalar is ~20% faster than on int64
                    fam_ops[rule.family] = _operands(ks, rule.family)
                return fam_ops[rule.family]

            for r in self.rules if agreement else ():
                hit = (ops_of(r) % P) == actual
                m_ = matched[r.name]
                m_[0] += int(ns[hit].sum())
                m_[1] += int(ns.sum())
            for rname, r in counters:
                ops = ops_of(r)
                if not len(ops):
                    continue
                w_n, w_b = ns, bs
                if empty_n and not r.empty_key_hashed:
                    es = empty[i: i + KEY_SLICE]
                    w_n, w_b = np.where(es, 0, ns), np.where(es, 0, bs)
                fr, fb = self.folded[(name, rname)]
                f_n, f_b = w_n.astype(np.float64), w_b.astype(np.float64)  # bincount's weights are float64
                for gi, (m, _) in enumerate(self.groups):
                    idx = ops % np.uint32(m)
                    fr[gi] += np.bincount(idx, weights=f_n, minlength=m).astype(np.int64)
                    fb[gi] += np.bincount(idx, weights=f_b, minlength=m).astype(np.int64)
        for r in self.rules if agreement else ():
            matches, hashed = matched[r.name]
            at_empty = family_partition(r.family, b"", P) == actual
            if not r.empty_key_hashed:  # the empty key is placed like a null key
                hashed -= empty_n
                matches -= empty_n if at_empty else 0
            if r.null_key_hashed:  # a null key is hashed as the empty key
                hashed += null_n
                matches += null_n if at_empty else 0
            a = self.agreement[r.name]
            a[0] += matches
            a[1] += hashed
        for rname, r in counters:
            un = [0, 0]  # records and bytes of the empty / null key no counter holds
            if empty_n and not r.empty_key_hashed:
                un[0] += empty_n
                un[1] += empty_b
            fr, fb = self.folded[(name, rname)]
            if r.null_key_hashed:
                if null_n:
                    op = r.operand(None)
                    for gi, (m, _) in enumerate(self.groups):
                        fr[gi][op % m] += null_n
                        fb[gi][op % m] += null_b
            else:
                un[0] += null_n
                un[1] += null_b
            u = e.unhashed[rname]
            u[0] += un[0]
            u[1] += un[1]

    def result(self) -> Profile:
        spec = self.spec
        p = Profile(spec.topic, spec.partition_count, spec.partitions_max, tuple(spec.counter_rules), spec.isolation,
                    spec.tasks_planned, {self.task.id}, lg_max_k=LG_MAX_K)
        p.partitions = {self.task.partition: self.stats}
        p.agreement = self.agreement
        for name, (e, freq, hll) in self.exprs.items():
            for rname in spec.counter_rules:
                fr, fb = self.folded[(name, rname)]
                lr, lb = e.load_records[rname], e.load_bytes[rname]
                for gi, (m, ns) in enumerate(self.groups):
                    for n in ns:
                        o = load_offset(n)
                        lr[o : o + n] += fr[gi].reshape(m // n, n).sum(axis=0)
                        lb[o : o + n] += fb[gi].reshape(m // n, n).sum(axis=0)
                    fr[gi][:] = 0  # folded once: a second result() adds nothing twice
                    fb[gi][:] = 0
            e.frequent = freq.serialize()
            e.distinct = hll.serialize_updatable()
            p.expressions[name] = e
        p.sizes = self.kll.serialize()
        p.notes = self.notes
        return p


def count_tables(spec: ScanSpec, task: Task, tables) -> Profile:
    """Count records another reader fetched (Spark's Kafka source) into a one-task :class:`Profile`, with the
    counting code of :func:`scan_task`.  ``tables``: Arrow tables or record batches of one partition, with
    the decoder's columns (``partition, offset, timestamp, key, key_size, value_size`` and the fields)."""
    import pyarrow as pa

    r = _Run(spec, task, 1)  # chunks of CHUNK_RECORDS, as a task that reads for itself: the same bound on memory
    for t in tables:
        if t.num_rows:
            r.feed(pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t)
    r.over = True
    r.feed(None)
    return r.acc.result()
