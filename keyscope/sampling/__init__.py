"""Reading a live topic into a :class:`~keyscope.sample.Sample`, bounded and read-only.

Why not a kafka-python consumer loop: it builds a Python object per record
and reaches about half of kcat's speed.  Here Fetch requests go out on the
read-only consumer's own connections (:class:`keyscope.kafka.client.RawFetcher`)
and the RecordBatch v2 bytes are decoded by a compiled kernel straight into
column buffers (keys copied, values only when a ``--field`` needs them).
Compressed batches are inflated with the codecs pyarrow ships (gzip, snappy,
lz4, zstd), so no codec package is needed.

What is read: per partition, a contiguous offset range ``[start, stop)``,
``stop`` being the high watermark when sampling began (the last stable offset
under ``read_committed``, the default), so a busy topic cannot keep the
sampler running and an idle or empty partition costs nothing.  Aborted
transactions are dropped as a read_committed consumer drops them.  Bounds
(``per_partition``, ``max_records``, ``max_bytes``, ``timeout_s``) stop it
early, whichever comes first.  ``max_records`` is split across partitions in
proportion to what each holds in its range, and partitions are read paced
(see :func:`_run`), so the sample's partition mix follows the topic's even
when a bound or Ctrl-C cuts it short.

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

from .. import _native
from ..errors import KafkaError, UsageError
from ..model.limits import MAX_PARTITIONS

DEFAULT_MAX_RECORDS = 100_000  # when neither --per-partition nor --max-records is given
DEFAULT_MAX_BYTES = 256 << 20
DEFAULT_TIMEOUT_S = 60.0
FETCH_MAX_BYTES = 32 << 20  # per request; brokers may exceed it by one batch
PARTITION_FETCH_BYTES = 4 << 20  # per partition and request, at most
FIRST_FETCH_BYTES = 64 << 10  # least ask for a batch bigger than its ask (then x4 each time)
GUESS_RECORD_BYTES = 256  # bytes per record assumed until the first answers tell
MIN_FETCH_BYTES = 4 << 10
# Pacing: no partition keeps more than PACE_RATIO x the lowest share of its budget kept, plus PACE_STEP,
# so a sample cut at any point keeps the partitions' shares.  Fetches look further ahead (FETCH_AHEAD_*):
# records decoded beyond the pace are held, and kept when the others catch up (dropped at a cut).
PACE_RATIO, PACE_STEP = 1.05, 0.002
FETCH_AHEAD_RATIO, FETCH_AHEAD_STEP = 1.5, 0.05
ISOLATIONS = ("read_committed", "read_uncommitted")
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
        return _after_1970(now_ms - span, text)
    try:
        d = _dt.datetime.fromisoformat(t.replace("z", "Z"))
    except ValueError:
        raise UsageError(
            f"--from-time {text!r}: expected ISO-8601 (2026-11-28T09:30:00Z) or a span back from now (30m, 2h, 1d)"
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return _after_1970(d.timestamp() * 1000, text)


def _after_1970(ms: float, text: str) -> int:
    """Kafka timestamps are milliseconds since 1970 (ListOffsets reads -1 and -2 as latest/earliest)."""
    if not (math.isfinite(ms) and ms >= 0):
        raise UsageError(f"--from-time {text!r} is before 1970-01-01T00:00:00Z, where Kafka timestamps start")
    return int(ms)


def parse_partitions(text: str) -> list[int]:
    """``0,2,5-7`` -> [0, 2, 5, 6, 7]."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.match(r"^(\d+)(?:-(\d+))?$", part)
        if not m:
            raise UsageError(f"--partitions expects numbers and ranges like 0,2,5-7, got {text!r}")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b >= MAX_PARTITIONS:
            raise UsageError(
                f"--partitions {part!r}: partition ids go up to {MAX_PARTITIONS - 1:,} "
                f"(keyscope handles at most {MAX_PARTITIONS:,} partitions per topic)"
            )
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
    isolation: str = "read_committed"  # what a read_committed consumer sees; read_uncommitted adds aborted records
    fetch_max_bytes: int | None = None  # per Fetch request (Kafka's fetch.max.bytes) [FETCH_MAX_BYTES]
    partition_fetch_bytes: int | None = None  # per partition (max.partition.fetch.bytes) [PARTITION_FETCH_BYTES]

    def validate(self) -> "SampleSpec":
        if self.start not in MODES:
            raise UsageError(f"--from must be one of latest, earliest (or use --from-time), got {self.start!r}")
        if self.start == "time" and self.from_time_ms is None:
            raise UsageError("--from-time needs a time")
        if self.isolation not in ISOLATIONS:
            raise UsageError(f"--isolation must be read_committed or read_uncommitted, got {self.isolation!r}")
        for name in ("per_partition", "max_records", "max_bytes", "fetch_max_bytes", "partition_fetch_bytes"):
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


@dataclass
class Phase:
    """Where :func:`sample_topic` is, for a signal handler: ``"reading"`` until the fetch loop ends (an
    interrupt then cuts the read short and the records read are kept), ``"assembling"`` after it
    (closing the consumer, building the Sample: an interrupt there would lose the records)."""

    name: str = "reading"


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
JSON_MAX_DEPTH = 64  # ks_json's stack (jsonfields.MAX_DEPTH)
JSON_MAX_FIELDS = 64  # JSON fields ks_json tracks per value (bit masks); more go to Polars

# ks_decode's arguments: one struct, built from this table both as the IR's type and as the ctypes
# Structure the caller fills by name (checked against each other when the kernel loads).
DECODE_ARGS = [
    ("buf", "p8"), ("end", "i64"),  # the fetched bytes
    ("st", "p64"),  # cursor slots (_POS, _N, _KPOS, _VPOS, _NEXT), read and written
    ("lo", "i64"), ("hi", "i64"), ("budget", "i64"),  # offsets [lo, hi), at most budget records
    ("out_off", "p64"), ("out_ts", "p64"), ("out_klen", "p32"), ("out_vlen", "p32"),  # per record
    ("koff", "p32"), ("kdata", "p8"),  # keys: Arrow offsets + bytes
    ("want_values", "i64"), ("voff", "p64"), ("vdata", "p8"),  # values: 0 none, 1 all, 2 those ks_json hands back
    ("hnames", "p8"), ("hname_off", "p64"), ("nf", "i64"),  # header fields: names
    ("hoff", "p64"), ("hoff_stride", "i64"), ("hvalid", "p8"), ("hvalid_stride", "i64"),  # rows: nf headers,
    ("hdata", "p8"), ("hdata_stride", "i64"),  # then nj JSON fields
    ("nj", "i64"), ("segs", "p8"), ("seg_off", "p64"), ("fseg", "p64"),  # JSON fields' paths (see ks_json)
]


class DecodeArgs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int64 if t == "i64" else ctypes.c_void_p) for n, t in DECODE_ARGS]


def _build_ir() -> str:
    import contextlib

    from llvmlite import ir

    I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
    P8, P32, P64 = I8.as_pointer(), I32.as_pointer(), I64.as_pointer()
    mod = ir.Module("keyscope_recordbatch")
    memcpy = mod.declare_intrinsic("llvm.memcpy", [P8, P8, I64])

    class Fn:
        """A function under construction, with C-like helpers."""

        def __init__(self, name, ret, args, struct=None):
            """``args``: (name, type) parameters; with ``struct`` (a literal struct type whose fields
            ``args`` names, in order) the function takes one pointer to it and loads each field."""
            params = [struct.as_pointer()] if struct is not None else [t for _, t in args]
            self.fn = ir.Function(mod, ir.FunctionType(ret, params), name)
            self.a = {}
            entry = self.fn.append_basic_block("entry")
            body = self.fn.append_basic_block("body")
            self.b = ir.IRBuilder(entry)
            if struct is None:
                for (n, _), arg in zip(args, self.fn.args):
                    arg.name = n
                    self.a[n] = arg
            else:
                self.fn.args[0].name = "args"
                for i, (n, _) in enumerate(args):
                    field = self.b.gep(self.fn.args[0], [ir.Constant(I32, 0), ir.Constant(I32, i)])
                    self.a[n] = self.b.load(field, name=n)
            br = self.b.branch(body)
            self.slots = ir.IRBuilder(entry)
            self.slots.position_before(br)
            self.b.position_at_end(body)
            self.loops = []  # (continue target, break target)

        def array(self, n, ty=I64):
            """A stack array of ``n`` elements."""
            return self.slots.alloca(ty, size=ir.Constant(I64, n))

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

    # ---- ks_count(buf, end, attrs) -> records declared by the complete v2 batches; *attrs = OR of their attributes
    f = Fn("ks_count", I64, [("buf", P8), ("end", I64), ("attrs", P64)])
    buf, end = f.a["buf"], f.a["end"]
    p, total, seen = f.var(0), f.var(0), f.var(0)
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
        f.set(seen, f.b.or_(f.get(seen), f.be(buf, f.add(pv, 21), 2)))
        f.set(p, bend)
    f.b.store(f.get(seen), f.a["attrs"])
    f.ret(f.get(total))
    f.finish()

    # ---- ks_utf8_one(data, len) -> 1 when data[0:len] is well-formed UTF-8 (no overlongs, surrogates, > U+10FFFF)
    f = Fn("ks_utf8_one", I64, [("data", P8), ("len", I64)])
    A = f.a
    i, e = f.var(0), A["len"]
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
            f.ret(0)
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
            f.ret(0)
        c2 = f.byte(A["data"], f.add(iv, 1))
        with f.if_(f.any(f.cmp("<", c2, f.get(lo2)), f.cmp(">", c2, f.get(hi2)))):
            f.ret(0)
        with f.if_(f.cmp(">=", nd, 2)):
            c3 = f.byte(A["data"], f.add(iv, 2))
            with f.if_(f.any(f.cmp("<", c3, 0x80), f.cmp(">", c3, 0xBF))):
                f.ret(0)
        with f.if_(f.cmp(">=", nd, 3)):
            c4 = f.byte(A["data"], f.add(iv, 3))
            with f.if_(f.any(f.cmp("<", c4, 0x80), f.cmp(">", c4, 0xBF))):
                f.ret(0)
        f.set(i, f.add(f.add(iv, nd), 1))
    f.ret(1)
    f.finish()
    utf8_fn = f.fn

    # ---- ks_utf8(data, offsets, n, ok): ok[i] &= value i is well-formed UTF-8
    f = Fn("ks_utf8", ir.VoidType(), [("data", P8), ("offsets", P64), ("n", I64), ("ok", P8)])
    A = f.a
    with f.range(A["n"]) as r:
        okp = f.at(A["ok"], r)
        with f.if_(f.cmp("==", f.b.zext(f.b.load(okp), I64), 0)):
            f.cont()
        a0 = f.b.load(f.at(A["offsets"], r))
        ln = f.sub(f.b.load(f.at(A["offsets"], f.add(r, 1))), a0)
        good = f.b.call(utf8_fn, [f.at(A["data"], a0), ln])
        with f.if_(f.cmp("==", good, 0)):
            f.b.store(ir.Constant(I8, 0), okp)
    f.ret()
    f.finish()

    # ---- ks_json(v, len, row, nj, segs, seg_off, fseg, hoff, hs, hvalid, vs, hdata, ds) -> 1 when the value
    # must go to Polars.  The rules, and their pure-Python statement: keyscope/sampling/jsonfields.py.
    # Field j's output row: offsets hoff[j*hs + row (+1)], status hvalid[j*vs + row] (0 null, 1 ok,
    # 2 fallback), text at hdata[j*ds + hoff[j*hs + row]].  Its path: keys segs[seg_off[s]:seg_off[s+1]]
    # for s in fseg[j] .. fseg[j+1]-1.
    f = Fn("ks_json", I64, [
        ("v", P8), ("len", I64), ("row", I64), ("nj", I64), ("segs", P8), ("seg_off", P64), ("fseg", P64),
        ("hoff", P64), ("hs", I64), ("hvalid", P8), ("vs", I64), ("hdata", P8), ("ds", I64),
    ])
    A = f.a
    v, n, row, nj = A["v"], A["len"], A["row"], A["nj"]
    st_obj, st_alive, st_seen = f.array(JSON_MAX_DEPTH), f.array(JSON_MAX_DEPTH), f.array(JSON_MAX_DEPTH)
    outlen = f.array(JSON_MAX_FIELDS)
    i, mode, depth = f.var(0), f.var(0), f.var(0)  # mode: 0 a value, 1 after a value, 2 a key
    term, nxt, got, fb = f.var(0), f.var(0), f.var(0), f.var(0)
    VALUE, AFTER, KEY = 0, 1, 2

    def bit(j):
        return f.b.shl(f.k(1), j)

    def has(mask, j):
        return f.cmp("!=", f.b.and_(mask, bit(j)), 0)

    def start_of(j):
        return f.b.load(f.at(A["hoff"], f.add(f.b.mul(j, A["hs"]), row)))

    def finish_all(status):
        """Every field null (0) or fallback (2), then return (status == 2)."""
        with f.range(nj) as j:
            f.b.store(ir.Constant(I8, status), f.at(A["hvalid"], f.add(f.b.mul(j, A["vs"]), row)))
            f.b.store(start_of(j), f.at(A["hoff"], f.add(f.add(f.b.mul(j, A["hs"]), row), 1)))
        f.ret(1 if status == 2 else 0)

    def invalid():
        finish_all(0)

    def fallback():
        finish_all(2)

    def ws():
        with f.loop():
            iv = f.get(i)
            with f.if_(f.cmp(">=", iv, n)):
                f.brk()
            c = f.byte(v, iv)
            isws = f.any(f.cmp("==", c, 0x20), f.cmp("==", c, 0x09), f.cmp("==", c, 0x0A), f.cmp("==", c, 0x0D))
            with f.if_(f.b.not_(isws)):
                f.brk()
            f.set(i, f.add(iv, 1))

    def at_end():
        return f.cmp(">=", f.get(i), n)

    def peek(idx):
        """v[idx], or v[0] past the end (conditions below are not short-circuit: never read past n)."""
        return f.byte(v, f.b.select(f.cmp("<", idx, n), idx, f.k(0)))

    def is_digit(c):
        return f.b.and_(f.cmp(">=", c, 0x30), f.cmp("<=", c, 0x39))

    def digits(j):
        """j: a slot; advanced past the digits from it."""
        with f.loop():
            jv = f.get(j)
            with f.if_(f.cmp(">=", jv, n)):
                f.brk()
            with f.if_(f.b.not_(is_digit(f.byte(v, jv)))):
                f.brk()
            f.set(j, f.add(jv, 1))

    def string_end():
        """At a '"' (i): the index of the closing quote; returns (fallback / invalid) on \\ and control bytes."""
        j = f.var(f.add(f.get(i), 1))
        with f.loop():
            jv = f.get(j)
            with f.if_(f.cmp(">=", jv, n)):
                invalid()
            c = f.byte(v, jv)
            with f.if_(f.cmp("==", c, 0x22)):
                f.brk()
            with f.if_(f.cmp("==", c, 0x5C)):
                fallback()
            with f.if_(f.cmp("<", c, 0x20)):
                invalid()
            f.set(j, f.add(jv, 1))
        return f.get(j)

    def write_term(src_at, ln):
        """The text v[src_at : src_at+ln] is the value of every field in ``term``."""
        tm = f.get(term)
        with f.if_(f.cmp("!=", tm, 0)):
            with f.range(nj) as j:
                with f.if_(f.b.not_(has(tm, j))):
                    f.cont()
                f.copy(f.at(A["hdata"], f.add(f.b.mul(j, A["ds"]), start_of(j))), f.at(v, src_at), ln)
                f.b.store(ln, f.at(outlen, j))
                f.set(got, f.b.or_(f.get(got), bit(j)))

    def literal(text):
        """v[i:] starts with ``text`` (bytes), else invalid; i is left at its start."""
        iv = f.get(i)
        with f.if_(f.cmp(">", f.add(iv, len(text)), n)):
            invalid()
        for k, ch in enumerate(text):
            with f.if_(f.cmp("!=", f.byte(v, f.add(iv, k)), ch)):
                invalid()

    def push(is_obj, alive):
        dv = f.get(depth)
        with f.if_(f.cmp(">=", dv, JSON_MAX_DEPTH)):
            fallback()
        f.b.store(f.k(is_obj), f.at(st_obj, dv))
        f.b.store(f.k(alive), f.at(st_alive, dv))
        f.b.store(f.k(0), f.at(st_seen, dv))
        f.set(depth, f.add(dv, 1))

    with f.if_(f.cmp("<=", n, 0)):
        invalid()
    with f.if_(f.cmp("==", f.b.call(utf8_fn, [v, n]), 0)):
        invalid()
    f.set(nxt, f.sub(f.b.shl(f.k(1), nj), 1))  # at the root every path's first key is next
    with f.if_(f.cmp(">=", nj, 64)):
        f.set(nxt, -1)
    ws()
    with f.loop():
        md = f.get(mode)
        with f.if_(f.cmp("==", md, VALUE)):
            with f.if_(at_end()):
                invalid()
            iv = f.get(i)
            c = f.byte(v, iv)
            with f.if_(f.cmp("==", c, 0x7B)):  # {
                f.set(fb, f.b.or_(f.get(fb), f.get(term)))  # an object at the path: Polars re-serialises it
                push(1, f.get(nxt))
                f.set(i, f.add(iv, 1))
                ws()
                with f.if_(f.b.and_(f.b.not_(at_end()), f.cmp("==", peek(f.get(i)), 0x7D))):
                    f.set(depth, f.sub(f.get(depth), 1))
                    f.set(i, f.add(f.get(i), 1))
                    f.set(mode, AFTER)
                    f.cont()
                f.set(mode, KEY)
                f.cont()
            with f.if_(f.cmp("==", c, 0x5B)):  # [
                f.set(fb, f.b.or_(f.get(fb), f.b.or_(f.get(term), f.get(nxt))))  # jsonpath over arrays: Polars
                push(0, 0)
                f.set(term, 0)
                f.set(nxt, 0)
                f.set(i, f.add(iv, 1))
                ws()
                with f.if_(f.b.and_(f.b.not_(at_end()), f.cmp("==", peek(f.get(i)), 0x5D))):
                    f.set(depth, f.sub(f.get(depth), 1))
                    f.set(i, f.add(f.get(i), 1))
                    f.set(mode, AFTER)
                f.cont()
            f.set(mode, AFTER)
            with f.if_(f.cmp("==", c, 0x22)):  # a string: its bytes, escapes went to Polars above
                e = string_end()
                write_term(f.add(iv, 1), f.sub(f.sub(e, iv), 1))
                f.set(i, f.add(e, 1))
                f.cont()
            for ch, text in ((0x74, b"true"), (0x66, b"false"), (0x6E, b"null")):
                with f.if_(f.cmp("==", c, ch)):
                    literal(text)
                    if text != b"null":
                        write_term(iv, f.k(len(text)))
                    f.set(i, f.add(iv, len(text)))
                    f.cont()
            with f.if_(f.b.not_(f.any(f.cmp("==", c, 0x2D), is_digit(c)))):
                invalid()
            # a number: -?(0|[1-9][0-9]*)(.[0-9]+)?, an exponent goes to Polars (1e400 fails serde_json)
            neg = f.cmp("==", c, 0x2D)
            j = f.var(f.b.select(neg, f.add(iv, 1), iv))
            jv = f.get(j)
            with f.if_(f.b.or_(f.cmp(">=", jv, n), f.b.not_(is_digit(peek(jv))))):
                invalid()
            d0 = f.byte(v, jv)
            with f.if_else(f.cmp("==", d0, 0x30)) as (zero, other):
                with zero:
                    f.set(j, f.add(jv, 1))
                with other:
                    digits(j)
            intd = f.sub(f.get(j), jv)
            fracd, last, lead0 = f.var(0), f.var(0), f.var(0)
            with f.if_(f.b.and_(f.cmp("<", f.get(j), n), f.cmp("==", peek(f.get(j)), 0x2E))):
                fs = f.add(f.get(j), 1)
                f.set(j, fs)
                digits(j)
                with f.if_(f.cmp("==", f.get(j), fs)):
                    invalid()
                f.set(fracd, f.sub(f.get(j), fs))
                f.set(last, f.byte(v, f.sub(f.get(j), 1)))
                z = f.var(fs)  # leading zeros of the fraction
                with f.loop():
                    with f.if_(f.b.or_(f.cmp(">=", f.get(z), f.get(j)), f.cmp("!=", peek(f.get(z)), 0x30))):
                        f.brk()
                    f.set(z, f.add(f.get(z), 1))
                f.set(lead0, f.sub(f.get(z), fs))
            jend = f.get(j)
            with f.if_(f.cmp("<", jend, n)):
                ce = f.byte(v, jend)
                with f.if_(f.any(f.cmp("==", ce, 0x65), f.cmp("==", ce, 0x45))):
                    fallback()
            with f.if_(f.cmp("!=", f.get(term), 0)):
                whole0 = f.cmp("==", d0, 0x30)
                fd = f.get(fracd)
                int_fast = f.b.and_(f.cmp("<=", intd, 18), f.b.not_(f.b.and_(neg, whole0)))
                sig = f.b.select(whole0, f.sub(fd, f.get(lead0)), f.add(intd, fd))
                frac_fast = f.b.and_(
                    f.b.and_(f.cmp("!=", f.get(last), 0x30), f.cmp("<=", sig, 15)),
                    f.b.not_(f.b.and_(whole0, f.cmp(">=", f.get(lead0), 2))),
                )
                fast = f.b.select(f.cmp("==", fd, 0), int_fast, frac_fast)
                with f.if_else(fast) as (yes, no):
                    with yes:
                        write_term(iv, f.sub(jend, iv))
                    with no:
                        f.set(fb, f.b.or_(f.get(fb), f.get(term)))
            f.set(i, jend)
            f.cont()
        with f.if_(f.cmp("==", md, AFTER)):
            ws()
            dv = f.get(depth)
            with f.if_(f.cmp("==", dv, 0)):
                with f.if_(f.b.not_(at_end())):
                    invalid()
                f.brk()
            with f.if_(at_end()):
                invalid()
            c = f.byte(v, f.get(i))
            top_obj = f.cmp("!=", f.b.load(f.at(st_obj, f.sub(dv, 1))), 0)
            with f.if_(f.cmp("==", c, 0x2C)):  # ,
                f.set(i, f.add(f.get(i), 1))
                ws()
                f.set(term, 0)
                f.set(nxt, 0)
                f.set(mode, f.b.select(top_obj, f.k(KEY), f.k(VALUE)))
                f.cont()
            closes = f.b.or_(f.b.and_(f.cmp("==", c, 0x7D), top_obj), f.b.and_(f.cmp("==", c, 0x5D), f.b.not_(top_obj)))
            with f.if_(f.b.not_(closes)):
                invalid()
            f.set(depth, f.sub(dv, 1))
            f.set(i, f.add(f.get(i), 1))
            f.cont()
        # KEY: a '"' after '{' or ','
        with f.if_(f.b.or_(at_end(), f.cmp("!=", peek(f.get(i)), 0x22))):
            invalid()
        ks = f.add(f.get(i), 1)
        ke = string_end()
        klen = f.sub(ke, ks)
        dv = f.get(depth)
        top = f.sub(dv, 1)
        alive = f.b.load(f.at(st_alive, top))
        f.set(term, 0)
        f.set(nxt, 0)
        with f.if_(f.cmp("!=", alive, 0)):
            with f.range(nj) as j:
                with f.if_(f.b.not_(has(alive, j))):
                    f.cont()
                s0 = f.b.load(f.at(A["fseg"], j))
                nseg = f.sub(f.b.load(f.at(A["fseg"], f.add(j, 1))), s0)
                si = f.add(s0, top)
                a0 = f.b.load(f.at(A["seg_off"], si))
                ln = f.sub(f.b.load(f.at(A["seg_off"], f.add(si, 1))), a0)
                with f.if_(f.cmp("!=", ln, klen)):
                    f.cont()
                same = f.var(1)
                with f.range(ln) as m:
                    with f.if_(f.cmp("!=", f.byte(A["segs"], f.add(a0, m)), f.byte(v, f.add(ks, m)))):
                        f.set(same, 0)
                        f.brk()
                with f.if_(f.cmp("==", f.get(same), 0)):
                    f.cont()
                seen = f.b.load(f.at(st_seen, top))
                with f.if_(has(seen, j)):  # a key repeated on the path: serde_json keeps the last
                    f.set(fb, f.b.or_(f.get(fb), bit(j)))
                f.b.store(f.b.or_(seen, bit(j)), f.at(st_seen, top))
                with f.if_else(f.cmp("==", nseg, dv)) as (final, step):
                    with final:
                        f.set(term, f.b.or_(f.get(term), bit(j)))
                    with step:
                        f.set(nxt, f.b.or_(f.get(nxt), bit(j)))
        f.set(i, f.add(ke, 1))
        ws()
        with f.if_(f.b.or_(at_end(), f.cmp("!=", peek(f.get(i)), 0x3A))):
            invalid()
        f.set(i, f.add(f.get(i), 1))
        ws()
        f.set(mode, VALUE)
    # a whole, valid document: commit
    with f.range(nj) as j:
        valid_at = f.at(A["hvalid"], f.add(f.b.mul(j, A["vs"]), row))
        end_at = f.at(A["hoff"], f.add(f.add(f.b.mul(j, A["hs"]), row), 1))
        s = start_of(j)
        with f.if_else(has(f.get(fb), j)) as (fbk, other):
            with fbk:
                f.b.store(ir.Constant(I8, 2), valid_at)
                f.b.store(s, end_at)
            with other:
                with f.if_else(has(f.get(got), j)) as (yes, no):
                    with yes:
                        f.b.store(ir.Constant(I8, 1), valid_at)
                        f.b.store(f.add(s, f.b.load(f.at(outlen, j))), end_at)
                    with no:
                        f.b.store(ir.Constant(I8, 0), valid_at)
                        f.b.store(s, end_at)
    f.ret(f.b.zext(f.cmp("!=", f.get(fb), 0), I64))
    f.finish()
    json_fn = f.fn

    # ---- ks_decode(...) -> status; see _decode_chunk for the contract
    args = [(n, {'p8': P8, 'p32': P32, 'p64': P64, 'i64': I64}[t]) for n, t in DECODE_ARGS]
    f = Fn("ks_decode", I64, args, struct=ir.LiteralStructType([t for _, t in args]))
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
            # JSON fields, all paths in one walk over the value where it lies; the value is
            # copied only when a field needs Polars (want_values 1: every value; 2: on fallback)
            copy = f.var(f.b.zext(f.cmp("==", A["want_values"], 1), I64))
            with f.if_(f.cmp(">", A["nj"], 0)):
                hs, vs, ds = A["hoff_stride"], A["hvalid_stride"], A["hdata_stride"]
                nh = A["nf"]
                r = f.b.call(json_fn, [
                    f.at(buf, f.get(q)), vlen, nv, A["nj"], A["segs"], A["seg_off"], A["fseg"],
                    f.at(A["hoff"], f.b.mul(nh, hs)), hs, f.at(A["hvalid"], f.b.mul(nh, vs)), vs,
                    f.at(A["hdata"], f.b.mul(nh, ds)), ds,
                ])
                f.set(copy, f.b.or_(f.get(copy), r))
            with f.if_(f.cmp(">", vlen, 0)):
                with f.if_(f.b.and_(want, f.cmp("!=", f.get(copy), 0))):
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

    return str(mod)


_V, _I = ctypes.c_void_p, ctypes.c_int64
_FNS = (
    _native.Fn("ks_count", _I, (("buf", _V), ("end", _I), ("attrs", _V))),
    _native.Fn("ks_decode", _I, (("args", _V),)),  # a DecodeArgs*, its layout checked in _check_decode_args
    _native.Fn("ks_utf8", None, (("data", _V), ("offsets", _V), ("n", _I), ("ok", _V))),
)
# No optimisation passes: -O3 took ~0.3 s to compile and saved ~15 ms per million records,
# while unoptimised code decodes ~20M records/s, far above any fetch rate.
_LIB = _native.Lazy("sampling-decoder", lambda: _build_ir(), _FNS, opt=0)
_kernel_lock = threading.Lock()
_kernel_fns: dict | None = None


def _kernels() -> dict:
    """The decoder, compiled once per machine (object cache, keyscope._native) and loaded once per
    process: name -> ctypes function (GIL released in calls)."""
    global _kernel_fns
    if _kernel_fns is not None:
        return _kernel_fns
    with _kernel_lock:
        if _kernel_fns is None:
            lib = _LIB.get()
            _check_decode_args()
            _kernel_fns = {
                "count": lib["ks_count"], "decode": lib["ks_decode"], "utf8": lib["ks_utf8"],
                "_engine": lib.engine, "_from_cache": lib.from_cache,
            }
    return _kernel_fns


def _check_decode_args() -> None:
    """The struct ks_decode reads, as LLVM lays it out for this machine, must be DecodeArgs field by field."""
    from llvmlite import ir

    llvm = _native._llvm()
    types = {"p8": ir.IntType(8).as_pointer(), "p32": ir.IntType(32).as_pointer(),
             "p64": ir.IntType(64).as_pointer(), "i64": ir.IntType(64)}
    m = ir.Module("layout")
    ir.GlobalVariable(m, ir.LiteralStructType([types[t] for _, t in DECODE_ARGS]), "args")
    struct = llvm.parse_assembly(str(m)).get_global_variable("args").global_value_type
    td = llvm.Target.from_default_triple().create_target_machine().target_data
    got = [(td.get_element_offset(struct, i), td.get_abi_size(e)) for i, e in enumerate(struct.elements)]
    want = [(getattr(DecodeArgs, n).offset, getattr(DecodeArgs, n).size) for n, _ in DECODE_ARGS]
    if got != want or td.get_abi_size(struct) != ctypes.sizeof(DecodeArgs):
        raise _native.SignatureError(f"ks_decode's argument struct {got} does not match DecodeArgs {want}")


def _warm_kernels() -> None:
    try:
        _kernels()
    except Exception:  # reported where the kernel is needed, on the caller's thread
        pass


def _count_records(buf: np.ndarray) -> int:
    """Records declared by the complete v2 batches in ``buf`` (an upper bound on what is kept)."""
    return _scan_batches(buf)[0]


def _scan_batches(buf: np.ndarray) -> tuple[int, int]:
    """(records declared, OR of the batch attributes) over the complete v2 batches in ``buf``."""
    if not buf.size:
        return 0, 0
    attrs = np.zeros(1, np.int64)
    n = int(_kernels()["count"](buf.ctypes.data, buf.size, attrs.ctypes.data))
    return n, int(attrs[0])


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

    def __init__(self, cap: int, nbytes: int, plan: "_FieldPlan"):
        self.off = np.empty(cap, np.int64)
        self.ts = np.empty(cap, np.int64)
        self.klen = np.empty(cap, np.int32)
        self.vlen = np.empty(cap, np.int32)
        self.koff = np.zeros(cap + 1, np.int32)
        self.kdata = np.empty(max(nbytes, 16), np.uint8)
        self.want_values = plan.want_values
        want = bool(plan.want_values)
        self.voff = np.zeros(cap + 1 if want else 1, np.int64)
        self.vdata = np.empty(max(nbytes, 16) if want else 1, np.uint8)
        rows = len(plan.headers) + len(plan.native)  # header fields, then the JSON fields ks_json fills
        self.hoff = np.zeros((rows, cap + 1), np.int64)
        self.hvalid = np.zeros((rows, cap), np.uint8)
        self.hdata = np.empty((rows, max(nbytes, 16) if rows else 1), np.uint8)

    def decode(self, buf: np.ndarray, st: np.ndarray, lo: int, hi: int, budget: int, plan: "_FieldPlan") -> int:
        """One kernel call over ``buf`` from ``st[_POS]``; returns its status."""
        d = lambda a: a.ctypes.data  # noqa: E731
        args = DecodeArgs(
            buf=d(buf), end=buf.size, st=d(st), lo=lo, hi=hi, budget=budget,
            out_off=d(self.off), out_ts=d(self.ts), out_klen=d(self.klen), out_vlen=d(self.vlen),
            koff=d(self.koff), kdata=d(self.kdata),
            want_values=self.want_values, voff=d(self.voff), vdata=d(self.vdata),
            hnames=d(plan.hnames), hname_off=d(plan.hname_off), nf=len(plan.headers),
            hoff=d(self.hoff), hoff_stride=self.hoff.shape[1], hvalid=d(self.hvalid),
            hvalid_stride=self.hvalid.shape[1], hdata=d(self.hdata), hdata_stride=self.hdata.shape[1],
            nj=len(plan.native), segs=d(plan.segs), seg_off=d(plan.seg_off), fseg=d(plan.fseg),
        )
        return int(_kernels()["decode"](ctypes.addressof(args)))

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
    """The fields as the kernel takes them: header names, and the JSON paths it walks itself
    (``native``: simple dotted paths, see jsonfields.py) apart from those left to Polars."""

    def __init__(self, fields: list[FieldSpec]):
        from .jsonfields import simple_path

        self.fields = fields
        self.json = [f for f in fields if f.header is None]
        self.headers = [f for f in fields if f.header is not None]
        names = [f.header.encode("utf-8") for f in self.headers]
        self.hnames = np.frombuffer(b"".join(names) or b"\0", np.uint8).copy()
        self.hname_off = np.zeros(len(names) + 1, np.int64)
        for i, nm in enumerate(names):
            self.hname_off[i + 1] = self.hname_off[i] + len(nm)
        self.native: list[FieldSpec] = []
        self.polars: list[FieldSpec] = []
        keys: list[bytes] = []
        fseg = [0]
        for f in self.json:
            path = simple_path(f.path)
            if path is None or len(self.native) >= JSON_MAX_FIELDS:
                self.polars.append(f)
                continue
            self.native.append(f)
            keys += path
            fseg.append(len(keys))
        self.segs = np.frombuffer(b"".join(keys) or b"\0", np.uint8).copy()
        self.seg_off = np.zeros(len(keys) + 1, np.int64)
        for i, k in enumerate(keys):
            self.seg_off[i + 1] = self.seg_off[i] + len(k)
        self.fseg = np.array(fseg, np.int64)
        # values: copied all when a path is Polars' alone, else only those ks_json hands back
        self.want_values = 1 if self.polars else 2 if self.native else 0


@dataclass
class _Chunk:
    """What one fetched chunk of one partition gave."""

    table: object  # pyarrow Table, or None when no record was kept
    n: int  # records kept
    next: int | None  # offset to fetch next; None when not one complete batch came
    stopped: bool  # decoding stopped at ``hi`` or at the record budget
    walked_bytes: int = 0  # bytes of the batches decoding went through (for sizing the next fetch)
    walked_records: int = 0  # records those batches declare


def _decode_chunk(partition: int, records: bytes, lo: int, hi: int, budget: int, plan: _FieldPlan):
    """Decode one fetched chunk: (pyarrow Table or None, records kept, next offset or None, stopped)."""
    c = _decode(partition, records, lo, hi, budget, plan)
    return c.table, c.n, c.next, c.stopped


def _decode(partition: int, records: bytes, lo: int, hi: int, budget: int, plan: _FieldPlan) -> _Chunk:
    """Decode the records of ``[lo, hi)`` in one fetched chunk, at most ``budget`` of them."""
    buf = np.frombuffer(records, np.uint8)
    end = buf.size
    cap = min(_count_records(buf), max(0, budget))  # the kernel never writes more than the budget
    cols = _Columns(cap, end, plan)
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
    pos = int(st[_POS])
    walked = pos > 0 or stopped  # at least one complete batch was read
    nxt = int(st[_NEXT]) if walked else None
    if stopped:  # the batch decoding stopped in counts as walked
        pos += 12 + int.from_bytes(records[pos + 8 : pos + 12], "big")
    wrec = _count_records(buf[:pos]) if pos else 0
    table = _to_arrow(partition, n, st, cols, plan) if n else None
    return _Chunk(table, n, nxt, stopped, pos, wrec)


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
        arrays.update(_json_columns(n, st, cols, plan))
    for i, f in enumerate(plan.headers):
        hvalid = cols.hvalid[i, :n].copy()
        offs = cols.hoff[i, : n + 1]
        _utf8_valid(cols.hdata[i], offs, n, hvalid)
        arrays[f.name] = _large_string(n, offs, cols.hdata[i, : int(offs[n])], hvalid)
    return pa.table(arrays)


def _json_columns(n: int, st, cols: _Columns, plan: _FieldPlan) -> dict:
    """The JSON fields' columns: ks_json's rows, and Polars for the values it handed back."""
    import polars as pl
    import pyarrow as pa

    out = {}
    if plan.polars:  # every value was copied
        vvalid = (cols.vlen[:n] >= 0).astype(np.uint8)
        _utf8_valid(cols.vdata, cols.voff, n, vvalid)
        text = _large_string(n, cols.voff[: n + 1], cols.vdata[: int(st[_VPOS])], vvalid)
        # one select: Polars evaluates the paths in parallel (each path parses every value)
        matched = pl.from_arrow(text).to_frame("v").select(
            pl.col("v").str.json_path_match(f.path).alias(f"f{i}") for i, f in enumerate(plan.polars)
        )
        for i, f in enumerate(plan.polars):
            out[f.name] = matched.get_column(f"f{i}").to_arrow().cast(pa.large_string())
    nh = len(plan.headers)
    for i, f in enumerate(plan.native):
        status = cols.hvalid[nh + i, :n]
        offs = cols.hoff[nh + i, : n + 1]
        arr = _large_string(n, offs, cols.hdata[nh + i, : int(offs[n])], status == 1, validate=False)
        back = np.flatnonzero(status == 2)
        if back.size:  # what ks_json left to Polars: escapes, objects, exotic numbers, ...
            a, b = cols.voff[back], cols.voff[back + 1]
            pieces = [cols.vdata[x:y].tobytes().decode("utf-8") for x, y in zip(a.tolist(), b.tolist())]
            got = pl.Series(pieces, dtype=pl.String).str.json_path_match(f.path)
            arr = pl.from_arrow(arr).scatter(back, got).to_arrow().cast(pa.large_string())
        out[f.name] = arr
    return out


def _bitmap(valid):
    import pyarrow as pa

    return pa.py_buffer(np.packbits(valid.astype(np.uint8), bitorder="little"))


def _large_string(n: int, offsets, data, valid, validate: bool = True):
    """A large_string array over (offsets, data) where ``valid`` (1 = valid UTF-8, not null).

    ``validate=False``: the bytes are known UTF-8 (ks_json's output, cut from validated values at
    ASCII quotes), so the array is built as a string at once, without Arrow's UTF-8 pass."""
    import pyarrow as pa

    valid = valid.astype(bool)
    arr = pa.Array.from_buffers(
        pa.large_binary() if validate else pa.large_string(), n,
        [_bitmap(valid), pa.py_buffer(np.ascontiguousarray(offsets, np.int64).copy()),
         pa.py_buffer(np.ascontiguousarray(data).copy())],
        null_count=int(n - valid.sum()),
    )
    return arr.cast(pa.large_string()) if validate else arr  # validated above; null slots are not checked


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
    tables: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def share(self) -> float:
        """How much of its budget this partition has read."""
        return self.kept / self.budget if self.budget else 1.0


def sample_topic(conn, spec: SampleSpec, progress: Callable[[Progress], None] | None = None,
                 phase: Phase | None = None):
    """Read ``spec.topic`` into a Sample; read-only (no group, no commit, no topic creation).

    Returns a partial sample (``meta.partial``) on Ctrl-C or a broker lost for
    longer than ``spec.retry_s``; raises KafkaError when nothing could be read
    at all (unreachable cluster, unknown topic, missing partitions).
    """
    from ..kafka import client as kafka_io

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
        starts = {p: min(o, stops[p]) for p, o in _start_offsets(consumer, spec, marks, remaining).items()}
        avail = {p: max(0, stops[p] - starts[p]) for p in wanted}
        budgets = plan_budgets(avail, max_records, spec.per_partition)
        parts: dict[int, _Part] = {}
        for p in wanted:
            w = marks[p]
            start, stop = starts[p], stops[p]
            if spec.start == "latest":
                start = max(w.low, stop - budgets[p])  # the last `budget` records
            x = _Part(p, w.low, w.high, w.list_offsets_high, start, stop, budgets[p], start, last_stable=w.last_stable)
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
    return _build_sample(spec, conn, all_parts, parts, plan, state, sampled_at, t0, max_records, max_bytes, timeout_s)


def _start_offsets(consumer, spec: SampleSpec, marks, timeout_s: float) -> dict[int, int]:
    from ..kafka import client as kafka_io

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
            and x.kept + x.held_n < _pace_target(x, frontier, FETCH_AHEAD_RATIO, FETCH_AHEAD_STEP)
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
                x, _pace_target(x, frontier, FETCH_AHEAD_RATIO, FETCH_AHEAD_STEP) - x.kept - x.held_n, bpr, partition_max)
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
                if _throttled(exc):  # a broker quota holds this connection: wait, the broker is fine
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
_TRANSACTIONAL, _CONTROL = 0x10, 0x20  # RecordBatch attribute bits


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
    if len(records) >= 12:  # the first batch's size, even when cut short: ask at least that much next time
        part.batch_bytes = max(part.batch_bytes, min(12 + int.from_bytes(records[8:12], "big"), 256 << 20))
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


def _skip_aborted(records: bytes, aborted, part: _Part) -> bytes:
    """Hide the batches of aborted transactions from the decoder, as a read_committed consumer does.

    The rule of Kafka's Java consumer: a producer enters the aborted set when
    a batch reaches the first offset of one of its aborted transactions (the
    Fetch response lists them), leaves it at its ABORT marker, and its
    transactional batches in between are dropped.  A dropped batch gets the
    control bit, so the decoder skips it and still moves past its offsets.

    A broker that lists no aborted transactions (Tansu 0.6) leaves aborted
    records in; an ABORT marker after kept records of the same producer shows
    it, and the partition gets a note saying so.
    """
    buf = np.frombuffer(records, np.uint8)
    if not (_scan_batches(buf)[1] & _TRANSACTIONAL):
        return records
    pending = sorted(aborted, key=lambda a: a[1])
    i = 0
    active: set[int] = set()
    out: bytearray | None = None
    p, end = 0, len(records)
    while p + _BATCH_HEADER <= end:
        bend = p + 12 + int.from_bytes(records[p + 8 : p + 12], "big")
        if bend > end or records[p + 16] != 2:
            break
        attrs = int.from_bytes(records[p + 21 : p + 23], "big")
        base = int.from_bytes(records[p : p + 8], "big", signed=True)
        last = base + int.from_bytes(records[p + 23 : p + 27], "big")
        pid = int.from_bytes(records[p + 43 : p + 51], "big", signed=True)
        if pid >= 0 and attrs & _TRANSACTIONAL:
            while i < len(pending) and pending[i][1] <= last:
                active.add(pending[i][0])
                i += 1
            if attrs & _CONTROL:
                marker = _control_type(records, p, bend)
                if marker == 0 and pid in active:  # ABORT, listed
                    active.discard(pid)
                elif marker == 0 and pid in part.txn_open and last >= part.next:
                    part.notes.append(
                        f"the broker did not list the aborted transaction of producer {pid} ending at offset "
                        f"{last:,}: its records are in the sample"
                    )
                if marker in (0, 1):
                    part.txn_open.discard(pid)
            elif pid in active:
                out = out if out is not None else bytearray(records)
                out[p + 22] |= _CONTROL  # skipped by the decoder, offsets still advance
            elif last >= part.next:
                part.txn_open.add(pid)
        p = bend
    return bytes(out) if out is not None else records


def _control_type(records: bytes, p: int, bend: int) -> int | None:
    """The type of a control batch's first record: 0 ABORT, 1 COMMIT; None when unreadable."""
    q = p + _BATCH_HEADER
    vals = []
    for _ in range(4):  # record length, (attributes byte), timestamp delta, offset delta, key length
        if q >= bend:
            return None
        if len(vals) == 1:
            q += 1  # attributes
        v, shift = 0, 0
        while q < bend:
            b = records[q]
            q += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        vals.append((v >> 1) ^ -(v & 1))
    if vals[3] < 4 or q + 4 > bend:
        return None
    return int.from_bytes(records[q + 2 : q + 4], "big", signed=True)


def _build_sample(spec, conn, all_parts, parts, plan, state, sampled_at, t0, max_records, max_bytes, timeout_s):
    import polars as pl
    import pyarrow as pa

    from ..sample import PartitionInfo, Sample, SampleMeta, base_schema

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
            last_stable=x.last_stable, budget=x.budget, read_to=_read_to(x),
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
        "isolation": spec.isolation,
        "pace": {"ratio": PACE_RATIO, "step": PACE_STEP},
        "ranges": {str(p): [parts[p].start, parts[p].stop] for p in sorted(parts)},
        "list_offsets_high": {str(p): parts[p].list_offsets_high for p in sorted(parts)},
        "connection": conn.describe(),
    }
    notes = []
    under = [x for _, x in sorted(parts.items()) if x.list_offsets_high < x.high]
    if under:  # Tansu, when producers batch (shared/BROKER.md); never seen on Apache Kafka
        notes.append(
            f"end offsets come from fetch responses: ListOffsets under-reported partition"
            f"{'s' if len(under) > 1 else ''} {', '.join(str(x.partition) for x in under)} "
            f"by up to {max(x.high - x.list_offsets_high for x in under):,}"
        )
    notes += [f"partition {p}: {n}" for p in sorted(parts) for n in parts[p].notes]
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
