"""Running the tasks: in this process, a local process pool, or an existing Dask cluster.

All three call the same :func:`keyscope.scan.task.scan_task` and keep results
by task id: a task that failed (an exception, a worker process that died) is
submitted again, and a result for a task already kept is dropped, so nothing
is counted twice.  Only completed tasks are merged.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from ..errors import KafkaError, UsageError
from .plan import Task, plan_tasks
from .profile import Profile, merge
from .task import COUNTING, DEFAULT_COUNTER_RULES, ScanSpec, scan_group, scan_task

MAX_ATTEMPTS = 3
# Groups run at once in this process with --workers 1, each in a thread reading its tasks' partitions with
# one Fetch per leader (task.scan_group): one group counts while another waits on its answer, and the
# decoder, pyarrow and numpy release the GIL.
THREADS_HERE = 3  # more requests in flight: Tansu answers a many-partition Fetch with one partition's records
# Groups run at once in each worker process of --workers N > 1 (the same reason).
WORKER_THREADS = 2
# Tasks a worker process holds at once (for its groups); a worker that dies has exactly these run again.
WORKER_HOLD = 8
PROGRESS_S = 1.0  # records within tasks reported at most this often (a line each when stderr is not a terminal)

__all__ = ["ScanRequest", "ScanProgress", "ScanResult", "run_scan", "resolve_ranges", "parse_bound"]


@dataclass(frozen=True)
class Bound:
    kind: str  # earliest | latest | offset | time
    value: int | None = None
    text: str = ""


def parse_bound(text: str | None, option: str, default: str) -> Bound:
    """``--from``/``--to``: earliest, latest, an offset (a whole number) or a time (ISO-8601 or 2h back)."""
    from ..sampling import parse_time

    t = (text or default).strip()
    if t in ("earliest", "latest"):
        return Bound(t, None, t)
    if t.isdigit():
        return Bound("offset", int(t), t)
    try:
        return Bound("time", parse_time(t), t)
    except UsageError:
        raise UsageError(
            f"{option} {text!r}: expected earliest, latest, an offset (e.g. 1000), an ISO-8601 time "
            "(2026-11-28T09:30:00Z) or a span back from now (2h)"
        ) from None


@dataclass
class ScanRequest:
    topic: str
    start: Bound = Bound("earliest")
    stop: Bound = Bound("latest")
    key_by: tuple[tuple[str, ...], ...] = ((),)
    fields: tuple = ()
    separator: str = "|"
    partitions_max: int = 64
    counter_rules: tuple[str, ...] = DEFAULT_COUNTER_RULES
    workers: int | None = None  # None: the machine's cores
    dask: str | object | None = None  # scheduler address, or a distributed.Client
    tasks: int | None = None
    isolation: str = "read_committed"
    fault: dict = field(default_factory=dict)  # tests only, see ScanSpec.fault


@dataclass
class ScanProgress:
    offsets_done: int
    offsets_total: int
    records: int
    bytes: int
    tasks_done: int
    tasks_total: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if not self.offsets_done or self.elapsed_s <= 0:
            return None
        return self.elapsed_s * (self.offsets_total - self.offsets_done) / self.offsets_done


@dataclass
class ScanResult:
    profile: Profile
    partial: bool  # stopped early (Ctrl-C): the profile holds the completed tasks only
    elapsed_s: float
    retried: int = 0  # task attempts that failed and were run again
    engine: str = "local"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_ranges(conn, req: ScanRequest) -> tuple[int, dict[int, tuple[int, int]]]:
    """(partition count, {partition: (start, stop)}) from the watermarks and --from/--to."""
    n, ranges, _ = _resolve(conn, req)
    return n, ranges


def by_leader(tasks: list[Task], leaders: dict[int, int | None]) -> list[Task]:
    """The order tasks are handed out in: a leader's partitions together (a group fetches them in one
    request), each partition's first task before any partition's second (a group reads one task per
    partition at a time).  Task ids, hence the merge order, are the plan's."""
    rank: dict[int, int] = {}
    seq = []
    for t in tasks:
        rank[t.partition] = rank.get(t.partition, -1) + 1
        seq.append((leaders.get(t.partition) if leaders.get(t.partition) is not None else -1, rank[t.partition],
                    t.partition, t.start, t))
    return [x[-1] for x in sorted(seq, key=lambda x: x[:4])]


def _resolve(conn, req: ScanRequest) -> tuple[int, dict[int, tuple[int, int]], dict[int, int | None]]:
    """resolve_ranges, and each partition's leader then (for :func:`by_leader`)."""
    from ..kafka import lean

    client = lean.Client(conn, timeout_s=30.0)
    try:
        parts = lean.topic_partitions(client, req.topic)
        marks = lean.watermarks(client, req.topic, parts)

        def resolve(b: Bound, end: bool) -> dict[int, int]:
            if b.kind == "earliest":
                return {p: w.low for p, w in marks.items()}
            if b.kind == "latest":
                return {p: _end(w, req.isolation) for p, w in marks.items()}
            value = int(b.value or 0)
            if b.kind == "offset":
                return {p: min(max(value, w.low), _end(w, req.isolation)) for p, w in marks.items()}
            found = lean.offsets_for_time(client, req.topic, parts, value)
            out = {}
            for p, w in marks.items():
                o = found.get(p)
                out[p] = _end(w, req.isolation) if o is None else min(max(int(o), w.low), _end(w, req.isolation))
            return out

        a, z = resolve(req.start, False), resolve(req.stop, True)
        leaders = {p: client.leader(req.topic, p) for p in parts}
    finally:
        client.close()
    return len(parts), {p: (a[p], max(a[p], z[p])) for p in parts}, leaders


def _end(w, isolation: str) -> int:
    if isolation == "read_committed" and w.last_stable is not None:
        return min(w.high, w.last_stable)
    return w.high


def run_scan(conn, req: ScanRequest, progress: Callable[[ScanProgress], None] | None = None) -> ScanResult:
    """Plan, run and merge.  Ctrl-C returns the completed tasks' profile with ``partial`` set;
    KeyboardInterrupt propagates when no task had completed."""
    t0 = time.monotonic()
    if req.partitions_max < 1:
        raise UsageError(f"--partitions-max must be at least 1, got {req.partitions_max}")
    from ..model.limits import check_count

    check_count(req.partitions_max, "--partitions-max")
    workers = req.workers or cores()
    preload = None
    if req.dask is None:
        import threading

        # Imports and kernel loads (~0.4 s CPU) while the watermarks are read (network round trips): here,
        # where --workers 1 runs its tasks and from where --workers N forks its worker processes.
        preload = threading.Thread(target=_preload, name="keyscope-preload", daemon=True)
        preload.start()
    n_parts, ranges, leaders = _resolve(conn, req)
    from .plan import DEFAULT_TASKS_PER_WORKER, LOCAL_TASKS_PER_WORKER

    tasks = plan_tasks(ranges, workers=workers, tasks=req.tasks,
                       per_worker=DEFAULT_TASKS_PER_WORKER if req.dask is not None else LOCAL_TASKS_PER_WORKER)
    handed = by_leader(tasks, leaders)
    spec = ScanSpec(req.topic, n_parts, req.partitions_max, tuple(req.key_by), tuple(req.fields), req.separator,
                    tuple(req.counter_rules), req.isolation, len(tasks), dict(req.fault))
    conn = dataclasses.replace(conn, debug=None)  # shipped to workers: no callables
    results: dict[int, Profile] = {}
    state = {"retried": 0}
    total = sum(t.span for t in tasks)

    import threading

    inflight: dict[int, tuple[int, int, int]] = {}  # task id -> (offsets, records, bytes) of a task under way here
    lock = threading.Lock()
    last = [0.0]

    def report() -> None:
        assert progress is not None
        with lock:
            done = [t for t in tasks if t.id in results]
            under = [v for k, v in inflight.items() if k not in results]
            p = ScanProgress(sum(t.span for t in done) + sum(v[0] for v in under), total,
                             sum(p.records for p in results.values()) + sum(v[1] for v in under),
                             sum(p.bytes for p in results.values()) + sum(v[2] for v in under),
                             len(results), len(tasks), time.monotonic() - t0)
        progress(p)

    closed = [False]  # after Ctrl-C: a group still finishing a task adds nothing to what is merged

    def kept(task: Task, prof: Profile) -> None:
        with lock:
            if task.id in results or closed[0]:  # a second result for a task (a retry that raced): counted once
                return
            results[task.id] = prof
            inflight.pop(task.id, None)
        if progress:
            report()

    def under_way(task_id: int, offsets: int, records: int, nbytes: int) -> None:
        with lock:
            inflight[task_id] = (offsets, records, nbytes)
            now = time.monotonic()
            if now - last[0] < PROGRESS_S:
                return
            last[0] = now
        report()

    here = under_way if progress else None  # records within a task: in this process only

    partial = False
    engine = "dask" if req.dask is not None else ("local" if workers == 1 else f"processes:{workers}")
    if preload is not None:
        # Before any task thread starts: a first import raced between the preload and a task's thread once
        # failed (ModuleNotFoundError for keyscope.sampling.jsonfields, a module that exists; bench_scan
        # --quick in CI, stop 21).  The watermarks' round trips have overlapped it by now.
        preload.join()
        from .task import warm_imports

        warm_imports(spec)
    try:
        if req.dask is not None:
            _run_dask(req.dask, conn, spec, tasks, kept, state, progress=here)
        elif workers == 1 or len(tasks) <= 1:
            from .task import close_consumers

            try:
                if len(tasks) <= 1:
                    for t in tasks:
                        _run_here(conn, spec, t, kept, state, here)
                else:
                    _run_groups(THREADS_HERE, conn, spec, handed, kept, state, progress=here, leaders=leaders)
            finally:
                close_consumers()
        else:
            from .task import close_consumers

            try:  # the scanning process runs one worker's share itself: workers - 1 processes are forked
                _run_procs(min(workers, len(tasks)) - 1, conn, spec, handed, kept, state, progress=here,
                           here=WORKER_THREADS, leaders=leaders)
            finally:
                close_consumers()
    except KeyboardInterrupt:
        with lock:
            closed[0] = True
        if not results:
            raise
        partial = True
    if results:
        from .profile import trim_tracked

        profile = merge(results.values())
        trim_tracked(profile)  # the merged profile only: task results stay whole, so merging is associative
    else:
        from .task import _Accumulator

        profile = _Accumulator(spec, Task(-1, 0, 0, 0)).result()
        profile.tasks_done = set()
        profile.partitions = {}
    profile.tasks_planned = len(tasks)
    from .profile import PartitionStats

    for p in range(n_parts):  # partitions with nothing in range show as zeros
        profile.partitions.setdefault(p, PartitionStats())
    profile.partitions = dict(sorted(profile.partitions.items()))
    profile.range = {str(p): list(r) for p, r in sorted(ranges.items())}
    profile.range["from"] = req.start.text or req.start.kind
    profile.range["to"] = req.stop.text or req.stop.kind
    return ScanResult(profile, partial, time.monotonic() - t0, state["retried"], engine)


def _run_here(conn, spec, t, kept, state, progress=None) -> None:
    for attempt in range(MAX_ATTEMPTS):
        try:
            kept(t, scan_task(conn, spec, t, attempt, progress))
            return
        except KafkaError:
            state["retried"] += 1
            if attempt == MAX_ATTEMPTS - 1:
                raise


def _width(tasks, groups: int) -> int:
    """Partitions per group: the tasks' partitions shared out between ``groups`` groups run at once."""
    return max(1, -(-len({t.partition for t in tasks}) // max(1, groups)))


def _take_from(todo: list, attempts: dict, busy: set, room: int, leaders: dict, ok=None) -> list:
    """Up to ``room`` tasks of ``todo`` (removed from it) as ``(task, attempt)``, on distinct partitions not
    in ``busy``, those led by a leader the group already reads from first (one Fetch covers them), in
    ``todo``'s order otherwise.  Taken at once, under the caller's lock: groups starting together would
    otherwise interleave and each get one partition of every leader."""
    out: list = []
    busy = set(busy)
    near = {leaders.get(p) for p in busy}
    while len(out) < room:
        pick = None
        for i, t in enumerate(todo):
            if t.partition in busy or (ok is not None and not ok(t)):
                continue
            if not near or leaders.get(t.partition) in near:
                pick = i
                break
            if pick is None:
                pick = i
        if pick is None:
            break
        t = todo.pop(pick)
        out.append((t, attempts[t.id]))
        busy.add(t.partition)
        near.add(leaders.get(t.partition))
    return out


def _run_groups(threads, conn, spec, tasks, kept, state, progress=None, leaders=None) -> None:
    """Tasks in ``threads`` groups in this process (task.scan_group), each group taking tasks as it has room.

    A task that fails is put back (with one more attempt) for any group to take; a result is kept per task."""
    import threading

    lock = threading.Lock()
    attempts = {t.id: 0 for t in tasks}
    todo = list(tasks)
    errors: list[BaseException] = []
    stop = threading.Event()
    width = _width(tasks, threads)
    pool: list = []

    def take(busy, wait, room):
        with lock:
            return [] if stop.is_set() else _take_from(todo, attempts, busy, room, leaders or {})

    def on_result(t, res) -> None:
        if isinstance(res, BaseException):
            with lock:
                try:
                    _again(t, attempts, todo, state, str(res))
                except KafkaError as e:
                    errors.append(e)
                    stop.set()
        else:
            kept(t, res)

    def run() -> None:
        try:
            scan_group(conn, spec, take, on_result, progress, width, stop.is_set, counting=COUNTING)
        except BaseException as e:  # not a Kafka failure of one task: the scan stops with it
            errors.append(e)
            stop.set()

    try:
        while todo and not stop.is_set():  # a second round for tasks failed after the other groups ended
            pool = [threading.Thread(target=run, daemon=True, name=f"keyscope-scan-{i}")
                    for i in range(min(threads, len(todo)))]
            for th in pool:
                th.start()
            for th in pool:
                while th.is_alive():
                    th.join(0.25)  # with a timeout: Ctrl-C lands here, not in a lock's wait
            if errors:
                raise errors[0]
    except KeyboardInterrupt:
        stop.set()  # the groups return after their answer under way
        _join(pool)
        raise


def _join(threads, timeout_s: float = 3.0) -> None:
    """Wait a little for stopped groups (an answer under way, up to its max wait): a thread alive at exit
    holding sketches makes their binding print leak reports.  Daemon threads: a stuck one does not hold the exit."""
    deadline = time.monotonic() + timeout_s
    for th in threads:
        th.join(max(0.0, deadline - time.monotonic()))


def _pool_context():
    """``fork`` when this process runs no other Python thread and has not loaded Polars (the worker inherits
    the imports and compiled kernels: nothing to start), else ``forkserver`` (fork copies no threads, and a
    lock held by one would stay held in the child).

    Why: with a fork server, each scan paid a second interpreter's start and imports (~0.6 s CPU) on top
    of this process's own, which left --workers 2 slower than --workers 1 on 2 cores."""
    import multiprocessing as mp
    import sys
    import threading

    # Polars' thread pool is not fork-safe (a forked worker using it hung, seen in the tests' process);
    # pyarrow's and jemalloc's handle fork.  The scan imports Polars only in its tasks (--key-by, --field).
    if threading.active_count() == 1 and "polars" not in sys.modules and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["keyscope.scan._preload"])
    return ctx


def _preload() -> None:
    try:
        from . import _preload  # noqa: F401
    except Exception:  # the task imports the same modules and reports a real failure there
        pass


def _worker_main(conn, spec, tasks_in, results_out, threads: int, progress: bool = False,
                 width: int = 1, leaders: dict | None = None) -> None:
    """A worker process: tasks arrive on ``tasks_in`` (None: stop), ``threads`` groups of up to ``width``
    tasks run at once (task.scan_group: one Fetch per leader for a group's partitions), each task's result
    (or failure) goes back on this process's own pipe, so a process that dies breaks no other's pipe.
    With ``progress``, a task's records so far go back too, at most every PROGRESS_S / 2 per task."""
    import signal
    import threading

    from .task import close_consumers, warm_imports

    warm_imports(spec)  # a fork server's worker has the preload's imports only: the rest before its threads
    # Ctrl-C reaches the whole process group: the scanning process decides (it keeps the completed tasks and
    # kills the workers); a worker forked from it must not raise KeyboardInterrupt nor inherit its SIGTERM handler.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    todo: list = []  # tasks received, not taken by a group yet
    attempts: dict[int, int] = {}
    closed = [False]
    cond = threading.Condition()
    send_lock = threading.Lock()

    def send(msg) -> None:
        with send_lock:
            results_out.send(msg)

    def take(busy, wait, room):
        with cond:
            while True:
                got = _take_from(todo, attempts, busy, room, leaders or {})
                if got or not wait or closed[0]:
                    return got
                cond.wait()

    last: dict[int, float] = {}

    def under_way(tid, offsets, records, nbytes) -> None:
        now = time.monotonic()
        if now - last.get(tid, 0.0) >= PROGRESS_S / 2:
            last[tid] = now
            send(("progress", tid, (offsets, records, nbytes)))

    def on_result(t, res) -> None:
        if isinstance(res, KafkaError):
            send(("fail", t.id, str(res)))
        elif isinstance(res, BaseException):
            send(("error", t.id, f"{type(res).__name__}: {res}"))
        else:
            send(("done", t.id, res))

    def run() -> None:
        while True:
            try:
                scan_group(conn, spec, take, on_result, under_way if progress else None, width, counting=COUNTING)
                return
            except Exception as e:  # not a Kafka failure: the scan stops with it, as in-process
                send(("error", -1, f"{type(e).__name__}: {e}"))
                return

    pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for th in pool:
        th.start()
    try:
        while True:
            item = tasks_in.recv()
            if item is None:
                break
            with cond:
                todo.append(item[0])
                attempts[item[0].id] = item[1]
                cond.notify_all()
    except EOFError:  # the scanning process is gone
        pass
    with cond:
        closed[0] = True
        cond.notify_all()
    for th in pool:
        th.join()
    close_consumers()


def _run_procs(workers, conn, spec, tasks, kept, state, threads: int = WORKER_THREADS, progress=None,
               hold: int = WORKER_HOLD, here: int = 0, leaders: dict | None = None) -> None:
    """Local worker processes, each running ``threads`` groups of tasks at once (see WORKER_THREADS), and
    ``here`` groups in this process's own threads (the scanning process is a worker too: it only waits
    otherwise, and one process fewer is one start, one client and its pages fewer: --workers 2 forks one).

    The scanning process hands each worker at most ``hold`` tasks at a time, on partitions it does not
    hold already where it can, and knows which it holds: a worker that dies (killed, out of memory) has
    exactly those run again elsewhere; a result that arrives for a task already kept is dropped by ``kept``."""
    import threading
    from multiprocessing.connection import wait

    ctx = _pool_context()
    attempts = {t.id: 0 for t in tasks}
    by_id = {t.id: t for t in tasks}
    todo = list(tasks)
    done: set[int] = set()
    procs: dict = {}  # sentinel -> [process, task pipe, result pipe, {task ids held}]
    # the partitions shared out between every group of every worker
    width = _width(tasks, workers * threads + here)
    # a worker's share: at most what its groups read at once, and no more than its part of the tasks (the
    # groups here take theirs as they have room, so the workers are fed first)
    hold = max(1, min(hold, width * threads, -(-len(tasks) // max(1, workers + (1 if here else 0)))))
    mu = threading.Condition()  # todo, done, attempts: shared with the groups run here
    errors: list[BaseException] = []
    stop = threading.Event()
    wake_r, wake_w = ctx.Pipe(duplex=False)  # a group here finished a task: the loop below looks again
    wake_lock = threading.Lock()

    def wake(b: bytes) -> None:
        with wake_lock:
            try:
                wake_w.send_bytes(b)
            except OSError:  # the loop is gone (Ctrl-C): nothing to wake
                pass

    def start() -> None:
        # A replacement started while groups run here comes from a fork server: a fork copies no thread,
        # and a lock one of them held would stay held in the child.
        c = ctx if not here else _pool_context()
        t_r, t_w = c.Pipe(duplex=False)
        r_r, r_w = c.Pipe(duplex=False)
        proc = c.Process(target=_worker_main, args=(conn, spec, t_r, r_w, threads, progress is not None, width,
                                                    leaders), daemon=True)
        proc.start()
        t_r.close()
        r_w.close()
        procs[proc.sentinel] = [proc, t_w, r_r, set()]

    def feed() -> None:
        with mu:
            for w in procs.values():
                while todo and len(w[3]) < hold:
                    held = {by_id[i].partition for i in w[3]}
                    i = next((i for i, t in enumerate(todo) if t.partition not in held), 0)
                    t = todo.pop(i)
                    w[3].add(t.id)
                    w[1].send((t, attempts[t.id]))

    def lost(w) -> None:  # a dead worker: the tasks it held run again
        with mu:
            for tid in sorted(w[3] - done):
                _again(by_id[tid], attempts, todo, state)
            w[3].clear()
            mu.notify_all()

    def handle(w, msg) -> None:
        kind, tid, payload = msg
        if kind == "progress":  # records of a task under way in that worker
            if progress is not None and tid not in done:
                progress(tid, *payload)
            return
        w[3].discard(tid)
        if kind == "done":
            with mu:
                new = tid not in done
                done.add(tid)
            if new:
                kept(by_id[tid], payload)
        elif kind == "fail":
            with mu:
                _again(by_id[tid], attempts, todo, state, payload)
                mu.notify_all()
        else:
            raise KafkaError(f"task {tid} failed: {payload}" if tid >= 0 else f"a scan worker failed: {payload}")

    # ---- the groups run in this process
    def here_ok(t) -> bool:  # a task set to kill its process (tests) is left to the worker processes
        return not (attempts[t.id] == 0 and spec.fault.get(t.id) == "exit")

    def take(busy, wait_, room):
        with mu:
            while True:
                if stop.is_set():
                    return []
                got = _take_from(todo, attempts, busy, room, leaders or {}, here_ok)
                if got or not wait_ or len(done) == len(tasks):
                    return got
                mu.wait(0.25)

    def on_result(t, res) -> None:
        with mu:
            if isinstance(res, BaseException):
                try:
                    _again(t, attempts, todo, state, str(res))
                except KafkaError as e:
                    errors.append(e)
                    stop.set()
                mu.notify_all()
                res = None
            elif t.id in done:
                res = None
            else:
                done.add(t.id)
        if res is not None:
            kept(t, res)
        wake(b".")

    def run_here() -> None:
        try:
            scan_group(conn, spec, take, on_result, progress, width, stop.is_set, counting=COUNTING)
        except BaseException as e:  # not a Kafka failure of one task: the scan stops with it
            errors.append(e)
            stop.set()
            wake(b"!")

    for _ in range(workers):
        start()
    feed()
    mine = [threading.Thread(target=run_here, daemon=True, name=f"keyscope-scan-{i}") for i in range(here)]
    for th in mine:  # after the fork: the workers copy no thread
        th.start()
    try:
        while len(done) < len(tasks):
            if errors:
                raise errors[0]
            feed()
            readers = {w[2]: w for w in procs.values()}
            ready = wait(list(readers) + list(procs) + [wake_r], timeout=1.0)
            for r in ready:
                if r is wake_r:
                    while wake_r.poll():
                        wake_r.recv_bytes()
                elif r in readers:
                    w = readers[r]
                    try:
                        handle(w, w[2].recv())
                    except (EOFError, OSError):  # died mid-send: its sentinel says so next
                        pass
            for sentinel in [s for s in ready if s in procs]:
                w = procs.pop(sentinel)
                while True:  # what it sent before it died still counts
                    try:
                        if not w[2].poll():
                            break
                        handle(w, w[2].recv())
                    except (EOFError, OSError):
                        break
                lost(w)
                w[2].close()
                if len(done) < len(tasks):
                    start()
        if errors:
            raise errors[0]
    except BaseException:
        stop.set()
        for w in procs.values():
            w[0].kill()
        _join(mine)
        raise
    finally:
        with mu:
            mu.notify_all()
    for th in mine:
        th.join(10)
    for w in procs.values():
        try:
            w[1].send(None)
        except OSError:
            pass
    for w in procs.values():
        w[0].join(10)
        if w[0].is_alive():
            w[0].kill()


def _again(t: Task, attempts: dict, todo: list, state: dict, why: str = "") -> None:
    attempts[t.id] += 1
    state["retried"] += 1
    if attempts[t.id] >= MAX_ATTEMPTS:
        raise KafkaError(f"task {t.id} (partition {t.partition}, offsets {t.start}..{t.stop - 1}) failed "
                         f"{MAX_ATTEMPTS} times" + (f": {why}" if why else ""))
    todo.append(t)


class _DaskProgress:
    """Records of a task under way on a Dask worker, sent to the scanning process as a Dask event
    (``log_event`` on the worker, ``subscribe_topic`` here), at most every PROGRESS_S / 2 per task."""

    def __init__(self, topic: str):
        self.topic = topic
        self.last = 0.0

    def __call__(self, tid: int, offsets: int, records: int, nbytes: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_S / 2:
            return
        self.last = now
        try:
            from distributed import get_worker

            get_worker().log_event(self.topic, (tid, offsets, records, nbytes))
        except Exception:  # progress only: a task never fails for it
            pass


def _run_dask(address, conn, spec, tasks, kept, state, progress=None) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise UsageError("--dask needs the distributed package: pip install 'keyscope[dask]'") from None
    own = not hasattr(address, "submit")
    try:
        client = Client(address, timeout=30) if own else address
    except (OSError, TimeoutError) as e:
        raise UsageError(f"--dask {address}: cannot reach the scheduler ({e})") from None
    try:
        import uuid

        token = uuid.uuid4().hex[:12]  # keys unique to this scan: Dask reuses results held under a known key
        attempts = {t.id: 0 for t in tasks}
        by_key = {}
        futures = []
        under_way = None
        if progress is not None:
            topic = f"keyscope-scan-{token}"
            under_way = _DaskProgress(topic)
            client.subscribe_topic(topic, lambda event: progress(*event[1]))
        for t in tasks:
            f = client.submit(scan_task, conn, spec, t, 0, under_way, pure=False,
                              key=f"keyscope-scan-{token}-{t.id}-0")
            by_key[f.key] = t
            futures.append(f)
        ac = as_completed(futures)
        for f in ac:
            t = by_key[f.key]
            if f.status == "finished":
                kept(t, f.result())
                continue
            todo: list = []
            _again(t, attempts, todo, state)
            g = client.submit(scan_task, conn, spec, t, attempts[t.id], under_way, pure=False,
                              key=f"keyscope-scan-{token}-{t.id}-{attempts[t.id]}")
            by_key[g.key] = t
            ac.add(g)
    except KeyboardInterrupt:
        client.cancel(futures)
        raise
    finally:
        if own:
            client.close()
