"""The fetch loop: requests in flight, paced partitions, answers applied; sample_topic drives it."""

from __future__ import annotations

import datetime as _dt
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


from ..errors import KafkaError
from . import wire
from .chunk import _decode, _FieldPlan
from .decoder import _warm_kernels
from .options import (
    DEFAULT_MAX_BYTES, DEFAULT_TIMEOUT_S, FETCH_AHEAD_RATIO, FETCH_AHEAD_RECORDS, FETCH_AHEAD_STEP, FETCH_MAX_BYTES, FIRST_FETCH_BYTES,
    GUESS_RECORD_BYTES, MAX_IN_FLIGHT, MIN_FETCH_BYTES, PACE_RATIO, PACE_STEP, PARTITION_FETCH_BYTES,
    PARTITIONS_PER_REQUEST, Phase, Progress, SampleSpec, _first_line,
)
from .plan import plan_budgets
from .transactions import _skip_aborted


@dataclass
class _Part:
    partition: int
    low: int
    high: int
    list_offsets_high: int
    start: int
    stop: int
    budget: int
    next: int
    last_stable: int | None = None
    kept: int = 0
    bytes: int = 0
    done: bool = False
    busy: bool = False  # in a request in flight, or waiting to be asked again after an error
    hit_budget: bool = False
    fetch_bytes: int = FIRST_FETCH_BYTES  # least ask after an answer held no whole batch; grows each time
    held: list = field(default_factory=list)  # decoded records (tables) beyond the pace, kept as the others catch up
    held_n: int = 0
    exhausted: bool = False  # nothing more to fetch: the range or the budget is read
    front: bool = False  # the last answer held no whole batch: ask for it first in the next request
    batch_bytes: int = 0  # largest batch seen: every ask is at least this big
    walked_bytes: int = 0  # bytes of the batches decoded ...
    walked_records: int = 0  # ... and the records they declare: the bytes-per-record estimate
    stalls: int = 0
    error_since: float | None = None
    txn_open: set = field(default_factory=set)  # producers whose transactional records were kept, no marker seen yet
    tables: list = field(default_factory=list)  # kept records, when no sink takes them
    notes: list = field(default_factory=list)
    sink: object = None  # a .sink.SampleFile: kept records go to the file as they are kept

    @property
    def share(self) -> float:
        """How much of its budget this partition has read."""
        return self.kept / self.budget if self.budget else 1.0


def sample_topic(conn, spec: SampleSpec, progress: Callable[[Progress], None] | None = None,
                 phase: Phase | None = None, sink=None):
    """Read ``spec.topic`` into a Sample; read-only (no group, no commit, no topic creation).

    Returns a partial sample (``meta.partial``) on Ctrl-C or a broker lost for
    longer than ``spec.retry_s``; raises KafkaError when nothing could be read
    at all (unreachable cluster, unknown topic, missing partitions).  With a
    ``sink`` (:class:`.sink.SampleFile`, see :func:`.sink.sample_to_file`) the
    kept records go to it as they are kept and a :class:`.sink.StreamedSample`
    (metadata and counts, no rows) is returned.
    """
    spec.validate()
    kafka_io = _kafka_io(conn)
    t0 = time.monotonic()
    # Compile the decoder while we connect (LLVM releases the GIL): it is ready by the first answer.
    threading.Thread(target=_warm_kernels, name="keyscope-decoder-compile", daemon=True).start()
    timeout_s = spec.timeout_s if spec.timeout_s is not None else DEFAULT_TIMEOUT_S
    deadline = t0 + timeout_s
    max_records = spec.effective_max_records
    max_bytes = spec.max_bytes if spec.max_bytes is not None else DEFAULT_MAX_BYTES
    plan = _FieldPlan(spec.fields)
    sampled_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    committed = spec.isolation == "read_committed"

    if phase is not None:
        phase.name = "reading"
    consumer = kafka_io.open_consumer(conn, timeout_s=timeout_s)
    try:
        all_parts = kafka_io.topic_partitions(consumer, spec.topic)
        wanted = all_parts if spec.partitions is None else spec.partitions
        missing = sorted(set(wanted) - set(all_parts))
        if missing:
            raise KafkaError(
                f"topic {spec.topic!r} has partitions {_ranges(all_parts)}; "
                f"--partitions asked for {', '.join(map(str, missing))}"
            )
        remaining = max(1.0, deadline - time.monotonic())
        marks = kafka_io.watermarks(consumer, spec.topic, wanted, timeout_s=min(remaining, 30.0))
        # read_committed: nothing past the last stable offset (an open transaction) is visible yet
        stops = {
            p: min(w.high, w.last_stable) if committed and w.last_stable is not None else w.high
            for p, w in marks.items()
        }
        remaining = max(1.0, deadline - time.monotonic())  # the watermarks took some of it
        starts = {p: min(o, stops[p]) for p, o in _start_offsets(kafka_io, consumer, spec, marks, remaining).items()}
        avail = {p: max(0, stops[p] - starts[p]) for p in wanted}
        budgets = plan_budgets(avail, max_records, spec.per_partition)
        parts: dict[int, _Part] = {}
        for p in wanted:
            w = marks[p]
            start, stop = starts[p], stops[p]
            if spec.start == "latest":
                start = max(w.low, stop - budgets[p])  # the last `budget` records
            x = _Part(p, w.low, w.high, w.list_offsets_high, start, stop, budgets[p], start, last_stable=w.last_stable,
                      sink=sink)
            x.fetch_bytes = min(FIRST_FETCH_BYTES, spec.partition_fetch_bytes or PARTITION_FETCH_BYTES)
            # latest: the bound moved the start, so older records were left out
            x.hit_budget = spec.start == "latest" and budgets[p] < avail[p]
            if budgets[p] == 0 or start >= stop:
                x.done = True
            if stop < w.high:
                x.notes.append(f"read up to the last stable offset {stop:,}: an open transaction holds the records after it")
            parts[p] = x
        state = _run(kafka_io, consumer, spec, parts, plan, deadline, max_bytes, progress, t0)
    finally:
        if phase is not None:
            phase.name = "assembling"
        try:
            consumer.close()
        except Exception:  # closing a consumer whose broker died must not hide the sample
            pass
    from .assemble import _build_sample

    return _build_sample(spec, conn, all_parts, parts, plan, state, sampled_at, t0, max_records, max_bytes, timeout_s)


def _kafka_io(conn):
    """The client module the sampler reads with: keyscope's own (.leanio) unless SASL is configured."""
    from . import leanio

    if leanio.use_lean(conn):
        return leanio
    from ..kafka import client

    return client


def _start_offsets(kafka_io, consumer, spec: SampleSpec, marks, timeout_s: float) -> dict[int, int]:
    if spec.start == "earliest" or spec.start == "latest":
        return {p: w.low for p, w in marks.items()}
    found = kafka_io.offsets_for_time(consumer, spec.topic, list(marks), spec.from_time_ms, timeout_s=timeout_s)
    out = {}
    for p, w in marks.items():
        o = found.get(p)
        out[p] = w.high if o is None else min(max(o, w.low), w.high)
    return out


@dataclass
class _RunState:
    stopped_by: str = "end of range"
    partial_reason: str | None = None
    bytes: int = 0
    requests: int = 0


def _pace_target(part: _Part, frontier: float, ratio: float = PACE_RATIO, step: float = PACE_STEP) -> int:
    """Records ``part`` may hold while the partition furthest behind has read ``frontier`` of its budget."""
    return min(part.budget, math.ceil((frontier * ratio + step) * part.budget - 1e-9))


def _ahead_target(part: _Part, frontier: float) -> int:
    """Records ``part`` may have fetched (kept and held): FETCH_AHEAD_* past the furthest behind, and at most
    FETCH_AHEAD_RECORDS past its pace, so what is held does not grow with the records read."""
    return min(_pace_target(part, frontier, FETCH_AHEAD_RATIO, FETCH_AHEAD_STEP),
               _pace_target(part, frontier) + FETCH_AHEAD_RECORDS)


def _fetch_size(part: _Part, want: int, bpr: float | None, limit: int) -> int:
    """Bytes to ask of one partition for ``want`` more records, at least its largest batch."""
    if part.walked_records:
        bpr = part.walked_bytes / part.walked_records
    size = int(want * (bpr or GUESS_RECORD_BYTES) * 1.2) + 1024
    size = min(max(size, part.batch_bytes, MIN_FETCH_BYTES), limit)
    return max(size, part.fetch_bytes) if part.front else size


def _run(kafka_io, consumer, spec, parts, plan, deadline, max_bytes, progress, t0) -> _RunState:
    """The fetch loop: a few requests in flight, each for a few partitions; decode while the next is fetched.

    Reading is paced, so that a sample cut short stays proportional: a
    partition keeps records up to PACE_RATIO x the share of its budget the
    partition furthest behind has kept, plus PACE_STEP, so wherever a timeout,
    --max-bytes or Ctrl-C cuts the sample, every partition has kept about the
    same share of its budget.  Fetches ask further ahead (FETCH_AHEAD_*); what
    they bring past the pace is decoded and held (``_Part.held``), kept as the
    others catch up, and dropped at a cut.

    --max-bytes counts what requests in flight may still bring, so the bytes
    fetched exceed it by at most the one whole batch a broker returns when a
    batch is larger than the limit.
    """
    state = _RunState()
    fetcher = kafka_io.RawFetcher(consumer, spec.topic)
    isolation = 1 if spec.isolation == "read_committed" else 0
    request_max = spec.fetch_max_bytes or FETCH_MAX_BYTES
    partition_max = spec.partition_fetch_bytes or PARTITION_FETCH_BYTES
    inflight: dict[int, tuple[list[int], int]] = {}  # tag -> (partitions, bytes the answer may hold)
    waiting: list[tuple[float, list[int]]] = []  # (when, partitions) to fetch again after an error
    failing_since: float | None = None
    last_error = ""
    tags = iter(range(1 << 62))

    def retry_later(ps: list[int], delay: float = 0.25) -> None:
        waiting.append((time.monotonic() + delay, ps))

    def report() -> None:
        if progress is not None:
            progress(Progress(
                records=sum(x.kept for x in parts.values()), bytes=state.bytes,
                partitions_done=sum(1 for x in parts.values() if x.done), partitions_total=len(parts),
                elapsed_s=time.monotonic() - t0,
            ))

    def release() -> float:
        """Keep held records up to the pace, until the pace stops moving; the frontier it ends at."""
        while True:
            open_ = [x for x in parts.values() if not x.done]
            if not open_:
                return 1.0
            frontier = min(x.share for x in open_)
            moved = [x for x in open_ if x.held_n and _release(x, _pace_target(x, frontier))]
            if not moved:
                return frontier
            report()  # a step of the pace: Ctrl-C may come here as anywhere

    def pump() -> None:
        """Ask for the partitions that are behind, while requests and --max-bytes allow."""
        now = time.monotonic()
        for item in [w for w in waiting if w[0] <= now]:
            waiting.remove(item)
            for p in item[1]:
                parts[p].busy = False
        frontier = release()
        ready = [
            x for x in parts.values() if not (x.done or x.busy or x.exhausted)
            and x.kept + x.held_n < _ahead_target(x, frontier)
        ]
        if not ready:
            return
        ready.sort(key=lambda x: (not x.front, x.share, x.partition))  # a batch too big for its ask goes first
        walked = sum(x.walked_records for x in parts.values())
        bpr = sum(x.walked_bytes for x in parts.values()) / walked if walked else None
        by_node: dict = {}
        for x in ready:
            by_node.setdefault(fetcher.leader(x.partition), []).append(x)
        if None in by_node:  # no leader known: ask for metadata and try again shortly
            fetcher.refresh_metadata()
            lost = [x.partition for x in by_node.pop(None)]
            for p in lost:
                parts[p].busy = True
            retry_later(lost, 0.2)
        sizes = {
            x.partition: _fetch_size(
                x, _ahead_target(x, frontier) - x.kept - x.held_n, bpr, partition_max)
            for xs in by_node.values() for x in xs
        }
        left = max_bytes - state.bytes - sum(r for _, r in inflight.values())
        if left <= 0:
            return  # the answers in flight may use up --max-bytes: wait for them
        scarce = sum(sizes.values()) > left
        if scarce:
            # --max-bytes is nearly spent: share what is left in proportion to what each needs, in
            # one request per leader (a broker exceeds a request's limit by one whole batch at most)
            if inflight:
                return
            scale = left / sum(sizes.values())
            sizes = {p: max(1, int(n * scale)) for p, n in sizes.items()}
        for node, xs in by_node.items():
            while xs and len(inflight) < MAX_IN_FLIGHT:
                free = 1 if scarce else MAX_IN_FLIGHT - len(inflight)
                size = min(PARTITIONS_PER_REQUEST, -(-len(xs) // free))  # spread over the free slots
                batch, xs = xs[:size], xs[size:]
                offsets = {}
                for x in batch:
                    x.busy = True
                    offsets[x.partition] = (x.next, sizes[x.partition])
                limit = max(1, min(request_max, left, sum(n for _, n in offsets.values())))
                left -= limit
                tag = next(tags)
                inflight[tag] = (list(offsets), limit)
                fetcher.send(tag, node, offsets, max_bytes=limit, isolation_level=isolation)
                state.requests += 1
                if left <= 0:
                    return

    try:
        pump()
        while any(not x.done for x in parts.values()):
            now = time.monotonic()
            if now >= deadline:
                state.stopped_by = "timeout"
                break
            if state.bytes >= max_bytes:
                state.stopped_by = "max-bytes"
                break
            if failing_since is not None and now - failing_since > spec.retry_s:
                state.partial_reason = f"lost the broker: {last_error}"
                break
            pump()
            if not inflight and not waiting:
                break  # nothing left to ask (cannot happen while a partition is open; never spin)
            try:
                tag, answer, exc = fetcher.answers.get(timeout=max(0.005, min(0.1, deadline - now)))
            except queue.Empty:
                continue
            req = inflight.pop(tag, None)
            if req is None:
                continue
            plist = req[0]
            if exc is not None:
                if kafka_io.throttled(exc):  # a broker quota holds this connection: wait, the broker is fine
                    waiting.append((time.monotonic() + 0.1, plist))
                    continue
                failing_since = failing_since or time.monotonic()
                last_error = _first_line(exc)
                fetcher.refresh_metadata()
                retry_later(plist)
                continue
            failing_since = None
            later: list[int] = []
            for fp in answer:
                part = parts.get(fp.partition)
                if part is None or part.done or fp.partition not in plist:
                    continue
                if _take(part, fp, spec, plan, state, fetcher) == _LATER:
                    later.append(part.partition)
            for p in plist:
                if p not in later:
                    parts[p].busy = False
            if later:
                retry_later(later)
            pump()
            report()
    except KeyboardInterrupt:
        if not any(p.kept for p in parts.values()):
            raise
        state.partial_reason = "interrupted (Ctrl-C)"
    except KafkaError as e:  # a fetch answer we cannot use: keep what came before it
        if not any(p.kept for p in parts.values()):
            raise
        state.partial_reason = str(e)
    if state.partial_reason is not None:
        if not any(p.kept for p in parts.values()):
            raise KafkaError(f"sampling {spec.topic!r} failed before any record was read: {state.partial_reason}")
        return state
    if state.stopped_by == "end of range":
        unfinished = [p.partition for p in parts.values() if not p.done]
        if unfinished and state.bytes >= max_bytes:
            state.stopped_by = "max-bytes"
        elif any(p.hit_budget for p in parts.values()):
            state.stopped_by = "record limit"
    return state


_OFFSET_OUT_OF_RANGE = 1
_LATER = "later"  # _take: fetch this partition again after a pause (leader moving, metadata stale)
_RETRIABLE_PARTITION_ERRORS = {3, 5, 6, 9, 74, 75}  # unknown partition, leader moved/not available, epochs


def _take(part: _Part, fp, spec, plan, state: _RunState, fetcher):
    """Apply one partition's answer: True to fetch it again now, _LATER after a pause, False when done."""
    from ..kafka.client import error_name

    if fp.error_code == _OFFSET_OUT_OF_RANGE:
        # Retention removed our next records while we read: skip to what is left.
        if fp.log_start_offset > part.next:
            part.notes.append(f"records {part.next}..{fp.log_start_offset - 1} were deleted by retention while sampling")
            part.next = fp.log_start_offset
            if part.next >= part.stop:
                part.exhausted = True
            return _settle(part)
        part.exhausted = True
        part.notes.append(f"offset {part.next} out of range")
        return _settle(part)
    if fp.error_code in _RETRIABLE_PARTITION_ERRORS:
        now = time.monotonic()
        part.error_since = part.error_since or now
        if now - part.error_since > spec.retry_s:
            raise KafkaError(
                f"fetch from {spec.topic!r} partition {part.partition} kept failing: {error_name(fp.error_code)}"
            )
        fetcher.refresh_metadata()
        return _LATER
    part.error_since = None
    if fp.error_code != 0:
        raise KafkaError(f"fetch from {spec.topic!r} partition {part.partition} failed: {error_name(fp.error_code)}")
    records = fp.records
    state.bytes += len(records)
    part.bytes += len(records)
    if not records:
        if 0 <= fp.high_watermark <= part.next:
            part.exhausted = True  # the partition was truncated below where we are: nothing left to read
            part.notes.append(f"high watermark fell to {fp.high_watermark} while sampling")
        elif spec.isolation == "read_committed" and 0 <= fp.last_stable_offset <= part.next:
            part.exhausted = True  # an open transaction: read_committed sees nothing past it yet
            part.notes.append(f"stopped at the last stable offset {fp.last_stable_offset:,} (an open transaction)")
        return _settle(part)
    if len(records) >= wire.LENGTH_END:  # the first batch's size, even when cut short: ask at least that much next time
        part.batch_bytes = max(part.batch_bytes, min(wire.batch_end(records, 0), 256 << 20))
    if spec.isolation == "read_committed":
        records = _skip_aborted(records, fp.aborted, part)
    return _consume(part, records, plan)


def _consume(part: _Part, records: bytes, plan) -> bool:
    """Decode a fetched chunk into the held records (at most what the budget still needs)."""
    c = _decode(part.partition, records, part.next, part.stop, max(1, part.budget - part.kept - part.held_n), plan)
    if c.table is not None:
        part.held.append(c.table)
        part.held_n += c.n
    part.walked_bytes += c.walked_bytes
    part.walked_records += c.walked_records
    if c.next is None:
        # Not one complete batch: the batch is larger than we asked for.  Asked first in a
        # request, a broker returns it whole whatever the limits (KIP-74); ask bigger too.
        part.front = True
        part.fetch_bytes = min(part.fetch_bytes * 4, 256 << 20)
        return True
    part.front = False
    if c.next <= part.next and c.n == 0:
        part.stalls += 1
        if part.stalls >= 3:  # the broker keeps answering with records we already have
            part.exhausted = True
            part.notes.append(f"the broker returned nothing new at offset {part.next}")
            return _settle(part)
        return True
    part.stalls = 0
    part.next = c.next
    if part.kept + part.held_n >= part.budget:
        part.hit_budget = part.hit_budget or part.next < part.stop
        part.exhausted = True
    elif part.next >= part.stop:
        part.exhausted = True
    return _settle(part)


def _release(part: _Part, target: int) -> bool:
    """Keep held records up to ``target`` records in all; True when some were kept."""
    moved = False
    while part.held and part.kept < target:
        t = part.held[0]
        k = min(t.num_rows, target - part.kept)
        if part.sink is not None:
            part.sink.add(part.partition, t.slice(0, k))  # type: ignore[attr-defined]
        else:
            part.tables.append(t.slice(0, k))
        part.kept += k
        part.held_n -= k
        moved = True
        if k == t.num_rows:
            part.held.pop(0)
        else:
            part.held[0] = t.slice(k)
    _settle(part)
    return moved


def _settle(part: _Part) -> bool:
    """Done once nothing is left to fetch or hold; True while the partition is open."""
    if part.exhausted and not part.held_n:
        part.done = True
    return not part.done


def _read_to(part: _Part) -> int:
    """Offsets from the start up to this one were kept in full: the first held record, or where fetching is."""
    if part.held:
        return int(part.held[0].column("offset")[0].as_py())
    return part.next




def _ranges(ps) -> str:
    ps = sorted(ps)
    if not ps:
        return "none"
    out, a, b = [], ps[0], ps[0]
    for x in ps[1:]:
        if x == b + 1:
            b = x
            continue
        out.append(f"{a}" if a == b else f"{a}-{b}")
        a = b = x
    out.append(f"{a}" if a == b else f"{a}-{b}")
    return ",".join(out)


