"""The compiled passes of what-if: one scenario's figures, and the integer group-by of the unit tables.

Each has a Python caller in :mod:`.engine` or :mod:`.tables` that names what it returns.

Why LLVM IR (keyscope._native) and not numba: these loops were ``@njit``
until issue 13; numba cost ~0.2 s to import and ~0.5 s to load even its
cached kernels in every cold ``whatif``/``recommend``, where llvmlite costs
~0.03 s and this module's object code loads from the disk cache in ~0.01 s.
A loop stays compiled only where plain numpy measured slower (10M records,
below each function); the IR is written C-like -- locals are ``alloca`` slots
(``%x.a``) promoted to registers by LLVM's mem2reg -- by the helpers
:func:`_for`, :func:`_at` and :func:`_add_to`.  ``python -c "from
keyscope.whatif.kernels import module_ir; print(module_ir())"`` shows it all.

Record sizes (key + value bytes) are int32 -- a Kafka record batch's length is
an int32, so no record is larger -- and summed in int64: 40 MB less per copy
at 10M records than int64 sizes.

Every kernel has a pure-Python twin in ``REFERENCES``; tests/test_whatif_kernels.py
checks them equal on random inputs (null keys, empty inputs, every dtype used).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import numpy as np

from .. import _native


@dataclass
class PassFigures:
    """What :func:`scenario_pass` counts, in sampled (unweighted) records unless named weighted."""

    cells_n: np.ndarray  # records per (today partition, scenario partition) cell, S x N flattened
    cells_b: np.ndarray  # bytes per cell
    unkeyed_n: np.ndarray  # null-key records per today partition (the producer spreads them)
    unkeyed_b: np.ndarray
    keys_present: int  # distinct keys hashed
    keys_moved: int  # keys whose partition changes
    keys_split: int  # keys landing on more than one partition
    keyed_weighted: float  # keyed records, weighted
    moved_weighted: float  # keyed records that change partition, weighted
    lost_weighted: float  # records of split keys (their order across partitions is lost), weighted


# ---- IR helpers ----------------------------------------------------------------


def _for(i: str, start: str, stop: str, body: str) -> str:
    """IR for ``for (i = start; i < stop; i++) { body }`` with an i64 slot ``%i.a``.

    The loop starts a new block, so the caller's block ends here; code after it
    runs in block ``i.end``.  ``body`` may ``br label %i.next`` to continue.
    """
    last = body.rstrip().rsplit("\n", 1)[-1].split()
    close = "" if last and last[0] in ("br", "ret") else f"  br label %{i}.next\n"  # body may end in a branch
    return (
        f"  store i64 {start}, ptr %{i}.a\n  br label %{i}.head\n"
        f"{i}.head:\n  %{i} = load i64, ptr %{i}.a\n  %{i}.more = icmp slt i64 %{i}, {stop}\n"
        f"  br i1 %{i}.more, label %{i}.body, label %{i}.end\n"
        f"{i}.body:\n{body}{close}"
        f"{i}.next:\n  %{i}.inc = add i64 %{i}, 1\n  store i64 %{i}.inc, ptr %{i}.a\n  br label %{i}.head\n"
        f"{i}.end:\n"
    )


def _at(v: str, ty: str, base: str, idx: str) -> str:
    """IR: ``%v = base[idx]`` (``%v.p`` is the element's address, for a store back)."""
    return f"  %{v}.p = getelementptr {ty}, ptr %{base}, i64 {idx}\n  %{v} = load {ty}, ptr %{v}.p\n"


def _put(ty: str, val: str, base: str, idx: str, tag: str) -> str:
    """IR: ``base[idx] = val``."""
    return f"  %{tag}.p = getelementptr {ty}, ptr %{base}, i64 {idx}\n  store {ty} {val}, ptr %{tag}.p\n"


def _add_to(ty: str, base: str, idx: str, val: str, tag: str) -> str:
    """IR: ``base[idx] += val`` (``ty``: double or i64)."""
    op = "fadd" if ty == "double" else "add"
    return _at(f"{tag}.o", ty, base, idx) + f"  %{tag}.s = {op} {ty} %{tag}.o, {val}\n  store {ty} %{tag}.s, ptr %{tag}.o.p\n"


def _slots(*names: str, ty: str = "i64") -> str:
    return "".join(f"  %{n}.a = alloca {ty}\n" for n in names)


def _sext(v: str, src: str) -> str:
    """IR: ``%v`` = the i32 ``src`` widened to i64."""
    return f"  %{v} = sext i32 {src} to i64\n"


def _null_last(v: str, k: str, K: str) -> str:
    """IR: ``%v = k >= 0 ? k : K`` -- null keys (-1) take the slot after the last key."""
    return f"  %{v}.neg = icmp slt i64 {k}, 0\n  %{v} = select i1 %{v}.neg, i64 {K}, i64 {k}\n"


# ---- kernels -------------------------------------------------------------------

# scenario_pass: ``_scenario_pass`` below is its reference.  Why compiled: composite
# keys make millions of rows, and a dozen numpy passes over them (modulo, cells,
# moved flags, per-key partition sets) cost several times this single loop
# (3M rows, load ~9: 237 ms; numba's loop 457 ms).  Sums are in row order with no reassociation (no fast-math), so every figure is
# bit-for-bit the reference's.
_SCENARIO_ARGS = (
    ("src", ctypes.c_void_p), ("op", ctypes.c_void_p), ("valid", ctypes.c_void_p), ("n", ctypes.c_void_p),
    ("b", ctypes.c_void_p), ("kid", ctypes.c_void_p), ("w", ctypes.c_void_p), ("rows", ctypes.c_int64),
    ("N", ctypes.c_int64), ("track_split", ctypes.c_int64), ("cells_n", ctypes.c_void_p),
    ("cells_b", ctypes.c_void_p), ("unk_n", ctypes.c_void_p), ("unk_b", ctypes.c_void_p),
    ("present", ctypes.c_void_p), ("moved", ctypes.c_void_p), ("first_p", ctypes.c_void_p),
    ("split", ctypes.c_void_p), ("sums", ctypes.c_void_p),
)


def _scenario_ir(name: str = "scenario_pass", narrow: bool = False) -> str:
    """``narrow``: ``src`` and ``kid`` are int32, ``n`` and ``b`` int64 (a unit table's columns as they are)."""

    def ld(v: str, base: str, idx: str) -> str:  # load src / kid (i64 either way) or n / b (double either way)
        if base in ("src", "kid"):
            return _at(v + ".w", "i32", base, idx) + _sext(v, f"%{v}.w") if narrow else _at(v, "i64", base, idx)
        return _at(v + ".w", "i64", base, idx) + f"  %{v} = sitofp i64 %{v}.w to double\n" if narrow else _at(v, "double", base, idx)

    keyed = (
        _at("o", "i64", "op", "%i")
        + "  %r = srem i64 %o, %N\n  %rneg = icmp slt i64 %r, 0\n  %rN = add i64 %r, %N\n"
        + "  %p = select i1 %rneg, i64 %rN, i64 %r\n"  # Python's floor modulo, as the reference
        + "  %sN = mul i64 %s, %N\n  %c = add i64 %sN, %p\n"
        + _add_to("double", "cells_n", "%c", "%ni", "cn")
        + _add_to("double", "cells_b", "%c", "%bi", "cb")
        + _at("ws", "double", "w", "%s")
        + "  %wn = fmul double %ni, %ws\n"
        + "  %kw = load double, ptr %keyed.a\n  %kw2 = fadd double %kw, %wn\n  store double %kw2, ptr %keyed.a\n"
        + ld("k", "kid", "%i")
        + _put("i8", "1", "present", "%k", "pr")
        + "  %mv = icmp ne i64 %p, %s\n  br i1 %mv, label %is_moved, label %after_moved\n"
        + "is_moved:\n"
        + "  %mw = load double, ptr %moved_w.a\n  %mw2 = fadd double %mw, %wn\n  store double %mw2, ptr %moved_w.a\n"
        + _put("i8", "1", "moved", "%k", "mk")
        + "  br label %after_moved\n"
        + "after_moved:\n  br i1 %track, label %split_check, label %i.next\n"
        + "split_check:\n"
        + _at("fp", "i64", "first_p", "%k")
        + "  %fneg = icmp slt i64 %fp, 0\n  br i1 %fneg, label %set_first, label %cmp_first\n"
        + "set_first:\n  store i64 %p, ptr %fp.p\n  br label %i.next\n"
        + "cmp_first:\n  %other = icmp ne i64 %fp, %p\n  br i1 %other, label %mark_split, label %i.next\n"
        + "mark_split:\n" + _put("i8", "1", "split", "%k", "sk") + "  br label %i.next\n"
    )
    first = (
        ld("s", "src", "%i") + ld("ni", "n", "%i") + ld("bi", "b", "%i")
        + _at("v", "i8", "valid", "%i")
        + "  %isv = icmp ne i8 %v, 0\n  br i1 %isv, label %keyed, label %unkeyed\n"
        + "unkeyed:\n" + _add_to("double", "unk_n", "%s", "%ni", "un") + _add_to("double", "unk_b", "%s", "%bi", "ub")
        + "  br label %i.next\n"
        + "keyed:\n" + keyed
    )
    lost = (  # the records of split keys: a second pass, once every key's partitions are known
        _at("v2", "i8", "valid", "%j") + "  %isv2 = icmp ne i8 %v2, 0\n  br i1 %isv2, label %lost_key, label %j.next\n"
        + "lost_key:\n" + ld("k2", "kid", "%j") + _at("sp", "i8", "split", "%k2")
        + "  %issp = icmp ne i8 %sp, 0\n  br i1 %issp, label %lost_add, label %j.next\n"
        + "lost_add:\n" + ld("n2", "n", "%j") + ld("s2", "src", "%j") + _at("w2", "double", "w", "%s2")
        + "  %nw2 = fmul double %n2, %w2\n"
        + "  %lw = load double, ptr %lost.a\n  %lw2 = fadd double %lw, %nw2\n  store double %lw2, ptr %lost.a\n"
    )
    args = ", ".join(f"{'i64' if t is ctypes.c_int64 else 'ptr'} %{n}" for n, t in _SCENARIO_ARGS)
    return (
        f"define void @{name}({args}) nounwind {{\nentry:\n"
        + _slots("i", "j") + _slots("keyed", "moved_w", "lost", ty="double")
        + "  store double 0.0, ptr %keyed.a\n  store double 0.0, ptr %moved_w.a\n  store double 0.0, ptr %lost.a\n"
        + "  %track = icmp ne i64 %track_split, 0\n"
        + _for("i", "0", "%rows", first)
        + "  br i1 %track, label %lost_pass, label %done\nlost_pass:\n"
        + _for("j", "0", "%rows", lost)
        + "  br label %done\ndone:\n"
        + "".join(
            f"  %{v}.f = load double, ptr %{v}.a\n" + _put("double", f"%{v}.f", "sums", str(i), f"out{i}")
            for i, v in enumerate(("keyed", "moved_w", "lost"))
        )
        + "  ret void\n}\n"
    )


# make_cells: per field set, ``partition + S * (the fields' codes in mixed radix)``.
# Why compiled: one pass writes every set's cells; numpy needs 3 passes per field
# (null code, multiply, add) and an int64 temporary each: 590-668 ms against
# 149 ms (numba 229) for 3 sets of 10M records, load ~9.  ``codes`` is a table of
# pointers, one per field's codes: the fields' codes as read from a sample's
# pages go in without being copied into one 2-D array (240 MB at recommend's
# 30M records, written to fresh memory).
_MAKE_CELLS_ARGS = (
    ("part", ctypes.c_void_p), ("n", ctypes.c_int64), ("S", ctypes.c_int64), ("codes", ctypes.c_void_p),
    ("widths", ctypes.c_void_p), ("members", ctypes.c_void_p), ("sets", ctypes.c_int64),
    ("depth", ctypes.c_int64), ("cells", ctypes.c_void_p),
)


def _make_cells_ir() -> str:
    field = (  # combo = combo * widths[f] + (code >= 0 ? code : widths[f] - 1); a -1 member ends the set
        "  %mj = add i64 %mrow, %j\n" + _at("f", "i64", "members", "%mj")
        + "  %fend = icmp slt i64 %f, 0\n  br i1 %fend, label %j.end, label %field\nfield:\n"
        + _at("wf", "i64", "widths", "%f")
        + _at("fcodes", "ptr", "codes", "%f") + _at("c32", "i32", "fcodes", "%i") + _sext("c", "%c32")
        + "  %cneg = icmp slt i64 %c, 0\n  %cnull = sub i64 %wf, 1\n  %cc = select i1 %cneg, i64 %cnull, i64 %c\n"
        + "  %combo = load i64, ptr %combo.a\n  %cw = mul i64 %combo, %wf\n  %combo2 = add i64 %cw, %cc\n"
        + "  store i64 %combo2, ptr %combo.a\n"
    )
    row = (
        "  store i64 0, ptr %combo.a\n"
        + _for("j", "0", "%depth", field)
        + _at("p32", "i32", "part", "%i") + _sext("pi", "%p32")
        + "  %cmb = load i64, ptr %combo.a\n  %scmb = mul i64 %S, %cmb\n  %cell = add i64 %pi, %scmb\n"
        + "  %cell32 = trunc i64 %cell to i32\n  %ri = add i64 %rn, %i\n" + _put("i32", "%cell32", "cells", "%ri", "out")
    )
    per_set = "  %mrow = mul i64 %r, %depth\n  %rn = mul i64 %r, %n\n" + _for("i", "0", "%n", row)
    args = ", ".join(f"{'i64' if t is ctypes.c_int64 else 'ptr'} %{n}" for n, t in _MAKE_CELLS_ARGS)
    return (
        f"define void @make_cells({args}) nounwind {{\nentry:\n" + _slots("r", "i", "j", "combo")
        + _for("r", "0", "%sets", per_set) + "  ret void\n}\n"
    )


# sort_by_key: a stable counting sort of the records by key id.  Why compiled:
# numpy's stable argsort of 10M int32 keys (a merge sort) took 1,926 ms, this
# count + scatter 707 ms (numba 1,850), load ~9; the scatter moves every set's
# cells in the same pass.
_COUNT_KEYS_ARGS = (("kid", ctypes.c_void_p), ("n", ctypes.c_int64), ("K", ctypes.c_int64), ("start", ctypes.c_void_p))
_SCATTER_ARGS = (  # rows lo..hi of n (the cells' row stride)
    ("kid", ctypes.c_void_p), ("n", ctypes.c_int64), ("lo", ctypes.c_int64), ("hi", ctypes.c_int64),
    ("K", ctypes.c_int64), ("pos", ctypes.c_void_p),
    ("cells", ctypes.c_void_p), ("sets", ctypes.c_int64), ("size", ctypes.c_void_p),
    ("s_cells", ctypes.c_void_p), ("s_size", ctypes.c_void_p),
)


def _sort_ir() -> str:
    count = (
        _at("k32", "i32", "kid", "%i") + _sext("key", "%k32") + _null_last("kk", "%key", "%K")
        + "  %slot = add i64 %kk, 1\n" + _add_to("i64", "start", "%slot", "1", "cnt")
    )
    prefix = (  # start[k + 1] += start[k]
        _at("sk", "i64", "start", "%k") + "  %k1 = add i64 %k, 1\n" + _add_to("i64", "start", "%k1", "%sk", "acc")
    )
    scatter_cells = (
        "  %fn = mul i64 %f, %n\n  %from = add i64 %fn, %i\n  %to = add i64 %fn, %dst\n"
        + _at("cv", "i32", "cells", "%from") + _put("i32", "%cv", "s_cells", "%to", "sc")
    )
    scatter = (
        _at("k32", "i32", "kid", "%i") + _sext("k", "%k32") + _null_last("kk", "%k", "%K")
        + _at("dst", "i64", "pos", "%kk") + "  %dst1 = add i64 %dst, 1\n  store i64 %dst1, ptr %dst.p\n"
        + _at("sz", "i32", "size", "%i") + _put("i32", "%sz", "s_size", "%dst", "ss")
        + _for("f", "0", "%sets", scatter_cells)
    )
    a1 = ", ".join(f"{'i64' if t is ctypes.c_int64 else 'ptr'} %{n}" for n, t in _COUNT_KEYS_ARGS)
    a2 = ", ".join(f"{'i64' if t is ctypes.c_int64 else 'ptr'} %{n}" for n, t in _SCATTER_ARGS)
    return (
        f"define void @count_keys({a1}) nounwind {{\nentry:\n" + _slots("i", "k")
        + _for("i", "0", "%n", count) + "  %K1 = add i64 %K, 1\n" + _for("k", "0", "%K1", prefix) + "  ret void\n}\n"
        f"define void @scatter_by_key({a2}) nounwind {{\nentry:\n" + _slots("i", "f")
        + _for("i", "%lo", "%hi", scatter) + "  ret void\n}\n"
    )


# dense_cells: one in-order pass into a dense (keys + 1) x cells table (records at 2 x slot, bytes at
# 2 x slot of a pointer 8 bytes on: the caller's (cells, 2) array).  Why
# compiled: np.bincount needs the int64 index (key * W + cell) as a temporary,
# and sums the bytes in float64 (exact only below 2^53): 204 ms against 20 ms
# (numba 35) for 10M records, load ~9.
_DENSE_ARGS = (
    ("kid", ctypes.c_void_p), ("n", ctypes.c_int64), ("K", ctypes.c_int64), ("cell", ctypes.c_void_p),
    ("W", ctypes.c_int64), ("size", ctypes.c_void_p), ("cnt", ctypes.c_void_p), ("byt", ctypes.c_void_p),
)


# dense_cells: records ahead whose slot is prefetched (the table is larger than the caches: each record's
# slot is a random miss otherwise)
DENSE_AHEAD = 64


def _dense_ir() -> str:
    ahead = (  # the slot of record min(i + DENSE_AHEAD, n - 1), prefetched for writing
        f"  %pa.i0 = add i64 %i, {DENSE_AHEAD}\n  %pa.last = sub i64 %n, 1\n"
        "  %pa.over = icmp sgt i64 %pa.i0, %pa.last\n  %pa.i = select i1 %pa.over, i64 %pa.last, i64 %pa.i0\n"
        + _at("pk32", "i32", "kid", "%pa.i") + _sext("pk", "%pk32") + _null_last("pkk", "%pk", "%K")
        + _at("pc32", "i32", "cell", "%pa.i") + _sext("pc", "%pc32")
        + "  %pkW = mul i64 %pkk, %W\n  %pslot1 = add i64 %pkW, %pc\n  %pslot = shl i64 %pslot1, 1\n"
        + "  %pp = getelementptr i64, ptr %cnt, i64 %pslot\n"
        + "  call void @llvm.prefetch.p0(ptr %pp, i32 1, i32 3, i32 1)\n"
    )
    body = ahead + (
        _at("k32", "i32", "kid", "%i") + _sext("k", "%k32") + _null_last("kk", "%k", "%K")
        + _at("c32", "i32", "cell", "%i") + _sext("c", "%c32")
        + "  %kW = mul i64 %kk, %W\n  %slot1 = add i64 %kW, %c\n  %slot = shl i64 %slot1, 1\n"
        + _add_to("i64", "cnt", "%slot", "1", "dn") + _at("sz32", "i32", "size", "%i") + _sext("sz", "%sz32")
        + _add_to("i64", "byt", "%slot", "%sz", "db")
    )
    args = ", ".join(f"{'i64' if t is ctypes.c_int64 else 'ptr'} %{n}" for n, t in _DENSE_ARGS)
    return f"define void @dense_cells({args}) nounwind {{\nentry:\n" + _slots("i") + _for("i", "0", "%n", body) + "  ret void\n}\n"


# group_cells: per key (rows grouped by key), its distinct cells via a dense
# scratch array reset through the list of touched cells: no hash table.  Why
# compiled: a per-key loop; numpy would need a sort of (key, cell) pairs (10M
# records: 706 ms; numba 1,359, load ~9).  The
# output is written up to ``room`` groups; when a key's groups do not fit, the
# kernel stops before it (``stop`` = [that key, its group count]) and the caller
# grows the output and calls again from there.
_GROUP_ARGS = (
    ("start", ctypes.c_void_p), ("k0", ctypes.c_int64), ("K1", ctypes.c_int64), ("cell", ctypes.c_void_p),
    ("size", ctypes.c_void_p), ("scr_n", ctypes.c_void_p), ("scr_b", ctypes.c_void_p),
    ("touched", ctypes.c_void_p), ("ok", ctypes.c_void_p), ("oc", ctypes.c_void_p), ("on", ctypes.c_void_p),
    ("ob", ctypes.c_void_p), ("room", ctypes.c_int64), ("stop", ctypes.c_void_p),
)


def _group_ir() -> str:
    gather = (  # one record of key k into the scratch
        _at("c32", "i32", "cell", "%j") + _sext("c", "%c32") + _at("sn", "i64", "scr_n", "%c")
        + "  %fresh = icmp eq i64 %sn, 0\n  br i1 %fresh, label %touch, label %count\n"
        + "touch:\n  %nt = load i64, ptr %nt.a\n" + _put("i64", "%c", "touched", "%nt", "tc")
        + "  %nt1 = add i64 %nt, 1\n  store i64 %nt1, ptr %nt.a\n  br label %count\n"
        + "count:\n  %sn1 = add i64 %sn, 1\n  store i64 %sn1, ptr %sn.p\n"
        + _at("sz32", "i32", "size", "%j") + _sext("sz", "%sz32") + _add_to("i64", "scr_b", "%c", "%sz", "sb")
    )
    emit = (  # one touched cell out, its scratch reset
        _at("tcell", "i64", "touched", "%t") + "  %ng = load i64, ptr %ng.a\n"
        + _at("en", "i64", "scr_n", "%tcell") + _at("eb", "i64", "scr_b", "%tcell")
        + "  %k32o = trunc i64 %k to i32\n  %tcell32 = trunc i64 %tcell to i32\n"
        + _put("i32", "%k32o", "ok", "%ng", "wk") + _put("i32", "%tcell32", "oc", "%ng", "wc")
        + _put("i64", "%en", "on", "%ng", "wn") + _put("i64", "%eb", "ob", "%ng", "wb")
        + "  store i64 0, ptr %en.p\n  store i64 0, ptr %eb.p\n"
        + "  %ng1 = add i64 %ng, 1\n  store i64 %ng1, ptr %ng.a\n"
    )
    reset = (  # no room: undo this key's scratch, the caller retries it with a larger output
        _at("rcell", "i64", "touched", "%u") + _put("i64", "0", "scr_n", "%rcell", "rn")
        + _put("i64", "0", "scr_b", "%rcell", "rb")
    )
    per_key = (
        "  store i64 0, ptr %nt.a\n" + _at("lo", "i64", "start", "%k")
        + "  %k1 = add i64 %k, 1\n" + _at("hi", "i64", "start", "%k1")
        + _for("j", "%lo", "%hi", gather)
        + "  %ntk = load i64, ptr %nt.a\n  %ngk = load i64, ptr %ng.a\n  %need = add i64 %ngk, %ntk\n"
        + "  %full = icmp sgt i64 %need, %room\n  br i1 %full, label %no_room, label %emit\n"
        + "no_room:\n" + _for("u", "0", "%ntk", reset)
        + _put("i64", "%k", "stop", "0", "st0") + _put("i64", "%ntk", "stop", "1", "st1")
        + "  ret i64 %ngk\n"
        + "emit:\n" + _for("t", "0", "%ntk", emit)
    )
    args = ", ".join(f"{'i64' if t is ctypes.c_int64 else 'ptr'} %{n}" for n, t in _GROUP_ARGS)
    return (
        f"define i64 @group_cells({args}) nounwind {{\nentry:\n" + _slots("k", "j", "t", "u", "nt", "ng")
        + "  store i64 0, ptr %ng.a\n" + _for("k", "%k0", "%K1", per_key)
        + _put("i64", "%K1", "stop", "0", "fin0") + "  %ngf = load i64, ptr %ng.a\n  ret i64 %ngf\n}\n"
    )


# pick_rows: see its caller.  Branch-free: a Zipf sample's hot keys hold a large,
# unpredictable share of the records, and the branchy loop (skip null, skip cold)
# mispredicted on most of them.  Every record writes its row and hot-key index at
# the cursor, which only a hot record advances (so the outputs have one spare
# slot); null keys read the lookup table's extra last slot (-1).  With null
# ``rows`` it only counts.
_PICK_ARGS = (("kid", ctypes.c_void_p), ("n", ctypes.c_int64), ("lut", ctypes.c_void_p), ("K", ctypes.c_int64),
              ("rows", ctypes.c_void_p), ("hid", ctypes.c_void_p))


def _pick_ir() -> str:
    def body(i: str, fill: bool) -> str:  # one record; ``i`` the loop variable, also every name's prefix
        out = (
            _at(f"{i}k32", "i32", "kid", f"%{i}") + _sext(f"{i}k", f"%{i}k32") + _null_last(f"{i}kk", f"%{i}k", "%K")
            + _at(f"{i}h32", "i32", "lut", f"%{i}kk") + _sext(f"{i}h", f"%{i}h32")
            + f"  %{i}m = load i64, ptr %m.a\n"
        )
        if fill:
            out += _put("i64", f"%{i}", "rows", f"%{i}m", f"{i}wr") + _put("i64", f"%{i}h", "hid", f"%{i}m", f"{i}wh")
        return out + (
            f"  %{i}hot = icmp sge i64 %{i}h, 0\n  %{i}inc = zext i1 %{i}hot to i64\n"
            f"  %{i}m1 = add i64 %{i}m, %{i}inc\n  store i64 %{i}m1, ptr %m.a\n"
        )

    args = ", ".join(f"{'i64' if t is ctypes.c_int64 else 'ptr'} %{n}" for n, t in _PICK_ARGS)
    return (
        f"define i64 @pick_rows({args}) nounwind {{\nentry:\n" + _slots("c", "f", "m") + "  store i64 0, ptr %m.a\n"
        + "  %count_only = icmp eq ptr %rows, null\n  br i1 %count_only, label %count, label %fill\n"
        + "count:\n" + _for("c", "0", "%n", body("c", False)) + "  br label %done\n"
        + "fill:\n" + _for("f", "0", "%n", body("f", True)) + "  br label %done\n"
        + "done:\n  %mf = load i64, ptr %m.a\n  ret i64 %mf\n}\n"
    )


# concat_parts: composite keys from dictionaries.  Row i is the concatenation of
# each part's dictionary entry at that part's code (a code < 0 adds nothing), so
# key + sep + field is built once per distinct (key, field) unit from the small
# key and field dictionaries, never per record.  Why compiled: pyarrow's
# binary_join_element_wise needs every part gathered to full length first (3.6M
# unit rows of key bytes here), and ``import pyarrow.compute`` imports pandas
# (0.3-0.5 s of a cold whatif/recommend).  The output offsets come from numpy.
_CONCAT_ARGS = (
    ("n", ctypes.c_int64), ("parts", ctypes.c_int64), ("offs", ctypes.c_void_p), ("datas", ctypes.c_void_p),
    ("codes", ctypes.c_void_p), ("out_off", ctypes.c_void_p), ("out", ctypes.c_void_p),
)


def _concat_ir() -> str:
    part = (
        "  %po = getelementptr ptr, ptr %offs, i64 %p\n  %off = load ptr, ptr %po\n"
        "  %pd = getelementptr ptr, ptr %datas, i64 %p\n  %dat = load ptr, ptr %pd\n"
        "  %pc = getelementptr ptr, ptr %codes, i64 %p\n  %cod = load ptr, ptr %pc\n"
        + _at("c", "i64", "cod", "%i")
        + "  %cneg = icmp slt i64 %c, 0\n  br i1 %cneg, label %p.next, label %copy\ncopy:\n"
        + _at("lo", "i64", "off", "%c") + "  %c1 = add i64 %c, 1\n" + _at("hi", "i64", "off", "%c1")
        + "  %len = sub i64 %hi, %lo\n  %src = getelementptr i8, ptr %dat, i64 %lo\n"
        + "  %pos = load i64, ptr %pos.a\n  %dst = getelementptr i8, ptr %out, i64 %pos\n"
        + "  call void @llvm.memcpy.p0.p0.i64(ptr %dst, ptr %src, i64 %len, i1 false)\n"
        + "  %pos2 = add i64 %pos, %len\n  store i64 %pos2, ptr %pos.a\n"
    )
    row = _at("start", "i64", "out_off", "%i") + "  store i64 %start, ptr %pos.a\n" + _for("p", "0", "%parts", part)
    args = ", ".join(f"{'i64' if t is ctypes.c_int64 else 'ptr'} %{n}" for n, t in _CONCAT_ARGS)
    return (
        f"define void @concat_parts({args}) nounwind {{\nentry:\n" + _slots("i", "p", "pos")
        + _for("i", "0", "%n", row) + "  ret void\n}\n"
    )


# map_codes: a row group's dictionary indices to global ids (keyscope.io.parquet.dictionary_codes),
# checking on the way that the dictionary lists its values in the order of their first rows (each
# new highest index is the previous highest + 1).  Why compiled: numpy took two passes per column
# (a running maximum, then a gather), ~0.7 s CPU of a 10M-record recommend's three columns under load.
_MAP_ARGS = (("ix", ctypes.c_void_p), ("n", ctypes.c_int64), ("ids", ctypes.c_void_p), ("m0", ctypes.c_int64),
             ("out", ctypes.c_void_p))


def _map_codes_ir() -> str:
    body = (
        _at("x32", "i32", "ix", "%i") + _sext("x", "%x32")
        + "  %neg = icmp slt i64 %x, 0\n  %xs = select i1 %neg, i64 0, i64 %x\n"
        + _at("v", "i32", "ids", "%xs") + "  %o = select i1 %neg, i32 -1, i32 %v\n"
        + _put("i32", "%o", "out", "%i", "wo")
        + "  %m = load i64, ptr %m.a\n  %m1 = add i64 %m, 1\n  %jump = icmp sgt i64 %x, %m1\n"
        + "  %jz = zext i1 %jump to i64\n  %b = load i64, ptr %bad.a\n  %b2 = or i64 %b, %jz\n"
        + "  store i64 %b2, ptr %bad.a\n  %up = icmp sgt i64 %x, %m\n  %mn = select i1 %up, i64 %x, i64 %m\n"
        + "  store i64 %mn, ptr %m.a\n"
    )
    args = ", ".join(f"{'i64' if t is ctypes.c_int64 else 'ptr'} %{n}" for n, t in _MAP_ARGS)
    return (
        f"define i64 @map_codes({args}) nounwind {{\nentry:\n" + _slots("i", "m", "bad")
        + "  store i64 %m0, ptr %m.a\n  store i64 0, ptr %bad.a\n" + _for("i", "0", "%n", body)
        + "  %mf = load i64, ptr %m.a\n  %bf = load i64, ptr %bad.a\n  %isbad = icmp ne i64 %bf, 0\n"
        + "  %r = select i1 %isbad, i64 -2, i64 %mf\n  ret i64 %r\n}\n"
    )


def module_ir() -> str:
    """The whole what-if kernel module as LLVM IR text."""
    return (
        _scenario_ir() + _scenario_ir("scenario_pass_narrow", narrow=True) + _pick_ir() + _make_cells_ir() + _sort_ir() + _dense_ir() + _group_ir() + _concat_ir()
        + _map_codes_ir() + "declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)\n"
        + "declare void @llvm.prefetch.p0(ptr, i32, i32, i32)\n"
    )


_FNS = (
    _native.Fn("scenario_pass", None, _SCENARIO_ARGS),
    _native.Fn("scenario_pass_narrow", None, _SCENARIO_ARGS),
    _native.Fn("pick_rows", ctypes.c_int64, _PICK_ARGS),
    _native.Fn("make_cells", None, _MAKE_CELLS_ARGS),
    _native.Fn("count_keys", None, _COUNT_KEYS_ARGS),
    _native.Fn("scatter_by_key", None, _SCATTER_ARGS),
    _native.Fn("dense_cells", None, _DENSE_ARGS),
    _native.Fn("group_cells", ctypes.c_int64, _GROUP_ARGS),
    _native.Fn("concat_parts", None, _CONCAT_ARGS),
    _native.Fn("map_codes", ctypes.c_int64, _MAP_ARGS),
)
_LIB = _native.Lazy("whatif", module_ir, _FNS, opt=3)


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


def _c(a, dtype) -> np.ndarray:
    """``a`` as a C-contiguous array of ``dtype`` (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=dtype)


# ---- the Python callers --------------------------------------------------------


def scenario_pass(src, op, valid, n, b, kid, w, S, N, K, track_split) -> PassFigures:
    """Every figure a scenario reports, in one compiled pass over its unit rows.

    ``kid`` is >= 0 for every hashed row (``valid``); ``op`` the modulo operands.
    Integer ``n`` and ``b`` (a unit table's Int64 columns) are read as they are,
    with int32 ``src`` and ``kid``: no float64 / int64 copies of the units
    (~100 MB at recommend's 3.6M key+user_id units); each count is converted
    to a double as it is read, so the sums are the same bits.
    """
    narrow = n.dtype.kind in "iu" and b.dtype.kind in "iu"
    if narrow:
        src, kid, n, b = _c(src, np.int32), _c(kid, np.int32), _c(n, np.int64), _c(b, np.int64)
    else:
        src, kid, n, b = _c(src, np.int64), _c(kid, np.int64), _c(n, np.float64), _c(b, np.float64)
    op, valid, w = _c(op, np.int64), _c(valid, np.bool_), _c(w, np.float64)
    rows = src.shape[0]
    cells_n, cells_b = np.zeros(S * N), np.zeros(S * N)
    unk_n, unk_b = np.zeros(S), np.zeros(S)
    present, moved = np.zeros(max(K, 1), np.bool_), np.zeros(max(K, 1), np.bool_)
    kt = max(K, 1) if track_split else 1
    first_p, split = np.full(kt, -1, np.int64), np.zeros(kt, np.bool_)
    sums = np.zeros(3)
    if rows:
        _LIB.get()["scenario_pass_narrow" if narrow else "scenario_pass"](
            _ptr(src), _ptr(op), _ptr(valid), _ptr(n), _ptr(b), _ptr(kid), _ptr(w), rows, int(N),
            int(bool(track_split)), _ptr(cells_n), _ptr(cells_b), _ptr(unk_n), _ptr(unk_b), _ptr(present),
            _ptr(moved), _ptr(first_p), _ptr(split), _ptr(sums),
        )
    split_n = int(np.count_nonzero(split)) if track_split else 0
    return PassFigures(
        cells_n, cells_b, unk_n, unk_b, int(np.count_nonzero(present)), int(np.count_nonzero(moved)), split_n,
        float(sums[0]), float(sums[1]), float(sums[2]),
    )


def pick_rows(kid, lut):
    """Rows whose key id maps to a hot key (``lut[kid] >= 0``; null keys, -1, never do) and that hot key's index.

    Two compiled passes (count, then fill the exact-size outputs): numpy's
    gather + flatnonzero measured 4.4x slower on 10M records (484 vs 109 ms)
    and needs two n-long int64 temporaries.  ``lut`` values fit an int32 (hot
    key indexes).
    """
    kid = _c(kid, np.int32)
    K = len(lut)
    table = np.full(K + 1, -1, np.int32)  # int32 (half the cache lines of int64) and the null keys' slot last
    table[:K] = lut
    n = kid.shape[0]
    fn = _LIB.get()["pick_rows"]
    m = int(fn(_ptr(kid), n, _ptr(table), K, 0, 0)) if n else 0
    rows, hid = np.empty(m + 1, np.int64), np.empty(m + 1, np.int64)  # + the spare slot
    if m:
        fn(_ptr(kid), n, _ptr(table), K, _ptr(rows), _ptr(hid))
    return rows[:m], hid[:m]


def map_codes(ix, ids, m0: int, out) -> int:
    """``out[i] = ids[ix[i]]`` (-1 where ``ix[i] < 0``: null); returns the highest index seen (from ``m0``),
    or -2 when some index exceeded the highest before it by more than one (not first-row order).

    ``ids`` must not be empty.  ``out`` is written in place (int32, contiguous, len(ix)).
    """
    ix, ids = _c(ix, np.int32), _c(ids, np.int32)
    n = ix.shape[0]
    if n == 0:
        return int(m0)
    if not (out.dtype == np.int32 and out.flags.c_contiguous and out.shape[0] == n):
        raise ValueError("out must be a contiguous int32 array of len(ix)")
    return int(_LIB.get()["map_codes"](_ptr(ix), n, _ptr(ids), int(m0), _ptr(out)))


def make_cells(part, S, codes, widths, members):
    """Per field set (a row of ``members``: field indexes, -1 padded), partition + S x the fields' codes in mixed radix; null = the last code.

    ``codes``: one array of codes per field (a sequence, or the rows of a 2-D array), each ``len(part)`` long.
    """
    part = _c(part, np.int32)
    rows = [_c(c, np.int32) for c in codes]
    widths, members = _c(widths, np.int64), _c(members, np.int64)
    m, n = members.shape[0], part.shape[0]
    if any(r.ndim != 1 or r.shape[0] != n for r in rows):
        raise ValueError("every field's codes must be one array of len(part)")
    if members.size and (members.max(initial=-1) >= len(rows) or members.max(initial=-1) >= widths.shape[0]):
        raise ValueError("members name a field with no codes or no width")
    cells = np.empty((m, n), np.int32)
    if n and m:
        table = np.array([r.ctypes.data for r in rows] or [0], np.uint64)  # ``rows`` keeps each array alive
        _LIB.get()["make_cells"](
            _ptr(part), n, int(S), _ptr(table), _ptr(widths), _ptr(members), m, members.shape[1], _ptr(cells)
        )
    return cells


def sort_by_key(kid, K, cells, size):
    """Cells and sizes reordered by key id (a stable counting sort; null keys, -1, last) and each key's start.

    Scattered, not gathered: records are read in order and written to one
    cursor per key, which stays cheap for hot keys; the group-by then reads
    each key's records contiguously.
    """
    kid, cells, size = _c(kid, np.int32), _c(cells, np.int32), _c(size, np.int32)
    n, m = kid.shape[0], cells.shape[0]
    lib = _LIB.get()
    s_cells = np.empty((m, n), np.int32)
    s_size = np.empty(n, np.int32)
    # rows split in halves, each counted and scattered on its own thread (the kernels let go of the GIL):
    # a key's records of the first half land before its records of the second, so the sort stays stable
    cuts = [0, n // 2, n] if n >= SORT_THREADS_MIN_ROWS else [0, n]
    counts = [np.zeros(K + 2, np.int64) for _ in cuts[1:]]

    def count(h: int) -> None:
        lo, hi = cuts[h], cuts[h + 1]
        lib["count_keys"](_ptr(kid) + 4 * lo, hi - lo, int(K), _ptr(counts[h]))

    def scatter(h: int) -> None:
        lib["scatter_by_key"](_ptr(kid), n, cuts[h], cuts[h + 1], int(K), _ptr(pos[h]), _ptr(cells), m, _ptr(size),
                              _ptr(s_cells), _ptr(s_size))  # fmt: skip

    _on_threads(count, len(counts))
    start = counts[0] if len(counts) == 1 else counts[0] + counts[1]  # prefix sums add up
    # each half's cursor per key: the records before it of smaller keys, and of its own key in the first half
    pos = [start[:-1].copy()] + ([counts[0][1:] + counts[1][:-1]] if len(counts) > 1 else [])
    if n:
        _on_threads(scatter, len(pos))
    return start, s_cells, s_size


# From this many records sort_by_key counts and scatters on two threads (10M records, 100k Zipf keys,
# one row of cells: 0.38 -> 0.18-0.22 s wall); below it one thread's pass is short.
SORT_THREADS_MIN_ROWS = 1 << 20


def _on_threads(fn, parts: int) -> None:
    """``fn(0) .. fn(parts - 1)``, each on its own thread when there are several (``fn`` only calls kernels)."""
    if parts <= 1:
        fn(0)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=parts) as pool:
        list(pool.map(fn, range(parts)))


def dense_cells(kid, K, cell, W, size):
    """``group_cells`` when (keys + 1) x cells is small: one in-order pass into a dense table, no sort."""
    kid, cell, size = _c(kid, np.int32), _c(cell, np.int32), _c(size, np.int32)
    # a cell's records and bytes side by side: one cache line per record, not two (the table of recommend's
    # key+region cells at 10M records is 43 MB, each record a random slot of it)
    tab = np.zeros(((K + 1) * W, 2), np.int64)
    if kid.shape[0]:
        _LIB.get()["dense_cells"](_ptr(kid), kid.shape[0], int(K), _ptr(cell), int(W), _ptr(size), _ptr(tab),
                                  _ptr(tab) + 8)
    nz = np.flatnonzero(tab[:, 0])
    return nz // W, nz % W, tab[nz, 0], tab[nz, 1]


def group_cells(start, cell, W, size):
    """Per key id (K = null), the distinct cells in [0, W) with their records and bytes.

    Rows arrive grouped by key, so a key's cells fit a small dense scratch
    array (reset through the list of touched cells): no hash table at all.
    """
    start, cell, size = _c(start, np.int64), _c(cell, np.int32), _c(size, np.int32)
    K1 = start.shape[0] - 1
    scr_n, scr_b = np.zeros(W, np.int64), np.zeros(W, np.int64)
    touched = np.empty(W, np.int64)
    # a key has at most min(its records, W) cells: that bound sizes the outputs once (growing from n / 8
    # by doubling held old and new arrays and then a trimmed copy: ~300 MB at a 10M-record recommend's peak)
    cap = max(1024, int(np.minimum(np.diff(start), W).sum()) + 1)
    # key ids and cells as int32 (both below 2**31: K + 1 keys, W <= tables.MAX_CELLS), counts and bytes
    # int64: 8 bytes a group less at the group pass's peak (29 MB for recommend's 3.6M key+user_id units)
    kinds = (np.int32, np.int32, np.int64, np.int64)
    out = [np.empty(cap, t) for t in kinds]
    stop = np.zeros(2, np.int64)
    fn = _LIB.get()["group_cells"]
    k, ng = 0, 0
    while True:
        at = [_ptr(o) + o.itemsize * ng for o in out]
        ng += int(fn(_ptr(start), k, K1, _ptr(cell), _ptr(size), _ptr(scr_n), _ptr(scr_b), _ptr(touched),
                     *at, cap - ng, _ptr(stop)))
        k = int(stop[0])
        if k >= K1:
            break
        cap = max(2 * cap, ng + int(stop[1]))
        grown = [np.empty(cap, t) for t in kinds]
        for g, o in zip(grown, out):
            g[:ng] = o[:ng]
        out = grown
    # views, not trimmed copies: the pages past ``ng`` were never written, so they hold no memory (a copy
    # held ~115 MB more at a 10M-record recommend's peak, key+user_id: 3.6M groups, bound ~5M)
    return tuple(o[:ng] for o in out)


def concat_parts(parts, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64[n + 1], bytes uint8) of row i = the concatenation of ``offsets/data[codes[i]]`` over the parts.

    ``parts``: (offsets int64, data uint8, codes int64[n]) per part, each a
    dictionary in the LargeBinary layout, optionally a fourth: its entries'
    lengths and a last 0 (``np.append(np.diff(offsets), 0)``, made once by a
    caller of many slices); a code -1 adds nothing to the row (codes are -1 or
    an entry).
    """
    keep = [(_c(p[0], np.int64), _c(p[1], np.uint8) if len(p[1]) else np.zeros(1, np.uint8), _c(p[2], np.int64),
             p[3] if len(p) > 3 else np.append(np.diff(p[0]), np.int64(0))) for p in parts]  # fmt: skip
    lengths = np.zeros(n, np.int64)
    for _, _, c, sizes in keep:
        lengths += sizes[c]  # -1 (null) reads the extra last entry, 0: no np.where over the rows
    out_off = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=out_off[1:])
    out = np.empty(max(int(out_off[-1]), 1), np.uint8)
    if n and keep:
        addrs = [np.array([_ptr(a[j]) for a in keep], np.int64) for j in range(3)]
        _LIB.get()["concat_parts"](n, len(keep), _ptr(addrs[0]), _ptr(addrs[1]), _ptr(addrs[2]), _ptr(out_off), _ptr(out))
    return out_off, out[: int(out_off[-1])]


# ---- pure-Python references (the tests' oracle) ---------------------------------


def _scenario_pass(src, op, valid, n, b, kid, w, S, N, K, track_split) -> PassFigures:
    """The reference of :func:`scenario_pass`: the loop, in Python."""
    cells_n, cells_b = [0.0] * (S * N), [0.0] * (S * N)
    unk_n, unk_b = [0.0] * S, [0.0] * S
    present, moved, first_p, split = set(), set(), {}, set()
    keyed_w = moved_w = 0.0
    for i in range(len(src)):
        s = int(src[i])
        if not valid[i]:
            unk_n[s] += float(n[i])
            unk_b[s] += float(b[i])
            continue
        p = int(op[i]) % N
        c = s * N + p
        cells_n[c] += float(n[i])
        cells_b[c] += float(b[i])
        wn = float(n[i]) * float(w[s])
        keyed_w += wn
        k = int(kid[i])
        present.add(k)
        if p != s:
            moved_w += wn
            moved.add(k)
        if track_split:
            if k not in first_p:
                first_p[k] = p
            elif first_p[k] != p:
                split.add(k)
    lost = 0.0
    if track_split:
        for i in range(len(src)):
            if valid[i] and int(kid[i]) in split:
                lost += float(n[i]) * float(w[int(src[i])])
    return PassFigures(
        np.array(cells_n), np.array(cells_b), np.array(unk_n), np.array(unk_b), len(present), len(moved), len(split),
        keyed_w, moved_w, lost,
    )


def _map_codes(ix, ids, m0: int, out) -> int:
    m, bad = int(m0), False
    for i, x in enumerate(int(v) for v in ix):
        out[i] = ids[x] if x >= 0 else -1
        bad |= x > m + 1
        m = max(m, x)
    return -2 if bad else m


def _pick_rows(kid, lut):
    rows = [i for i, k in enumerate(kid) if k >= 0 and lut[k] >= 0]
    return np.array(rows, np.int64), np.array([lut[kid[i]] for i in rows], np.int64)


def _make_cells(part, S, codes, widths, members):
    cells = np.empty((len(members), len(part)), np.int32)
    for r, fs in enumerate(members):
        for i in range(len(part)):
            combo = 0
            for f in fs:
                if f < 0:
                    break
                c = int(codes[f][i])
                combo = combo * int(widths[f]) + (c if c >= 0 else int(widths[f]) - 1)
            cells[r, i] = int(part[i]) + S * combo
    return cells


def _sort_by_key(kid, K, cells, size):
    slot = [int(k) if k >= 0 else K for k in kid]
    order = sorted(range(len(kid)), key=lambda i: slot[i])  # Python's sort is stable
    start = np.zeros(K + 2, np.int64)
    for s in slot:
        start[s + 1] += 1
    start = np.cumsum(start)
    return start, np.asarray(cells)[:, order].astype(np.int32), np.asarray(size, np.int32)[order]


def _group(kid_slots, cell, size):
    """(slot, cell) -> records, bytes, sorted by slot then first appearance."""
    groups: dict = {}
    for k, c, z in zip(kid_slots, cell, size):
        g = groups.setdefault((int(k), int(c)), [0, 0])
        g[0] += 1
        g[1] += int(z)
    return groups


def _dense_cells(kid, K, cell, W, size):
    groups = _group([k if k >= 0 else K for k in kid], cell, size)
    keys = sorted(groups)  # dense order: by key, then cell
    return tuple(np.array(v, np.int64) for v in (
        [k for k, _ in keys], [c for _, c in keys], [groups[g][0] for g in keys], [groups[g][1] for g in keys]))


def _group_cells(start, cell, W, size):
    slots = np.repeat(np.arange(len(start) - 1), np.diff(start))
    groups = _group(slots, cell, size)  # per key, cells in order of first appearance (dicts keep it)
    keys = list(groups)
    return tuple(np.array(v, t) for v, t in zip((
        [k for k, _ in keys], [c for _, c in keys], [groups[g][0] for g in keys], [groups[g][1] for g in keys]),
        (np.int32, np.int32, np.int64, np.int64)))


def _concat_parts(parts, n):
    rows = []
    for i in range(n):
        row = b""
        for o, d, c in parts:
            if c[i] >= 0:
                row += bytes(np.asarray(d, np.uint8)[o[c[i]] : o[c[i] + 1]])
        rows.append(row)
    off = np.zeros(n + 1, np.int64)
    off[1:] = np.cumsum([len(r) for r in rows])
    return off, np.frombuffer(b"".join(rows), np.uint8)


REFERENCES = {
    "concat_parts": _concat_parts,
    "scenario_pass": _scenario_pass, "pick_rows": _pick_rows, "map_codes": _map_codes, "make_cells": _make_cells,
    "sort_by_key": _sort_by_key, "dense_cells": _dense_cells, "group_cells": _group_cells,
}
