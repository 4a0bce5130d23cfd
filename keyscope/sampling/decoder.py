"""The compiled RecordBatch v2 decoder: LLVM IR built with llvmlite, loaded through keyscope._native.

ks_count (records in the complete batches of a buffer), ks_decode (one fetched chunk into column
buffers, calling ks_json for the JSON fields), ks_utf8; their Python callers below."""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from .. import _native
from . import wire
from .wire import BATCH, HEADER_BYTES

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

        def field(self, ptr, batch_at, name):
            """Header field ``name`` (wire.BATCH) of the RecordBatch starting at ptr[batch_at]."""
            off, width = BATCH[name]
            return self.be(ptr, self.add(batch_at, off) if off else batch_at, width)

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

    def same_bytes(f, a, a0, b, b0, n):
        """True when the n bytes at a[a0] equal those at b[b0] (a wanted name against the record's)."""
        same = f.var(1)
        with f.range(n) as m:
            with f.if_(f.cmp("!=", f.byte(a, f.add(a0, m)), f.byte(b, f.add(b0, m)))):
                f.set(same, 0)
                f.brk()
        return f.cmp("!=", f.get(same), 0)

    # ---- ks_count(buf, end, attrs) -> records declared by the complete v2 batches; *attrs = OR of their attributes
    f = Fn("ks_count", I64, [("buf", P8), ("end", I64), ("attrs", P64)])
    buf, end = f.a["buf"], f.a["end"]
    p, total, seen = f.var(0), f.var(0), f.var(0)
    with f.loop():
        pv = f.get(p)
        with f.if_(f.cmp(">", f.add(pv, HEADER_BYTES), end)):
            f.brk()
        blen = f.field(buf, pv, "batch_length")
        bend = f.add(f.add(pv, wire.LENGTH_END), blen)
        with f.if_(f.any(f.cmp(">=", blen, 0x80000000), f.cmp("<", blen, wire.MIN_BATCH_LENGTH), f.cmp(">", bend, end))):
            f.brk()
        cnt = f.field(buf, pv, "records_count")
        ok = f.b.and_(f.cmp("==", f.field(buf, pv, "magic"), 2), f.cmp("<", cnt, 0x80000000))
        with f.if_(ok):
            f.set(total, f.add(f.get(total), cnt))
        f.set(seen, f.b.or_(f.get(seen), f.field(buf, pv, "attributes")))
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
                with f.if_(f.b.not_(same_bytes(f, A["segs"], a0, v, ks, ln))):
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
        with f.if_(f.cmp(">", f.add(pv, HEADER_BYTES), end)):
            f.brk()
        blen = f.field(buf, pv, "batch_length")
        bend = f.add(f.add(pv, wire.LENGTH_END), blen)
        with f.if_(f.any(f.cmp(">=", blen, 0x80000000), f.cmp("<", blen, wire.MIN_BATCH_LENGTH), f.cmp(">", bend, end))):
            f.brk()  # a batch cut short by the fetch size: fetched again next time
        with f.if_(f.cmp("!=", f.field(buf, pv, "magic"), 2)):
            save()
            f.ret(_LEGACY)
        base = f.field(buf, pv, "base_offset")
        attrs = f.field(buf, pv, "attributes")
        batch_next = f.add(f.add(base, f.field(buf, pv, "last_offset_delta")), 1)
        with f.if_(f.any(f.cmp("<=", batch_next, A["lo"]), f.cmp("!=", f.b.and_(attrs, f.k(wire.CONTROL)), 0))):
            # already read, or a transaction marker: skip the batch
            with f.if_(f.cmp(">", batch_next, st_get(_NEXT))):
                st_put(_NEXT, batch_next)
            f.set(p, bend)
            f.cont()
        with f.if_(f.cmp("!=", f.b.and_(attrs, f.k(wire.CODEC_MASK)), 0)):
            save()
            f.ret(_COMPRESSED)
        first_ts = f.field(buf, pv, "base_timestamp")
        max_ts = f.field(buf, pv, "max_timestamp")
        log_append = f.cmp("!=", f.b.and_(attrs, f.k(wire.LOG_APPEND_TIME)), 0)
        cnt = f.field(buf, pv, "records_count")
        with f.if_(f.cmp(">=", cnt, 0x80000000)):
            save()
            f.ret(_CORRUPT)
        q = f.var(f.add(pv, HEADER_BYTES))
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
                        with f.if_(f.b.not_(same_bytes(f, A["hnames"], a0, buf, hk, ln))):
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
# -O2, now that the object code is cached (keyscope._native): the passes cost ~1.9 s CPU once per
# machine (measured at load ~14; opt 0 needs none) and cut the CPU per record, warm, from 24 to 15 ns
# without fields and from 350 to 100 ns with two --field paths (ks_json; -O1 155 ns, -O3 171 ns).
# (the argument struct's layout is checked against LLVM's wherever LLVM is loaded, before the object is
# cached for the LLVM-free loader: a process loading it from there does not load LLVM to check it again)
_LIB = _native.Lazy("sampling-decoder", lambda: _build_ir(), _FNS, opt=2, check=lambda: _check_decode_args())
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

