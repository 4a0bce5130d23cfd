"""One pass over a sample's records: the (key, partition) table, in a compiled kernel.

Why not ``group_by(key, partition)`` in Polars: on 10M records it is most of
``analyze``'s time (hashing and comparing Binary keys through generic
machinery, ~0.4-0.8 s here).  This kernel reads the keys straight from the
Arrow binary-view buffers (like :mod:`keyscope._kernels`), keeps an
open-addressing table keyed by (key bytes, partition) with exact byte
comparison (no hash-collision guesswork), and in the same pass sums records,
bytes and squared bytes per group, counts null keys per partition, and keeps
each partition's offset/timestamp extremes for rates.  :func:`encode` is the
same table without the sums: dense dictionary codes for what-if.

Why LLVM IR (via :mod:`keyscope._native`) and not numba, which this module
used before: numba cost a fresh process ~0.2 s to import and ~0.5 s to load
its *cached* kernels, more than the scan of a million records; the IR loads
from the object cache in ~10 ms and builds the same tables word for word at
the same speed or better (docs/benchmarks.md, "The key table in LLVM IR"), so
:mod:`keyscope.analysis` uses it from 500,000 records (was 2M).  Keys are read through the same view helpers as the hash kernels
(``keyscope._kernels._long_ptr`` / ``_valid_bit``).  ``python -c "from
keyscope._keytable import module_ir; print(module_ir())"`` shows all of it.
The calls go through ctypes, which releases the GIL: :func:`scan` runs
pieces of rows on two threads, each with its own table, then merges them.

:func:`reference_scan` / :func:`reference_encode` are the pure-Python twins
(the same hash, table and probe order); tests/test_keytable.py checks the
kernels' tables against them slot for slot, and the results against Polars.
"""

from __future__ import annotations

import ctypes

import numpy as np

from . import _native
from ._kernels import _long_ptr, _valid_bit

I64_MIN = np.iinfo(np.int64).min
I64_MAX = np.iinfo(np.int64).max

_K1 = 0x9E3779B97F4A7C15
_K2 = 0xC2B2AE3D27D4EB4F
_K3 = 0x165667B19E3779F9
_M64 = (1 << 64) - 1

# The table is open-addressed over group records themselves (no index array, so
# a record costs one cache miss, not two).  Each record is 8 x 64 bits, one
# cache line: hash, w0, w1, len | partition << 32, records (0 = empty slot),
# bytes, first row, and squared bytes (a float64 view of the same memory).
# Keys of <= 16 bytes live whole in (w0, w1), so matching them never touches
# the key buffers; longer keys keep their address in w0 and are compared word
# by word (an overlapping last word instead of a byte loop).
_H, _W0, _W1, _LP, _REC, _BYTES, _ROW, _BSQ = 0, 1, 2, 3, 4, 5, 6, 7
_WIDTH = 8

# Dictionary encoding (encode): a slot is 4 x 64 bits: hash, w0, w1,
# len | (code + 1) << 32 (0 = empty).
_EH, _EW0, _EW1, _ELC = 0, 1, 2, 3
_EWIDTH = 4


def _s64(x: int) -> int:
    """An unsigned 64-bit constant as the signed literal LLVM's text format wants."""
    return x - (1 << 64) if x >= 1 << 63 else x


_COMMON = rf"""
; The key hash: one multiply-xorshift step per 64-bit word (as the numba
; version did; any change would only move keys between slots, never change a
; result, but the tests compare tables slot for slot with the reference).
define internal i64 @kt_mix(i64 %h, i64 %w) alwaysinline nounwind {{
  %a = mul i64 %w, {_s64(_K1)}
  %b = lshr i64 %a, 29
  %c = xor i64 %a, %b
  %d = xor i64 %h, %c
  %r = mul i64 %d, {_s64(_K2)}
  ret i64 %r
}}

; The low %n bytes (0..8) of %w.  (A shift by 64 is poison in LLVM: 8 takes the select.)
define internal i64 @kt_low(i64 %w, i64 %n) alwaysinline nounwind {{
  %all = icmp sge i64 %n, 8
  %bits = shl i64 %n, 3
  %sh = select i1 %all, i64 0, i64 %bits
  %one = shl i64 1, %sh
  %m = sub i64 %one, 1
  %mask = select i1 %all, i64 -1, i64 %m
  %r = and i64 %w, %mask
  ret i64 %r
}}

; Keys of > 16 bytes at %p and %q compared 8 bytes at a time; the last word
; overlaps the one before instead of a byte loop.
define internal i1 @kt_long_equal(ptr %p, ptr %q, i64 %ln) alwaysinline nounwind {{
entry:
  br label %loop
loop:
  %k = phi i64 [0, %entry], [%end, %same]
  %end = add i64 %k, 8
  %whole = icmp sle i64 %end, %ln
  br i1 %whole, label %word, label %tail
word:
  %pk = getelementptr i8, ptr %p, i64 %k
  %qk = getelementptr i8, ptr %q, i64 %k
  %a = load i64, ptr %pk, align 1
  %b = load i64, ptr %qk, align 1
  %eq = icmp eq i64 %a, %b
  br i1 %eq, label %same, label %out
same:
  br label %loop
tail:
  %rest = icmp slt i64 %k, %ln
  br i1 %rest, label %last, label %out
last:
  %lm8 = sub i64 %ln, 8
  %pl = getelementptr i8, ptr %p, i64 %lm8
  %ql = getelementptr i8, ptr %q, i64 %lm8
  %c = load i64, ptr %pl, align 1
  %d = load i64, ptr %ql, align 1
  %eql = icmp eq i64 %c, %d
  br label %out
out:
  %r = phi i1 [false, %word], [true, %tail], [%eql, %last]
  ret i1 %r
}}

; One key from its 16-byte view %v: {{hash, w0, w1, data}}.  Inline keys (<= 12
; bytes) are the view's bytes 4..15 with the padding masked off; 13-16 byte
; keys are two overlapping words of the data; longer keys hash every word and
; keep their address in w0 and their first word in w1.  %h0 seeds the hash
; with the length (and the partition, for scan).
define internal {{i64, i64, i64, ptr}} @kt_key(ptr %v, ptr %bufs, i64 %ln, i64 %h0) alwaysinline nounwind {{
entry:
  %inline = icmp sle i64 %ln, 12
  br i1 %inline, label %short, label %long
short:
  %ip0 = getelementptr i8, ptr %v, i64 4
  %iw0 = load i64, ptr %ip0, align 4
  %sw0 = call i64 @kt_low(i64 %iw0, i64 %ln)
  %ip1 = getelementptr i8, ptr %v, i64 8
  %iw1 = load i64, ptr %ip1, align 8
  %iw1s = lshr i64 %iw1, 32                 ; bytes 8..11 of the key
  %ln8 = sub i64 %ln, 8
  %has1 = icmp sgt i64 %ln8, 0
  %n1 = select i1 %has1, i64 %ln8, i64 0    ; 0 bytes: w1 = 0, no branch
  %sw1 = call i64 @kt_low(i64 %iw1s, i64 %n1)
  %sh0 = call i64 @kt_mix(i64 %h0, i64 %sw0)
  %sh = call i64 @kt_mix(i64 %sh0, i64 %sw1)
  br label %done
long:
{_long_ptr("")}  %lm8 = sub i64 %ln, 8
  %lastp = getelementptr i8, ptr %p, i64 %lm8
  %last = load i64, ptr %lastp, align 1     ; bytes [ln-8, ln)
  %first = load i64, ptr %p, align 1
  %mid = icmp sle i64 %ln, 16
  br i1 %mid, label %mid16, label %words
mid16:
  %mh0 = call i64 @kt_mix(i64 %h0, i64 %first)
  %mh = call i64 @kt_mix(i64 %mh0, i64 %last)
  br label %done
words:
  %j = phi i64 [0, %long], [%j.next, %words]
  %wh = phi i64 [%h0, %long], [%wh.next, %words]
  %wp = getelementptr i8, ptr %p, i64 %j
  %w = load i64, ptr %wp, align 1
  %wh.next = call i64 @kt_mix(i64 %wh, i64 %w)
  %j.next = add i64 %j, 8
  %j.end = add i64 %j.next, 8
  %more = icmp sle i64 %j.end, %ln
  br i1 %more, label %words, label %wtail
wtail:
  %rest = icmp slt i64 %j.next, %ln
  %th = call i64 @kt_mix(i64 %wh.next, i64 %last)
  %lh = select i1 %rest, i64 %th, i64 %wh.next
  %addr = ptrtoint ptr %p to i64
  br label %done
done:
  %h = phi i64 [%sh, %short], [%mh, %mid16], [%lh, %wtail]
  %w0 = phi i64 [%sw0, %short], [%first, %mid16], [%addr, %wtail]
  %w1 = phi i64 [%sw1, %short], [%last, %mid16], [%first, %wtail]
  %data = phi ptr [null, %short], [%p, %mid16], [%p, %wtail]
  %hs = lshr i64 %h, 32
  %hf = xor i64 %h, %hs
  %r0 = insertvalue {{i64, i64, i64, ptr}} poison, i64 %hf, 0
  %r1 = insertvalue {{i64, i64, i64, ptr}} %r0, i64 %w0, 1
  %r2 = insertvalue {{i64, i64, i64, ptr}} %r1, i64 %w1, 2
  %r3 = insertvalue {{i64, i64, i64, ptr}} %r2, ptr %data, 3
  ret {{i64, i64, i64, ptr}} %r3
}}

; Is the record at %g the key {{%h, %lp, %w0, %w1, data %p}}?  The length
; field is compared under %lpmask (encode keeps its code in the high half).
; Hash first, then length and w1: a mismatch is nearly always decided there.
define internal i1 @kt_same(ptr %g, i64 %h, i64 %lp, i64 %lpmask, i64 %w0, i64 %w1, ptr %p, i64 %ln) alwaysinline nounwind {{
entry:
  %gh = load i64, ptr %g, align 8
  %pf = getelementptr i64, ptr %g, i64 3
  %glpr = load i64, ptr %pf, align 8
  %glp = and i64 %glpr, %lpmask
  %p1 = getelementptr i64, ptr %g, i64 2
  %gw1 = load i64, ptr %p1, align 8
  %e0 = icmp eq i64 %gh, %h
  br i1 %e0, label %fields, label %out
fields:                                   ; (one branch on all three measured no faster:
  %e1 = icmp eq i64 %glp, %lp             ;  0.135 vs 0.099 s encoding 5M short keys)
  %e2 = icmp eq i64 %gw1, %w1
  %e = and i1 %e1, %e2
  br i1 %e, label %words, label %out
words:
  %p0 = getelementptr i64, ptr %g, i64 1
  %gw0 = load i64, ptr %p0, align 8
  %eqw0 = icmp eq i64 %gw0, %w0
  %short = icmp sle i64 %ln, 16
  br i1 %short, label %out, label %long
long:
  %q = inttoptr i64 %gw0 to ptr
  %le = call i1 @kt_long_equal(ptr %p, ptr %q, i64 %ln)
  br label %out
out:
  %r = phi i1 [false, %entry], [false, %fields], [%eqw0, %words], [%le, %long]
  ret i1 %r
}}
"""


def _field(out: str, g: str, f: int, ty: str = "i64") -> str:
    """IR: ``%{out}.p`` = the address of field ``f`` of record ``%{g}``, ``%{out}`` its value."""
    return (f"  %{out}.p = getelementptr i64, ptr %{g}, i64 {f}\n"
            f"  %{out} = load {ty}, ptr %{out}.p, align 8\n")


def _record(g: str, slot: str, width: int, table: str) -> str:
    """IR: ``%{g}`` = the address of record ``%{slot}`` of ``%{table}`` (``width`` words each)."""
    return (f"  %{g}.o = mul i64 %{slot}, {width}\n"
            f"  %{g} = getelementptr i64, ptr %{table}, i64 %{g}.o\n")


def _per_part(arr: str, op: str, val: str, ty: str = "i64") -> str:
    """IR: ``arr[part] = op(arr[part], val)`` (op: add/fadd or an icmp predicate for min/max)."""
    x = f"{arr}.{op}"
    ir = (f"  %{x}.p = getelementptr {ty}, ptr %{arr}, i64 %part\n"
          f"  %{x}.v = load {ty}, ptr %{x}.p, align 8\n")
    if op in ("add", "fadd"):
        ir += f"  %{x}.n = {op} {ty} %{x}.v, %{val}\n"
    else:  # keep the smaller (slt) or the larger (sgt)
        ir += (f"  %{x}.c = icmp {op} i64 %{val}, %{x}.v\n"
               f"  %{x}.n = select i1 %{x}.c, i64 %{val}, i64 %{x}.v\n")
    return ir + f"  store {ty} %{x}.n, ptr %{x}.p, align 8\n"


# Pieces both table kernels (kt_scan, kt_encode) share, written once.
# Row %i's view and its key length %ln.
_VIEW_LEN = """\
  %voff = shl i64 %i, 4
  %v = getelementptr i8, ptr %views, i64 %voff
  %len = load i32, ptr %v, align 4
  %ln = sext i32 %len to i64
"""
# The key's hash (from the seed %h0), its first two words, its bytes, and the first slot to probe.
_KEY_HASH = """\
  %kr = call {i64, i64, i64, ptr} @kt_key(ptr %v, ptr %bufs, i64 %ln, i64 %h0)
  %h = extractvalue {i64, i64, i64, ptr} %kr, 0
  %w0 = extractvalue {i64, i64, i64, ptr} %kr, 1
  %w1 = extractvalue {i64, i64, i64, ptr} %kr, 2
  %data = extractvalue {i64, i64, i64, ptr} %kr, 3
  %slot0 = and i64 %h, %mask
"""


def _probe_head(width: int, table: str, occupied: str, at: int, w0: int, w1: int) -> str:
    """IR: probe %slot of ``table`` (records of ``width`` words); an empty record (word ``at``, read
    into %``occupied``, is 0) takes the key unless %limit groups exist (then ``stop``), else ``compare``.
    The new record gets the hash and the key's first two words (at ``w0``, ``w1``); the caller's
    ``put`` goes on from there."""
    return f"""\
probe:
  %slot = phi i64 [%slot0, %key], [%slot.next, %step]
{_record("g", "slot", width, table)}{_field(occupied, "g", at)}  %empty = icmp eq i64 %{occupied}, 0
  br i1 %empty, label %insert, label %compare
insert:
  %full = icmp sge i64 %ng, %limit
  br i1 %full, label %stop, label %put
put:
  store i64 %h, ptr %g, align 8
  %w0p = getelementptr i64, ptr %g, i64 {w0}
  store i64 %w0, ptr %w0p, align 8
  %w1p = getelementptr i64, ptr %g, i64 {w1}
  store i64 %w1, ptr %w1p, align 8
"""


def _probe_tail(put_ng: str) -> str:
    """IR: the next slot (linear probing), the next row, and the two exits (%limit reached: the row; done: %n).

    ``put_ng`` is the group count after an insert (the blocks ``null``, ``put`` and ``hit`` precede it).
    """
    return f"""\
step:
  %slot.inc = add i64 %slot, 1
  %slot.next = and i64 %slot.inc, %mask
  br label %probe
next:
  %ng.next = phi i64 [%ng, %null], [{put_ng}, %put], [%ng, %hit]
  %i.next = add i64 %i, 1
  %more = icmp slt i64 %i.next, %n
  br i1 %more, label %row, label %finish
stop:
  store i64 %ng, ptr %ngp, align 8
  ret i64 %i
finish:
  %ngf = phi i64 [%ng0, %entry], [%ng.next, %next]
  store i64 %ngf, ptr %ngp, align 8
  ret i64 %n
}}
"""


def _scan_ir() -> str:
    """IR: ``@kt_scan``, the one pass of :func:`scan` over one piece of a key chunk."""
    return rf"""
; Group rows [0, %n) of one key chunk into the table %gd (%slots records,
; %slots a power of two) holding *%ngp groups; stop early (return the row) when
; %limit groups exist: the caller grows the table and calls again from there.
; Row i's other columns are at %a0 + i in %parts (i32), %vsize (i32), %offs
; and %ts (i64 ms; null: no timestamps, I64_MIN: this row has none); its row in
; the whole frame is %rbase + %a0 + i.  Null keys are summed per partition.
define i64 @kt_scan(ptr noalias %views, i64 %n, ptr noalias %bufs, ptr noalias %valid, i64 %vbit,
                    ptr noalias %parts, ptr noalias %vsize, ptr noalias %offs, ptr noalias %ts,
                    i64 %a0, i64 %rbase, ptr noalias %gd, i64 %slots, ptr noalias %ngp, i64 %limit,
                    ptr noalias %nrec, ptr noalias %nbytes, ptr noalias %nbsq,
                    ptr noalias %omin, ptr noalias %omax, ptr noalias %tmin, ptr noalias %tmax) nounwind {{
entry:
  %mask = sub i64 %slots, 1
  %hasmask = icmp ne ptr %valid, null
  %hasts = icmp ne ptr %ts, null
  %ng0 = load i64, ptr %ngp, align 8
  %any = icmp sgt i64 %n, 0
  br i1 %any, label %row, label %finish
row:
  %i = phi i64 [0, %entry], [%i.next, %next]
  %ng = phi i64 [%ng0, %entry], [%ng.next, %next]
  %r = add i64 %a0, %i
  %partp = getelementptr i32, ptr %parts, i64 %r
  %part32 = load i32, ptr %partp, align 4
  %part = sext i32 %part32 to i64
  %sizep = getelementptr i32, ptr %vsize, i64 %r
  %size32 = load i32, ptr %sizep, align 4
  %size = sext i32 %size32 to i64
  br i1 %hasts, label %time, label %validity
time:
  %tp = getelementptr i64, ptr %ts, i64 %r
  %t = load i64, ptr %tp, align 8
  %timed = icmp ne i64 %t, {I64_MIN}
  br i1 %timed, label %extremes, label %validity
extremes:
  %op = getelementptr i64, ptr %offs, i64 %r
  %o = load i64, ptr %op, align 8
{_per_part("omin", "slt", "o")}{_per_part("omax", "sgt", "o")}{_per_part("tmin", "slt", "t")}{_per_part("tmax", "sgt", "t")}  br label %validity
validity:
  br i1 %hasmask, label %check, label %key
check:
{_valid_bit("", "i")}  br i1 %ok, label %key, label %null
null:
  %nsz = sitofp i64 %size to double
  %nsq = fmul double %nsz, %nsz
  %one = add i64 0, 1
{_per_part("nrec", "add", "one")}{_per_part("nbytes", "add", "size")}{_per_part("nbsq", "fadd", "nsq", "double")}  br label %next
key:
{_VIEW_LEN}  %ps = shl i64 %part, 32
  %lp = or i64 %ln, %ps
  %lpk = mul i64 %lp, {_s64(_K1)}
  %h0 = xor i64 %lpk, {_s64(_K3)}
{_KEY_HASH}  %tot = add i64 %size, %ln                 ; bytes: key + value
  %totf = sitofp i64 %tot to double
  %tsq = fmul double %totf, %totf
  br label %probe
{_probe_head(_WIDTH, "gd", "rec", _REC, _W0, _W1)}  %lpp = getelementptr i64, ptr %g, i64 {_LP}
  store i64 %lp, ptr %lpp, align 8
  store i64 1, ptr %rec.p, align 8
  %bytesp = getelementptr i64, ptr %g, i64 {_BYTES}
  store i64 %tot, ptr %bytesp, align 8
  %rowp = getelementptr i64, ptr %g, i64 {_ROW}
  %frow = add i64 %rbase, %r
  store i64 %frow, ptr %rowp, align 8
  %bsqp = getelementptr i64, ptr %g, i64 {_BSQ}
  store double %tsq, ptr %bsqp, align 8
  %ng.put = add i64 %ng, 1
  br label %next
compare:
  %same = call i1 @kt_same(ptr %g, i64 %h, i64 %lp, i64 -1, i64 %w0, i64 %w1, ptr %data, i64 %ln)
  br i1 %same, label %hit, label %step
hit:
  %rec1 = add i64 %rec, 1
  store i64 %rec1, ptr %rec.p, align 8
{_field("hb", "g", _BYTES)}  %hb1 = add i64 %hb, %tot
  store i64 %hb1, ptr %hb.p, align 8
{_field("hq", "g", _BSQ, "double")}  %hq1 = fadd double %hq, %tsq
  store double %hq1, ptr %hq.p, align 8
  br label %next
{_probe_tail("%ng.put")}"""


def _merge_ir() -> str:
    """IR: ``@kt_merge``, another thread's table added into this one."""
    return rf"""
; Add the groups of %src (%sslots records) into %gd (%slots records, room for
; all of them); returns the new group count.  First rows: the smaller wins.
define i64 @kt_merge(ptr noalias %gd, i64 %slots, i64 %ng0, ptr noalias %src, i64 %sslots) nounwind {{
entry:
  %mask = sub i64 %slots, 1
  %any = icmp sgt i64 %sslots, 0
  br i1 %any, label %each, label %done
each:
  %s = phi i64 [0, %entry], [%s.next, %next]
  %ng = phi i64 [%ng0, %entry], [%ng.next, %next]
{_record("e", "s", _WIDTH, "src")}{_field("srec", "e", _REC)}  %used = icmp ne i64 %srec, 0
  br i1 %used, label %key, label %next
key:
  %h = load i64, ptr %e, align 8
{_field("w0", "e", _W0)}{_field("w1", "e", _W1)}{_field("lp", "e", _LP)}  %ln = and i64 %lp, 4294967295
  %p = inttoptr i64 %w0 to ptr
  %slot0 = and i64 %h, %mask
  br label %probe
probe:
  %slot = phi i64 [%slot0, %key], [%slot.next, %step]
{_record("g", "slot", _WIDTH, "gd")}{_field("rec", "g", _REC)}  %empty = icmp eq i64 %rec, 0
  br i1 %empty, label %put, label %compare
put:
  call void @llvm.memcpy.p0.p0.i64(ptr align 8 %g, ptr align 8 %e, i64 {8 * _WIDTH}, i1 false)
  %ng.put = add i64 %ng, 1
  br label %next
compare:
  %same = call i1 @kt_same(ptr %g, i64 %h, i64 %lp, i64 -1, i64 %w0, i64 %w1, ptr %p, i64 %ln)
  br i1 %same, label %hit, label %step
hit:
  %rec1 = add i64 %rec, %srec
  store i64 %rec1, ptr %rec.p, align 8
{_field("hb", "g", _BYTES)}{_field("sb", "e", _BYTES)}  %hb1 = add i64 %hb, %sb
  store i64 %hb1, ptr %hb.p, align 8
{_field("hq", "g", _BSQ, "double")}{_field("sq", "e", _BSQ, "double")}  %hq1 = fadd double %hq, %sq
  store double %hq1, ptr %hq.p, align 8
{_field("hr", "g", _ROW)}{_field("sr", "e", _ROW)}  %first = icmp ult i64 %sr, %hr
  %row = select i1 %first, i64 %sr, i64 %hr
  store i64 %row, ptr %hr.p, align 8
  br label %next
step:
  %slot.inc = add i64 %slot, 1
  %slot.next = and i64 %slot.inc, %mask
  br label %probe
next:
  %ng.next = phi i64 [%ng, %each], [%ng.put, %put], [%ng, %hit]
  %s.next = add i64 %s, 1
  %more = icmp slt i64 %s.next, %sslots
  br i1 %more, label %each, label %done
done:
  %ngf = phi i64 [%ng0, %entry], [%ng.next, %next]
  ret i64 %ngf
}}
"""


def _rehash_ir() -> str:
    """IR: ``@kt_rehash``, a table's records moved into one twice the size (scan's and encode's)."""
    return r"""
; Every used record of %old (%oslots records of %width words; used: word %flag
; is not 0) into its first free slot of %new from hash & mask, in slot order.
define void @kt_rehash(ptr noalias %old, i64 %oslots, ptr noalias %new, i64 %nslots,
                       i64 %width, i64 %flag) nounwind {
entry:
  %mask = sub i64 %nslots, 1
  %bytes = shl i64 %width, 3
  %any = icmp sgt i64 %oslots, 0
  br i1 %any, label %each, label %done
each:
  %s = phi i64 [0, %entry], [%s.next, %next]
  %eo = mul i64 %s, %width
  %e = getelementptr i64, ptr %old, i64 %eo
  %fp = getelementptr i64, ptr %e, i64 %flag
  %f = load i64, ptr %fp, align 8
  %used = icmp ne i64 %f, 0
  br i1 %used, label %key, label %next
key:
  %h = load i64, ptr %e, align 8
  %slot0 = and i64 %h, %mask
  br label %probe
probe:
  %slot = phi i64 [%slot0, %key], [%slot.next, %probe]
  %go = mul i64 %slot, %width
  %g = getelementptr i64, ptr %new, i64 %go
  %gfp = getelementptr i64, ptr %g, i64 %flag
  %gf = load i64, ptr %gfp, align 8
  %slot.inc = add i64 %slot, 1
  %slot.next = and i64 %slot.inc, %mask
  %taken = icmp ne i64 %gf, 0
  br i1 %taken, label %probe, label %put
put:
  call void @llvm.memcpy.p0.p0.i64(ptr align 8 %g, ptr align 8 %e, i64 %bytes, i1 false)
  br label %next
next:
  %s.next = add i64 %s, 1
  %more = icmp slt i64 %s.next, %oslots
  br i1 %more, label %each, label %done
done:
  ret void
}

declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)
"""


def _encode_ir() -> str:
    """IR: ``@kt_encode``, dictionary codes for one piece of a chunk (:func:`encode`)."""
    return rf"""
; Code rows [0, %n) of one chunk into %out[%o0 + i] (i32; null: -1), with the
; table %tab (%slots records of 4 words) holding *%ngp codes; a new value's
; first row goes to %firsts[code].  Stops early (returns the row) at %limit codes.
define i64 @kt_encode(ptr noalias %views, i64 %n, ptr noalias %bufs, ptr noalias %valid, i64 %vbit,
                      ptr noalias %out, i64 %o0, ptr noalias %tab, i64 %slots, ptr noalias %ngp,
                      i64 %limit, ptr noalias %firsts) nounwind {{
entry:
  %mask = sub i64 %slots, 1
  %hasmask = icmp ne ptr %valid, null
  %ng0 = load i64, ptr %ngp, align 8
  %any = icmp sgt i64 %n, 0
  br i1 %any, label %row, label %finish
row:
  %i = phi i64 [0, %entry], [%i.next, %next]
  %ng = phi i64 [%ng0, %entry], [%ng.next, %next]
  %oi = add i64 %o0, %i
  %outp = getelementptr i32, ptr %out, i64 %oi
  br i1 %hasmask, label %check, label %key
check:
{_valid_bit("", "i")}  br i1 %ok, label %key, label %null
null:
  store i32 -1, ptr %outp, align 4
  br label %next
key:
{_VIEW_LEN}  %lk = mul i64 %ln, {_s64(_K1)}
  %h0 = xor i64 %lk, {_s64(_K3)}
{_KEY_HASH}  br label %probe
{_probe_head(_EWIDTH, "tab", "lc", _ELC, _EW0, _EW1)}  %code1 = add i64 %ng, 1
  %cs = shl i64 %code1, 32
  %nlc = or i64 %ln, %cs
  store i64 %nlc, ptr %lc.p, align 8
  %fp = getelementptr i64, ptr %firsts, i64 %ng
  store i64 %oi, ptr %fp, align 8
  %ngc = trunc i64 %ng to i32
  store i32 %ngc, ptr %outp, align 4
  br label %next
compare:
  %same = call i1 @kt_same(ptr %g, i64 %h, i64 %ln, i64 4294967295, i64 %w0, i64 %w1, ptr %data, i64 %ln)
  br i1 %same, label %hit, label %step
hit:
  %lcs = lshr i64 %lc, 32
  %code = sub i64 %lcs, 1
  %code32 = trunc i64 %code to i32
  store i32 %code32, ptr %outp, align 4
  br label %next
{_probe_tail("%code1")}"""


# kt_dict_sum: rows ahead whose bin is prefetched
DICT_AHEAD = 64


def _dict_sum_ir() -> str:
    """IR: ``@kt_dict_sum``, the (dictionary index, partition) sums of one chunk of dictionary-encoded keys."""
    return rf"""
; Rows [0, %n) of a dictionary-encoded key chunk: %idx (i32 dictionary index,
; validity bit %vbit + i of %valid, null: no mask), %parts (i32), %vsize (i32;
; null: all 0), %klen (i64 per dictionary entry, %nd of them), %gcode (i64 per
; dictionary entry: its code over the whole file; null: the index itself).
; Keyed row i adds to dense bin b = code * %np + part of %bins, three words a bin
; (one cache line, not three arrays): records += 1, bytes += klen + vsize, and (a
; double) its square; a null key adds to its partition's %nrec / %nbytes / %nbsq
; (value bytes only).
define void @kt_dict_sum(ptr noalias %idx, ptr noalias %valid, i64 %vbit, i64 %n, ptr noalias %parts,
                         ptr noalias %vsize, ptr noalias %klen, i64 %nd, ptr noalias %gcode, i64 %np,
                         ptr noalias %bins, ptr noalias %nrec, ptr noalias %nbytes, ptr noalias %nbsq) nounwind {{
entry:
  %hasmask = icmp ne ptr %valid, null
  %hasvs = icmp ne ptr %vsize, null
  %hasg = icmp ne ptr %gcode, null
  %any = icmp sgt i64 %n, 0
  br i1 %any, label %row, label %done
row:
  %i = phi i64 [0, %entry], [%i.next, %next]
  ; the bin of row min(i + {DICT_AHEAD}, n - 1) prefetched for writing (a row group's bins outgrow the
  ; caches: 100k keys x 3 partitions x 24 bytes; a null row's index may be anything: prefetches never fault)
  %pa.i0 = add i64 %i, {DICT_AHEAD}
  %pa.last = sub i64 %n, 1
  %pa.over = icmp sgt i64 %pa.i0, %pa.last
  %pa.i = select i1 %pa.over, i64 %pa.last, i64 %pa.i0
  %pa.dp = getelementptr i32, ptr %idx, i64 %pa.i
  %pa.d32 = load i32, ptr %pa.dp, align 4
  %pa.d0 = sext i32 %pa.d32 to i64
  ; (the code is loaded, not prefetched: a null row's index is clamped into the dictionary first)
  %pa.in = icmp ult i64 %pa.d0, %nd
  %pa.d1 = select i1 %pa.in, i64 %pa.d0, i64 0
  br i1 %hasg, label %pa.global, label %pa.local
pa.global:
  %pa.gp = getelementptr i64, ptr %gcode, i64 %pa.d1
  %pa.g = load i64, ptr %pa.gp, align 8
  br label %pa.local
pa.local:
  %pa.d = phi i64 [%pa.d1, %row], [%pa.g, %pa.global]
  %pa.pp = getelementptr i32, ptr %parts, i64 %pa.i
  %pa.p32 = load i32, ptr %pa.pp, align 4
  %pa.p = sext i32 %pa.p32 to i64
  %pa.dn = mul i64 %pa.d, %np
  %pa.bin = add i64 %pa.dn, %pa.p
  %pa.bin3 = mul i64 %pa.bin, 3
  %pa.rp = getelementptr i64, ptr %bins, i64 %pa.bin3
  call void @llvm.prefetch.p0(ptr %pa.rp, i32 1, i32 3, i32 1)
  %partp = getelementptr i32, ptr %parts, i64 %i
  %part32 = load i32, ptr %partp, align 4
  %part = sext i32 %part32 to i64
  br i1 %hasvs, label %readvs, label %sized
readvs:
  %vsp = getelementptr i32, ptr %vsize, i64 %i
  %vs32 = load i32, ptr %vsp, align 4
  %vsr = sext i32 %vs32 to i64
  br label %sized
sized:
  %size = phi i64 [0, %pa.local], [%vsr, %readvs]
  br i1 %hasmask, label %check, label %key
check:
{_valid_bit("", "i")}  br i1 %ok, label %key, label %null
null:
  %nsz = sitofp i64 %size to double
  %nsq = fmul double %nsz, %nsz
  %one = add i64 0, 1
{_per_part("nrec", "add", "one")}{_per_part("nbytes", "add", "size")}{_per_part("nbsq", "fadd", "nsq", "double")}  br label %next
key:
  %dp = getelementptr i32, ptr %idx, i64 %i
  %d32 = load i32, ptr %dp, align 4
  %d = sext i32 %d32 to i64
  %klp = getelementptr i64, ptr %klen, i64 %d
  %kl = load i64, ptr %klp, align 8
  %tot = add i64 %kl, %size
  %totf = sitofp i64 %tot to double
  %tsq = fmul double %totf, %totf
  br i1 %hasg, label %kglobal, label %klocal
kglobal:
  %gp = getelementptr i64, ptr %gcode, i64 %d
  %gd = load i64, ptr %gp, align 8
  br label %klocal
klocal:
  %code = phi i64 [%d, %key], [%gd, %kglobal]
  %dn = mul i64 %code, %np
  %bin = add i64 %dn, %part
  %bin3 = mul i64 %bin, 3
  %rp = getelementptr i64, ptr %bins, i64 %bin3
  %r0 = load i64, ptr %rp, align 8
  %r1 = add i64 %r0, 1
  store i64 %r1, ptr %rp, align 8
  %bp = getelementptr i64, ptr %rp, i64 1
  %b0 = load i64, ptr %bp, align 8
  %b1 = add i64 %b0, %tot
  store i64 %b1, ptr %bp, align 8
  %qp = getelementptr i64, ptr %rp, i64 2
  %q0 = load double, ptr %qp, align 8
  %q1 = fadd double %q0, %tsq
  store double %q1, ptr %qp, align 8
  br label %next
next:
  %i.next = add i64 %i, 1
  %more = icmp slt i64 %i.next, %n
  br i1 %more, label %row, label %done
done:
  ret void
}}
"""


def module_ir() -> str:
    """The whole key-table module as LLVM IR text."""
    return (_COMMON + _scan_ir() + _merge_ir() + _rehash_ir() + _encode_ir() + _dict_sum_ir()
            + "declare void @llvm.prefetch.p0(ptr, i32, i32, i32)\n")


_P, _I64 = ctypes.c_void_p, ctypes.c_int64
_FNS = (
    _native.Fn("kt_scan", _I64, (
        ("views", _P), ("rows", _I64), ("buffers", _P), ("validity", _P), ("validity_offset", _I64),
        ("partition", _P), ("value_size", _P), ("offset", _P), ("timestamp", _P),
        ("a0", _I64), ("rbase", _I64), ("table", _P), ("slots", _I64), ("groups", _P), ("limit", _I64),
        ("nrec", _P), ("nbytes", _P), ("nbsq", _P), ("omin", _P), ("omax", _P), ("tmin", _P), ("tmax", _P),
    )),  # fmt: skip
    _native.Fn("kt_merge", _I64, (("table", _P), ("slots", _I64), ("groups", _I64), ("src", _P), ("src_slots", _I64))),
    _native.Fn("kt_rehash", None, (("old", _P), ("old_slots", _I64), ("new", _P), ("new_slots", _I64),
                                   ("width", _I64), ("flag", _I64))),
    _native.Fn("kt_encode", _I64, (
        ("views", _P), ("rows", _I64), ("buffers", _P), ("validity", _P), ("validity_offset", _I64),
        ("out", _P), ("o0", _I64), ("table", _P), ("slots", _I64), ("codes", _P), ("limit", _I64), ("firsts", _P),
    )),  # fmt: skip
    _native.Fn("kt_dict_sum", None, (
        ("idx", _P), ("validity", _P), ("validity_offset", _I64), ("rows", _I64), ("partition", _P),
        ("value_size", _P), ("klen", _P), ("entries", _I64), ("gcode", _P), ("partitions", _I64), ("bins", _P),
        ("nrec", _P), ("nbytes", _P), ("nbsq", _P),
    )),  # fmt: skip
)
_LIB = _native.Lazy("keytable", module_ir, _FNS)


def dict_sum(idx, valid, vbit: int, parts, vsize, klen, P: int, bins, nrec, nbytes, nbsq, gcode=None) -> None:
    """``@kt_dict_sum`` on numpy arrays (``idx``: int32 dictionary indices, ``valid``: the validity bitmap
    or an empty array, ``vsize``: int32 or empty, ``bins``: int64 (bins, 3), the last column float64 bits:
    see :func:`dict_bins`); adds into the dense bins and the per-partition null sums.

    ``gcode``: int64 per dictionary entry, its code over every row group (bins then span the whole file's
    keys, summed across row groups in place); None: bins by dictionary index.
    """
    n = idx.shape[0]
    assert idx.dtype == np.int32 and parts.dtype == np.int32 and parts.shape[0] == n
    assert vsize.size == 0 or (vsize.dtype == np.int32 and vsize.shape[0] == n)
    assert klen.dtype == np.int64 and bins.dtype == np.int64 and bins.flags.c_contiguous
    top = klen.shape[0] if gcode is None else (int(gcode.max()) + 1 if gcode.size else 0)
    assert gcode is None or (gcode.dtype == np.int64 and gcode.shape == klen.shape and gcode.flags.c_contiguous)
    assert bins.ndim == 2 and bins.shape[1] == 3 and bins.shape[0] >= top * P
    assert nrec.dtype == nbytes.dtype == np.int64 and nbsq.dtype == np.float64 and min(nrec.size, nbytes.size, nbsq.size) >= P
    _LIB.get()["kt_dict_sum"](
        idx.ctypes.data, _addr(valid), vbit, n, parts.ctypes.data, _addr(vsize), klen.ctypes.data, klen.shape[0],
        None if gcode is None else _addr(gcode), P, bins.ctypes.data, nrec.ctypes.data, nbytes.ctypes.data,
        nbsq.ctypes.data,
    )  # fmt: skip


def dict_bins(bins):
    """(bin ids, records, bytes, bytes_sq) of the used bins of :func:`dict_sum`'s array, which is cleared for reuse."""
    g = np.flatnonzero(bins[:, 0])
    rec, byt = bins[g, 0], bins[g, 1]
    bsq = bins.view(np.float64)[g, 2]
    bins[g] = 0
    return g, rec, byt, bsq


def _addr(a: np.ndarray) -> int | None:
    """A numpy array's data address for the kernels (None: empty, read as 'absent')."""
    return a.ctypes.data if a.size else None


def _scan(
    views, n, buf_addrs, valid, vbit, parts, vsize, offs, ts, a0, rbase,
    gd, ng, limit,
    nrec, nbytes, nbsq, omin, omax, tmin, tmax,
):  # fmt: skip
    """``@kt_scan`` on numpy arrays: (rows done, groups now); see the IR's comment."""
    ngp = np.array([ng], np.int64)
    stop = _LIB.get()["kt_scan"](
        views, n, buf_addrs.ctypes.data, _addr(valid), vbit, parts.ctypes.data, vsize.ctypes.data,
        _addr(offs), _addr(ts), a0, rbase, gd.ctypes.data, gd.shape[0], ngp.ctypes.data, limit,
        nrec.ctypes.data, nbytes.ctypes.data, nbsq.ctypes.data,
        omin.ctypes.data, omax.ctypes.data, tmin.ctypes.data, tmax.ctypes.data,
    )  # fmt: skip
    return stop, int(ngp[0])


def _merge(gd, ng, src) -> int:
    """Add the groups of ``src`` into ``gd`` (which has room for all of them); returns the group count."""
    return _LIB.get()["kt_merge"](gd.ctypes.data, gd.shape[0], ng, src.ctypes.data, src.shape[0])


def _rehash(old, new, flag: int = _REC) -> None:
    """Move ``old``'s records into ``new`` (twice the slots, zeroed); ``flag``: the word that is 0 in a free slot."""
    assert old.shape[1] == new.shape[1] and old.flags.c_contiguous and new.flags.c_contiguous
    _LIB.get()["kt_rehash"](old.ctypes.data, old.shape[0], new.ctypes.data, new.shape[0], old.shape[1], flag)


def _encode(views, n, buf_addrs, valid, vbit, out, o0, tab, ng, limit, firsts, out_addr=None):
    """``@kt_encode`` on numpy arrays: (rows done, codes now); ``out_addr``: where out[0] is, if not ``out``'s."""
    assert out.dtype == np.int32 and firsts.dtype == np.int64 and len(firsts) >= limit
    ngp = np.array([ng], np.int64)
    stop = _LIB.get()["kt_encode"](
        views, n, buf_addrs.ctypes.data, _addr(valid), vbit, out.ctypes.data if out_addr is None else out_addr, o0,
        tab.ctypes.data, tab.shape[0], ngp.ctypes.data, limit, firsts.ctypes.data,
    )  # fmt: skip
    return stop, int(ngp[0])


def _erehash(old, new) -> None:
    _rehash(old, new, _ELC)


# --------------------------------------------------------------------------
# The pure-Python twins: the same hash, the same table, the same probe order
# (tests compare the kernels' tables with these slot for slot).


def key_words(key: bytes, lp: int) -> tuple[int, int, int]:
    """(hash, w0, w1) of a key as the kernels compute them; ``lp``: len | partition << 32 (encode: len).

    For keys of > 16 bytes w0 is the key's address in the kernels; here it is 0.
    """
    def mix(h, w):
        w = (w * _K1) & _M64
        return ((h ^ (w ^ (w >> 29))) * _K2) & _M64

    def word(b: bytes) -> int:
        return int.from_bytes(b.ljust(8, b"\0"), "little")

    ln = len(key)
    h = _K3 ^ ((lp * _K1) & _M64)
    if ln <= 16:  # (inline keys: the view's zero padding is masked off, = zero-filled words)
        w0 = word(key[:8])
        w1 = word(key[8:12]) if ln <= 12 else word(key[ln - 8:])
        h = mix(mix(h, w0), w1)
    else:
        j = 0
        while j + 8 <= ln:
            h = mix(h, word(key[j:j + 8]))
            j += 8
        if j < ln:
            h = mix(h, word(key[ln - 8:]))
        w0, w1 = 0, word(key[:8])
    return h ^ (h >> 32), w0, w1


def reference_scan(keys, parts, sizes, slots: int = 1 << 15):
    """The table ``@kt_scan`` builds from rows (key or None, partition, value size), one thread, no growth.

    Returns (table as uint64 (slots, 8) with w0 = 0 for > 16-byte keys, the keys
    by slot, per-partition null (records, bytes, bytes squared)).
    """
    tab = np.zeros((slots, _WIDTH), np.uint64)
    fl = tab.view(np.float64)
    by_slot: dict[int, bytes] = {}
    nulls: dict[int, list] = {}
    for row, (key, part, size) in enumerate(zip(keys, parts, sizes)):
        if key is None:
            acc = nulls.setdefault(int(part), [0, 0, 0.0])
            acc[0] += 1
            acc[1] += int(size)
            acc[2] += float(size) * float(size)
            continue
        lp = len(key) | int(part) << 32
        h, w0, w1 = key_words(key, lp)
        tot = int(size) + len(key)
        slot = h & (slots - 1)
        while tab[slot, _REC] != 0 and not (int(tab[slot, _LP]) == lp and by_slot[slot] == key):
            slot = (slot + 1) & (slots - 1)
        if tab[slot, _REC] == 0:
            assert len(by_slot) < slots // 2, "reference_scan: table too small"
            tab[slot, :_BSQ] = (h, w0, w1, lp, 0, 0, row)
            by_slot[slot] = key
        tab[slot, _REC] += 1
        tab[slot, _BYTES] += tot
        fl[slot, _BSQ] += float(tot) * float(tot)
    return tab, by_slot, nulls


def reference_encode(values, slots: int = 1 << 15):
    """(codes, firsts, table) as ``@kt_encode`` builds them (one chunk, no growth; w0 = 0 for > 16 bytes)."""
    tab = np.zeros((slots, _EWIDTH), np.uint64)
    by_slot: dict[int, bytes] = {}
    codes, firsts = [], []
    for row, v in enumerate(values):
        if v is None:
            codes.append(-1)
            continue
        h, w0, w1 = key_words(v, len(v))
        slot = h & (slots - 1)
        while tab[slot, _ELC] != 0 and by_slot[slot] != v:
            slot = (slot + 1) & (slots - 1)
        if tab[slot, _ELC] == 0:
            tab[slot] = (h, w0, w1, len(v) | (len(firsts) + 1) << 32)
            by_slot[slot] = v
            firsts.append(row)
        codes.append(int(tab[slot, _ELC] >> np.uint64(32)) - 1)
    return np.array(codes, np.int32), np.array(firsts, np.int64), tab


def reference_dict_sum(indices, parts, sizes, klen, P: int):
    """What ``@kt_dict_sum`` adds, in pure Python: ({bin: [records, bytes, bytes_sq]}, {partition: null sums}).

    ``indices``: dictionary index per row or None for a null key; bin = index * P + partition.
    """
    bins: dict[int, list] = {}
    nulls: dict[int, list] = {}
    for d, p, v in zip(indices, parts, sizes):
        tot = int(v) if d is None else int(klen[d]) + int(v)
        acc = nulls.setdefault(int(p), [0, 0, 0.0]) if d is None else bins.setdefault(int(d) * P + int(p), [0, 0, 0.0])
        acc[0] += 1
        acc[1] += tot
        acc[2] += float(tot) * float(tot)
    return bins, nulls


class _Groups:
    """The growable table (the kernel cannot reallocate what Python holds); load <= 1/2."""

    def __init__(self, cap: int):
        self.ng = 0
        self.gd = np.zeros((2 * cap, _WIDTH), dtype=np.uint64)

    @property
    def limit(self) -> int:
        return self.gd.shape[0] // 2

    def enlarge(self) -> None:
        new = np.zeros((2 * self.gd.shape[0], _WIDTH), dtype=np.uint64)
        _rehash(self.gd, new)
        self.gd = new

    def groups(self):
        return self.gd[self.gd[:, _REC] != 0]


# Below this many records one thread does it all (thread start-up is not free).
PARALLEL_MIN_ROWS = 1_000_000


# Rows per piece of work: a key chunk is cut into pieces of at most this many
# rows, and the other columns are made contiguous one piece at a time (a no-op
# when the piece lies within one chunk), never a copy of a whole column.
SLICE_ROWS = 1 << 20


class _Worker:
    """One thread's table and per-partition sums over its pieces of rows."""

    def __init__(self, P: int, cap: int):
        self.groups = _Groups(cap)
        self.nrec = np.zeros(P, np.int64)
        self.nbytes = np.zeros(P, np.int64)
        self.nbsq = np.zeros(P, np.float64)
        self.omin, self.omax = np.full(P, I64_MAX), np.full(P, I64_MIN)
        self.tmin, self.tmax = np.full(P, I64_MAX), np.full(P, I64_MIN)

    def run(self, cols, pieces) -> None:
        g = self.groups
        for views, n, buf_addrs, valid, vbit, r0 in pieces:
            parts, vsize, offs, ts = _column_arrays(cols, r0, n)
            done = 0
            while done < n:
                stop, g.ng = _scan(
                    views + 16 * done, n - done, buf_addrs, valid, vbit + done, parts, vsize, offs, ts,
                    done, r0, g.gd, g.ng, g.limit,
                    self.nrec, self.nbytes, self.nbsq, self.omin, self.omax, self.tmin, self.tmax,
                )  # fmt: skip
                done += stop
                if done < n:
                    g.enlarge()


def _column_arrays(cols, r0: int, n: int):
    """partition, value_size, offset and timestamp (ms) for rows [r0, r0 + n) as numpy."""
    part, vs, off, ts = (c.slice(r0, n) if c is not None else None for c in cols)
    vsize = (vs.fill_null(0) if vs.null_count() else vs).to_numpy()
    offs = np.zeros(0, np.int64) if off is None else (off.fill_null(0) if off.null_count() else off).to_numpy()
    if ts is None:
        tms = np.zeros(0, np.int64)
    else:  # Datetime(ms) is Int64 milliseconds underneath: no conversion unless nulls
        phys = ts.to_physical() if getattr(ts.dtype, "time_unit", None) == "ms" else ts.dt.epoch("ms")
        tms = (phys.fill_null(I64_MIN) if phys.null_count() else phys).to_numpy()
    return np.ascontiguousarray(part.to_numpy(), np.int32), np.ascontiguousarray(vsize, np.int32), offs, tms


def scan(df, partitions: int, threads: int | None = None, extremes: bool = True):
    """(kp, per-partition extremes) for a Sample frame; see the module docstring.

    ``kp`` has one row per (key, partition) with ``records``, ``bytes`` (key +
    value) and ``bytes_sq``, in first-seen order; null keys are one row per
    partition, last.  The extremes are ``{"omin", "omax", "tmin", "tmax"}``
    arrays over records that have a timestamp (``I64_MAX``/``I64_MIN`` where
    none, or everywhere when ``extremes`` is False: the metadata has them).
    ``threads``: None = up to 2 for large frames; the result is the same for
    any value.
    """
    import polars as pl
    import pyarrow as pa

    P = max(int(partitions), 1)
    n_rows = df.height
    if n_rows and (int(df["partition"].min()) < 0 or int(df["partition"].max()) >= P):
        raise ValueError("partition out of range")  # Sample.from_frame rules this out
    has_ts = extremes and bool(n_rows) and df["timestamp"].null_count() < n_rows
    # offsets are read only beside a timestamp (the kernel's extremes): not read at all without
    cols = (df["partition"], df["value_size"], df["offset"] if has_ts else None, df["timestamp"] if has_ts else None)
    if threads is None:
        import os

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = min(2, cpus) if n_rows >= PARALLEL_MIN_ROWS else 1
    threads = max(1, int(threads))
    # The whole key column once, zero-copy; its buffers stay alive (long keys are
    # matched against their first occurrence by address) until the end.
    # (Series.to_arrow would first rechunk a many-chunk column: a full copy.)
    arr = df.select("key").to_arrow(compat_level=pl.CompatLevel.newest()).column(0)
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    keep, pieces, row0 = [arr], [], 0
    step = min(SLICE_ROWS, max(1, -(-n_rows // threads)))
    for chunk in chunks:
        n = len(chunk)
        if n == 0:
            continue
        if not pa.types.is_binary_view(chunk.type):
            chunk = chunk.cast(pa.binary_view())
        bufs = chunk.buffers()
        buf_addrs = np.array([b.address if b is not None else 0 for b in bufs[2:]] or [0], dtype=np.int64)
        has_nulls = bufs[0] is not None and chunk.null_count
        valid = np.frombuffer(bufs[0], dtype=np.uint8) if has_nulls else np.zeros(0, np.uint8)
        keep += [chunk, buf_addrs, valid]
        views = bufs[1].address + 16 * chunk.offset
        for s0 in range(0, n, step):
            m = min(step, n - s0)
            pieces.append((views + 16 * s0, m, buf_addrs, valid, chunk.offset + s0, row0 + s0))
        row0 += n
    workers = [_Worker(P, 1 << 14) for _ in range(threads)]
    mine = [pieces[i::threads] for i in range(threads)]
    if threads == 1 or len(pieces) <= 1:
        workers[0].run(cols, pieces)
        workers = workers[:1]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(lambda w_p: w_p[0].run(cols, w_p[1]), zip(workers, mine)))
    main = workers[0]
    for w in workers[1:]:
        g = main.groups
        while g.ng + w.groups.ng > g.limit:
            g.enlarge()
        g.ng = _merge(g.gd, g.ng, w.groups.gd)
        main.nrec += w.nrec
        main.nbytes += w.nbytes
        main.nbsq += w.nbsq
        for a, b, f in (
            (main.omin, w.omin, np.minimum), (main.omax, w.omax, np.maximum),
            (main.tmin, w.tmin, np.minimum), (main.tmax, w.tmax, np.maximum),
        ):  # fmt: skip
            f(a, b, out=a)
    gd = main.groups.groups()
    gd = gd[np.argsort(gd[:, _ROW], kind="stable")]  # first-seen order: deterministic output
    keys = df["key"].gather(gd[:, _ROW].astype(np.int64)) if gd.shape[0] else pl.Series("key", [], dtype=pl.Binary)
    kp = pl.DataFrame(
        {
            "key": keys,
            "partition": (gd[:, _LP] >> np.uint64(32)).astype(np.int32),
            "records": gd[:, _REC].astype(np.int64),
            "bytes": gd[:, _BYTES].astype(np.int64),
            "bytes_sq": gd.view(np.float64)[:, _BSQ].copy(),
        }
    )
    kp = with_null_rows(kp, main.nrec, main.nbytes, main.nbsq)
    del keep
    return kp, {"omin": main.omin, "omax": main.omax, "tmin": main.tmin, "tmax": main.tmax}


# --------------------------------------------------------------------------
# Dictionary encoding: a dense integer code per row, for what-if's unit tables.


def _encode_limit(slots: int) -> int:
    """Codes a table may hold: load <= 1/4 while it fits in cache (fewer probes, fewer mispredicted branches), else 1/2."""
    return slots // 4 if slots <= 1 << 15 else slots // 2


def encode(series, cap: int = 1 << 10, out=None):
    """(codes, firsts) for a Binary/String Series: ``codes[i]`` (int32) is row i's value id (-1: null).

    Ids are dense, in first-seen order; ``firsts[c]`` is the first row holding
    value c, so ``series.gather(firsts)`` is the dictionary.  Why: what-if
    groups records by (partition, key, fields) over these integers instead of
    the values (see keyscope.whatif.tables).  Exact, not a hash: values are
    compared byte for byte.  ``out``: an int32 array of len(series) to write the codes into.
    """
    import polars as pl

    arr = series.to_frame().to_arrow(compat_level=pl.CompatLevel.newest()).column(0)
    return encode_arrow(arr, cap, out)


def encode_arrow(arr, cap: int = 1 << 10, out=None):
    """:func:`encode` of a pyarrow (chunked) binary or string array, without Polars."""
    import pyarrow as pa

    out = np.empty(len(arr), np.int32) if out is None else out
    enc = Encoder(cap)
    row0 = 0
    for chunk in arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]:
        enc.add(chunk, out[row0:row0 + len(chunk)])
        row0 += len(chunk)
    return out, enc.firsts[:enc.ng].copy()


class Encoder:
    """:func:`encode` one chunk at a time, the codes going on across chunks (first-seen order over all of them).

    ``firsts[c]`` counts rows over every chunk added so far.  The chunks are
    kept (long values are matched against their first occurrence by address).
    """

    def __init__(self, cap: int = 1 << 10):
        cap = max(16, 1 << int(cap - 1).bit_length())
        self.tab = np.zeros((2 * cap, 4), np.uint64)
        self.firsts = np.empty(cap, np.int64)
        self.ng, self.rows, self.keep = 0, 0, []

    def add(self, chunk, out=None) -> np.ndarray:
        """The codes (int32, -1: null) of a pyarrow binary/string array's rows (into ``out`` if given)."""
        import pyarrow as pa

        n = len(chunk)
        out = np.empty(n, np.int32) if out is None else out
        if n == 0:
            return out
        if not (pa.types.is_binary_view(chunk.type) or pa.types.is_string_view(chunk.type)):
            chunk = chunk.cast(pa.binary_view() if pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type) else pa.string_view())
        bufs = chunk.buffers()
        buf_addrs = np.array([b.address if b is not None else 0 for b in bufs[2:]] or [0], dtype=np.int64)
        valid = np.frombuffer(bufs[0], dtype=np.uint8) if bufs[0] is not None and chunk.null_count else np.zeros(0, np.uint8)
        self.keep += [chunk, buf_addrs, valid]
        return self._add(bufs[1].address + 16 * chunk.offset, n, buf_addrs, valid, chunk.offset, out)

    def add_views(self, views: np.ndarray, data: np.ndarray, out=None) -> np.ndarray:
        """:meth:`add` of binary views built in numpy (``views``: uint8 (n, 16), long values in buffer 0, ``data``),
        no null row: no pyarrow needed."""
        assert views.dtype == np.uint8 and views.ndim == 2 and views.shape[1] == 16 and views.flags.c_contiguous
        n = views.shape[0]
        out = np.empty(n, np.int32) if out is None else out
        if n == 0:
            return out
        buf_addrs = np.array([data.ctypes.data], dtype=np.int64)
        self.keep += [views, data, buf_addrs]
        return self._add(views.ctypes.data, n, buf_addrs, np.zeros(0, np.uint8), 0, out)

    def _add(self, views: int, n: int, buf_addrs: np.ndarray, valid: np.ndarray, vbit: int, out: np.ndarray):
        done = 0
        while done < n:
            # the kernel writes out[o0 + i] and records row o0 + i as a first row: with o0 counting rows over
            # all chunks, ``out``'s address is shifted back by the rows before this chunk
            stop, self.ng = _encode(
                views + 16 * done, n - done, buf_addrs, valid, vbit + done,
                out, self.rows + done, self.tab, self.ng, _encode_limit(self.tab.shape[0]), self.firsts,
                out_addr=out.ctypes.data - 4 * self.rows,
            )  # fmt: skip
            done += stop
            if done < n:  # full: double the table and the first-row list
                new = np.zeros((2 * self.tab.shape[0], 4), np.uint64)
                _erehash(self.tab, new)
                self.tab = new
                more = max(0, _encode_limit(self.tab.shape[0]) - len(self.firsts))
                self.firsts = np.concatenate([self.firsts, np.empty(more, np.int64)])
        self.rows += n
        return out


def with_null_rows(kp, nrec: np.ndarray, nbytes: np.ndarray, nbsq: np.ndarray):
    """``kp`` with one null-key row per partition that has null keys (their per-partition sums)."""
    import polars as pl

    has_null = np.flatnonzero(nrec)
    if not has_null.size:
        return kp
    nulls = pl.DataFrame(
        {
            "key": pl.Series([None] * has_null.size, dtype=pl.Binary),
            "partition": has_null.astype(np.int32),
            "records": nrec[has_null],
            "bytes": nbytes[has_null],
            "bytes_sq": nbsq[has_null],
        }
    )
    return pl.concat([kp, nulls])
