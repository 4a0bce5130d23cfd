"""One pass over a sample's records: the (key, partition) table, in a compiled kernel.

Why not ``group_by(key, partition)`` in Polars: on 10M records it is most of
``analyze``'s time (hashing and comparing Binary keys through generic
machinery, ~0.4-0.8 s here).  This kernel reads the keys straight from the
Arrow binary-view buffers (like :mod:`keyscope._kernels`), keeps an
open-addressing table keyed by (key bytes, partition) with exact byte
comparison (no hash-collision guesswork), and in the same pass sums records,
bytes and squared bytes per group, counts null keys per partition, and keeps
each partition's offset/timestamp extremes for rates.

Imported lazily; :func:`keyscope.analysis.key_partition_table` uses it for
large samples and Polars for small ones, and tests check both agree.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

I64_MIN = np.iinfo(np.int64).min
I64_MAX = np.iinfo(np.int64).max


@intrinsic
def _u64(typingctx, addr):
    """Unaligned little-endian uint64 load at an integer address."""
    sig = types.uint64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(64).as_pointer())
        val = builder.load(ptr)
        val.align = 1
        return val

    return sig, codegen


@intrinsic
def _u8(typingctx, addr):
    sig = types.uint64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(8).as_pointer())
        return builder.zext(builder.load(ptr), ir.IntType(64))

    return sig, codegen


@intrinsic
def _i32(typingctx, addr):
    sig = types.int64(types.int64)

    def codegen(context, builder, signature, args):
        ptr = builder.inttoptr(args[0], ir.IntType(32).as_pointer())
        val = builder.load(ptr)
        val.align = 1
        return builder.sext(val, ir.IntType(64))

    return sig, codegen


@njit(inline="always", cache=True)
def _long_equal(p, q, ln):
    """Keys of > 16 bytes at addresses p and q, compared 8 bytes at a time (the last word may overlap)."""
    k = 0
    while k + 8 <= ln:
        if _u64(p + k) != _u64(q + k):
            return False
        k += 8
    return not (k < ln and _u64(p + ln - 8) != _u64(q + ln - 8))


_K1 = np.uint64(0x9E3779B97F4A7C15)
_K2 = np.uint64(0xC2B2AE3D27D4EB4F)
_K3 = np.uint64(0x165667B19E3779F9)


# The table is open-addressed over group records themselves (no index array, so
# a record costs one cache miss, not two).  Each record is 8 x 64 bits, one
# cache line: hash, w0, w1, len | partition << 32, records (0 = empty slot),
# bytes, first row, and squared bytes (a float64 view of the same memory).
# Keys of <= 16 bytes live whole in (w0, w1), so matching them never touches
# the key buffers; longer keys keep their address in w0 and are compared word
# by word (an overlapping last word instead of a byte loop).
_H, _W0, _W1, _LP, _REC, _BYTES, _ROW, _BSQ = 0, 1, 2, 3, 4, 5, 6, 7
_WIDTH = 8


@njit(inline="always", cache=True)
def _mix(h, w):
    w = w * _K1
    return (h ^ (w ^ (w >> np.uint64(29)))) * _K2


@njit(inline="always", cache=True)
def _low(w, nbytes):
    """The low ``nbytes`` (0..8) bytes of w."""
    if nbytes >= 8:
        return w
    return w & ((np.uint64(1) << np.uint64(8 * nbytes)) - np.uint64(1))


@njit(cache=True, nogil=True)
def _scan(
    views, n, buf_addrs, valid, vbit, parts, vsize, offs, ts, a0, rbase,
    gd, gdf, ng, limit,
    nrec, nbytes, nbsq, omin, omax, tmin, tmax,
):  # fmt: skip
    """Group rows [0, n) of one key chunk; stop early (return the row) when ``limit`` groups exist.

    Row i's other columns are at ``a0 + i`` in ``parts``/``vsize``/``offs``/``ts``
    (arrays of the current slice); its row in the whole frame is ``rbase + a0 + i``.
    """
    mask = np.uint64(gd.shape[0] - 1)
    has_valid = valid.size > 0
    has_ts = ts.size > 0
    for i in range(n):
        r = a0 + i
        part = np.int64(parts[r])
        size = np.int64(vsize[r])
        t = ts[r] if has_ts else I64_MIN
        if t != I64_MIN:
            o = offs[r]
            if o < omin[part]:
                omin[part] = o
            if o > omax[part]:
                omax[part] = o
            if t < tmin[part]:
                tmin[part] = t
            if t > tmax[part]:
                tmax[part] = t
        bit = vbit + i
        if has_valid and ((valid[bit >> 3] >> (bit & 7)) & 1) == 0:
            nrec[part] += 1
            nbytes[part] += size
            nbsq[part] += float(size) * float(size)
            continue
        v = views + 16 * i
        ln = _i32(v)
        lp = np.uint64(ln) | (np.uint64(part) << np.uint64(32))
        h = _K3 ^ (lp * _K1)
        p = np.int64(0)
        if ln <= 12:  # inline in the view, zero bytes masked off
            w0 = _low(_u64(v + 4), ln)
            w1 = _low(_u64(v + 8) >> np.uint64(32), ln - 8) if ln > 8 else np.uint64(0)
            h = _mix(_mix(h, w0), w1)
        else:
            p = buf_addrs[_i32(v + 8)] + _i32(v + 12)
            if ln <= 16:
                w0 = _u64(p)
                w1 = _u64(p + ln - 8)  # overlapping: bytes [ln-8, ln)
                h = _mix(_mix(h, w0), w1)
            else:
                j = 0
                while j + 8 <= ln:
                    h = _mix(h, _u64(p + j))
                    j += 8
                if j < ln:
                    h = _mix(h, _u64(p + ln - 8))
                w0 = np.uint64(p)
                w1 = _u64(p)
        h ^= h >> np.uint64(32)
        slot = h & mask
        size = size + ln
        while True:
            if gd[slot, _REC] == 0:
                if ng >= limit:
                    return i, ng  # caller grows the table and calls again from row i
                gd[slot, _H] = h
                gd[slot, _W0] = w0
                gd[slot, _W1] = w1
                gd[slot, _LP] = lp
                gd[slot, _REC] = 1
                gd[slot, _BYTES] = size
                gd[slot, _ROW] = rbase + r
                gdf[slot, _BSQ] = float(size) * float(size)
                ng += 1
                break
            if gd[slot, _H] == h and gd[slot, _LP] == lp and gd[slot, _W1] == w1:
                if ln <= 16:
                    same = gd[slot, _W0] == w0
                else:
                    q = np.int64(gd[slot, _W0])
                    same = _long_equal(p, q, ln)
                if same:
                    gd[slot, _REC] += 1
                    gd[slot, _BYTES] += size
                    gdf[slot, _BSQ] += float(size) * float(size)
                    break
            slot = (slot + np.uint64(1)) & mask
    return n, ng


@njit(cache=True)
def _rehash(old, new):
    mask = np.uint64(new.shape[0] - 1)
    for s in range(old.shape[0]):
        if old[s, _REC] == 0:
            continue
        slot = old[s, _H] & mask
        while new[slot, _REC] != 0:
            slot = (slot + np.uint64(1)) & mask
        for f in range(_WIDTH):
            new[slot, f] = old[s, f]


@njit(cache=True, nogil=True)
def _merge(gd, gdf, ng, src, srcf):
    """Add the groups of ``src`` into ``gd`` (which has room for all of them)."""
    mask = np.uint64(gd.shape[0] - 1)
    for s in range(src.shape[0]):
        if src[s, _REC] == 0:
            continue
        h, lp, w0, w1 = src[s, _H], src[s, _LP], src[s, _W0], src[s, _W1]
        ln = np.int64(lp & np.uint64(0xFFFFFFFF))
        slot = h & mask
        while True:
            if gd[slot, _REC] == 0:
                for f in range(_WIDTH):
                    gd[slot, f] = src[s, f]
                ng += 1
                break
            if gd[slot, _H] == h and gd[slot, _LP] == lp and gd[slot, _W1] == w1:
                if ln <= 16:
                    same = gd[slot, _W0] == w0
                else:
                    p, q = np.int64(w0), np.int64(gd[slot, _W0])
                    same = _long_equal(p, q, ln)
                if same:
                    gd[slot, _REC] += src[s, _REC]
                    gd[slot, _BYTES] += src[s, _BYTES]
                    gdf[slot, _BSQ] += srcf[s, _BSQ]
                    if src[s, _ROW] < gd[slot, _ROW]:
                        gd[slot, _ROW] = src[s, _ROW]
                    break
            slot = (slot + np.uint64(1)) & mask
    return ng


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
                    done, r0, g.gd, g.gd.view(np.float64), g.ng, g.limit,
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
    return part.to_numpy(), vsize, offs, tms


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
        g.ng = _merge(g.gd, g.gd.view(np.float64), g.ng, w.groups.gd, w.groups.gd.view(np.float64))
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
    has_null = np.flatnonzero(main.nrec)
    if has_null.size:
        nulls = pl.DataFrame(
            {
                "key": pl.Series([None] * has_null.size, dtype=pl.Binary),
                "partition": has_null.astype(np.int32),
                "records": main.nrec[has_null],
                "bytes": main.nbytes[has_null],
                "bytes_sq": main.nbsq[has_null],
            }
        )
        kp = pl.concat([kp, nulls])
    del keep
    return kp, {"omin": main.omin, "omax": main.omax, "tmin": main.tmin, "tmax": main.tmax}


# --------------------------------------------------------------------------
# Dictionary encoding: a dense integer code per row, for what-if's unit tables.
# Same view reading and hashing as _scan; a slot is 4 x 64 bits: hash, w0, w1,
# len | (code + 1) << 32 (0 = empty).  Exact: values are compared byte for byte.
_EH, _EW0, _EW1, _ELC = 0, 1, 2, 3


@njit(cache=True, nogil=True)
def _encode(views, n, buf_addrs, valid, vbit, out, o0, tab, ng, limit, firsts):
    """Code rows [0, n) of one chunk into ``out[o0:]``; stop early (return the row) at ``limit`` codes."""
    mask = np.uint64(tab.shape[0] - 1)
    has_valid = valid.size > 0
    low32 = np.uint64(0xFFFFFFFF)
    for i in range(n):
        bit = vbit + i
        if has_valid and ((valid[bit >> 3] >> (bit & 7)) & 1) == 0:
            out[o0 + i] = -1
            continue
        v = views + 16 * i
        ln = _i32(v)
        h = _K3 ^ (np.uint64(ln) * _K1)
        p = np.int64(0)
        if ln <= 12:
            w0 = _low(_u64(v + 4), ln)
            w1 = _low(_u64(v + 8) >> np.uint64(32), ln - 8) if ln > 8 else np.uint64(0)
            h = _mix(_mix(h, w0), w1)
        else:
            p = buf_addrs[_i32(v + 8)] + _i32(v + 12)
            if ln <= 16:
                w0 = _u64(p)
                w1 = _u64(p + ln - 8)
                h = _mix(_mix(h, w0), w1)
            else:
                j = 0
                while j + 8 <= ln:
                    h = _mix(h, _u64(p + j))
                    j += 8
                if j < ln:
                    h = _mix(h, _u64(p + ln - 8))
                w0 = np.uint64(p)
                w1 = _u64(p)
        h ^= h >> np.uint64(32)
        slot = h & mask
        while True:
            lc = tab[slot, _ELC]
            if lc == 0:
                if ng >= limit:
                    return i, ng
                tab[slot, _EH] = h
                tab[slot, _EW0] = w0
                tab[slot, _EW1] = w1
                tab[slot, _ELC] = np.uint64(ln) | (np.uint64(ng + 1) << np.uint64(32))
                firsts[ng] = o0 + i
                out[o0 + i] = ng
                ng += 1
                break
            if tab[slot, _EH] == h and (lc & low32) == np.uint64(ln) and tab[slot, _EW1] == w1:
                if ln <= 16:
                    same = tab[slot, _EW0] == w0
                else:
                    q = np.int64(tab[slot, _EW0])
                    same = _long_equal(p, q, ln)
                if same:
                    out[o0 + i] = np.int64(lc >> np.uint64(32)) - 1
                    break
            slot = (slot + np.uint64(1)) & mask
    return n, ng


@njit(cache=True)
def _erehash(old, new):
    mask = np.uint64(new.shape[0] - 1)
    for s in range(old.shape[0]):
        if old[s, _ELC] == 0:
            continue
        slot = old[s, _EH] & mask
        while new[slot, _ELC] != 0:
            slot = (slot + np.uint64(1)) & mask
        for f in range(4):
            new[slot, f] = old[s, f]


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
    import pyarrow as pa

    n_rows = len(series)
    out = np.empty(n_rows, np.int32) if out is None else out
    arr = series.to_frame().to_arrow(compat_level=pl.CompatLevel.newest()).column(0)
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    keep = [arr]
    cap = max(16, 1 << int(cap - 1).bit_length())
    tab = np.zeros((2 * cap, 4), np.uint64)
    firsts = np.empty(cap, np.int64)
    ng, row0 = 0, 0
    for chunk in chunks:
        n = len(chunk)
        if n == 0:
            continue
        if not (pa.types.is_binary_view(chunk.type) or pa.types.is_string_view(chunk.type)):
            chunk = chunk.cast(pa.binary_view() if pa.types.is_binary(chunk.type) or pa.types.is_large_binary(chunk.type) else pa.string_view())
        bufs = chunk.buffers()
        buf_addrs = np.array([b.address if b is not None else 0 for b in bufs[2:]] or [0], dtype=np.int64)
        valid = np.frombuffer(bufs[0], dtype=np.uint8) if bufs[0] is not None and chunk.null_count else np.zeros(0, np.uint8)
        keep += [chunk, buf_addrs, valid]
        views = bufs[1].address + 16 * chunk.offset
        done = 0
        while done < n:
            stop, ng = _encode(
                views + 16 * done, n - done, buf_addrs, valid, chunk.offset + done,
                out, row0 + done, tab, ng, _encode_limit(tab.shape[0]), firsts,
            )  # fmt: skip
            done += stop
            if done < n:  # full: double the table and the first-row list
                new = np.zeros((2 * tab.shape[0], 4), np.uint64)
                _erehash(tab, new)
                tab = new
                firsts = np.concatenate([firsts, np.empty(max(0, _encode_limit(tab.shape[0]) - len(firsts)), np.int64)])
        row0 += n
    del keep
    return out, firsts[:ng].copy()
