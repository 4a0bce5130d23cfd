"""Reading a live topic into a :class:`~keyscope.sample.Sample`, bounded and read-only.

Why not a kafka-python consumer loop: it builds a Python object per record
and reaches about half of kcat's speed.  Here Fetch requests go out on the
read-only consumer's own connections (:class:`keyscope.kafka_io.RawFetcher`)
and the RecordBatch v2 bytes are decoded by a compiled kernel straight into
column buffers (keys copied, values only when a ``--field`` needs them).
Compressed batches are inflated with the codecs pyarrow ships (gzip, snappy,
lz4, zstd), so no codec package is needed.

What is read: per partition, a contiguous offset range ``[start, stop)``,
``stop`` being the high watermark when sampling began, so a busy topic cannot
keep the sampler running and an idle or empty partition costs nothing.
Bounds (``per_partition``, ``max_records``, ``max_bytes``, ``timeout_s``)
stop it early, whichever comes first.  ``max_records`` is split across
partitions in proportion to what each holds in its range, so the sample's
partition mix follows the topic's.

Ctrl-C or a lost broker does not lose what was read: :func:`sample_topic`
returns it with ``meta.partial`` set, and the caller writes it.
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import math
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .errors import KafkaError, UsageError

DEFAULT_MAX_RECORDS = 100_000  # when neither --per-partition nor --max-records is given
DEFAULT_MAX_BYTES = 256 << 20
DEFAULT_TIMEOUT_S = 60.0
FETCH_MAX_BYTES = 32 << 20  # per request; brokers may exceed it by one batch
PARTITION_FETCH_BYTES = 4 << 20
MAX_IN_FLIGHT = 4  # fetch requests out at once
PARTITIONS_PER_REQUEST = 32  # Tansu returns ~1 MB per partition whatever the limits; keeps answers < 100 MB frames
MODES = ("latest", "earliest", "time")
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z; later (damaged) timestamps become null

__all__ = [
    "FieldSpec",
    "SampleSpec",
    "Progress",
    "sample_topic",
    "parse_field",
    "parse_time",
    "parse_partitions",
    "parse_size",
    "plan_budgets",
]


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class FieldSpec:
    """A column pulled from each record: a JSON path into the value, or a header."""

    name: str
    path: str  # "$.a.b" or "header:NAME"

    @property
    def header(self) -> str | None:
        return self.path[len("header:") :] if self.path.startswith("header:") else None


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_RESERVED = {"partition", "offset", "timestamp", "key", "key_size", "value_size"}


def parse_field(text: str) -> FieldSpec:
    """``NAME=PATH`` as given to ``--field``; PATH is ``$.json.path`` or ``header:NAME``."""
    if "=" not in text:
        raise UsageError(f"--field expects NAME=PATH (e.g. tenant=$.tenant_id or trace=header:trace-id), got {text!r}")
    name, path = (s.strip() for s in text.split("=", 1))
    if not _NAME.match(name):
        raise UsageError(f"--field name {name!r} must start with a letter or _ and hold only letters, digits, _ . -")
    if name in _RESERVED:
        raise UsageError(f"--field name {name!r} is taken by a sample column; choose another")
    if path.startswith("header:"):
        if not path[len("header:") :]:
            raise UsageError(f"--field {name}: header: needs a header name, e.g. header:trace-id")
        return FieldSpec(name, path)
    if not path.startswith("$"):
        raise UsageError(f"--field {name}: PATH must be a JSON path starting with $ (e.g. $.tenant_id) or header:NAME")
    import polars as pl

    try:
        pl.Series(["{}"]).str.json_path_match(path)
    except Exception as e:
        raise UsageError(f"--field {name}: invalid JSON path {path!r} ({_first_line(e)})") from None
    return FieldSpec(name, path)


_REL = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w))+$")
_REL_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_time(text: str, now_ms: int | None = None) -> int:
    """``--from-time``: ISO-8601 (no zone = UTC) or a span back from now (``90s``, ``2h``, ``1h30m``, ``7d``)."""
    t = text.strip()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if _REL.match(t):
        span = sum(float(n) * _UNIT_MS[u] for n, u in _REL_PART.findall(t))
        return int(now_ms - span)
    try:
        d = _dt.datetime.fromisoformat(t.replace("z", "Z"))
    except ValueError:
        raise UsageError(
            f"--from-time {text!r}: expected ISO-8601 (2026-11-28T09:30:00Z) or a span back from now (30m, 2h, 1d)"
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return int(d.timestamp() * 1000)


def parse_partitions(text: str) -> list[int]:
    """``0,2,5-7`` -> [0, 2, 5, 6, 7]."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.match(r"^(\d+)(?:-(\d+))?$", part)
        if not m:
            raise UsageError(f"--partitions expects numbers and ranges like 0,2,5-7, got {text!r}")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b < a:
            raise UsageError(f"--partitions range {part!r} runs backwards")
        out.update(range(a, b + 1))
    return sorted(out)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?$", re.I)


def parse_size(text: str) -> int:
    """``--max-bytes``: ``1000``, ``64KB``, ``256MiB``, ``1g`` (K/M/G are 1024-based, as kcat's)."""
    m = _SIZE.match(str(text).strip())
    if not m:
        raise UsageError(f"--max-bytes expects a size like 64MB or 1GiB, got {text!r}")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    n = int(float(m.group(1)) * mult)
    if n <= 0:
        raise UsageError(f"--max-bytes must be positive, got {text!r}")
    return n


@dataclass
class SampleSpec:
    """What to read.  Bounds left None take the defaults described in docs/sampling.md."""

    topic: str
    start: str = "latest"  # latest | earliest | time
    from_time_ms: int | None = None
    from_time_text: str | None = None  # as the user wrote it, for the metadata
    partitions: list[int] | None = None
    per_partition: int | None = None
    max_records: int | None = None
    max_bytes: int | None = None
    timeout_s: float | None = None
    fields: list[FieldSpec] = field(default_factory=list)
    # How long a lost broker may take to come back, or its partitions to get a new leader, before the
    # sample is cut short.  Kafka fences a dead broker after broker.session.timeout.ms (9 s by default)
    # and a controller failover adds seconds: 10 s cut samples short on real Kafka.
    retry_s: float = 30.0

    def validate(self) -> "SampleSpec":
        if self.start not in MODES:
            raise UsageError(f"--from must be one of latest, earliest (or use --from-time), got {self.start!r}")
        if self.start == "time" and self.from_time_ms is None:
            raise UsageError("--from-time needs a time")
        for name in ("per_partition", "max_records", "max_bytes"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise UsageError(f"--timeout must be a positive number of seconds, got {self.timeout_s}")
        names = [f.name for f in self.fields]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise UsageError(f"--field name(s) given twice: {', '.join(sorted(dup))}")
        return self

    @property
    def effective_max_records(self) -> int | None:
        if self.max_records is None and self.per_partition is None:
            return DEFAULT_MAX_RECORDS
        return self.max_records


@dataclass
class Progress:
    """Handed to the progress callback after every fetch answer."""

    records: int
    bytes: int
    partitions_done: int
    partitions_total: int
    elapsed_s: float


# --------------------------------------------------------------------------- planning


def plan_budgets(avail: dict[int, int], max_records: int | None, per_partition: int | None) -> dict[int, int]:
    """Records to take per partition: capped per partition, and ``max_records``
    split in proportion to what each partition offers (largest remainder), so
    the sample's partition mix follows the topic's rather than flattening it.
    """
    cap = {p: max(0, a if per_partition is None else min(a, per_partition)) for p, a in avail.items()}
    total = sum(cap.values())
    if max_records is None or total <= max_records:
        return cap
    share = {p: max_records * c / total for p, c in cap.items()}
    out = {p: min(cap[p], int(s)) for p, s in share.items()}
    left = max_records - sum(out.values())
    for p in sorted(share, key=lambda p: (-(share[p] - int(share[p])), p)):
        if left <= 0:
            break
        if out[p] < cap[p]:
            out[p] += 1
            left -= 1
    return out


# --------------------------------------------------------------------------- the kernel
#
# Why LLVM IR built with llvmlite and not numba: numba's fixed cost per
# process (~0.3 s import, ~0.8 s to load even a cached kernel, which imports
# scipy for BLAS) was longer than reading 100,000 records; this module
# compiles in a few tens of ms and runs as fast (keyscope/_kernels.py made the
# same move).  The builder below reads like the C it stands for: variables
# are stack slots (LLVM promotes them to registers), loops have break and
# continue.  Every read is checked against its record and batch end, so a
# damaged fetch cannot make the kernel read outside the buffer; every write
# stays within capacities the caller guarantees (see _Columns).

# Cursor slots shared between Python and the kernel (an int64 array, updated in place).
_POS, _N, _KPOS, _VPOS, _NEXT = 0, 1, 2, 3, 4
_ST_LEN = 5
# Kernel statuses.
_END, _COMPRESSED, _STOP, _LEGACY, _CORRUPT = 0, 1, 2, 3, 4
_BATCH_HEADER = 61  # RecordBatch v2 header bytes, up to and including the record count


def _build_ir() -> str:
    import contextlib

    from llvmlite import ir

    I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
    P8, P32, P64 = I8.as_pointer(), I32.as_pointer(), I64.as_pointer()
    mod = ir.Module("keyscope_recordbatch")
    memcpy = mod.declare_intrinsic("llvm.memcpy", [P8, P8, I64])

    class Fn:
        """A function under construction, with C-like helpers."""

        def __init__(self, name, ret, args):
            self.fn = ir.Function(mod, ir.FunctionType(ret, [t for _, t in args]), name)
            self.a = {}
            for (n, _), arg in zip(args, self.fn.args):
                arg.name = n
                self.a[n] = arg
            entry = self.fn.append_basic_block("entry")
            body = self.fn.append_basic_block("body")
            self.b = ir.IRBuilder(entry)
            br = self.b.branch(body)
            self.slots = ir.IRBuilder(entry)
            self.slots.position_before(br)
            self.b.position_at_end(body)
            self.loops = []  # (continue target, break target)

        # values
        def k(self, x, ty=I64):
            return ir.Constant(ty, x) if isinstance(x, int) else x

        def var(self, init, ty=I64):
            slot = self.slots.alloca(ty)
            self.b.store(self.k(init, ty), slot)
            return slot

        def get(self, slot):
            return self.b.load(slot)

        def set(self, slot, v):
            self.b.store(self.k(v, slot.type.pointee), slot)

        def add(self, a, b):
            return self.b.add(self.k(a), self.k(b))

        def sub(self, a, b):
            return self.b.sub(self.k(a), self.k(b))

        def cmp(self, op, a, b):
            return self.b.icmp_signed(op, self.k(a), self.k(b))

        def any(self, *conds):
            out = conds[0]
            for c in conds[1:]:
                out = self.b.or_(out, c)
            return out

        def at(self, ptr, i):
            return self.b.gep(ptr, [self.k(i)])

        def byte(self, ptr, i):
            return self.b.zext(self.b.load(self.at(ptr, i)), I64)

        def be(self, ptr, i, nbytes):
            """Big-endian unsigned integer of ``nbytes`` at ptr[i] (as i64)."""
            v = self.byte(ptr, i)
            for j in range(1, nbytes):
                v = self.b.or_(self.b.shl(v, self.k(8)), self.byte(ptr, self.add(i, j)))
            return v

        def copy(self, dst, src, n):
            self.b.call(memcpy, [dst, src, n, ir.Constant(I1, 0)])

        # control flow
        def _dead(self):
            self.b.position_at_end(self.fn.append_basic_block("dead"))

        def if_(self, cond):
            return self.b.if_then(cond)

        def if_else(self, cond):
            return self.b.if_else(cond)

        @contextlib.contextmanager
        def loop(self):
            head = self.fn.append_basic_block("loop")
            end = self.fn.append_basic_block("loop.end")
            self.b.branch(head)
            self.b.position_at_end(head)
            self.loops.append((head, end))
            yield
            if not self.b.block.is_terminated:
                self.b.branch(head)
            self.loops.pop()
            self.b.position_at_end(end)

        @contextlib.contextmanager
        def range(self, n):
            i = self.var(0)
            head = self.fn.append_basic_block("for")
            body = self.fn.append_basic_block("for.body")
            latch = self.fn.append_basic_block("for.next")
            end = self.fn.append_basic_block("for.end")
            self.b.branch(head)
            self.b.position_at_end(head)
            iv = self.get(i)
            self.b.cbranch(self.cmp("<", iv, n), body, end)
            self.b.position_at_end(body)
            self.loops.append((latch, end))
            yield iv
            if not self.b.block.is_terminated:
                self.b.branch(latch)
            self.loops.pop()
            self.b.position_at_end(latch)
            self.set(i, self.add(iv, 1))
            self.b.branch(head)
            self.b.position_at_end(end)

        def brk(self):
            self.b.branch(self.loops[-1][1])
            self._dead()

        def cont(self):
            self.b.branch(self.loops[-1][0])
            self._dead()

        def ret(self, v=None):
            if v is None:
                self.b.ret_void()
            else:
                self.b.ret(self.k(v))
            self._dead()

        def finish(self):
            if not self.b.block.is_terminated:
                self.b.unreachable()

    def varint(f, buf, q, limit):
        """Zigzag varint at buf[q] (advancing q) without reading at or past ``limit``: (value, ok)."""
        ux, sh, ok = f.var(0), f.var(0), f.var(1)
        with f.loop():
            qv = f.get(q)
            with f.if_(f.any(f.cmp(">=", qv, limit), f.cmp(">", f.get(sh), 63))):
                f.set(ok, 0)
                f.brk()
            c = f.byte(buf, qv)
            f.set(q, f.add(qv, 1))
            f.set(ux, f.b.or_(f.get(ux), f.b.shl(f.b.and_(c, f.k(0x7F)), f.get(sh))))
            with f.if_(f.cmp("<", c, 0x80)):
                f.brk()
            f.set(sh, f.add(f.get(sh), 7))
        u = f.get(ux)
        val = f.b.xor(f.b.lshr(u, f.k(1)), f.b.neg(f.b.and_(u, f.k(1))))
        return val, f.cmp("!=", f.get(ok), 0)

    # ---- ks_count(buf, end) -> records declared by the complete v2 batches
    f = Fn("ks_count", I64, [("buf", P8), ("end", I64)])
    buf, end = f.a["buf"], f.a["end"]
    p, total = f.var(0), f.var(0)
    with f.loop():
        pv = f.get(p)
        with f.if_(f.cmp(">", f.add(pv, _BATCH_HEADER), end)):
            f.brk()
        blen = f.be(buf, f.add(pv, 8), 4)
        bend = f.add(f.add(pv, 12), blen)
        with f.if_(f.any(f.cmp(">=", blen, 0x80000000), f.cmp("<", blen, 49), f.cmp(">", bend, end))):
            f.brk()
        cnt = f.be(buf, f.add(pv, 57), 4)
        ok = f.b.and_(f.cmp("==", f.byte(buf, f.add(pv, 16)), 2), f.cmp("<", cnt, 0x80000000))
        with f.if_(ok):
            f.set(total, f.add(f.get(total), cnt))
        f.set(p, bend)
    f.ret(f.get(total))
    f.finish()

    # ---- ks_decode(...) -> status; see _decode_chunk for the contract
    args = [
        ("buf", P8), ("end", I64), ("st", P64), ("lo", I64), ("hi", I64), ("budget", I64),
        ("out_off", P64), ("out_ts", P64), ("out_klen", P32), ("out_vlen", P32), ("koff", P32), ("kdata", P8),
        ("want_values", I64), ("voff", P64), ("vdata", P8),
        ("hnames", P8), ("hname_off", P64), ("nf", I64),
        ("hoff", P64), ("hoff_stride", I64), ("hvalid", P8), ("hvalid_stride", I64), ("hdata", P8), ("hdata_stride", I64),
    ]
    f = Fn("ks_decode", I64, args)
    A = f.a
    buf, end, st = A["buf"], A["end"], A["st"]

    def st_get(i):
        return f.b.load(f.at(st, i))

    def st_put(i, v):
        f.b.store(f.k(v), f.at(st, i))

    p, n, kpos, vpos = f.var(st_get(_POS)), f.var(st_get(_N)), f.var(st_get(_KPOS)), f.var(st_get(_VPOS))

    def save(with_pos=True):
        if with_pos:
            st_put(_POS, f.get(p))
        st_put(_N, f.get(n))
        st_put(_KPOS, f.get(kpos))
        st_put(_VPOS, f.get(vpos))

    with f.loop():  # one RecordBatch per turn
        pv = f.get(p)
        with f.if_(f.cmp(">", f.add(pv, _BATCH_HEADER), end)):
            f.brk()
        blen = f.be(buf, f.add(pv, 8), 4)
        bend = f.add(f.add(pv, 12), blen)
        with f.if_(f.any(f.cmp(">=", blen, 0x80000000), f.cmp("<", blen, 49), f.cmp(">", bend, end))):
            f.brk()  # a batch cut short by the fetch size: fetched again next time
        with f.if_(f.cmp("!=", f.byte(buf, f.add(pv, 16)), 2)):
            save()
            f.ret(_LEGACY)
        base = f.be(buf, pv, 8)
        attrs = f.be(buf, f.add(pv, 21), 2)
        batch_next = f.add(f.add(base, f.be(buf, f.add(pv, 23), 4)), 1)
        with f.if_(f.any(f.cmp("<=", batch_next, A["lo"]), f.cmp("!=", f.b.and_(attrs, f.k(0x20)), 0))):
            # already read, or a transaction marker: skip the batch
            with f.if_(f.cmp(">", batch_next, st_get(_NEXT))):
                st_put(_NEXT, batch_next)
            f.set(p, bend)
            f.cont()
        with f.if_(f.cmp("!=", f.b.and_(attrs, f.k(7)), 0)):
            save()
            f.ret(_COMPRESSED)
        first_ts = f.be(buf, f.add(pv, 27), 8)
        max_ts = f.be(buf, f.add(pv, 35), 8)
        log_append = f.cmp("!=", f.b.and_(attrs, f.k(8)), 0)
        cnt = f.be(buf, f.add(pv, 57), 4)
        with f.if_(f.cmp(">=", cnt, 0x80000000)):
            save()
            f.ret(_CORRUPT)
        q = f.var(f.add(pv, _BATCH_HEADER))
        bad, stopped = f.var(0), f.var(0)

        def fail_unless(ok):
            with f.if_(f.b.not_(ok)):
                f.set(bad, 1)
                f.brk()

        with f.range(cnt):  # one record per turn
            rlen, ok = varint(f, buf, q, bend)
            fail_unless(ok)
            rend = f.add(f.get(q), rlen)
            fail_unless(f.b.not_(f.any(f.cmp("<", rlen, 6), f.cmp(">", rend, bend))))
            f.set(q, f.add(f.get(q), 1))  # record attributes: unused
            tsd, ok = varint(f, buf, q, rend)
            fail_unless(ok)
            od, ok = varint(f, buf, q, rend)
            fail_unless(ok)
            off = f.add(base, od)
            with f.if_(f.cmp("<", off, A["lo"])):
                f.set(q, rend)
                f.cont()
            with f.if_(f.any(f.cmp(">=", off, A["hi"]), f.cmp(">=", f.get(n), A["budget"]))):
                st_put(_NEXT, off)
                f.set(stopped, 1)
                f.brk()
            nv = f.get(n)
            n1 = f.add(nv, 1)
            # key
            klen, ok = varint(f, buf, q, rend)
            fail_unless(ok)
            with f.if_(f.cmp(">", klen, 0)):
                fail_unless(f.cmp("<=", f.add(f.get(q), klen), rend))
                f.copy(f.at(A["kdata"], f.get(kpos)), f.at(buf, f.get(q)), klen)
                f.set(kpos, f.add(f.get(kpos), klen))
                f.set(q, f.add(f.get(q), klen))
            f.b.store(f.b.trunc(f.get(kpos), I32), f.at(A["koff"], n1))
            f.b.store(f.b.trunc(f.b.select(f.cmp(">=", klen, 0), klen, f.k(-1)), I32), f.at(A["out_klen"], nv))
            # value
            vlen, ok = varint(f, buf, q, rend)
            fail_unless(ok)
            want = f.cmp("!=", A["want_values"], 0)
            with f.if_(f.cmp(">", vlen, 0)):
                fail_unless(f.cmp("<=", f.add(f.get(q), vlen), rend))
                with f.if_(want):
                    f.copy(f.at(A["vdata"], f.get(vpos)), f.at(buf, f.get(q)), vlen)
                    f.set(vpos, f.add(f.get(vpos), vlen))
                f.set(q, f.add(f.get(q), vlen))
            with f.if_(want):
                f.b.store(f.get(vpos), f.at(A["voff"], n1))
            f.b.store(f.b.trunc(f.b.select(f.cmp(">=", vlen, 0), vlen, f.k(-1)), I32), f.at(A["out_vlen"], nv))
            # headers, only when a --field asks for one
            with f.if_(f.cmp(">", A["nf"], 0)):
                hs, vs, ds = A["hoff_stride"], A["hvalid_stride"], A["hdata_stride"]
                with f.range(A["nf"]) as fi:
                    row = f.b.mul(fi, hs)
                    f.b.store(ir.Constant(I8, 0), f.at(A["hvalid"], f.add(f.b.mul(fi, vs), nv)))
                    f.b.store(f.b.load(f.at(A["hoff"], f.add(row, nv))), f.at(A["hoff"], f.add(row, n1)))
                hc, ok = varint(f, buf, q, rend)
                fail_unless(ok)
                with f.range(hc):
                    hkl, ok = varint(f, buf, q, rend)
                    fail_unless(ok)
                    fail_unless(f.b.not_(f.any(f.cmp("<", hkl, 0), f.cmp(">", f.add(f.get(q), hkl), rend))))
                    hk = f.get(q)
                    f.set(q, f.add(hk, hkl))
                    hvl, ok = varint(f, buf, q, rend)
                    fail_unless(ok)
                    fail_unless(f.b.not_(f.b.and_(f.cmp(">", hvl, 0), f.cmp(">", f.add(f.get(q), hvl), rend))))
                    with f.range(A["nf"]) as fi:
                        a0 = f.b.load(f.at(A["hname_off"], fi))
                        ln = f.sub(f.b.load(f.at(A["hname_off"], f.add(fi, 1))), a0)
                        with f.if_(f.cmp("!=", ln, hkl)):
                            f.cont()
                        same = f.var(1)
                        with f.range(ln) as i:
                            with f.if_(f.cmp("!=", f.byte(A["hnames"], f.add(a0, i)), f.byte(buf, f.add(hk, i)))):
                                f.set(same, 0)
                                f.brk()
                        with f.if_(f.cmp("==", f.get(same), 0)):
                            f.cont()
                        # the last header of a name wins, as Java's lastHeader()
                        row = f.b.mul(fi, hs)
                        start = f.b.load(f.at(A["hoff"], f.add(row, nv)))
                        valid_at = f.at(A["hvalid"], f.add(f.b.mul(fi, vs), nv))
                        with f.if_else(f.cmp(">=", hvl, 0)) as (then, otherwise):
                            with then:
                                f.copy(f.at(A["hdata"], f.add(f.b.mul(fi, ds), start)), f.at(buf, f.get(q)), hvl)
                                f.b.store(f.add(start, hvl), f.at(A["hoff"], f.add(row, n1)))
                                f.b.store(ir.Constant(I8, 1), valid_at)
                            with otherwise:
                                f.b.store(start, f.at(A["hoff"], f.add(row, n1)))
                                f.b.store(ir.Constant(I8, 0), valid_at)
                    with f.if_(f.cmp(">", hvl, 0)):
                        f.set(q, f.add(f.get(q), hvl))
                with f.if_(f.cmp("!=", f.get(bad), 0)):
                    f.brk()
            f.b.store(off, f.at(A["out_off"], nv))
            ts = f.b.select(
                log_append, max_ts,
                f.b.select(f.cmp(">=", first_ts, 0), f.add(first_ts, tsd), f.k(-1)),
            )
            f.b.store(ts, f.at(A["out_ts"], nv))
            f.set(n, n1)
            f.set(q, rend)
        save(with_pos=False)
        with f.if_(f.cmp("!=", f.get(bad), 0)):
            st_put(_POS, pv)
            f.ret(_CORRUPT)
        with f.if_(f.cmp("!=", f.get(stopped), 0)):
            st_put(_POS, pv)
            f.ret(_STOP)
        st_put(_NEXT, batch_next)
        f.set(p, bend)
    save()
    f.ret(_END)
    f.finish()

    # ---- ks_utf8(data, offsets, n, ok): ok[i] &= value i is well-formed UTF-8
    f = Fn("ks_utf8", ir.VoidType(), [("data", P8), ("offsets", P64), ("n", I64), ("ok", P8)])
    A = f.a
    with f.range(A["n"]) as r:
        okp = f.at(A["ok"], r)
        with f.if_(f.cmp("==", f.b.zext(f.b.load(okp), I64), 0)):
            f.cont()
        i = f.var(f.b.load(f.at(A["offsets"], r)))
        e = f.b.load(f.at(A["offsets"], f.add(r, 1)))
        good = f.var(1)
        need, lo2, hi2 = f.var(0), f.var(0), f.var(0)
        with f.loop():
            iv = f.get(i)
            with f.if_(f.cmp(">=", iv, e)):
                f.brk()
            c = f.byte(A["data"], iv)
            with f.if_(f.cmp("<", c, 0x80)):
                f.set(i, f.add(iv, 1))
                f.cont()
            # lead byte -> continuation count and the allowed range of the 2nd byte
            with f.if_(f.any(f.cmp("<", c, 0xC2), f.cmp(">", c, 0xF4))):
                f.set(good, 0)
                f.brk()
            f.set(need, 1)
            f.set(lo2, 0x80)
            f.set(hi2, 0xBF)
            with f.if_(f.cmp(">=", c, 0xE0)):
                f.set(need, 2)
                with f.if_(f.cmp("==", c, 0xE0)):
                    f.set(lo2, 0xA0)
                with f.if_(f.cmp("==", c, 0xED)):
                    f.set(hi2, 0x9F)
            with f.if_(f.cmp(">=", c, 0xF0)):
                f.set(need, 3)
                f.set(lo2, f.b.select(f.cmp("==", c, 0xF0), f.k(0x90), f.k(0x80)))
                f.set(hi2, f.b.select(f.cmp("==", c, 0xF4), f.k(0x8F), f.k(0xBF)))
            nd = f.get(need)
            with f.if_(f.cmp(">=", f.add(iv, nd), e)):
                f.set(good, 0)
                f.brk()
            c2 = f.byte(A["data"], f.add(iv, 1))
            with f.if_(f.any(f.cmp("<", c2, f.get(lo2)), f.cmp(">", c2, f.get(hi2)))):
                f.set(good, 0)
                f.brk()
            with f.if_(f.cmp(">=", nd, 2)):
                c3 = f.byte(A["data"], f.add(iv, 2))
                with f.if_(f.any(f.cmp("<", c3, 0x80), f.cmp(">", c3, 0xBF))):
                    f.set(good, 0)
                    f.brk()
            with f.if_(f.cmp(">=", nd, 3)):
                c4 = f.byte(A["data"], f.add(iv, 3))
                with f.if_(f.any(f.cmp("<", c4, 0x80), f.cmp(">", c4, 0xBF))):
                    f.set(good, 0)
                    f.brk()
            f.set(i, f.add(f.add(iv, nd), 1))
        with f.if_(f.cmp("==", f.get(good), 0)):
            f.b.store(ir.Constant(I8, 0), okp)
    f.ret()
    f.finish()
    return str(mod)


_kernel_lock = threading.Lock()
_kernel_fns: dict | None = None


def _kernels() -> dict:
    """Compile the decoder once per process and return name -> ctypes function (GIL released in calls)."""
    global _kernel_fns
    if _kernel_fns is not None:
        return _kernel_fns
    with _kernel_lock:
        if _kernel_fns is None:
            import llvmlite.binding as llvm

            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            mod = llvm.parse_assembly(_build_ir())
            mod.verify()
            # No optimisation passes: -O3 took ~0.3 s to compile and saved ~15 ms per million
            # records, while unoptimised code decodes ~20M records/s, far above any fetch rate.
            tm = llvm.Target.from_default_triple().create_target_machine(
                cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=0
            )
            engine = llvm.create_mcjit_compiler(mod, tm)
            engine.finalize_object()
            V, I = ctypes.c_void_p, ctypes.c_int64
            _kernel_fns = {
                "count": ctypes.CFUNCTYPE(I, V, I)(engine.get_function_address("ks_count")),
                "decode": ctypes.CFUNCTYPE(
                    I, V, I, V, I, I, I, V, V, V, V, V, V, I, V, V, V, V, I, V, I, V, I, V, I
                )(engine.get_function_address("ks_decode")),
                "utf8": ctypes.CFUNCTYPE(None, V, V, I, V)(engine.get_function_address("ks_utf8")),
                "_engine": engine,  # owns the machine code: keep it alive
            }
    return _kernel_fns


def _warm_kernels() -> None:
    try:
        _kernels()
    except Exception:  # reported where the kernel is needed, on the caller's thread
        pass


def _count_records(buf: np.ndarray) -> int:
    """Records declared by the complete v2 batches in ``buf`` (an upper bound on what is kept)."""
    return int(_kernels()["count"](buf.ctypes.data, buf.size)) if buf.size else 0


def _utf8_valid(data: np.ndarray, offsets: np.ndarray, n: int, ok: np.ndarray) -> None:
    """ok[i] &= value i is well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF)."""
    offsets = np.ascontiguousarray(offsets, np.int64)
    if n:
        _kernels()["utf8"](data.ctypes.data, offsets.ctypes.data, n, ok.ctypes.data)


# --------------------------------------------------------------------------- decompression

_XERIAL = b"\x82SNAPPY\x00"


def _inflate(codec: int, data: bytes) -> bytes:
    """Decompress one batch's records with the codecs pyarrow ships (no extra packages)."""
    import pyarrow as pa

    if codec == 1:
        import zlib

        d = zlib.decompressobj(wbits=47)  # gzip or zlib header
        out = d.decompress(data)
        while d.unused_data:  # concatenated gzip members
            rest = d.unused_data
            d = zlib.decompressobj(wbits=47)
            out += d.decompress(rest)
        return out
    if codec == 2:
        if data.startswith(_XERIAL):  # Java client framing: [len][raw snappy block]...
            out, p = [], 16
            while p + 4 <= len(data):
                ln = int.from_bytes(data[p : p + 4], "big")
                out.append(_snappy_raw(data[p + 4 : p + 4 + ln]))
                p += 4 + ln
            return b"".join(out)
        return _snappy_raw(data)
    if codec in (3, 4):
        name = "lz4" if codec == 3 else "zstd"  # LZ4 frame format, zstd frame
        return pa.input_stream(pa.py_buffer(data), compression=name).read()
    raise ValueError(f"unknown compression codec {codec}")


def _snappy_raw(block: bytes) -> bytes:
    import pyarrow as pa

    n, shift, i = 0, 0, 0
    while True:  # the uncompressed length leads a raw snappy block as a varint
        if i >= len(block) or shift > 35:
            raise ValueError("snappy block without a length")
        b = block[i]
        n |= (b & 0x7F) << shift
        i += 1
        if b < 0x80:
            break
        shift += 7
    return pa.decompress(block, decompressed_size=n, codec="snappy", asbytes=True)


_CODEC_NAMES = {1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


# --------------------------------------------------------------------------- decoding one answer


class _Columns:
    """Output buffers for one fetched chunk of one partition, grown as batches inflate."""

    def __init__(self, cap: int, nbytes: int, want_values: bool, nf: int):
        self.off = np.empty(cap, np.int64)
        self.ts = np.empty(cap, np.int64)
        self.klen = np.empty(cap, np.int32)
        self.vlen = np.empty(cap, np.int32)
        self.koff = np.zeros(cap + 1, np.int32)
        self.kdata = np.empty(max(nbytes, 16), np.uint8)
        self.want_values = want_values
        self.voff = np.zeros(cap + 1 if want_values else 1, np.int64)
        self.vdata = np.empty(max(nbytes, 16) if want_values else 1, np.uint8)
        self.hoff = np.zeros((nf, cap + 1), np.int64)
        self.hvalid = np.zeros((nf, cap), np.uint8)
        self.hdata = np.empty((nf, max(nbytes, 16) if nf else 1), np.uint8)

    def decode(self, buf: np.ndarray, st: np.ndarray, lo: int, hi: int, budget: int, plan: "_FieldPlan") -> int:
        """One kernel call over ``buf`` from ``st[_POS]``; returns its status."""
        d = lambda a: a.ctypes.data  # noqa: E731
        return int(_kernels()["decode"](
            d(buf), buf.size, d(st), lo, hi, budget,
            d(self.off), d(self.ts), d(self.klen), d(self.vlen), d(self.koff), d(self.kdata),
            int(self.want_values), d(self.voff), d(self.vdata),
            d(plan.hnames), d(plan.hname_off), len(plan.headers),
            d(self.hoff), self.hoff.shape[1], d(self.hvalid), self.hvalid.shape[1], d(self.hdata), self.hdata.shape[1],
        ))

    def reserve(self, st, more: int) -> None:
        """Room for ``more`` bytes of keys/values/headers past the current cursors."""
        need = int(st[_KPOS]) + more
        if need > self.kdata.size:
            self.kdata = _grow(self.kdata, need, int(st[_KPOS]))
        if self.want_values:
            need = int(st[_VPOS]) + more
            if need > self.vdata.size:
                self.vdata = _grow(self.vdata, need, int(st[_VPOS]))
        if self.hdata.shape[0]:
            n = int(st[_N])
            need = int(self.hoff[:, n].max()) + more
            if need > self.hdata.shape[1]:
                bigger = np.empty((self.hdata.shape[0], max(need, 2 * self.hdata.shape[1])), np.uint8)
                bigger[:, : self.hdata.shape[1]] = self.hdata
                self.hdata = bigger


def _grow(a, need: int, used: int):
    b = np.empty(max(need, 2 * a.size), a.dtype)
    b[:used] = a[:used]
    return b


class _FieldPlan:
    def __init__(self, fields: list[FieldSpec]):
        self.fields = fields
        self.json = [f for f in fields if f.header is None]
        self.headers = [f for f in fields if f.header is not None]
        names = [f.header.encode("utf-8") for f in self.headers]
        self.hnames = np.frombuffer(b"".join(names) or b"\0", np.uint8).copy()
        self.hname_off = np.zeros(len(names) + 1, np.int64)
        for i, nm in enumerate(names):
            self.hname_off[i + 1] = self.hname_off[i] + len(nm)


def _decode_chunk(partition: int, records: bytes, lo: int, hi: int, budget: int, plan: _FieldPlan):
    """Decode one fetched chunk: (pyarrow Table or None, records kept, next offset or None, stopped)."""
    buf = np.frombuffer(records, np.uint8)
    end = buf.size
    cap = _count_records(buf)
    cols = _Columns(cap, end, bool(plan.json), len(plan.headers))
    st = np.zeros(_ST_LEN, np.int64)
    st[_NEXT] = lo
    stopped = False
    while True:
        cols.reserve(st, end - int(st[_POS]))
        status = cols.decode(buf, st, lo, hi, budget, plan)
        if status == _COMPRESSED:
            p = int(st[_POS])
            bend = p + 12 + int.from_bytes(records[p + 8 : p + 12], "big")
            codec = records[p + 22] & 7
            base = int.from_bytes(records[p : p + 8], "big", signed=True)
            try:
                inner = _inflate(codec, records[p + _BATCH_HEADER : bend])
            except Exception as e:
                what = _CODEC_NAMES.get(codec, f"codec {codec}")
                raise KafkaError(
                    f"partition {partition}: cannot decompress the {what} batch at offset {base}: {_first_line(e)}"
                ) from None
            # The same batch, uncompressed: its header with the codec bits cleared, then the records.
            head = bytearray(records[p : p + _BATCH_HEADER])
            head[8:12] = (_BATCH_HEADER - 12 + len(inner)).to_bytes(4, "big")
            head[22] &= 0xF8
            plain = np.frombuffer(bytes(head) + inner, np.uint8)
            sub = st.copy()
            sub[_POS] = 0
            cols.reserve(sub, plain.size)
            s2 = cols.decode(plain, sub, lo, hi, budget, plan)
            st[_N], st[_KPOS], st[_VPOS], st[_NEXT] = sub[_N], sub[_KPOS], sub[_VPOS], sub[_NEXT]
            if s2 == _CORRUPT:
                raise KafkaError(
                    f"partition {partition}: the {_CODEC_NAMES[codec]} batch at offset {base} does not parse as Kafka records"
                )
            if s2 == _STOP:
                stopped = True
                break
            st[_POS] = bend
            continue
        if status == _LEGACY:
            raise KafkaError(
                f"partition {partition} holds records in the pre-0.11 message format (v0/v1), which keyscope does not decode"
            )
        if status == _CORRUPT:
            raise KafkaError(
                f"partition {partition}: fetched bytes at position {int(st[_POS])} do not parse as a record batch"
            )
        stopped = status == _STOP
        break
    n = int(st[_N])
    walked = int(st[_POS]) > 0 or stopped  # at least one complete batch was read
    nxt = int(st[_NEXT]) if walked else None
    if n == 0:
        return None, 0, nxt, stopped
    return _to_arrow(partition, n, st, cols, plan), n, nxt, stopped


def _to_arrow(partition: int, n: int, st, cols: _Columns, plan: _FieldPlan):
    import pyarrow as pa

    klen = cols.klen[:n]
    key_valid = klen >= 0
    kbytes = cols.kdata[: int(st[_KPOS])].copy()
    key = pa.Array.from_buffers(
        pa.binary(), n, [_bitmap(key_valid), pa.py_buffer(cols.koff[: n + 1].copy()), pa.py_buffer(kbytes)],
        null_count=int(n - key_valid.sum()),
    )
    ts = cols.ts[:n]
    arrays = {
        "partition": pa.array(np.full(n, partition, np.int32)),
        "offset": pa.array(cols.off[:n].copy()),
        "timestamp": pa.array(ts.copy(), type=pa.timestamp("ms", tz="UTC"), mask=(ts < 0) | (ts > MAX_TIMESTAMP_MS)),
        "key": key,
        "key_size": pa.array(klen.copy(), mask=~key_valid),
        "value_size": pa.array(np.maximum(cols.vlen[:n], 0).astype(np.int32)),
    }
    if plan.json:
        vvalid = (cols.vlen[:n] >= 0).astype(np.uint8)
        _utf8_valid(cols.vdata, cols.voff, n, vvalid)
        text = _large_string(n, cols.voff[: n + 1], cols.vdata[: int(st[_VPOS])], vvalid)
        import polars as pl

        series = pl.from_arrow(text)
        for f in plan.json:
            arrays[f.name] = series.str.json_path_match(f.path).to_arrow()
    for i, f in enumerate(plan.headers):
        hvalid = cols.hvalid[i, :n].copy()
        offs = cols.hoff[i, : n + 1]
        _utf8_valid(cols.hdata[i], offs, n, hvalid)
        arrays[f.name] = _large_string(n, offs, cols.hdata[i, : int(offs[n])], hvalid)
    return pa.table(arrays)


def _bitmap(valid):
    import pyarrow as pa

    return pa.py_buffer(np.packbits(valid.astype(np.uint8), bitorder="little"))


def _large_string(n: int, offsets, data, valid):
    """A large_string array over (offsets, data) where ``valid`` (1 = valid UTF-8, not null)."""
    import pyarrow as pa

    valid = valid.astype(bool)
    arr = pa.Array.from_buffers(
        pa.large_binary(), n, [_bitmap(valid), pa.py_buffer(np.ascontiguousarray(offsets, np.int64).copy()),
                               pa.py_buffer(np.ascontiguousarray(data).copy())],
        null_count=int(n - valid.sum()),
    )
    return arr.cast(pa.large_string())  # validated above; null slots are not checked


# --------------------------------------------------------------------------- the sampler


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
    kept: int = 0
    bytes: int = 0
    done: bool = False
    hit_budget: bool = False
    fetch_bytes: int = PARTITION_FETCH_BYTES
    stalls: int = 0
    error_since: float | None = None
    tables: list = field(default_factory=list)
    note: str | None = None


def sample_topic(conn, spec: SampleSpec, progress: Callable[[Progress], None] | None = None):
    """Read ``spec.topic`` into a Sample; read-only (no group, no commit, no topic creation).

    Returns a partial sample (``meta.partial``) on Ctrl-C or a broker lost for
    longer than ``spec.retry_s``; raises KafkaError when nothing could be read
    at all (unreachable cluster, unknown topic, missing partitions).
    """
    from . import kafka_io

    spec.validate()
    t0 = time.monotonic()
    # Compile the decoder while we connect (LLVM releases the GIL): it is ready by the first answer.
    threading.Thread(target=_warm_kernels, name="keyscope-decoder-compile", daemon=True).start()
    timeout_s = spec.timeout_s if spec.timeout_s is not None else DEFAULT_TIMEOUT_S
    deadline = t0 + timeout_s
    max_records = spec.effective_max_records
    max_bytes = spec.max_bytes if spec.max_bytes is not None else DEFAULT_MAX_BYTES
    plan = _FieldPlan(spec.fields)
    sampled_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")

    consumer = kafka_io.open_consumer(conn, timeout_s=min(timeout_s, 30.0))
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
        starts = _start_offsets(consumer, spec, marks, remaining)
        avail = {p: max(0, marks[p].high - starts[p]) for p in wanted}
        budgets = plan_budgets(avail, max_records, spec.per_partition)
        parts: dict[int, _Part] = {}
        for p in wanted:
            w = marks[p]
            start = starts[p]
            if spec.start == "latest":
                start = max(w.low, w.high - budgets[p])  # the last `budget` records
            parts[p] = _Part(p, w.low, w.high, w.list_offsets_high, start, w.high, budgets[p], start)
            # latest: the bound moved the start, so older records were left out
            parts[p].hit_budget = spec.start == "latest" and budgets[p] < avail[p]
            if budgets[p] == 0 or start >= w.high:
                parts[p].done = True
        state = _run(kafka_io, consumer, spec, parts, plan, deadline, max_bytes, progress, t0)
    finally:
        try:
            consumer.close()
        except Exception:  # closing a consumer whose broker died must not hide the sample
            pass
    return _build_sample(spec, conn, all_parts, parts, plan, state, sampled_at, t0, max_records, max_bytes, timeout_s)


def _start_offsets(consumer, spec: SampleSpec, marks, timeout_s: float) -> dict[int, int]:
    from . import kafka_io

    if spec.start == "earliest" or spec.start == "latest":
        return {p: w.low for p, w in marks.items()}
    found = kafka_io.offsets_for_time(consumer, spec.topic, list(marks), spec.from_time_ms, timeout_s=min(timeout_s, 30.0))
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


def _run(kafka_io, consumer, spec, parts, plan, deadline, max_bytes, progress, t0) -> _RunState:
    """The fetch loop: a few requests in flight, each for a few partitions; decode while the next is fetched."""
    from collections import deque

    state = _RunState()
    fetcher = kafka_io.RawFetcher(consumer, spec.topic)
    inflight: dict[int, list[int]] = {}
    ready = deque(p for p in sorted(parts) if not parts[p].done)
    waiting: list[tuple[float, list[int]]] = []  # (when, partitions) to fetch again after an error
    failing_since: float | None = None
    last_error = ""
    tags = iter(range(1 << 62))

    def pump() -> None:
        """Send requests until MAX_IN_FLIGHT are out; spread the ready partitions over them."""
        now = time.monotonic()
        for item in [w for w in waiting if w[0] <= now]:
            waiting.remove(item)
            ready.extend(p for p in item[1] if not parts[p].done)
        while ready and len(inflight) < MAX_IN_FLIGHT and state.bytes < max_bytes:
            free = MAX_IN_FLIGHT - len(inflight)
            size = min(PARTITIONS_PER_REQUEST, -(-len(ready) // free))
            batch = [ready.popleft() for _ in range(min(size, len(ready)))]
            by_node: dict = {}
            for p in batch:
                by_node.setdefault(fetcher.leader(p), []).append(p)
            if None in by_node:  # no leader known: ask for metadata and try again shortly
                fetcher.refresh_metadata()
                waiting.append((now + 0.2, by_node.pop(None)))
            budget_left = max(1, max_bytes - state.bytes)
            for node, ps in by_node.items():
                tag = next(tags)
                inflight[tag] = ps
                offsets = {p: (parts[p].next, parts[p].fetch_bytes) for p in ps}
                fetcher.send(tag, node, offsets, max_bytes=min(FETCH_MAX_BYTES, budget_left))
                state.requests += 1

    try:
        pump()
        while inflight or waiting or ready:
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
            try:
                tag, answer, exc = fetcher.answers.get(timeout=max(0.005, min(0.1, deadline - now)))
            except queue.Empty:
                continue
            plist = inflight.pop(tag, None)
            if plist is None:
                continue
            if exc is not None:
                if _throttled(exc):  # a broker quota holds this connection: wait, the broker is fine
                    waiting.append((time.monotonic() + 0.1, plist))
                    continue
                failing_since = failing_since or time.monotonic()
                last_error = _first_line(exc)
                fetcher.refresh_metadata()
                waiting.append((time.monotonic() + 0.25, plist))
                continue
            failing_since = None
            again: list[int] = []
            later: list[int] = []
            for fp in answer:
                part = parts.get(fp.partition)
                if part is None or part.done:
                    continue
                verdict = _take(part, fp, spec, plan, state, fetcher)
                if verdict == _LATER:
                    later.append(part.partition)
                elif verdict:
                    again.append(part.partition)
            if later:
                waiting.append((time.monotonic() + 0.25, later))
            answered = {fp.partition for fp in answer}
            again += [p for p in plist if p not in answered and not parts[p].done and p not in later]
            ready.extend(again)
            pump()
            if progress is not None:
                progress(Progress(
                    records=sum(x.kept for x in parts.values()), bytes=state.bytes,
                    partitions_done=sum(1 for x in parts.values() if x.done), partitions_total=len(parts),
                    elapsed_s=time.monotonic() - t0,
                ))
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


def _throttled(exc: BaseException) -> bool:
    """kafka-python refuses sends on a connection the broker throttled (quota) until the throttle time passes.

    That is the broker answering, not a broker lost: it must not count
    towards ``retry_s`` (found on real Kafka with a consumer_byte_rate quota).
    """
    from kafka.errors import NodeNotReadyError

    return isinstance(exc, NodeNotReadyError) and "throttle" in str(exc)


_OFFSET_OUT_OF_RANGE = 1
_LATER = "later"  # _take: fetch this partition again after a pause (leader moving, metadata stale)
_RETRIABLE_PARTITION_ERRORS = {3, 5, 6, 9, 74, 75}  # unknown partition, leader moved/not available, epochs


def _take(part: _Part, fp, spec, plan, state: _RunState, fetcher):
    """Apply one partition's answer: True to fetch it again now, _LATER after a pause, False when done."""
    from .kafka_io import error_name

    if fp.error_code == _OFFSET_OUT_OF_RANGE:
        # Retention removed our next records while we read: skip to what is left.
        if fp.log_start_offset > part.next:
            part.note = f"records {part.next}..{fp.log_start_offset - 1} were deleted by retention while sampling"
            part.next = fp.log_start_offset
            if part.next >= part.stop:
                part.done = True
            return not part.done
        part.done = True
        part.note = f"offset {part.next} out of range"
        return False
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
    state.bytes += len(fp.records)
    part.bytes += len(fp.records)
    if not fp.records:
        if 0 <= fp.high_watermark <= part.next:
            part.done = True  # the partition was truncated below where we are: nothing left to read
            part.note = f"high watermark fell to {fp.high_watermark} while sampling"
        return not part.done
    table, n, nxt, stopped = _decode_chunk(part.partition, fp.records, part.next, part.stop, part.budget - part.kept, plan)
    if table is not None:
        part.tables.append(table)
        part.kept += n
    if nxt is None:
        # Not one complete batch: the batch is larger than we asked for.
        part.fetch_bytes = min(part.fetch_bytes * 4, 256 << 20)
        return True
    if nxt <= part.next and n == 0:
        part.stalls += 1
        if part.stalls >= 3:  # the broker keeps answering with records we already have
            part.done = True
            part.note = f"the broker returned nothing new at offset {part.next}"
            return False
        return True
    part.stalls = 0
    part.next = nxt
    if part.kept >= part.budget:
        part.hit_budget = part.hit_budget or part.next < part.stop
        part.done = True
    elif stopped or part.next >= part.stop:
        part.done = True
    else:
        # Ask for about what the rest of the budget needs, so small samples fetch little.
        per_record = part.bytes / max(1, part.kept)
        want = int((part.budget - part.kept) * per_record * 1.25) + 16384
        part.fetch_bytes = max(64 << 10, min(PARTITION_FETCH_BYTES, want))
    return not part.done


def _build_sample(spec, conn, all_parts, parts, plan, state, sampled_at, t0, max_records, max_bytes, timeout_s):
    import polars as pl
    import pyarrow as pa

    from .sample import PartitionInfo, Sample, SampleMeta, base_schema

    tables = [t for p in sorted(parts) for t in parts[p].tables]
    if tables:
        df = pl.from_arrow(pa.concat_tables(tables))
    else:
        schema = dict(base_schema())
        schema.update({f.name: pl.String for f in plan.fields})
        df = pl.DataFrame(schema=schema)
    df = df.with_columns([pl.col(f.name).cast(pl.String) for f in plan.fields])
    df = df.with_columns(pl.col("key").cast(pl.Binary))
    infos: dict[int, PartitionInfo] = {}
    seen = {}
    if df.height:
        g = (
            df.group_by("partition")
            .agg(
                pl.col("offset").min().alias("first"),
                pl.col("offset").max().alias("last"),
                pl.len().alias("records"),
                pl.col("timestamp").sort_by("offset").first().dt.epoch("ms").alias("t0"),
                pl.col("timestamp").sort_by("offset").last().dt.epoch("ms").alias("t1"),
            )
        )
        seen = {int(r["partition"]): r for r in g.iter_rows(named=True)}
    for p in sorted(parts):
        x = parts[p]
        r = seen.get(p)
        infos[p] = PartitionInfo(
            partition=p, low=x.low, high=x.high,
            first=None if r is None else int(r["first"]), last=None if r is None else int(r["last"]),
            records=0 if r is None else int(r["records"]),
            first_timestamp_ms=None if r is None or r["t0"] is None else int(r["t0"]),
            last_timestamp_ms=None if r is None or r["t1"] is None else int(r["t1"]),
        )
    misses = {f.name: int(df[f.name].null_count()) for f in plan.fields}
    how = {
        "mode": spec.start,
        "from_time": spec.from_time_text,
        "from_time_ms": spec.from_time_ms,
        "partitions": sorted(parts) if spec.partitions is not None else "all",
        "per_partition": spec.per_partition,
        "max_records": max_records,
        "max_bytes": max_bytes,
        "timeout_s": timeout_s,
        "stopped_by": "partial" if state.partial_reason else state.stopped_by,
        "elapsed_s": round(time.monotonic() - t0, 3),
        "bytes_fetched": state.bytes,
        "fetch_requests": state.requests,
        "isolation": "read_uncommitted",
        "ranges": {str(p): [parts[p].start, parts[p].stop] for p in sorted(parts)},
        "list_offsets_high": {str(p): parts[p].list_offsets_high for p in sorted(parts)},
        "connection": conn.describe(),
    }
    notes = [f"partition {p}: {parts[p].note}" for p in sorted(parts) if parts[p].note]
    if notes:
        how["notes"] = notes
    meta = SampleMeta(
        topic=spec.topic,
        partition_count=len(all_parts),
        partitions=infos,
        source="kafka",
        how=how,
        fields={f.name: f.path for f in plan.fields},
        field_misses=misses,
        sampled_at=sampled_at,
        partial=state.partial_reason is not None,
        partial_reason=state.partial_reason,
    )
    return Sample(df.select(list(base_schema()) + [f.name for f in plan.fields]), meta)


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
