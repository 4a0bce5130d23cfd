"""Compiled hash kernels over Arrow buffers (numba).

Why raw addresses: a key column arrives from Polars as a binary *view* array
(16-byte views, short keys inline, long keys pointing into one of several data
buffers).  Copying it to offsets+data costs more than hashing it (PERF-NOTES),
and passing arrays into a per-key helper makes numba emit a reference-count
update per key.  So the kernels read bytes through plain integer addresses,
computed once per key from the view, and the callers keep the buffers alive.

Imported lazily: ``import numba`` plus a warm cache costs ~0.3 s, which a
``keyscope partition KEY`` for a handful of keys must not pay.
"""

from __future__ import annotations

import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

if sys.byteorder != "little":  # pragma: no cover - every supported target is LE
    raise ImportError("keyscope's hash kernels assume a little-endian machine")


@intrinsic
def _load_u32(typingctx, addr):
    """Unaligned little-endian uint32 load at an integer address."""
    sig = types.uint64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(32).as_pointer())
        val = builder.load(ptr)
        val.align = 1
        return builder.zext(val, ir.IntType(64))

    return sig, codegen


@intrinsic
def _load_u8(typingctx, addr):
    sig = types.uint64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(8).as_pointer())
        return builder.zext(builder.load(ptr), ir.IntType(64))

    return sig, codegen


@intrinsic
def _load_i32(typingctx, addr):
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(32).as_pointer())
        val = builder.load(ptr)
        val.align = 1
        return builder.sext(val, ir.IntType(64))

    return sig, codegen


_M32 = np.uint64(0xFFFFFFFF)


@njit(inline="always", cache=True)
def _murmur2_op(p, n):
    m = np.uint64(0x5BD1E995)
    h = (np.uint64(0x9747B28C) ^ np.uint64(n)) & _M32
    n4 = n & ~3
    i = 0
    while i < n4:
        k = _load_u32(p + i)
        k = (k * m) & _M32
        k ^= k >> np.uint64(24)
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
        i += 4
    tail = n & 3
    if tail >= 3:
        h ^= _load_u8(p + n4 + 2) << np.uint64(16)
    if tail >= 2:
        h ^= _load_u8(p + n4 + 1) << np.uint64(8)
    if tail >= 1:
        h ^= _load_u8(p + n4)
        h = (h * m) & _M32
    h ^= h >> np.uint64(13)
    h = (h * m) & _M32
    h ^= h >> np.uint64(15)
    return h & np.uint64(0x7FFFFFFF)


@njit(inline="always", cache=True)
def _fnv1a_op(p, n):
    h = np.uint64(0x811C9DC5)
    prime = np.uint64(0x01000193)
    for i in range(n):
        h = ((h ^ _load_u8(p + i)) * prime) & _M32
    # abs(int32(h)) as an unsigned value
    if h & np.uint64(0x80000000):
        h = np.uint64(0x100000000) - h
    return h


def _crc_table():
    t = np.zeros(256, dtype=np.uint64)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t[i] = c
    return t


_CRC_TABLE = _crc_table()


@njit(inline="always", cache=True)
def _crc32_op(p, n, table):
    c = np.uint64(0xFFFFFFFF)
    for i in range(n):
        c = table[(c ^ _load_u8(p + i)) & np.uint64(0xFF)] ^ (c >> np.uint64(8))
    return c ^ np.uint64(0xFFFFFFFF)


# One kernel per (hash, layout): the hash is inlined, so the per-key loop has
# no call and no branch on the algorithm.


@njit(cache=True, nogil=True)
def _views_murmur2(views_addr, n, buf_addrs, out):
    for i in range(n):
        v = views_addr + 16 * i
        ln = _load_i32(v)
        p = v + 4 if ln <= 12 else buf_addrs[_load_i32(v + 8)] + _load_i32(v + 12)
        out[i] = _murmur2_op(p, ln)


@njit(cache=True, nogil=True)
def _views_fnv1a(views_addr, n, buf_addrs, out):
    for i in range(n):
        v = views_addr + 16 * i
        ln = _load_i32(v)
        p = v + 4 if ln <= 12 else buf_addrs[_load_i32(v + 8)] + _load_i32(v + 12)
        out[i] = _fnv1a_op(p, ln)


@njit(cache=True, nogil=True)
def _views_crc32(views_addr, n, buf_addrs, out, table):
    for i in range(n):
        v = views_addr + 16 * i
        ln = _load_i32(v)
        p = v + 4 if ln <= 12 else buf_addrs[_load_i32(v + 8)] + _load_i32(v + 12)
        out[i] = _crc32_op(p, ln, table)


def _run_views(name, views_addr, n, buf_addrs, out):
    if name == "murmur2":
        _views_murmur2(views_addr, n, buf_addrs, out)
    elif name == "fnv1a":
        _views_fnv1a(views_addr, n, buf_addrs, out)
    elif name == "consistent":
        _views_crc32(views_addr, n, buf_addrs, out, _CRC_TABLE)
    else:  # pragma: no cover - names are validated by partitioners
        raise ValueError(name)


def hash_binary(series, name: str) -> np.ndarray:
    """Modulo operands (uint32) for every row of a Polars Binary Series.

    Null rows get an arbitrary value; the caller masks them.
    """
    import polars as pl

    arr = series.to_arrow(compat_level=pl.CompatLevel.newest())
    chunks = arr.chunks if hasattr(arr, "chunks") else [arr]
    out = np.empty(len(series), dtype=np.uint32)
    pos = 0
    for chunk in chunks:
        n = len(chunk)
        if n == 0:
            continue
        if str(chunk.type) not in ("binary_view", "string_view"):
            import pyarrow as pa

            chunk = chunk.cast(pa.binary_view())
        bufs = chunk.buffers()
        views = bufs[1]
        buf_addrs = np.array([b.address if b is not None else 0 for b in bufs[2:]] or [0], dtype=np.int64)
        views_addr = views.address + 16 * chunk.offset
        _run_views(name, views_addr, n, buf_addrs, out[pos : pos + n])
        pos += n
    return out


def warm() -> None:
    """Compile (or load from cache) every kernel once."""
    import polars as pl

    s = pl.Series(["a" * 20, "b"], dtype=pl.Binary)
    for name in ("murmur2", "fnv1a", "consistent"):
        hash_binary(s, name)
