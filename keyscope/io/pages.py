"""A keyscope sample's footer and dictionary-encoded columns, read from the file without pyarrow.

Why: a cold ``keyscope analyze`` of 10M records spent 0.2 s importing pyarrow and
~0.45 s in pyarrow's decode of the key, partition and value-size pages (perf: its
dictionary-index read alone 18-25 ns a row, in zstd, memmoves and its dictionary
builder), while all it needs of a row is one small integer per column.  This module
reads exactly that: the footer (Thrift compact protocol, in Python), each page
decompressed by the system's libzstd (through ctypes, without the GIL) and its
RLE/bit-packed indices unpacked by one compiled loop (LLVM IR, like every keyscope
kernel): no value is materialised per row, and pyarrow is not imported.

Scope: what keyscope's writers produce (pyarrow's writer with
:func:`keyscope.io.sample_format.parquet_options`): a flat schema, ZSTD or no
compression, data pages v1 or v2 whose values are RLE_DICTIONARY indices into a
PLAIN dictionary page (:meth:`Reader.column`) or, for INT64 columns without a null
row, DELTA_BINARY_PACKED or PLAIN values (:meth:`Reader.int64`: the offsets what-if
reads), definition levels of at most 1, no repetition, no encryption.  Anything else (another codec, a page that fell back to PLAIN, a
truncated stream, no libzstd) raises :class:`Unsupported`, and the caller reads the
file with pyarrow, which also gives corrupt files their error message: the result
never depends on which reader ran (tests/test_pages.py checks every path against
pyarrow's).  :func:`reference_hybrid`, :func:`reference_plain_binary` and
:func:`reference_delta` are the kernels' pure-Python twins.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass, field

import numpy as np

from .. import _native

# Parquet's enums (parquet.thrift)
_INT32, _INT64, _BYTE_ARRAY = 1, 2, 6
_OPTIONAL, _REPEATED = 1, 2
_UNCOMPRESSED, _ZSTD = 0, 6
_DATA_PAGE, _DICTIONARY_PAGE, _DATA_PAGE_V2 = 0, 2, 3
_PLAIN, _PLAIN_DICTIONARY, _DELTA_BINARY_PACKED, _RLE_DICTIONARY = 0, 2, 5, 8

# Every buffer a kernel reads is followed by this many readable bytes (bit-packed values are loaded as
# 64-bit words, which may reach past the stream's last byte).
PAD = 8
DELTA_PAD = 16  # (kp_delta: 9 bytes past a miniblock of bit width 0 at the stream's end)


class Unsupported(Exception):
    """The file uses something this reader does not: read it with pyarrow instead."""


# ---- Thrift compact protocol -----------------------------------------------------------------


def _varint(b: bytes, i: int) -> tuple[int, int]:
    r = s = 0
    while True:
        x = b[i]
        i += 1
        r |= (x & 0x7F) << s
        if x < 0x80:
            return r, i
        s += 7
        if s > 63:
            raise Unsupported("a Thrift varint longer than 64 bits")


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _value(b: bytes, i: int, t: int, depth: int):
    if t == 1 or t == 2:  # a bool field: its value is the type
        return t == 1, i
    if t == 3:
        return b[i], i + 1
    if 4 <= t <= 6:
        v, i = _varint(b, i)
        return _zigzag(v), i
    if t == 7:
        return b[i:i + 8], i + 8
    if t == 8:
        n, i = _varint(b, i)
        if i + n > len(b):
            raise Unsupported("a Thrift string past the end")
        return b[i:i + n], i + n
    if t == 9 or t == 10:
        h = b[i]
        i += 1
        n, et = h >> 4, h & 0x0F
        if n == 15:
            n, i = _varint(b, i)
        out = []
        for _ in range(n):
            if et == 1 or et == 2:  # list<bool>: one byte each, 1 = true
                out.append(b[i] == 1)
                i += 1
            else:
                v, i = _value(b, i, et, depth)
                out.append(v)
        return out, i
    if t == 11:
        n, i = _varint(b, i)
        if n == 0:
            return {}, i
        kt, vt = b[i] >> 4, b[i] & 0x0F
        i += 1
        m = {}
        for _ in range(n):
            k, i = _value(b, i, kt, depth)
            m[k], i = _value(b, i, vt, depth)
        return m, i
    if t == 12:
        return _struct(b, i, depth + 1)
    raise Unsupported(f"Thrift type {t}")


def _struct(b: bytes, i: int, depth: int = 0) -> tuple[dict, int]:
    """One Thrift struct at ``b[i:]`` as {field id: value} (structs nested as dicts), and where it ends."""
    if depth > 16:
        raise Unsupported("Thrift structs nested too deep")
    out: dict = {}
    fid = 0
    while True:
        t, fid, i = _field(b, i, fid)
        if t == 0:
            return out, i
        out[fid], i = _value(b, i, t, depth)


def _field(b: bytes, i: int, fid: int) -> tuple[int, int, int]:
    """A field header at ``b[i:]`` after field ``fid``: (its type, 0 at the struct's end; its id; where its
    value starts)."""
    h = b[i]
    i += 1
    if h == 0:
        return 0, fid, i
    d = h >> 4
    if d:
        return h & 0x0F, fid + d, i
    v, i = _varint(b, i)
    return h & 0x0F, _zigzag(v), i


def thrift_struct(b: bytes, i: int = 0) -> tuple[dict, int]:
    """:func:`_struct` with malformed input (truncated, an unknown type) as :class:`Unsupported`."""
    try:
        return _struct(b, i)
    except (IndexError, RecursionError) as e:
        raise Unsupported(f"malformed Thrift ({type(e).__name__})") from None


def _skip(b: bytes, i: int, t: int) -> int:
    """Past one Thrift value of type ``t`` at ``b[i:]``."""
    if t == 1 or t == 2:
        return i
    if t == 3:
        return i + 1
    if 4 <= t <= 6:
        while b[i] >= 0x80:
            i += 1
        return i + 1
    if t == 7:
        return i + 8
    if t == 8:
        n, i = _varint(b, i)
        return i + n
    if t == 12:
        while True:
            h = b[i]
            i += 1
            if h == 0:
                return i
            if not h >> 4:
                _, i = _varint(b, i)
            i = _skip(b, i, h & 0x0F)
    return _value(b, i, t, 0)[1]  # (lists and maps: rare in a page header)


def _ints(b: bytes, i: int) -> tuple[dict, int]:
    """A Thrift struct's integer and bool fields ({field id: value}), every other field skipped."""
    out = {}
    fid = 0
    while True:  # (:func:`_field` inlined: called, a page header took 18 us, not 12.5)
        h = b[i]
        i += 1
        if h == 0:
            return out, i
        t, d = h & 0x0F, h >> 4
        if d:
            fid += d
        else:
            v, i = _varint(b, i)
            fid = _zigzag(v)
        if 4 <= t <= 6:
            x = b[i]
            if x < 0x80:
                i += 1
                out[fid] = (x >> 1) ^ -(x & 1)
            else:
                v, i = _varint(b, i)
                out[fid] = _zigzag(v)
        elif t == 1 or t == 2:
            out[fid] = t == 1
        elif t == 12:
            out[fid], i = _ints(b, i)
        else:
            i = _skip(b, i, t)


def page_header(b: bytes) -> tuple[dict, int]:
    """A PageHeader's integer fields, its page-type header's among them (statistics skipped), and its length.

    (:func:`thrift_struct` took ~20 us a header, this 12.5 us: a 10M-record sample has ~1,500 pages in its three
    columns, the GIL held throughout.)
    """
    try:
        return _ints(b, 0)
    except (IndexError, RecursionError) as e:
        raise Unsupported(f"malformed page header ({type(e).__name__})") from None


# ---- the footer --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One column of one row group, as its footer entry describes it."""

    codec: int
    num_values: int
    start: int  # the first page's offset (the dictionary page's when there is one)
    size: int  # compressed bytes, every page header included
    uncompressed: int
    has_dictionary: bool
    encodings: tuple[int, ...]
    null_count: int | None
    min_value: bytes | None
    max_value: bytes | None


@dataclass(frozen=True)
class Column:
    name: str
    physical: int
    optional: bool


@dataclass
class Footer:
    """What keyscope reads of a Parquet footer."""

    num_rows: int
    columns: list[Column]
    row_groups: list[tuple[int, list[Chunk]]]  # (rows, one chunk per column)
    metadata: dict[bytes, bytes] = field(default_factory=dict)

    def index(self, name: str) -> int:
        """The column's position, or -1."""
        for i, c in enumerate(self.columns):
            if c.name == name:
                return i
        return -1

    def int32_range(self, name: str) -> tuple[int, int] | None:
        """(smallest, largest) of an INT32 column over every non-empty row group from the min/max statistics,
        or None unless every such row group has them and counts no null (and there is one)."""
        ci = self.index(name)
        if ci < 0 or self.columns[ci].physical != _INT32:
            return None
        lo: int | None = None
        hi: int | None = None
        for rows, chunks in self.row_groups:
            if rows == 0:
                continue
            c = chunks[ci]
            if c.null_count is None or c.null_count or c.min_value is None or c.max_value is None:
                return None
            if len(c.min_value) != 4 or len(c.max_value) != 4:
                return None
            a = int.from_bytes(c.min_value, "little", signed=True)
            b = int.from_bytes(c.max_value, "little", signed=True)
            lo, hi = (a, b) if lo is None or hi is None else (min(lo, a), max(hi, b))
        return None if lo is None or hi is None else (lo, hi)


def footer_of(path) -> Footer:
    """The footer of the Parquet file at ``path`` (:class:`Unsupported` or OSError when it cannot be read)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_footer(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def read_footer(fd: int, size: int) -> Footer:
    """The footer of the Parquet file open at ``fd`` (``size`` bytes)."""
    if size < 12:
        raise Unsupported("too short for Parquet")
    tail = os.pread(fd, 8, size - 8)
    if tail[4:] != b"PAR1":
        raise Unsupported("no PAR1 footer (encrypted or not Parquet)")
    n = int.from_bytes(tail[:4], "little")
    if n + 12 > size:
        raise Unsupported("footer longer than the file")
    md, _ = thrift_struct(os.pread(fd, n, size - 8 - n))
    if 8 in md or 9 in md:
        raise Unsupported("encrypted footer")
    try:
        schema = md[2]
        root = schema[0]
        if root.get(5, 0) != len(schema) - 1:
            raise Unsupported("nested schema")
        cols = []
        for s in schema[1:]:
            if 5 in s or 1 not in s or s.get(3, 0) == _REPEATED:
                raise Unsupported("nested schema")
            cols.append(Column(s[4].decode("utf-8", "replace"), s[1], s.get(3, 0) == _OPTIONAL))
        groups = []
        for rg in md.get(4, []):
            chunks = []
            ccs = rg[1]
            if len(ccs) != len(cols):
                raise Unsupported("a row group's columns differ from the schema")
            for cc, col in zip(ccs, cols):
                if 1 in cc or 3 not in cc:
                    raise Unsupported("a column chunk in another file")
                m = cc[3]
                if m[1] != col.physical or [p.decode("utf-8", "replace") for p in m[3]] != [col.name]:
                    raise Unsupported("a column chunk that is not its schema's")
                st = m.get(12, {})
                dict_off = m.get(11)
                start = dict_off if dict_off is not None and dict_off > 0 else m[9]
                chunks.append(Chunk(
                    codec=m[4], num_values=m[5], start=start, size=m[7], uncompressed=m[6],
                    has_dictionary=dict_off is not None and dict_off > 0, encodings=tuple(m[2]),
                    null_count=st.get(3), min_value=st.get(6, st.get(2)), max_value=st.get(5, st.get(1)),
                ))  # fmt: skip
            groups.append((rg[3], chunks))
        meta = {kv[1]: kv.get(2, b"") for kv in md.get(5, [])}
        return Footer(md[3], cols, groups, meta)
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise Unsupported(f"footer without a required field ({type(e).__name__})") from None


# ---- the kernels -------------------------------------------------------------------------------

def _mapped(x: str, blk: str) -> str:
    """IR: ``%x`` (i32) = the value ``%{x}64`` checked below %nmap (else to %fail), through %map if given;
    it ends in block ``{blk}.plain``."""
    return (f"  %{x}.big = icmp uge i64 %{x}64, %nmap\n"
            f"  br i1 %{x}.big, label %fail, label %{blk}.in\n"
            f"{blk}.in:\n"
            f"  %{x}.0 = trunc i64 %{x}64 to i32\n"
            f"  br i1 %hasmap, label %{blk}.mapped, label %{blk}.plain\n"
            f"{blk}.mapped:\n"
            f"  %{x}.mp = getelementptr i32, ptr %map, i64 %{x}64\n"
            f"  %{x}.m = load i32, ptr %{x}.mp, align 4\n"
            f"  br label %{blk}.plain\n"
            f"{blk}.plain:\n"
            f"  %{x} = phi i32 [%{x}.0, %{blk}.in], [%{x}.m, %{blk}.mapped]\n")


_IR = r"""
; %n values of an RLE / bit-packed hybrid stream %src[0, %len) of bit width %bw (0..32) into %out (i32),
; each v written as %map[v] (i32; null: v itself).  The bytes consumed, or -1 when the stream ends early
; or is malformed (a run of no values, a varint over 5 bytes) or a value is %nmap or more (unsigned).
; %src is readable 8 bytes past %len: a bit-packed value is loaded as one 64-bit word.  A run's values
; past %n are not written.
define i64 @kp_hybrid(ptr noalias %src, i64 %len, i32 %bw, ptr noalias %out, i64 %n, ptr noalias %map,
                      i64 %nmap) nounwind {
entry:
  %badbw = icmp ugt i32 %bw, 32
  br i1 %badbw, label %fail, label %start
start:
  %bw64 = zext i32 %bw to i64
  %vb.0 = add i64 %bw64, 7
  %vb = lshr i64 %vb.0, 3
  %one.sh = shl i64 1, %bw64
  %mask = sub i64 %one.sh, 1
  %hasmap = icmp ne ptr %map, null
  br label %run
run:
  %pos = phi i64 [0, %start], [%pos.rle, %fill.done], [%pos.bp, %bp.done]
  %k = phi i64 [0, %start], [%k.rle, %fill.done], [%k.bp, %bp.done]
  %more = icmp slt i64 %k, %n
  br i1 %more, label %hdr, label %ok
hdr:
  %hp = phi i64 [%pos, %run], [%hp.next, %hdr.cont]
  %h = phi i64 [0, %run], [%h.next, %hdr.cont]
  %sh = phi i64 [0, %run], [%sh.next, %hdr.cont]
  %inb = icmp slt i64 %hp, %len
  br i1 %inb, label %hdr.byte, label %fail
hdr.byte:
  %bp.p = getelementptr i8, ptr %src, i64 %hp
  %byte = load i8, ptr %bp.p, align 1
  %b64 = zext i8 %byte to i64
  %low = and i64 %b64, 127
  %lows = shl i64 %low, %sh
  %h.next = or i64 %h, %lows
  %hp.next = add i64 %hp, 1
  %sh.next = add i64 %sh, 7
  %cont = icmp uge i64 %b64, 128
  br i1 %cont, label %hdr.cont, label %hdr.done
hdr.cont:
  %long = icmp uge i64 %sh.next, 35
  br i1 %long, label %fail, label %hdr
hdr.done:
  %isbp = and i64 %h.next, 1
  %cnt = lshr i64 %h.next, 1
  %none = icmp eq i64 %cnt, 0
  br i1 %none, label %fail, label %kind
kind:
  %bitp = icmp ne i64 %isbp, 0
  %left = sub i64 %n, %k
  br i1 %bitp, label %bp, label %rle
rle:
  %rv.end = add i64 %hp.next, %vb
  %rv.in = icmp sle i64 %rv.end, %len
  br i1 %rv.in, label %rle.val, label %fail
rle.val:
  %rvp = getelementptr i8, ptr %src, i64 %hp.next
  %rw = load i64, ptr %rvp, align 1
  %vbits = shl i64 %vb, 3
  %vfull = icmp uge i64 %vbits, 64
  %vone = shl i64 1, %vbits
  %vmask.0 = sub i64 %vone, 1
  %vmask = select i1 %vfull, i64 -1, i64 %vmask.0
  %rv64 = and i64 %rw, %vmask
{_mapped("rv", "rle")}  %rlt = icmp ult i64 %cnt, %left
  %rtake = select i1 %rlt, i64 %cnt, i64 %left
  %k.rle = add i64 %k, %rtake
  %pos.rle = add i64 %hp.next, %vb
  br label %fill
fill:
  %fj = phi i64 [%k, %rle.plain], [%fj.next, %fill]
  %fp = getelementptr i32, ptr %out, i64 %fj
  store i32 %rv, ptr %fp, align 4
  %fj.next = add i64 %fj, 1
  %fmore = icmp slt i64 %fj.next, %k.rle
  br i1 %fmore, label %fill, label %fill.done
fill.done:
  br label %run
bp:
  %nbytes = mul i64 %cnt, %bw64
  %bp.end = add i64 %hp.next, %nbytes
  %bp.in = icmp sle i64 %bp.end, %len
  br i1 %bp.in, label %bp.start, label %fail
bp.start:
  %nv = shl i64 %cnt, 3
  %blt = icmp ult i64 %nv, %left
  %btake = select i1 %blt, i64 %nv, i64 %left
  %k.bp = add i64 %k, %btake
  %base = getelementptr i8, ptr %src, i64 %hp.next
  br label %unpack
unpack:
  %j = phi i64 [0, %bp.start], [%j.next, %v.plain]
  %bit = mul i64 %j, %bw64
  %byteoff = lshr i64 %bit, 3
  %shift = and i64 %bit, 7
  %wp = getelementptr i8, ptr %base, i64 %byteoff
  %w = load i64, ptr %wp, align 1
  %ws = lshr i64 %w, %shift
  %v64 = and i64 %ws, %mask
{_mapped("v", "v")}  %oj = add i64 %k, %j
  %op = getelementptr i32, ptr %out, i64 %oj
  store i32 %v, ptr %op, align 4
  %j.next = add i64 %j, 1
  %jmore = icmp slt i64 %j.next, %btake
  br i1 %jmore, label %unpack, label %bp.done
bp.done:
  %pos.bp = add i64 %hp.next, %nbytes
  br label %run
ok:
  ret i64 %pos
fail:
  ret i64 -1
}

; %n PLAIN byte arrays (a little-endian u32 length, then the bytes) of %src[0, %len), split into %offs
; (i32, %n + 1 of them) and the bytes, back to back, into %data (room for %len bytes).
; The bytes written, or -1 when the stream ends early.
define i64 @kp_plain_binary(ptr noalias %src, i64 %len, i64 %n, ptr noalias %offs, ptr noalias %data) nounwind {
entry:
  store i32 0, ptr %offs, align 4
  %any = icmp sgt i64 %n, 0
  br i1 %any, label %item, label %ok
item:
  %i = phi i64 [0, %entry], [%i.next, %copied]
  %pos = phi i64 [0, %entry], [%pos.next, %copied]
  %o = phi i64 [0, %entry], [%o.next, %copied]
  %lend = add i64 %pos, 4
  %lin = icmp sle i64 %lend, %len
  br i1 %lin, label %haslen, label %fail
haslen:
  %lp = getelementptr i8, ptr %src, i64 %pos
  %l32 = load i32, ptr %lp, align 1
  %l = zext i32 %l32 to i64
  %pos.next = add i64 %lend, %l
  %bin = icmp sle i64 %pos.next, %len
  br i1 %bin, label %copy, label %fail
copy:
  %from = getelementptr i8, ptr %src, i64 %lend
  %to = getelementptr i8, ptr %data, i64 %o
  call void @llvm.memcpy.p0.p0.i64(ptr %to, ptr %from, i64 %l, i1 false)
  %o.next = add i64 %o, %l
  %i.next = add i64 %i, 1
  %op = getelementptr i32, ptr %offs, i64 %i.next
  %o32 = trunc i64 %o.next to i32
  store i32 %o32, ptr %op, align 4
  br label %copied
copied:
  %more = icmp slt i64 %i.next, %n
  br i1 %more, label %item, label %done
done:
  ret i64 %o.next
ok:
  ret i64 0
fail:
  ret i64 -1
}

declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)

; One column chunk's pages, as Python's page table %tab lists them (8 i64 a page: kind 0 dictionary /
; 1 data v1 / 2 data v2, body offset in %raw, body bytes, decompressed bytes, compressed?, values,
; v2's definition levels' offset in %raw and length): each body decompressed (%zfn: ZSTD_decompressDCtx,
; with %dctx) or copied, the dictionary page to %out[0], each data page after it; a data page's
; definition levels (when %optional) into %defs and its indices into %ix at its rows (a null row: 0;
; checked against the dictionary's entries; with %values, written as the dictionary's int32 value).
; The null rows, or -1 a malformed stream, -2 a page that does not decompress to its size, -3 pages
; whose values are not %rows, -4 an index past the dictionary or a bad bit width.
define i64 @kp_chunk(ptr noalias %raw, ptr noalias %out, ptr noalias %tab, i64 %npages, ptr %zfn, ptr %dctx,
                     i64 %optional, i64 %values, ptr noalias %ix, i64 %rows, ptr noalias %defs,
                     ptr noalias %dense) nounwind {
entry:
  %p.a = alloca i64
  %row.a = alloca i64
  %nulls.a = alloca i64
  %dlen.a = alloca i64
  %nent.a = alloca i64
  %vals.a = alloca ptr
  %vlen.a = alloca i64
  %valid.a = alloca i64
  store i64 0, ptr %p.a
  store i64 0, ptr %row.a
  store i64 0, ptr %nulls.a
  store i64 0, ptr %dlen.a
  store i64 0, ptr %nent.a
  %hasvals = icmp ne i64 %values, 0
  %opt = icmp ne i64 %optional, 0
  br label %page
page:
  %p = load i64, ptr %p.a
  %more = icmp slt i64 %p, %npages
  br i1 %more, label %load, label %end
load:
  %t = mul i64 %p, 8
  %tp = getelementptr i64, ptr %tab, i64 %t
{page_fields}  %src = getelementptr i8, ptr %raw, i64 %soff
  %isdict = icmp eq i64 %kind, 0
  %dlen = load i64, ptr %dlen.a
  %dataout = getelementptr i8, ptr %out, i64 %dlen
  %dst = select i1 %isdict, ptr %out, ptr %dataout
  %iscomp = icmp ne i64 %comp, 0
  br i1 %iscomp, label %zstd, label %copy
zstd:
  %zr = call i64 %zfn(ptr %dctx, ptr %dst, i64 %ulen, ptr %src, i64 %slen)
  %zok = icmp eq i64 %zr, %ulen
  br i1 %zok, label %body, label %fail2
copy:
  %same = icmp eq i64 %slen, %ulen
  br i1 %same, label %copy.do, label %fail2
copy.do:
  call void @llvm.memcpy.p0.p0.i64(ptr %dst, ptr %src, i64 %ulen, i1 false)
  br label %body
body:
  br i1 %isdict, label %dict, label %datapage
dict:
  store i64 %ulen, ptr %dlen.a
  store i64 %nv, ptr %nent.a
  br label %page.done
datapage:
  %row = load i64, ptr %row.a
  %nrow = add i64 %row, %nv
  %over = icmp sgt i64 %nrow, %rows
  br i1 %over, label %fail3, label %levels
levels:
  store ptr %dst, ptr %vals.a
  store i64 %ulen, ptr %vlen.a
  store i64 %nv, ptr %valid.a
  br i1 %opt, label %haslevels, label %vals.blk
haslevels:
  %isv2 = icmp eq i64 %kind, 2
  br i1 %isv2, label %lv2, label %lv1
lv1:
  %has4 = icmp sge i64 %ulen, 4
  br i1 %has4, label %lv1.len, label %fail1
lv1.len:
  %dl32 = load i32, ptr %dst, align 1
  %dl1 = zext i32 %dl32 to i64
  %dl1e = add i64 %dl1, 4
  %dl1ok = icmp sle i64 %dl1e, %ulen
  br i1 %dl1ok, label %lv1.ok, label %fail1
lv1.ok:
  %defsrc1 = getelementptr i8, ptr %dst, i64 4
  %vals1 = getelementptr i8, ptr %defsrc1, i64 %dl1
  %vlen1 = sub i64 %ulen, %dl1e
  store ptr %vals1, ptr %vals.a
  store i64 %vlen1, ptr %vlen.a
  br label %ldecode
lv2:
  %defsrc2 = getelementptr i8, ptr %raw, i64 %doff
  br label %ldecode
ldecode:
  %defsrc = phi ptr [%defsrc1, %lv1.ok], [%defsrc2, %lv2]
  %deflen = phi i64 [%dl1, %lv1.ok], [%dl, %lv2]
  %defp = getelementptr i32, ptr %defs, i64 %row
  %lr = call i64 @kp_hybrid(ptr %defsrc, i64 %deflen, i32 1, ptr %defp, i64 %nv, ptr null, i64 2)
  %lbad = icmp slt i64 %lr, 0
  br i1 %lbad, label %fail1, label %count
count:
  %ci = phi i64 [0, %ldecode], [%ci.next, %count.body]
  %cs = phi i64 [0, %ldecode], [%cs.next, %count.body]
  %cmore = icmp slt i64 %ci, %nv
  br i1 %cmore, label %count.body, label %counted
count.body:
  %cp = getelementptr i32, ptr %defp, i64 %ci
  %cd = load i32, ptr %cp, align 4
  %cd64 = zext i32 %cd to i64
  %cs.next = add i64 %cs, %cd64
  %ci.next = add i64 %ci, 1
  br label %count
counted:
  store i64 %cs, ptr %valid.a
  br label %vals.blk
vals.blk:
  %vals = load ptr, ptr %vals.a
  %vlen = load i64, ptr %vlen.a
  %valid = load i64, ptr %valid.a
  %nulls = load i64, ptr %nulls.a
  %pnull = sub i64 %nv, %valid
  %nulls.next = add i64 %nulls, %pnull
  store i64 %nulls.next, ptr %nulls.a
  store i64 %nrow, ptr %row.a
  %anyv = icmp sgt i64 %valid, 0
  br i1 %anyv, label %bitwidth, label %zero
zero:
  %zp = getelementptr i32, ptr %ix, i64 %row
  %zbytes = mul i64 %nv, 4
  call void @llvm.memset.p0.i64(ptr %zp, i8 0, i64 %zbytes, i1 false)
  br label %page.done
bitwidth:
  %hasbw = icmp sge i64 %vlen, 1
  br i1 %hasbw, label %bw.ok, label %fail1
bw.ok:
  %bw8 = load i8, ptr %vals, align 1
  %bw = zext i8 %bw8 to i32
  %stream = getelementptr i8, ptr %vals, i64 1
  %slen2 = sub i64 %vlen, 1
  %map = select i1 %hasvals, ptr %out, ptr null
  %nent = load i64, ptr %nent.a
  %full = icmp eq i64 %valid, %nv
  br i1 %full, label %direct, label %scatter
direct:
  %ixp = getelementptr i32, ptr %ix, i64 %row
  %dr = call i64 @kp_hybrid(ptr %stream, i64 %slen2, i32 %bw, ptr %ixp, i64 %nv, ptr %map, i64 %nent)
  %dbad = icmp slt i64 %dr, 0
  br i1 %dbad, label %fail4, label %page.done
scatter:
  %sr = call i64 @kp_hybrid(ptr %stream, i64 %slen2, i32 %bw, ptr %dense, i64 %valid, ptr %map, i64 %nent)
  %sbad = icmp slt i64 %sr, 0
  br i1 %sbad, label %fail4, label %sc
sc:
  %si = phi i64 [0, %scatter], [%si.next, %sc.next]
  %sj = phi i64 [0, %scatter], [%sj.next, %sc.next]
  %smore = icmp slt i64 %si, %nv
  br i1 %smore, label %sc.body, label %page.done
sc.body:
  %sr.i = add i64 %row, %si
  %sdp = getelementptr i32, ptr %defs, i64 %sr.i
  %sd = load i32, ptr %sdp, align 4
  %sdn = icmp ne i32 %sd, 0
  %sjc = select i1 %sdn, i64 %sj, i64 0
  %svp = getelementptr i32, ptr %dense, i64 %sjc
  %sv0 = load i32, ptr %svp, align 4
  %sv = select i1 %sdn, i32 %sv0, i32 0
  %sop = getelementptr i32, ptr %ix, i64 %sr.i
  store i32 %sv, ptr %sop, align 4
  %sinc = zext i1 %sdn to i64
  %sj.next = add i64 %sj, %sinc
  br label %sc.next
sc.next:
  %si.next = add i64 %si, 1
  br label %sc
page.done:
  %p.next = add i64 %p, 1
  store i64 %p.next, ptr %p.a
  br label %page
end:
  %rowsdone = load i64, ptr %row.a
  %all = icmp eq i64 %rowsdone, %rows
  br i1 %all, label %ok, label %fail3
ok:
  %n.out = load i64, ptr %nulls.a
  ret i64 %n.out
fail1:
  ret i64 -1
fail2:
  ret i64 -2
fail3:
  ret i64 -3
fail4:
  ret i64 -4
}

declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)

; Arrow binary views (16 bytes each: the length, then up to 12 bytes inline, zero-padded, else a 4-byte
; prefix, buffer 0 and the offset) of the %n values at int32 %offs (%n + 1 of them) into %data, to %views.
define void @kp_views(ptr noalias %offs, ptr noalias %data, i64 %n, ptr noalias %views) nounwind {
entry:
  %any = icmp sgt i64 %n, 0
  br i1 %any, label %item, label %done
item:
  %i = phi i64 [0, %entry], [%i.next, %next]
  %op = getelementptr i32, ptr %offs, i64 %i
  %s32 = load i32, ptr %op, align 4
  %i.next = add i64 %i, 1
  %ep = getelementptr i32, ptr %offs, i64 %i.next
  %e32 = load i32, ptr %ep, align 4
  %l32 = sub i32 %e32, %s32
  %s = sext i32 %s32 to i64
  %l = sext i32 %l32 to i64
  %at = mul i64 %i, 16
  %v = getelementptr i8, ptr %views, i64 %at
  store i32 %l32, ptr %v, align 4
  %v4 = getelementptr i8, ptr %v, i64 4
  store i32 0, ptr %v4, align 4
  %v8 = getelementptr i8, ptr %v, i64 8
  store i64 0, ptr %v8, align 8
  %src = getelementptr i8, ptr %data, i64 %s
  %short = icmp sle i64 %l, 12
  br i1 %short, label %inline, label %long
inline:
  call void @llvm.memcpy.p0.p0.i64(ptr %v4, ptr %src, i64 %l, i1 false)
  br label %next
long:
  call void @llvm.memcpy.p0.p0.i64(ptr %v4, ptr %src, i64 4, i1 false)
  %v12 = getelementptr i8, ptr %v, i64 12
  store i32 %s32, ptr %v12, align 4
  br label %next
next:
  %more = icmp slt i64 %i.next, %n
  br i1 %more, label %item, label %done
done:
  ret void
}

; A ULEB128 varint of %src[*%posp, %len) (at most 10 bytes); *%posp moves past it, or is set to -1 when
; the stream ends first, the varint is too long or *%posp is already -1.
define internal i64 @kp_uleb(ptr noalias %src, i64 %len, ptr noalias %posp) nounwind alwaysinline {
entry:
  %p0 = load i64, ptr %posp
  br label %loop
loop:
  %p = phi i64 [%p0, %entry], [%p.next, %cont]
  %v = phi i64 [0, %entry], [%v.next, %cont]
  %s = phi i64 [0, %entry], [%s.next, %cont]
  %inb = icmp ult i64 %p, %len
  br i1 %inb, label %byte, label %fail
byte:
  %bp = getelementptr i8, ptr %src, i64 %p
  %b = load i8, ptr %bp, align 1
  %b64 = zext i8 %b to i64
  %low = and i64 %b64, 127
  %sh = shl i64 %low, %s
  %v.next = or i64 %v, %sh
  %p.next = add i64 %p, 1
  %s.next = add i64 %s, 7
  %c = icmp uge i64 %b64, 128
  br i1 %c, label %cont, label %done
cont:
  %long = icmp uge i64 %s.next, 70
  br i1 %long, label %fail, label %loop
done:
  store i64 %p.next, ptr %posp
  ret i64 %v.next
fail:
  store i64 -1, ptr %posp
  ret i64 0
}

; %n int64 values of a DELTA_BINARY_PACKED stream %src[0, %len) into %out (wrapping arithmetic, as the
; spec's writers compute the deltas).  The bytes consumed, or -1 when the stream ends early, its header
; is not one this reads (a block size not a multiple of 128 up to 2^20, miniblocks not multiples of 8
; values, a count other than %n) or a bit width is over 64.  %src is readable 9 bytes past %len.
define i64 @kp_delta(ptr noalias %src, i64 %len, ptr noalias %out, i64 %n) nounwind {
entry:
  %pos.a = alloca i64
  store i64 0, ptr %pos.a
  %bs = call i64 @kp_uleb(ptr %src, i64 %len, ptr %pos.a)
  %nmb = call i64 @kp_uleb(ptr %src, i64 %len, ptr %pos.a)
  %total = call i64 @kp_uleb(ptr %src, i64 %len, ptr %pos.a)
  %fz = call i64 @kp_uleb(ptr %src, i64 %len, ptr %pos.a)
  %hpos = load i64, ptr %pos.a
  %hbad = icmp slt i64 %hpos, 0
  %bs.m = and i64 %bs, 127
  %bs.bad0 = icmp ne i64 %bs.m, 0
  %bs.bad1 = icmp eq i64 %bs, 0
  %bs.bad2 = icmp ugt i64 %bs, 1048576
  %nmb.bad0 = icmp eq i64 %nmb, 0
  %nmb.bad1 = icmp ugt i64 %nmb, %bs
  %tot.bad = icmp ne i64 %total, %n
  %b1 = or i1 %hbad, %bs.bad0
  %b2 = or i1 %b1, %bs.bad1
  %b3 = or i1 %b2, %bs.bad2
  %b4 = or i1 %b3, %nmb.bad0
  %b5 = or i1 %b4, %nmb.bad1
  %b6 = or i1 %b5, %tot.bad
  br i1 %b6, label %fail, label %sizes
sizes:
  %vpm = udiv i64 %bs, %nmb
  %vpm.back = mul i64 %vpm, %nmb
  %vpm.rem = icmp ne i64 %vpm.back, %bs
  %vpm.m = and i64 %vpm, 7
  %vpm.odd = icmp ne i64 %vpm.m, 0
  %vbad = or i1 %vpm.rem, %vpm.odd
  br i1 %vbad, label %fail, label %first
first:
  %fh = lshr i64 %fz, 1
  %fl = and i64 %fz, 1
  %fn = sub i64 0, %fl
  %fv = xor i64 %fh, %fn
  %none = icmp eq i64 %n, 0
  br i1 %none, label %ok.hdr, label %first.put
first.put:
  store i64 %fv, ptr %out, align 8
  br label %block
block:
  %k = phi i64 [1, %first.put], [%mk, %block.end]
  %prev = phi i64 [%fv, %first.put], [%mprev, %block.end]
  %bmore = icmp slt i64 %k, %n
  br i1 %bmore, label %block.hdr, label %ok
block.hdr:
  %mdz = call i64 @kp_uleb(ptr %src, i64 %len, ptr %pos.a)
  %wpos = load i64, ptr %pos.a
  %wbad = icmp slt i64 %wpos, 0
  %mbpos = add i64 %wpos, %nmb
  %wpast = icmp sgt i64 %mbpos, %len
  %wfail = or i1 %wbad, %wpast
  br i1 %wfail, label %fail, label %block.go
block.go:
  %mdh = lshr i64 %mdz, 1
  %mdl = and i64 %mdz, 1
  %mdn = sub i64 0, %mdl
  %md = xor i64 %mdh, %mdn
  store i64 %mbpos, ptr %pos.a
  br label %mb
mb:
  %m = phi i64 [0, %block.go], [%m.next, %mb.next]
  %mk = phi i64 [%k, %block.go], [%k.mb, %mb.next]
  %mprev = phi i64 [%prev, %block.go], [%prev.mb, %mb.next]
  %mmore = icmp ult i64 %m, %nmb
  %kmore = icmp slt i64 %mk, %n
  %go = and i1 %mmore, %kmore
  br i1 %go, label %mb.hdr, label %block.end
mb.hdr:
  %bwp.i = add i64 %wpos, %m
  %bwp = getelementptr i8, ptr %src, i64 %bwp.i
  %bw8 = load i8, ptr %bwp, align 1
  %bw = zext i8 %bw8 to i64
  %bwbig = icmp ugt i64 %bw, 64
  %mpos = load i64, ptr %pos.a
  %mbits = mul i64 %vpm, %bw
  %mbytes = lshr i64 %mbits, 3
  %mend = add i64 %mpos, %mbytes
  %mpast = icmp sgt i64 %mend, %len
  %mfail = or i1 %bwbig, %mpast
  br i1 %mfail, label %fail, label %mb.go
mb.go:
  %left = sub i64 %n, %mk
  %lt = icmp ult i64 %vpm, %left
  %take = select i1 %lt, i64 %vpm, i64 %left
  %full = icmp eq i64 %bw, 64
  %one = shl i64 1, %bw
  %mask0 = sub i64 %one, 1
  %mask = select i1 %full, i64 -1, i64 %mask0
  %base = getelementptr i8, ptr %src, i64 %mpos
  br label %unpack
unpack:
  %j = phi i64 [0, %mb.go], [%j.next, %unpack]
  %acc = phi i64 [%mprev, %mb.go], [%acc.next, %unpack]
  %bit = mul i64 %j, %bw
  %boff = lshr i64 %bit, 3
  %shift = and i64 %bit, 7
  %wp = getelementptr i8, ptr %base, i64 %boff
  %w = load i64, ptr %wp, align 1
  %lo = lshr i64 %w, %shift
  %hip = getelementptr i8, ptr %wp, i64 8
  %hb = load i8, ptr %hip, align 1
  %hb64 = zext i8 %hb to i64
  %hsh = sub i64 64, %shift
  %hi0 = shl i64 %hb64, %hsh
  %noshift = icmp eq i64 %shift, 0
  %hi = select i1 %noshift, i64 0, i64 %hi0
  %raw = or i64 %lo, %hi
  %pv = and i64 %raw, %mask
  %d = add i64 %md, %pv
  %acc.next = add i64 %acc, %d
  %oi = add i64 %mk, %j
  %op = getelementptr i64, ptr %out, i64 %oi
  store i64 %acc.next, ptr %op, align 8
  %j.next = add i64 %j, 1
  %jmore = icmp ult i64 %j.next, %take
  br i1 %jmore, label %unpack, label %mb.next
mb.next:
  %prev.mb = phi i64 [%acc.next, %unpack]
  %k.mb = add i64 %mk, %take
  store i64 %mend, ptr %pos.a
  %m.next = add i64 %m, 1
  br label %mb
block.end:
  br label %block
ok.hdr:
  ret i64 %hpos
ok:
  %end = load i64, ptr %pos.a
  ret i64 %end
fail:
  ret i64 -1
}

; The inverse of kp_views: the %n values of Arrow binary views %views (16 bytes each; a long value's
; bytes in %bufs[its buffer index] at its offset) to %data at int64 %offs (%n + 1 of them, made by the
; caller from the views' lengths, 0 at a null row, whose view is not read).
define void @kp_unview(ptr noalias %views, i64 %n, ptr noalias %bufs, ptr noalias %offs, ptr noalias %data) nounwind {
entry:
  %any = icmp sgt i64 %n, 0
  br i1 %any, label %item, label %done
item:
  %i = phi i64 [0, %entry], [%i.next, %next]
  %sp = getelementptr i64, ptr %offs, i64 %i
  %s = load i64, ptr %sp, align 8
  %i.next = add i64 %i, 1
  %ep = getelementptr i64, ptr %offs, i64 %i.next
  %e = load i64, ptr %ep, align 8
  %l = sub i64 %e, %s
  %to = getelementptr i8, ptr %data, i64 %s
  %at = mul i64 %i, 16
  %v = getelementptr i8, ptr %views, i64 %at
  %empty = icmp eq i64 %l, 0
  br i1 %empty, label %next, label %some
some:
  %short = icmp sle i64 %l, 12
  br i1 %short, label %inline, label %long
inline:
  %v4 = getelementptr i8, ptr %v, i64 4
  call void @llvm.memcpy.p0.p0.i64(ptr %to, ptr %v4, i64 %l, i1 false)
  br label %next
long:
  %v8 = getelementptr i8, ptr %v, i64 8
  %b32 = load i32, ptr %v8, align 4
  %b = zext i32 %b32 to i64
  %v12 = getelementptr i8, ptr %v, i64 12
  %o32 = load i32, ptr %v12, align 4
  %o = zext i32 %o32 to i64
  %bp = getelementptr i64, ptr %bufs, i64 %b
  %base = load ptr, ptr %bp, align 8
  %from = getelementptr i8, ptr %base, i64 %o
  call void @llvm.memcpy.p0.p0.i64(ptr %to, ptr %from, i64 %l, i1 false)
  br label %next
next:
  %more = icmp slt i64 %i.next, %n
  br i1 %more, label %item, label %done
done:
  ret void
}
"""

# kp_chunk's page table: one row of these int64 fields a page (what Reader._pages writes)
PAGE_FIELDS = ("kind", "soff", "slen", "ulen", "comp", "nv", "doff", "dl")
_IR = _IR.replace("{page_fields}", "".join(
    f"  %{f}.p = getelementptr i64, ptr %tp, i64 {j}\n  %{f} = load i64, ptr %{f}.p\n" for j, f in enumerate(PAGE_FIELDS)))
_IR = _IR.replace('{_mapped("rv", "rle")}', _mapped("rv", "rle")).replace(
    '{_mapped("v", "v")}', _mapped("v", "v"))

_P, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
_FNS = (
    _native.Fn("kp_hybrid", _I64, (("src", _P), ("len", _I64), ("bw", _I32), ("out", _P), ("n", _I64),
                                  ("map", _P), ("nmap", _I64))),
    _native.Fn("kp_chunk", _I64, (
        ("raw", _P), ("out", _P), ("table", _P), ("pages", _I64), ("zstd", _P), ("dctx", _P), ("optional", _I64),
        ("values", _I64), ("ix", _P), ("rows", _I64), ("defs", _P), ("dense", _P),
    )),  # fmt: skip
    _native.Fn("kp_delta", _I64, (("src", _P), ("len", _I64), ("out", _P), ("n", _I64))),
    _native.Fn("kp_unview", None, (("views", _P), ("n", _I64), ("bufs", _P), ("offs", _P), ("data", _P))),
    _native.Fn("kp_views", None, (("offs", _P), ("data", _P), ("n", _I64), ("views", _P))),
    _native.Fn("kp_plain_binary", _I64, (("src", _P), ("len", _I64), ("n", _I64), ("offs", _P), ("data", _P))),
)
_LIB = _native.Lazy("pages", lambda: _IR, _FNS)


def _addr(a: np.ndarray, at: int = 0) -> int:
    return a.ctypes.data + at


def hybrid(buf: np.ndarray, start: int, length: int, bw: int, out: np.ndarray, values=None,
           entries: int = 1 << 32) -> int:
    """Decode ``len(out)`` values of the hybrid stream ``buf[start:start + length]`` (``buf`` readable
    :data:`PAD` bytes past it) into ``out`` (int32), each as ``values[v]`` if given (int32); the bytes
    consumed.  :class:`Unsupported` if malformed or a value is past ``values`` (or ``entries``)."""
    assert out.dtype == np.int32 and out.flags.c_contiguous and start + length + PAD <= buf.size
    assert values is None or (values.dtype == np.int32 and values.flags.c_contiguous)
    m, nm = (None, entries) if values is None else (_addr(values), values.size)
    r = _LIB.get()["kp_hybrid"](_addr(buf, start), length, bw, _addr(out), out.size, m, nm)
    if r < 0:
        raise Unsupported("a malformed RLE/bit-packed stream")
    return r


def delta(buf: np.ndarray, start: int, length: int, out: np.ndarray) -> int:
    """Decode ``len(out)`` int64 values of the DELTA_BINARY_PACKED stream ``buf[start:start + length]`` (``buf``
    readable :data:`DELTA_PAD` bytes past it) into ``out``; the bytes consumed.  :class:`Unsupported` if
    malformed or not ``len(out)`` values."""
    assert out.dtype == np.int64 and out.flags.c_contiguous and start + length + DELTA_PAD <= buf.size
    r = _LIB.get()["kp_delta"](_addr(buf, start), length, _addr(out), out.size)
    if r < 0:
        raise Unsupported("a malformed DELTA_BINARY_PACKED stream")
    return r


def plain_binary(buf: np.ndarray, start: int, length: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` PLAIN byte arrays of ``buf[start:start + length]`` as (int32 offsets, the bytes)."""
    assert start + length <= buf.size and length >= 0
    if length < 4 * n:
        raise Unsupported("a dictionary page shorter than its entries")
    offs = np.empty(n + 1, np.int32)
    # (room for ``length`` bytes, not ``length - 4 n``: a damaged page whose first values are longer than
    # its entry count allows is refused only when the stream runs out, and its bytes are written first)
    data = np.empty(length, np.uint8)
    r = _LIB.get()["kp_plain_binary"](_addr(buf, start), length, n, _addr(offs), _addr(data))
    if r < 0:
        raise Unsupported("a malformed dictionary page")
    return offs, data[:r]


def views(offs: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Arrow binary views (uint8 (n, 16)) of the values at int32 ``offs`` into ``data`` (uint8)."""
    assert offs.dtype == np.int32 and offs.flags.c_contiguous and data.dtype == np.uint8 and data.flags.c_contiguous
    n = offs.size - 1
    if n < 0 or (n and (int(offs[0]) < 0 or int(offs[-1]) > data.size or bool((np.diff(offs) < 0).any()))):
        raise ValueError("offsets outside their data, or decreasing")
    out = np.empty((n, 16), np.uint8)
    _LIB.get()["kp_views"](_addr(offs), _addr(data), n, _addr(out))
    return out


def unview(views: int, n: int, bufs: np.ndarray, offs: np.ndarray, data: np.ndarray) -> None:
    """The ``n`` binary views at address ``views`` (long values in the buffers at the int64 addresses ``bufs``)
    copied to ``data`` (uint8) at the int64 ``offs`` (``n`` + 1, from the views' lengths, 0 at null rows)."""
    assert offs.dtype == np.int64 and offs.size == n + 1 and offs.flags.c_contiguous and bufs.dtype == np.int64
    assert data.dtype == np.uint8 and data.size >= int(offs[-1]) and bool((np.diff(offs) >= 0).all())
    if n:
        _LIB.get()["kp_unview"](views, n, _addr(bufs), _addr(offs), _addr(data))


def reference_hybrid(src: bytes, bw: int, n: int) -> tuple[list[int], int]:
    """:func:`hybrid` in pure Python (the spec's reading, value by value): (values, bytes consumed)."""
    if bw > 32:
        raise Unsupported("bit width over 32")
    out: list[int] = []
    pos = 0
    vb = (bw + 7) // 8
    while len(out) < n:
        h = s = 0
        while True:
            if pos >= len(src) or s >= 35:
                raise Unsupported("a malformed RLE/bit-packed stream")
            b = src[pos]
            pos += 1
            h |= (b & 0x7F) << s
            s += 7
            if b < 0x80:
                break
        count = h >> 1
        if count == 0:
            raise Unsupported("a malformed RLE/bit-packed stream")
        if h & 1:
            nbytes = count * bw
            if pos + nbytes > len(src):
                raise Unsupported("a malformed RLE/bit-packed stream")
            bits = int.from_bytes(src[pos:pos + nbytes], "little")
            for j in range(min(8 * count, n - len(out))):
                out.append((bits >> (j * bw)) & ((1 << bw) - 1))
            pos += nbytes
        else:
            if pos + vb > len(src):
                raise Unsupported("a malformed RLE/bit-packed stream")
            v = int.from_bytes(src[pos:pos + vb], "little")
            out.extend([v] * min(count, n - len(out)))
            pos += vb
    return out, pos


def reference_delta(src: bytes, n: int) -> tuple[list[int], int]:
    """:func:`delta` in pure Python (the spec's reading, value by value): (values, bytes consumed)."""
    pos = 0

    def uleb() -> int:
        nonlocal pos
        v = s = 0
        while True:
            if pos >= len(src) or s >= 70:
                raise Unsupported("a malformed DELTA_BINARY_PACKED stream")
            b = src[pos]
            pos += 1
            v |= (b & 0x7F) << s
            s += 7
            if b < 0x80:
                return v & (1 << 64) - 1

    def zigzag(v: int) -> int:
        return (v >> 1) ^ -(v & 1)

    def wrap(v: int) -> int:  # int64, two's complement
        v &= (1 << 64) - 1
        return v - (1 << 64) if v >> 63 else v

    bs, nmb, total, first = uleb(), uleb(), uleb(), wrap(zigzag(uleb()))
    if bs == 0 or bs % 128 or bs > 1 << 20 or nmb == 0 or nmb > bs or bs % nmb or (bs // nmb) % 8 or total != n:
        raise Unsupported("a DELTA_BINARY_PACKED header this does not read")
    vpm = bs // nmb
    out = [first] if n else []
    while len(out) < n:
        md = wrap(zigzag(uleb()))
        widths = src[pos:pos + nmb]
        if len(widths) < nmb:
            raise Unsupported("a malformed DELTA_BINARY_PACKED stream")
        pos += nmb
        for bw in widths:
            if len(out) >= n:
                break
            size = vpm * bw // 8
            if bw > 64 or pos + size > len(src):
                raise Unsupported("a malformed DELTA_BINARY_PACKED stream")
            packed = int.from_bytes(src[pos:pos + size], "little")
            for j in range(min(vpm, n - len(out))):
                out.append(wrap(out[-1] + md + (packed >> (j * bw) & (1 << bw) - 1)))
            pos += size
    return out, pos


def reference_plain_binary(src: bytes, n: int) -> list[bytes]:
    """:func:`plain_binary` in pure Python."""
    out, pos = [], 0
    for _ in range(n):
        if pos + 4 > len(src):
            raise Unsupported("a malformed dictionary page")
        m = int.from_bytes(src[pos:pos + 4], "little")
        if pos + 4 + m > len(src):
            raise Unsupported("a malformed dictionary page")
        out.append(bytes(src[pos + 4:pos + 4 + m]))
        pos += 4 + m
    return out


# ---- zstd ----------------------------------------------------------------------------------------

_zstd_lock = threading.Lock()
_zstd_lib: ctypes.CDLL | None = None


def _zstd() -> ctypes.CDLL:
    """The system's libzstd (Debian's libzstd1: dpkg itself needs it), or :class:`Unsupported`."""
    global _zstd_lib
    with _zstd_lock:
        if _zstd_lib is None:
            try:
                lib = ctypes.CDLL("libzstd.so.1")
            except OSError:
                raise Unsupported("no libzstd.so.1") from None
            lib.ZSTD_createDCtx.restype = ctypes.c_void_p
            lib.ZSTD_createDCtx.argtypes = []
            lib.ZSTD_freeDCtx.restype = ctypes.c_size_t
            lib.ZSTD_freeDCtx.argtypes = [ctypes.c_void_p]
            lib.ZSTD_decompressDCtx.restype = ctypes.c_size_t
            lib.ZSTD_decompressDCtx.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_size_t, ctypes.c_void_p,
                                                                        ctypes.c_size_t]  # fmt: skip
            lib.ZSTD_isError.restype = ctypes.c_uint
            lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
            _zstd_lib = lib
        return _zstd_lib


# ---- pages ------------------------------------------------------------------------------------


@dataclass
class DictColumn:
    """One row group's dictionary-encoded column: its dictionary page and one index per row.

    ``indices``: int32, one per row (0 at a null row); ``valid``: the rows' validity bitmap
    (Arrow's: least significant bit first), empty when no row is null; ``dictionary``: the page's
    PLAIN bytes (for :func:`plain_binary` or as int32 values) and its entry count.
    """

    indices: np.ndarray
    valid: np.ndarray
    nulls: int
    dictionary: np.ndarray
    entries: int


class Reader:
    """Reads dictionary-encoded (and INT64) columns of one open file, chunk by chunk (one reader per thread).

    Its buffers are reused from chunk to chunk (fresh 4 MB arrays cost a cold 10M-record read
    ~0.08 s of page faults): a :class:`DictColumn`'s indices are valid until the next read of the
    same column.
    """

    def __init__(self, fd: int, footer: Footer):
        self.fd, self.footer = fd, footer
        self._z = None
        self._dctx = None
        self._bufs: dict = {}

    def close(self) -> None:
        if self._dctx is not None:
            self._z.ZSTD_freeDCtx(self._dctx)
            self._dctx = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _buffer(self, name: str, n: int, dtype) -> np.ndarray:
        b = self._bufs.get(name)
        if b is None or b.size < n or b.dtype != dtype:
            b = self._bufs[name] = np.empty(max(n, 0 if b is None else b.size), dtype)
        return b[:n]

    def column(self, group: int, name: str, values: bool = False) -> DictColumn:
        """Column ``name`` of row group ``group``; with ``values`` (an INT32 column) each row's value,
        not its index (a null row: 0).

        The page headers are read here (Python); the pages' bodies are decompressed and decoded by one
        call of ``kp_chunk``, which holds no GIL: a call per page (~1,500 at 10M records) waited for the
        GIL after each while the main thread imported Polars, and the read took 1.1 s, not 0.6.
        """
        rows, col, ch = self._chunk(group, name)
        if values and col.physical != _INT32:
            raise Unsupported("values of a column that is not INT32")
        if not ch.has_dictionary:
            raise Unsupported("not one dictionary-encoded value per row")
        raw = self._raw(ch)
        table, dict_len, entries, most = self._pages(raw, ch, col)
        out = self._buffer("out", dict_len + most + PAD, np.uint8)
        out[dict_len + most:] = 0
        indices = self._buffer("ix:" + name, rows, np.int32)
        defs = self._buffer("defs", rows if col.optional else 1, np.int32)
        dense = self._buffer("dense", rows if col.optional else 1, np.int32)
        if values and dict_len < 4 * entries:
            raise Unsupported("an INT32 dictionary shorter than its entries")
        zfn = dctx = None
        if ch.codec == _ZSTD:
            dctx = self._zstd_context()
            zfn = ctypes.cast(self._z.ZSTD_decompressDCtx, ctypes.c_void_p).value
        r = _LIB.get()["kp_chunk"](raw.ctypes.data, out.ctypes.data, table.ctypes.data, table.shape[0], zfn, dctx,
                                   int(col.optional), int(values), indices.ctypes.data, rows, defs.ctypes.data,
                                   dense.ctypes.data)  # fmt: skip
        if r < 0:
            raise Unsupported(_CHUNK_ERRORS.get(r, "a malformed column chunk"))
        if r:
            valid = np.packbits(defs[:rows] != 0, bitorder="little")
        else:
            valid = np.zeros(0, np.uint8)
        return DictColumn(indices, valid, int(r), out[:dict_len].copy(), entries)

    def int64(self, group: int, name: str) -> np.ndarray:
        """Column ``name`` of row group ``group``, an INT64 column of PLAIN or DELTA_BINARY_PACKED pages
        without a null row (a keyscope sample's offsets and timestamps): one value a row.

        Why: ``whatif --salt-hot`` and ``recommend`` read the hot keys' records' offsets; pyarrow's read of
        them cost a cold 10M-record whatif ~0.25 s on its main thread, and its import.  A call per page
        is fine here (zstd, the levels, ``kp_delta``, each without the GIL): a chunk of these has a few
        pages of ~1 MB, not hundreds.  Valid until the next read of the same column.
        """
        try:
            return self._int64(group, name)
        except (TypeError, AttributeError, KeyError) as e:  # a damaged header: a field of another type
            raise Unsupported(f"a malformed page header ({type(e).__name__})") from None

    def _int64(self, group: int, name: str) -> np.ndarray:
        rows, col, ch = self._chunk(group, name)
        if col.physical != _INT64 or ch.has_dictionary:
            raise Unsupported("not an INT64 column of PLAIN or delta pages")
        raw = self._raw(ch)
        out = self._buffer("i64:" + name, rows, np.int64)
        page = self._buffer("page", ch.uncompressed + DELTA_PAD, np.uint8)
        levels = self._buffer("levels", rows, np.int32)
        row = pos = 0
        while pos < ch.size:
            ph, body, usize, csize = self._header(raw, pos, ch)
            kind = ph.get(1)
            if kind != _DATA_PAGE and kind != _DATA_PAGE_V2:
                raise Unsupported(f"page type {kind}")
            v2 = kind == _DATA_PAGE_V2
            h = ph.get(8 if v2 else 5, {})
            nv, enc = h.get(1, -1), h.get(4 if v2 else 2)
            if nv < 0 or row + nv > rows:
                raise Unsupported("pages whose values are not the row group's rows")
            src, slen, ulen, comp = body, csize, usize, ch.codec == _ZSTD
            if v2:
                dlen, rlen = h.get(5, -1), h.get(6, -1)
                if h.get(2) != 0 or rlen != 0 or not 0 <= dlen <= min(csize, usize):
                    raise Unsupported("a page with null rows or repetition levels")
                src, slen, ulen, comp = body + dlen, csize - dlen, usize - dlen, comp and h.get(7, True)
            if comp:
                ctx = self._zstd_context()
                got = self._z.ZSTD_decompressDCtx(ctx, page.ctypes.data, ulen, raw.ctypes.data + src, slen)
                if got != ulen:
                    raise Unsupported("a page that does not decompress to its size")
            elif slen != ulen:
                raise Unsupported("a page that does not decompress to its size")
            else:
                page[:ulen] = raw[src:src + ulen]
            page[ulen:ulen + DELTA_PAD] = 0
            at = 0
            if col.optional and not v2:  # v1: the definition levels first (all 1: no null row)
                dl = int.from_bytes(page[:4].tobytes(), "little") if ulen >= 4 else -1
                if dl < 0 or 4 + dl > ulen:
                    raise Unsupported("a malformed page")
                hybrid(page, 4, dl, 1, levels[row:row + nv])
                if nv and not bool((levels[row:row + nv] == 1).all()):
                    raise Unsupported("a null row")
                at = 4 + dl
            if enc == _DELTA_BINARY_PACKED:
                delta(page, at, ulen - at, out[row:row + nv])
            elif enc == _PLAIN and ulen - at >= 8 * nv:
                out[row:row + nv] = np.frombuffer(page, np.int64, count=nv, offset=at)
            else:
                raise Unsupported(f"a page of encoding {enc}")
            row += nv
            pos = body + csize
        if row != rows:
            raise Unsupported("pages whose values are not the row group's rows")
        return out

    def _chunk(self, group: int, name: str) -> tuple[int, Column, Chunk]:
        """(the row group's rows, the column, its chunk), or :class:`Unsupported` unless it is one value a row
        of a codec this reads."""
        ci = self.footer.index(name)
        if ci < 0:
            raise Unsupported(f"no column {name}")
        rows, chunks = self.footer.row_groups[group]
        col, ch = self.footer.columns[ci], chunks[ci]
        if ch.codec not in (_UNCOMPRESSED, _ZSTD):
            raise Unsupported(f"codec {ch.codec}")
        if ch.num_values != rows or not 0 <= rows < 1 << 31:
            raise Unsupported("not one value per row")
        return rows, col, ch

    def _raw(self, ch: Chunk) -> np.ndarray:
        """The chunk's bytes (its pages, headers included), :data:`PAD` zero bytes after them."""
        raw = self._buffer("raw", ch.size + PAD, np.uint8)
        if os.preadv(self.fd, [memoryview(raw)[:ch.size]], ch.start) != ch.size:
            raise Unsupported("a column chunk past the end of the file")
        raw[ch.size:] = 0
        return raw

    def _zstd_context(self) -> int:
        if self._dctx is None:
            self._z = _zstd()
            self._dctx = self._z.ZSTD_createDCtx()
            if not self._dctx:
                raise MemoryError("ZSTD_createDCtx")
        return self._dctx

    def _header(self, raw: np.ndarray, pos: int, ch: Chunk) -> tuple[dict, int, int, int]:
        """The page header at ``raw[pos:]``: (its fields, the body's offset, decompressed and compressed bytes),
        checked to lie within the chunk."""
        try:
            head = raw[pos:min(pos + 512, ch.size)].tobytes()
            try:
                ph, hend = page_header(head)
            except Unsupported:  # (a header over 512 bytes: read it whole)
                if len(head) == ch.size - pos:
                    raise
                ph, hend = page_header(raw[pos:ch.size].tobytes())
            usize, csize = ph.get(2, -1), ph.get(3, -1)
            if not isinstance(usize, int) or not isinstance(csize, int):
                raise TypeError("page sizes")
        except (TypeError, AttributeError, KeyError) as e:  # a damaged header: a field of another type
            raise Unsupported(f"a malformed page header ({type(e).__name__})") from None
        body = pos + hend
        if csize < 0 or usize < 0 or body + csize > ch.size or usize > ch.uncompressed:
            raise Unsupported("a page past its column chunk")
        return ph, body, usize, csize

    def _pages(self, raw: np.ndarray, ch: Chunk, col: Column):
        """The page table ``kp_chunk`` reads (int64, 8 a page), the dictionary's bytes and entries, and the
        largest data page's decompressed bytes."""
        try:
            return self._page_table(raw, ch, col)
        except (TypeError, AttributeError, KeyError) as e:  # a damaged header: a field of another type
            raise Unsupported(f"a malformed page header ({type(e).__name__})") from None

    def _page_table(self, raw: np.ndarray, ch: Chunk, col: Column):
        rows: list = []
        dict_len = entries = most = 0
        compressed = ch.codec != _UNCOMPRESSED
        pos = 0
        while pos < ch.size:
            ph, body, usize, csize = self._header(raw, pos, ch)
            kind = ph.get(1)
            if kind == _DICTIONARY_PAGE:
                dh = ph.get(7, {})
                if rows or dh.get(2) not in (_PLAIN, _PLAIN_DICTIONARY) or dh.get(1, -1) < 0:
                    raise Unsupported("a second or non-PLAIN dictionary page")
                entries, dict_len = dh[1], usize
                rows.append((0, body, csize, usize, int(compressed), entries, 0, 0))
            elif kind == _DATA_PAGE or kind == _DATA_PAGE_V2:
                if not rows:
                    raise Unsupported("a data page before the dictionary")
                v2 = kind == _DATA_PAGE_V2
                h = ph.get(8 if v2 else 5, {})
                n = h.get(1, -1)
                if h.get(4 if v2 else 2) not in (_RLE_DICTIONARY, _PLAIN_DICTIONARY) or n < 0:
                    raise Unsupported("a data page that is not dictionary indices")
                if v2:
                    dlen, rlen = h.get(5, -1), h.get(6, -1)
                    lv = usize - dlen
                    if rlen != 0 or dlen < 0 or dlen > csize or lv < 0 or (dlen and not col.optional):
                        raise Unsupported("repetition levels")
                    comp = compressed and h.get(7, True)
                    rows.append((2, body + dlen, csize - dlen, lv, int(comp), n, body, dlen))
                    most = max(most, lv)
                else:
                    rows.append((1, body, csize, usize, int(compressed), n, 0, 0))
                    most = max(most, usize)
            else:
                raise Unsupported(f"page type {kind}")
            pos = body + csize
        if not rows:
            raise Unsupported("no dictionary page")
        return np.array(rows, np.int64).reshape(-1, len(PAGE_FIELDS)), dict_len, entries, most


_CHUNK_ERRORS = {
    -1: "a malformed RLE/bit-packed stream",
    -2: "a page that does not decompress to its size",
    -3: "pages whose values are not the row group's rows",
    -4: "a dictionary index past its dictionary, or a bit width over 32",
}
