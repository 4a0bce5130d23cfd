"""MurmurHash3 x86_32 over whole numpy columns: the salt hash (what ``mmh3.hash`` computes)."""

from __future__ import annotations

import numpy as np


# --------------------------------------------------------------------------
# MurmurHash3 x86_32 (what ``mmh3.hash`` computes), vectorised with numpy.
# mmh3 has no batch API and building a ``bytes`` per value costs more than the
# hash, so the salt hash runs over whole columns here.

_C1 = np.uint32(0xCC9E2D51)
_C2 = np.uint32(0x1B873593)


def _rotl(x, r):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _mix_k(k):
    k = k * _C1
    k = _rotl(k, 15)
    return k * _C2


def _fmix(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def murmur3_int64(values, seed: int = 0) -> np.ndarray:
    """``mmh3.hash(struct.pack("<q", v), seed, signed=False)`` for every v."""
    v = np.ascontiguousarray(np.asarray(values, dtype="<i8")).view("<u4").reshape(-1, 2)
    with np.errstate(over="ignore"):
        h = np.full(len(v), seed & 0xFFFFFFFF, dtype=np.uint32)
        for j in (0, 1):
            h = h ^ _mix_k(v[:, j])
            h = _rotl(h, 13) * np.uint32(5) + np.uint32(0xE6546B64)
        return _fmix(h ^ np.uint32(8))


# Above this many padded bytes the column is hashed in slices.
_PAD_LIMIT = 32 << 20


def murmur3_binary(values, seed: int = 0) -> np.ndarray:
    """``mmh3.hash(v, seed, signed=False)`` for a Binary/String column; null hashes as ``b""``.

    Keys are padded into a matrix of 4-byte blocks and mixed one block column
    at a time, so the loop is over block positions, not values.
    """
    import polars as pl

    s = values if isinstance(values, pl.Series) else pl.Series(values)
    if s.dtype == pl.String:
        s = s.cast(pl.Binary)
    s = s.fill_null(b"")
    n = len(s)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    lengths = s.bin.size().to_numpy().astype(np.int64)
    maxlen = int(lengths.max())
    width = (maxlen + 3) // 4 * 4 or 4
    if n * width > _PAD_LIMIT and n > 1:
        # one very long value must not make a huge matrix: hash in slices sorted by length
        order = np.argsort(lengths, kind="stable")
        out = np.empty(n, dtype=np.uint32)
        step = max(1, _PAD_LIMIT // max(width, 1) // 4)
        for i in range(0, n, step):
            idx = order[i : i + step]
            out[idx] = murmur3_binary(s.gather(idx), seed)
        return out
    # LargeBinary straight from Polars' views: to_arrow would import pyarrow (Array.cast also pandas, ~0.4 s cold)
    from ..io.arrow_c import binary_parts

    offsets, data = binary_parts(s)
    total = int(offsets[-1] - offsets[0])
    pad = np.zeros((n, width), dtype=np.uint8)
    if total:
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(total) - np.repeat(offsets[:-1] - offsets[0], lengths)
        pad[rows, cols] = data[offsets[0] : offsets[-1]]
    blocks = pad.view("<u4")
    nb = lengths // 4
    has_tail = (lengths % 4) != 0
    with np.errstate(over="ignore"):
        h = np.full(n, seed & 0xFFFFFFFF, dtype=np.uint32)
        for j in range(blocks.shape[1]):
            k = _mix_k(blocks[:, j])
            full = j < nb
            body = _rotl(h ^ k, 13) * np.uint32(5) + np.uint32(0xE6546B64)
            h = np.where(full, body, h)
            # the tail block is zero-padded, so its mix equals MurmurHash3's tail step
            h = np.where((j == nb) & has_tail, h ^ k, h)
        return _fmix(h ^ lengths.astype(np.uint32))
