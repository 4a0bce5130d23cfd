"""The (key, partition) table straight from a Parquet sample's dictionary pages, one row group at a time.

Why: ``keyscope analyze`` on 10M records spent ~0.5 s reading the key column
into memory (Polars, binary views: 160 MB) and ~0.4 s hashing every row's key
in the compiled scan (keyscope._keytable), and its peak RSS was 2.9x the
decoded key column.  A keyscope sample (pyarrow's writer) stores the keys
dictionary-encoded per row group: each row group holds its distinct keys once
and one small integer per row.  Read with ``read_dictionary``, the rows are
those integers; grouping (dictionary index, partition) is a ``bincount``, no
key is hashed per row, and only one row group's columns are in memory at a
time.  The distinct keys of all row groups (a few hundred thousand at most,
not ten million) are then matched across row groups by the compiled
dictionary encoder (:func:`keyscope._keytable.encode_arrow`).

pyarrow.parquet's ``ParquetFile`` is used, not ``read_table``: the latter goes
through ``pyarrow.dataset``, whose import cost a fresh process ~0.25 s.

The result is the table :func:`keyscope._keytable.scan` builds (same columns,
same sums; tests/test_parquet_keytable.py checks it against Polars'
``group_by``); None when the file does not suit this path (keys not
dictionary-encoded, not binary or text), so the caller scans the key column.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .._keytable import Encoder

# Direct bincount over (dictionary index, partition) while the bins stay within
# this many per row (plus a floor): beyond it (many partitions and many keys per
# row group) the pairs are first made dense with np.unique (a sort: slower, but exact).
DENSE_BINS_PER_ROW = 4
DENSE_BINS_MIN = 1 << 16


def _row_groups(f, cols, path, stop=None, ahead: int = 1, groups=None):
    """The file's row groups (or those numbered in ``groups``) in order, the next ``ahead`` read on threads
    while this one is used.

    ``ahead`` 0: each read on the caller's thread (one row group in memory at a time).
    (pyarrow releases the GIL while it decodes, and so does the kernel: on two cores the read,
    ~40% of this pass's CPU, overlaps the rest.  One thread per read by default: more were no
    faster for two columns and held more memory.)  After each row group pyarrow's pool hands
    its freed pages back: mimalloc kept them, and peak RSS of a cold 10M-record ``analyze``
    went from 332 to 285-291 MB with no more CPU (five runs each).
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa

    arrow_pool = pa.default_memory_pool()

    def read(i):
        if stop is not None and stop.is_set():
            raise Stopped
        try:
            return f.read_row_group(i, columns=cols, use_threads=False)
        except Exception as e:
            raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None

    order = list(range(f.metadata.num_row_groups)) if groups is None else list(groups)
    n = len(order)
    if n <= 1 or ahead == 0:  # one row group in memory at a time, read here
        for i in order:
            yield read(i)
            arrow_pool.release_unused()
        return
    with ThreadPoolExecutor(max_workers=ahead) as pool:
        pending = [pool.submit(read, order[i]) for i in range(min(ahead, n))]
        for i in range(n):
            t = pending.pop(0).result()
            if i + ahead < n:
                pending.append(pool.submit(read, order[i + ahead]))
            yield t
            del t
            arrow_pool.release_unused()


def release_memory() -> None:
    """Hand the pass's freed memory back to the system before the analysis allocates its own.

    The pass's numpy arrays (on the prefetch thread: from its own glibc arena) and pyarrow's
    reads (mimalloc) stay in the process once freed, and the analysis's later arrays (key
    tables, the perfect-hashing simulation) grew the peak RSS past them: +75 MB at 10M records.
    """
    try:
        import ctypes
        import sys

        if "pyarrow" in sys.modules:  # (not imported for it: the pages reader leaves nothing in its pool)
            sys.modules["pyarrow"].default_memory_pool().release_unused()
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


class Stopped(Exception):
    """A prefetch thread was told to stop (the process is exiting)."""


def _exact(x: np.ndarray) -> np.ndarray:
    """Float64 sums of integers back to int64 (exact: every sum here is far below 2**53)."""
    return np.rint(x).astype(np.int64)


def dictionary_keys(path, ident_check, partitions: int, file_names: set[str], parts=None):
    """(kp, null sums per partition) for the sample file at ``path``, or None when its keys are not dictionary pages.

    ``kp``: one Polars row per (key, partition): ``key``, ``partition``,
    ``records``, ``bytes`` (key + value), ``bytes_sq``, in first-seen order of
    the keys (row group by row group), null keys one row per partition, last.
    ``ident_check()`` raises if the file changed since the sample was opened.
    ``parts``: the file's partition column as a Polars Int32 Series, if already read (it is not read again).
    Without ``parts``, the sums a :func:`keyscope.io.prefetch.start` thread made of this file are taken
    when they were made for the same file and the same partition count (else they are made here).
    """
    import polars as pl

    from .._keytable import with_null_rows

    P = max(int(partitions), 1)
    sums = None
    if parts is None:
        from . import prefetch

        ident_check()
        sums = prefetch.take(path, P)
    if sums is None:
        sums = dictionary_sums(path, ident_check, P, file_names, parts)
    if sums is None:
        return None
    ident_check()
    release_memory()
    g, rec, byt, bsq, keys, nrec, nbytes, nbsq = sums
    kp = pl.DataFrame(
        {"key": pl.Series("key", keys, dtype=pl.Binary), "partition": (g % P).astype(np.int32),
         "records": rec, "bytes": byt, "bytes_sq": bsq}
    )  # fmt: skip
    return with_null_rows(kp, nrec, nbytes, nbsq)


def dictionary_sums(path, ident_check, P: int, file_names: set[str], parts=None, stop=None):
    """:func:`dictionary_keys` without Polars: (bins, records, bytes, bytes_sq, keys, null records, null bytes,
    null bytes_sq per partition), or None when the keys are not dictionary pages.

    ``bins`` is key code * P + partition in first-seen order; ``keys`` the bins' keys (:class:`Binary`).
    Polars-free so that it can run on a thread while the main one imports Polars
    (:mod:`keyscope.io.prefetch`); ``stop``: a threading.Event that ends the read between row groups.
    Read by :mod:`keyscope.io.pages` (no pyarrow) when the file suits it, else by pyarrow: the same sums.
    """
    if parts is None:
        got = page_sums(path, ident_check, P, file_names, stop)
        if got is not None:
            return got
    return _arrow_sums(path, ident_check, P, file_names, parts, stop)


def page_sums(path, ident_check, P: int, file_names: set[str], stop=None):
    """:func:`dictionary_sums` read by :mod:`keyscope.io.pages`, or None when the file does not suit it."""
    from . import pages

    def read(fd: int, ft):
        kinds = {c.name: c.physical for c in ft.columns}
        with_vs = "value_size" in file_names
        if kinds.get("key") != pages._BYTE_ARRAY or kinds.get("partition") != pages._INT32:
            return None
        if with_vs and kinds.get("value_size") != pages._INT32:
            return None
        ident_check()
        table = _KeyTable(P)
        groups = [g for g, (rows, _) in enumerate(ft.row_groups) if rows]

        def fetch(r, g: int):
            pc = r.column(g, "partition", values=True)
            vs = r.column(g, "value_size", values=True).indices if with_vs else np.zeros(0, np.int32)
            k = r.column(g, "key")
            offs, data = pages.plain_binary(k.dictionary, 0, k.dictionary.size, k.entries)
            return pc, vs, k, offs, data, view_bytes(offs, data)

        with _page_chunks(fd, ft, groups, fetch, stop) as chunks:
            for pc, vs, k, offs, data, views in chunks:
                if pc.nulls:
                    return None  # (pyarrow's path counts a null partition as 0)
                part = pc.indices
                if int(part.min()) < 0 or int(part.max()) >= P:
                    raise InputError(f"{path}: a record's partition is out of range")
                table.rows(table.dictionary(offs, data, views), offs, k.indices, k.valid, 0, part, vs)
        return table

    table = _page_read(path, read)
    if table is None:
        return None
    ident_check()
    return table.result()


def _page_read(path, read):
    """``read(fd, footer)`` of the file at ``path`` open for :mod:`keyscope.io.pages`, or None when it cannot be
    opened or uses what that reader does not (:class:`keyscope.io.pages.Unsupported`: pyarrow reads it then)."""
    import os

    from . import pages

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return read(fd, pages.read_footer(fd, os.fstat(fd).st_size))
    except pages.Unsupported:
        return None
    finally:
        os.close(fd)


@contextmanager
def _page_chunks(fd: int, ft, groups: list[int], fetch, stop=None, ahead: int = 1):
    """:func:`_read_ahead` of ``groups``, ``ahead`` of them on threads, by ``ahead + 1``
    :class:`keyscope.io.pages.Reader` of ``fd``, ended (the read ahead joined) before the readers close,
    however the block ends."""
    from contextlib import ExitStack

    from . import pages

    with ExitStack() as readers:
        rs = [readers.enter_context(pages.Reader(fd, ft)) for _ in range(ahead + 1)]
        chunks = _read_ahead(groups, rs, fetch, stop)
        try:
            yield chunks
        finally:
            chunks.close()


def _read_ahead(groups: list[int], readers, fetch, stop=None):
    """``fetch(reader, group)`` of each row group in order, the next ``len(readers) - 1`` fetched on as many
    threads (each by a reader whose buffers are not the ones in use) while the caller uses this one.

    (pyarrow's path read ahead the same way; serial, analyze's 10M-record read was 0.51-0.57 s alone.)
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    depth = len(readers) - 1

    def read(i: int):
        if stop is not None and stop.is_set():
            raise Stopped
        return fetch(readers[i % len(readers)], groups[i])

    if len(groups) <= 1 or depth < 1:
        for i in range(len(groups)):
            yield read(i)
        return
    with ThreadPoolExecutor(max_workers=depth) as pool:
        pending = deque(pool.submit(read, i) for i in range(min(depth, len(groups))))
        for i in range(len(groups)):
            got = pending.popleft().result()
            if i + depth < len(groups):
                pending.append(pool.submit(read, i + depth))
            yield got
            del got


def _check_indices(path, ix: np.ndarray, valid: np.ndarray, vbit: int, entries: int) -> None:
    """InputError unless every keyed row's index is within its dictionary: pyarrow does not check them
    (a damaged page gave indices past it, and the kernel read past the key lengths: a crash)."""
    if ix.size == 0:
        return
    lo, hi = int(ix.min()), int(ix.max())
    if 0 <= lo and hi < entries:
        return
    if valid.size:  # null rows' indices are never read
        keyed = np.unpackbits(valid, bitorder="little")[vbit:vbit + ix.size].astype(bool)
        k = ix[keyed]
        if k.size == 0 or (int(k.min()) >= 0 and int(k.max()) < entries):
            return
    raise InputError(f"{path}: not a readable Parquet file (a key's dictionary index is past its dictionary)")


class _KeyTable:
    """Rows of dictionary-encoded keys summed, chunk by chunk, into the file's (key, partition) bins."""

    def __init__(self, P: int):
        self.P = P
        self.enc: Encoder | None = None  # made at the first dictionary, with room for twice its keys (grown as needed)
        self.dicts: list = []  # every dictionary, in the encoder's row order
        self.acc = _Sums(P)
        self.bins = np.zeros((0, 3), np.int64)  # a chunk's dense bins when the file's are not, reused

    def dictionary(self, offs: np.ndarray, data, views=None) -> np.ndarray:
        """The global codes (int64) of a new dictionary's entries (int32 ``offs`` into ``data``; ``views``:
        :func:`view_bytes` of them, if made already)."""
        from .._keytable import Encoder

        views, pad = view_bytes(offs, data) if views is None else views
        self.enc = Encoder(2 * (offs.size - 1)) if self.enc is None else self.enc
        self.dicts.append((offs, data))
        return self.enc.add_views(views, pad).astype(np.int64)

    def rows(self, codes, offs, ix, valid, vbit: int, part, vs) -> None:
        """Add rows: ``ix`` int32 indices into the dictionary whose ``codes`` and ``offs`` are given."""
        from .._keytable import dict_bins, dict_sum

        assert self.enc is not None
        acc, P, n = self.acc, self.P, ix.shape[0]
        nd = offs.size - 1
        klen = np.diff(offs).astype(np.int64)
        table = acc.table_for(self.enc.ng)
        if table is not None:  # the file's keys stay few: summed straight into its bins, by global code
            dict_sum(ix, valid, vbit, part, vs, klen, P, table, acc.nrec, acc.nbytes, acc.nbsq, gcode=codes)
            return
        nb = nd * P
        if nb <= max(DENSE_BINS_PER_ROW * n, DENSE_BINS_MIN):  # one compiled pass into the chunk's dense bins
            if self.bins.shape[0] < nb:  # reused from chunk to chunk (dict_bins clears what was used)
                self.bins = np.zeros((nb, 3), np.int64)
            dict_sum(ix, valid, vbit, part, vs, klen, P, self.bins, acc.nrec, acc.nbytes, acc.nbsq)
            g, rec, byt, bsq = dict_bins(self.bins)
        else:  # sparse: the pairs made dense by np.unique first (a sort; exact)
            g, rec, byt, bsq = _sparse(ix, valid, vbit, part, vs, klen, P, acc.nrec, acc.nbytes, acc.nbsq)
        acc.add(codes[g // P] * P + g % P, rec, byt, bsq, self.enc.ng)

    def result(self):
        g, rec, byt, bsq = self.acc.result()
        P = self.P
        keys = gather_bytes(self.dicts, self.enc.firsts[g // P] if self.enc is not None else np.zeros(0, np.int64))
        return g, rec, byt, bsq, keys, self.acc.nrec, self.acc.nbytes, self.acc.nbsq


def _arrow_sums(path, ident_check, P: int, file_names: set[str], parts=None, stop=None):
    """:func:`dictionary_sums` read by pyarrow (any Parquet file whose keys are dictionary pages)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path, read_dictionary=["key"])
        md = f.metadata
        ki = f.schema_arrow.get_field_index("key")
        if ki < 0:
            return None
        ktype = f.schema_arrow.field(ki).type
        if pa.types.is_dictionary(ktype):  # (as read_dictionary reads it)
            ktype = ktype.value_type
        if not (pa.types.is_binary(ktype) or pa.types.is_large_binary(ktype)
                or pa.types.is_string(ktype) or pa.types.is_large_string(ktype)):  # fmt: skip
            return None
        col = f.schema.names.index("key") if "key" in f.schema.names else -1
        if col < 0 or any(not md.row_group(i).column(col).has_dictionary_page for i in range(md.num_row_groups)):
            return None  # plain-encoded keys: pyarrow would hash them to build a dictionary, slower than the scan
    except Exception as e:  # a corrupt footer: the same one-line error as reading a column
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    ident_check()
    cols = (["partition"] if parts is None else []) + ["key"] + (["value_size"] if "value_size" in file_names else [])
    row = 0  # rows of the file before this chunk
    table = _KeyTable(P)
    for t in _row_groups(f, cols, path, stop):
        part_c = t.column("partition") if parts is None else None
        vs_c = t.column("value_size") if "value_size" in cols else None
        r0 = 0
        # a dictionary's buffers' addresses -> its entries' global codes, within this row group only
        # (while ``t`` lives no other array can have those addresses; after it, a new one may)
        seen: dict = {}
        for kchunk in t.column("key").chunks:
            n = len(kchunk)
            if n == 0:
                continue
            if not pa.types.is_dictionary(kchunk.type):
                return None
            if part_c is not None:
                part = _ints(part_c.slice(r0, n))
                if int(part.min()) < 0 or int(part.max()) >= P:
                    raise InputError(f"{path}: a record's partition is out of range")
            else:
                part = np.ascontiguousarray(parts.slice(row + r0, n).to_numpy(), np.int32)  # (zero-copy in one chunk)
                if part.size != n:
                    raise InputError(f"{path}: columns of different lengths")
            vs = _ints(vs_c.slice(r0, n)) if vs_c is not None else np.zeros(0, np.int32)
            r0 += n
            d = kchunk.dictionary
            if not pa.types.is_binary(d.type):  # text keys are their UTF-8 bytes: the same buffers
                d = pa.Array.from_buffers(pa.binary(), len(d), d.buffers(), offset=d.offset)
            tag = (len(d), d.offset, *(b.address if b is not None else 0 for b in d.buffers()))
            offs = np.frombuffer(d.buffers()[1], np.int32)[d.offset:d.offset + len(d) + 1]
            if tag not in seen:  # (a row group's chunks share one dictionary)
                seen[tag] = table.dictionary(offs, d.buffers()[2])
            ind = kchunk.indices
            if ind.type != pa.int32():
                ind = ind.cast(pa.int32())
            bufs = ind.buffers()
            ix = np.frombuffer(bufs[1], np.int32, count=n, offset=4 * ind.offset)
            valid = np.frombuffer(bufs[0], np.uint8) if bufs[0] is not None and ind.null_count else np.zeros(0, np.uint8)
            _check_indices(path, ix, valid, ind.offset, len(d))
            table.rows(seen[tag], offs, ix, valid, ind.offset, part, vs)
        row += t.num_rows
        del t
    if parts is not None and row != len(parts):
        raise InputError(f"{path}: columns of different lengths")
    ident_check()
    return table.result()


class _Sums:
    """(global key code * P + partition) -> records, bytes, bytes squared, summed over row groups.

    Dense bins while they stay few (a few partitions: the usual case), which
    the kernel sums every row group into by global code (:meth:`table_for`:
    no per-row-group bins gathered and added back, ~0.1 s at 10M records,
    most of it paid back by the kernel's extra load of the code; the read
    0.708 -> 0.684 s); else a list collapsed whenever it doubles; the result
    in bin order, which is the keys' first-seen order.
    """

    def __init__(self, P: int):
        self.P = P
        self.nrec = np.zeros(P, np.int64)  # null keys per partition
        self.nbytes = np.zeros(P, np.int64)
        self.nbsq = np.zeros(P, np.float64)
        # (bins, 3) int64: records, bytes, bytes squared (float64 bits), as :func:`keyscope._keytable.dict_sum`
        self.table: np.ndarray | None = np.zeros((0, 3), np.int64)
        self.parts: list = []
        self.size, self.collapsed = 0, 0

    def table_for(self, keys: int) -> np.ndarray | None:
        """The dense bins, with room for ``keys`` keys, or None once the bins are too many to stay dense."""
        if self.table is not None and keys * self.P > max(DENSE_BINS_PER_ROW * keys, DENSE_BINS_MIN):
            nz, r, b, q = self._used()
            self.parts, self.size, self.table = [(nz, r, b, q)], nz.size, None
        if self.table is None:
            return None
        need = keys * self.P
        if self.table.shape[0] < need:  # grow by doubling
            t = np.zeros((max(need, 2 * self.table.shape[0]), 3), np.int64)
            t[: self.table.shape[0]] = self.table
            self.table = t
        return self.table

    def _used(self):
        t = self.table
        nz = np.flatnonzero(t[:, 0])
        return nz, t[nz, 0], t[nz, 1], t.view(np.float64)[nz, 2]

    def add(self, bins, rec, byt, bsq, keys: int) -> None:
        t = self.table_for(keys)
        if t is not None:
            t[bins, 0] += rec  # bins are distinct within one chunk
            t[bins, 1] += byt
            t.view(np.float64)[bins, 2] += bsq
            return
        self.parts.append((bins, rec, byt, bsq))
        self.size += bins.size
        if self.size > 2 * max(self.collapsed, 1 << 16):
            self._collapse()

    def _collapse(self) -> None:
        bins, rec, byt, bsq = (np.concatenate(x) for x in zip(*self.parts))
        ids, inv = np.unique(bins, return_inverse=True)
        inv = inv.reshape(-1)
        self.parts = [(ids, _exact(np.bincount(inv, weights=rec, minlength=ids.size)),
                       _exact(np.bincount(inv, weights=byt, minlength=ids.size)),
                       np.bincount(inv, weights=bsq, minlength=ids.size))]  # fmt: skip
        self.size = self.collapsed = ids.size

    def result(self):
        if self.table is not None:
            return self._used()
        if not self.parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        self._collapse()
        return self.parts[0]


def _ints(chunked) -> np.ndarray:
    """An integer column's rows as int32 numpy, read from its buffers (nulls as 0, as Sample.from_frame fills
    value sizes).  Not ``to_numpy``: on an array with nulls it imports pandas (0.33 s of a cold run)."""
    import pyarrow as pa

    chunks = chunked.chunks if isinstance(chunked, pa.ChunkedArray) else [chunked]
    out = []
    for arr in chunks:
        if pa.types.is_dictionary(arr.type) or not pa.types.is_integer(arr.type):
            arr = arr.cast(pa.int32())  # (not how keyscope writes: pyarrow.compute is loaded only here)
        width = arr.type.bit_width // 8
        dt = np.dtype(("i" if pa.types.is_signed_integer(arr.type) else "u") + str(width))
        bufs = arr.buffers()
        v = np.frombuffer(bufs[1], dt, count=len(arr), offset=width * arr.offset)
        if dt != np.int32:
            if v.size and (int(v.min()) < -(1 << 31) or int(v.max()) >= 1 << 31):
                raise InputError("a column's value is out of the 32-bit range")
            v = v.astype(np.int32)
        if arr.null_count:
            ok = np.unpackbits(np.frombuffer(bufs[0], np.uint8), bitorder="little")[arr.offset:arr.offset + len(arr)]
            v = np.where(ok.astype(bool), v, 0).astype(np.int32)
        out.append(v)
    return out[0] if len(out) == 1 else np.concatenate(out) if out else np.zeros(0, np.int32)


def _views(offs: np.ndarray, data):
    """A binary array (int32 ``offs``, ``data`` buffer) as a pyarrow binary_view array, built in numpy.

    (pyarrow's cast would do it, but importing pyarrow.compute cost a cold run ~0.1 s; these are
    dictionaries, a few hundred thousand entries at most.)
    """
    import pyarrow as pa

    views, pad = view_bytes(offs, data)
    buf = pa.py_buffer(views)
    datab = pa.py_buffer(pad) if data is None else data
    return pa.Array.from_buffers(pa.binary_view(), offs.size - 1, [None, buf, datab])


def view_bytes(offs: np.ndarray, data) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_views`' (views: uint8 (n, 16), ``data`` with 16 zero bytes after it), no pyarrow.

    Made by the ``kp_views`` kernel (:mod:`keyscope.io.pages`): numpy's version
    (:func:`reference_view_bytes`) held the GIL ~6 ms a row group, while the main thread imports Polars.
    """
    from . import pages

    raw = np.frombuffer(data, np.uint8) if data is not None and data.size else np.zeros(0, np.uint8)
    pad = np.zeros(raw.size + 16, np.uint8)  # reads past the last key stay in bounds
    pad[:raw.size] = raw
    return pages.views(np.ascontiguousarray(offs, np.int32), pad), pad


def reference_view_bytes(offs: np.ndarray, data) -> tuple[np.ndarray, np.ndarray]:
    """:func:`view_bytes` in numpy. Views: length, then the bytes inline up to 12, else a 4-byte prefix,
    buffer 0 and the offset."""
    n = offs.size - 1
    lens = np.diff(offs).astype(np.int32)
    raw = np.frombuffer(data, np.uint8) if data is not None and data.size else np.zeros(16, np.uint8)
    pad = np.concatenate([raw, np.zeros(16, np.uint8)])  # reads past the last key stay in bounds
    start = offs[:-1].astype(np.int64)
    views = np.zeros((n, 16), np.uint8)
    views[:, 0:4] = lens.view(np.uint8).reshape(n, 4)
    windows = np.lib.stride_tricks.as_strided(pad, shape=(max(pad.size - 11, 1), 12), strides=(1, 1))
    inline = windows[start]  # each key's first 12 bytes (and what follows), one row index per key
    inline[np.arange(12) >= lens[:, None]] = 0  # bytes beyond the key are zero
    views[:, 4:16] = inline
    long = lens > 12
    if long.any():
        ref = np.zeros((int(long.sum()), 3), np.int32)  # (prefix stays from inline), buffer 0, offset
        ref[:, 2] = offs[:-1][long]
        views[long, 8:16] = ref.view(np.uint8).reshape(-1, 12)[:, 4:12]
    return views, pad


def _gather(dicts: list, rows: np.ndarray):
    """The keys at ``rows`` (counted over the dictionaries in order) as a Polars Binary Series, gathered in numpy.

    (Handed to Polars through the Arrow C interface: ``pl.from_arrow`` would import pyarrow.compute.)
    """
    import polars as pl

    return pl.Series("key", gather_bytes(dicts, rows), dtype=pl.Binary)


@dataclass(frozen=True)
class Binary:
    """Binary values as Arrow lays them out (int64 ``offsets``, the bytes ``data``; ``valid``: a bool a row,
    False where null, or None), without pyarrow."""

    offsets: np.ndarray
    data: np.ndarray
    valid: np.ndarray | None = None

    def __len__(self) -> int:
        return self.offsets.size - 1

    def to_pylist(self) -> list[bytes | None]:
        o = self.offsets.tolist()
        raw = self.data.tobytes()
        ok = [True] * (len(o) - 1) if self.valid is None else self.valid.tolist()
        return [raw[o[i]:o[i + 1]] if ok[i] else None for i in range(len(o) - 1)]

    def __arrow_c_array__(self, requested_schema=None):
        """The Arrow PyCapsule interface (large_binary), without pyarrow (:mod:`keyscope.io.arrow_c`)."""
        from .arrow_c import large_binary_capsules

        return large_binary_capsules(self.offsets, self.data, self.valid)


def gather_bytes(dicts: list, rows: np.ndarray) -> Binary:
    """The values at ``rows`` (counted over the (int32 offsets, bytes) dictionaries ``dicts`` in order)."""
    base = np.cumsum([0] + [o.size - 1 for o, _ in dicts])
    raws = [np.frombuffer(d, np.uint8) if d is not None else np.zeros(0, np.uint8) for _, d in dicts]
    dbase = np.cumsum([0] + [r.size for r in raws])
    which = np.searchsorted(base, rows, side="right") - 1
    starts = np.zeros(rows.size, np.int64)
    lens = np.zeros(rows.size, np.int64)
    for w in np.flatnonzero(np.bincount(which, minlength=len(dicts))).tolist():  # (np.unique imports numpy.ma: 0.05 s)
        m = which == w
        i = rows[m] - base[w]
        o = dicts[w][0]
        starts[m] = o[i].astype(np.int64) + dbase[w]
        lens[m] = o[i + 1] - o[i]
    out_offs = np.zeros(rows.size + 1, np.int64)
    np.cumsum(lens, out=out_offs[1:])
    data = np.concatenate(raws) if raws else np.zeros(0, np.uint8)
    src = np.repeat(starts - out_offs[:-1], lens) + np.arange(int(out_offs[-1]))
    return Binary(out_offs, data[src])


def _sparse(ix, valid, vbit, part, vs, klen, P, nrec, nbytes, nbsq):
    """The (bin, records, bytes, bytes_sq) of :func:`keyscope._keytable.dict_sum` when dense bins would not fit."""
    n = ix.shape[0]
    v = np.zeros(n, np.int64) if vs.size == 0 else vs.astype(np.int64)
    if valid.size:
        ok = np.unpackbits(valid, bitorder="little")[vbit:vbit + n].astype(bool)
        nul = ~ok
        nrec += np.bincount(part[nul], minlength=P)[:P]
        nbytes += _exact(np.bincount(part[nul], weights=v[nul], minlength=P)[:P])
        nbsq += np.bincount(part[nul], weights=v[nul].astype(np.float64) ** 2, minlength=P)[:P]
        ix, part, v = ix[ok], part[ok], v[ok]
    tot = (klen[ix] + v).astype(np.float64)
    ids, inv = np.unique(ix.astype(np.int64) * P + part, return_inverse=True)
    inv = inv.reshape(-1)
    rec = np.bincount(inv, minlength=ids.size).astype(np.int64)
    return ids, rec, _exact(np.bincount(inv, weights=tot, minlength=ids.size)), \
        np.bincount(inv, weights=tot * tot, minlength=ids.size)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


# ---- per-record dictionary codes (what-if's unit tables) ------------------------------------


def dictionary_codes(path, ident_check, columns, file_names: set[str], n_rows: int, map_codes, stop=None):
    """Per-record dictionary codes of binary/text ``columns`` straight from the file's dictionary pages, or None.

    Returns ``(codes, dicts, size)``: ``codes[c]`` int32 per record, dense ids
    in the order of each value's first record (-1: null), exactly what
    :func:`keyscope._keytable.encode` gives for the column; ``dicts[c]`` the
    distinct values in id order (a Polars Binary Series; the caller casts
    text); ``size`` int32 per record, ``key_size`` + ``value_size`` (nulls 0;
    a missing ``key_size`` is the key's length, a missing ``value_size`` 0),
    as ``Sample.frame`` would fill them.

    Why: what-if's unit tables encoded every record's key and fields (read
    by Polars as ~160 MB of binary views each at 10M records, then hashed
    row by row).  The file already holds each row group's distinct values
    once and one index per row; only the dictionaries are hashed here and the
    indices mapped through them, so no per-row bytes are materialised.  The
    ids equal the row-order ones only when each dictionary lists its values
    in the order of their first rows and every entry is used (pyarrow's
    writer does both); that is checked per chunk (a running maximum), and
    anything else gives None, so the caller encodes the column instead.
    ``map_codes(ix, ids, m0, out)`` is the caller's compiled index-to-id pass
    (:func:`keyscope.whatif.kernels.map_codes`): passed in so that ``io`` does
    not import the what-if package, which sits above it.  ``stop``: as :func:`dictionary_sums`'.
    Read by :mod:`keyscope.io.pages` (no pyarrow) when the file suits it (:func:`page_codes`), else by
    pyarrow: the same codes.
    """
    got = page_codes(path, ident_check, columns, file_names, n_rows, map_codes, stop)
    if got is not None:
        return got
    return _arrow_codes(path, ident_check, columns, file_names, n_rows, map_codes, stop)


def page_codes(path, ident_check, columns, file_names: set[str], n_rows: int, map_codes, stop=None):
    """:func:`dictionary_codes` read by :mod:`keyscope.io.pages`, or None when the file does not suit it (or
    its codes are not in first-record order: then pyarrow's path says None too).

    Why: a cold 10M-record ``whatif --key-by key,region`` waited 0.3-0.6 s for pyarrow's read of these
    columns on the prefetch thread (its import 0.15 s of it), as ``analyze`` did before :func:`page_sums`.
    """
    from .._keytable import Encoder
    from . import pages

    columns = list(dict.fromkeys(columns))
    encs: dict = {c: None for c in columns}
    dicts: dict = {c: [] for c in columns}

    def read(fd: int, ft):
        sizes = [c for c in ("key_size", "value_size") if c in file_names]
        kinds = {c.name: c.physical for c in ft.columns}
        if any(kinds.get(c) != pages._BYTE_ARRAY for c in columns) or any(kinds.get(c) != pages._INT32 for c in sizes):
            return None
        if ft.num_rows != n_rows or sum(rows for rows, _ in ft.row_groups) != n_rows:
            raise InputError(f"{path}: columns of different lengths")
        ident_check()
        codes = {c: np.empty(n_rows, np.int32) for c in columns}
        size = np.zeros(n_rows, np.int32)
        groups = [g for g, (rows, _) in enumerate(ft.row_groups) if rows]
        starts = np.cumsum([0] + [rows for rows, _ in ft.row_groups])

        def fetch(r, g: int):
            got = []
            for c in columns:
                k = r.column(g, c)
                offs, data = pages.plain_binary(k.dictionary, 0, k.dictionary.size, k.entries)
                ix = k.indices
                if k.nulls:  # -1 at a null row, as map_codes reads it
                    keyed = np.unpackbits(k.valid, bitorder="little")[:ix.size].astype(bool)
                    ix = np.where(keyed, ix, np.int32(-1))
                got.append((ix, offs, data, view_bytes(offs, data) if k.entries else None))
            # summed in place into the rows' own slice of ``size`` (each group's rows its own slice): a fresh
            # int64 array a group was 8 MB of page faults per 1M rows (232 MB at 30M records)
            tot = size[int(starts[g]):int(starts[g]) + ft.row_groups[g][0]]
            for c in sizes:
                np.add(tot, r.column(g, c, values=True).indices, out=tot)
            return got, tot

        with _page_chunks(fd, ft, groups, fetch, stop) as chunks:
            for g, (got, tot) in zip(groups, chunks):
                row, n_rg = int(starts[g]), ft.row_groups[g][0]
                for c, (ix, offs, data, views) in zip(columns, got):
                    out = codes[c][row:row + n_rg]
                    if views is None:  # an empty dictionary: every row null
                        out[:] = -1
                        continue
                    enc = encs[c] = Encoder(2 * (offs.size - 1)) if encs[c] is None else encs[c]
                    ids = enc.add_views(*views)
                    dicts[c].append((offs, data))
                    if map_codes(ix, ids, -1, out) != offs.size - 2:
                        return None  # not first-record order, or an entry no record uses
                    if c == "key" and "key_size" not in file_names:
                        klen = np.diff(offs).astype(np.int32)
                        np.add(tot, np.where(ix >= 0, klen[np.maximum(ix, 0)], 0), out=tot, casting="unsafe")
        return codes, size

    got = _page_read(path, read)
    if got is None:
        return None
    ident_check()
    codes, size = got
    return codes, _first_values(columns, encs, dicts), size


def _first_values(columns, encs: dict, dicts: dict) -> dict:
    """Each column's distinct values in id order (Polars Binary), from its encoder's first rows over its
    dictionaries (:func:`dictionary_codes`' second result)."""
    values = {}
    for c in columns:
        enc = encs[c]
        firsts = enc.firsts[:enc.ng].copy() if enc is not None else np.zeros(0, np.int64)
        values[c] = _gather(dicts[c], firsts).alias(c)
    return values


def _arrow_codes(path, ident_check, columns, file_names: set[str], n_rows: int, map_codes, stop=None):
    """:func:`dictionary_codes` read by pyarrow (any Parquet file whose columns are dictionary pages)."""
    import pyarrow as pa

    from .._keytable import Encoder

    columns = list(dict.fromkeys(columns))

    def suits(f) -> bool:  # every column binary/text, dictionary pages in every row group
        md, names = f.metadata, f.schema.names
        for c in columns:
            i = f.schema_arrow.get_field_index(c)
            if i < 0 or c not in names:
                return False
            t = f.schema_arrow.field(i).type
            t = t.value_type if pa.types.is_dictionary(t) else t
            if not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t)
                    or pa.types.is_large_string(t)):  # fmt: skip
                return False
            col = names.index(c)
            if any(not md.row_group(r).column(col).has_dictionary_page for r in range(md.num_row_groups)):
                return False
        return True

    f = _open_checked(path, n_rows, suits, read_dictionary=columns)
    if f is None:
        return None
    ident_check()
    sizes = [c for c in ("key_size", "value_size") if c in file_names]
    codes = {c: np.empty(n_rows, np.int32) for c in columns}
    size = np.zeros(n_rows, np.int32)
    encs: dict = {c: None for c in columns}
    dicts: dict = {c: [] for c in columns}
    row = 0
    for t in _row_groups(f, columns + sizes, path, stop):
        n_rg = t.num_rows
        if row + n_rg > n_rows:
            raise InputError(f"{path}: columns of different lengths")
        tot = np.zeros(n_rg, np.int64)
        for s in sizes:
            tot += _ints(t.column(s))
        for c in columns:
            out = codes[c][row:row + n_rg]
            seen: dict = {}  # a dictionary's buffers -> (its entries' ids, the highest entry used so far)
            r0 = 0
            for chunk in t.column(c).chunks:
                n = len(chunk)
                if n == 0:
                    continue
                if not pa.types.is_dictionary(chunk.type):
                    return None
                d = chunk.dictionary
                if not pa.types.is_binary(d.type):  # text: its UTF-8 bytes, the same buffers
                    if pa.types.is_large_string(d.type) or pa.types.is_large_binary(d.type):
                        return None  # (pyarrow reads dictionaries as 32-bit offsets; anything else: encode)
                    d = pa.Array.from_buffers(pa.binary(), len(d), d.buffers(), offset=d.offset)
                tag = (len(d), d.offset, *(b.address if b is not None else 0 for b in d.buffers()))
                offs = np.frombuffer(d.buffers()[1], np.int32)[d.offset:d.offset + len(d) + 1]
                if tag not in seen:
                    enc = encs[c] = Encoder(2 * len(d)) if encs[c] is None else encs[c]
                    seen[tag] = [enc.add(_views(offs, d.buffers()[2])), -1, len(d)]
                    dicts[c].append((offs, d.buffers()[2]))
                entry = seen[tag]
                ind = chunk.indices
                if ind.type != pa.int32():
                    return None
                bufs = ind.buffers()
                ix = np.frombuffer(bufs[1], np.int32, count=n, offset=4 * ind.offset)
                if ind.null_count:
                    ok = np.unpackbits(np.frombuffer(bufs[0], np.uint8), bitorder="little")[ind.offset:ind.offset + n]
                    ix = np.where(ok.astype(bool), ix, -1)
                ids = entry[0]
                got = out[r0:r0 + n]
                if len(ids) == 0:  # an empty dictionary: every row null
                    got[:] = -1
                    r0 += n
                    continue
                # the global ids, checking first-record order: each new highest index is the previous highest + 1
                top = map_codes(ix, ids, entry[1], got)
                if top == -2:
                    return None
                entry[1] = top
                if c == "key" and "key_size" not in file_names:
                    klen = np.diff(offs).astype(np.int64)
                    tot[r0:r0 + n] += np.where(ix >= 0, klen[np.maximum(ix, 0)], 0)
                r0 += n
            if r0 != n_rg:
                raise InputError(f"{path}: columns of different lengths")
            if any(e[1] != e[2] - 1 for e in seen.values()):
                return None  # an entry no record uses: the row-order ids would not have it
        size[row:row + n_rg] = tot
        row += n_rg
        del t
    if row != n_rows:
        raise InputError(f"{path}: columns of different lengths")
    ident_check()
    pa.default_memory_pool().release_unused()  # the row groups' read buffers: ~70 MB mimalloc would keep
    return codes, _first_values(columns, encs, dicts), size


def _open_checked(path, n_rows: int, suits=None, **options):
    """The ``pyarrow.parquet.ParquetFile`` at ``path`` (``options`` passed on), or None when ``suits(f)`` is false.

    InputError (one line naming the file) when it is not a readable Parquet file or does not hold
    ``n_rows`` rows (the sample's other columns), checked after ``suits``.  The one open of
    :func:`dictionary_codes`, :func:`int64_at_rows` and :func:`sizes_at_rows`.
    """
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path, **options)
        if suits is not None and not suits(f):
            return None
        if f.metadata.num_rows != n_rows:
            raise InputError(f"{path}: columns of different lengths")
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    return f


def _int64_reader(f, column: str):
    """(columns, values) for :func:`_at_rows`: ``column``'s int64 values, or None when it is not plain int64."""
    import pyarrow as pa

    i = f.schema_arrow.get_field_index(column)
    if i < 0 or f.schema_arrow.field(i).type != pa.int64():
        return None

    def values(t, n: int):
        col = t.column(column)
        if col.null_count or len(col) != n:
            return None
        return np.concatenate([np.frombuffer(c.buffers()[1], np.int64, count=len(c), offset=8 * c.offset)
                               for c in col.chunks]) if col.num_chunks != 1 else \
            np.frombuffer(col.chunks[0].buffers()[1], np.int64, count=n, offset=8 * col.chunks[0].offset)  # fmt: skip

    return [column], values


def _sizes_reader(f, path):
    """(columns, values) for :func:`_at_rows`: ``key_size + value_size`` (nulls 0), or None without ``key_size``."""
    names = set(f.schema_arrow.names)
    if "key_size" not in names:
        return None
    cols = [c for c in ("key_size", "value_size") if c in names]

    def values(t, n: int):
        if t.num_rows != n:
            raise InputError(f"{path}: columns of different lengths")
        tot = np.zeros(n, np.int64)
        for c in cols:
            tot += _ints(t.column(c))
        return tot.astype(np.int32)  # the int32 dictionary_codes stores

    return cols, values


def _ascending(rows) -> np.ndarray | None:
    rows = np.asarray(rows, np.int64)
    return None if rows.size > 1 and bool((rows[1:] < rows[:-1]).any()) else rows


def int64_at_rows(path, ident_check, column: str, rows: np.ndarray, n_rows: int):
    """An int64 column's values at ``rows`` (ascending record numbers) read one row group at a time, or None.

    Why: salting by offset needs the hot keys' records' offsets only (about a
    tenth of a Zipf sample's records); reading the whole column held 80 MB per
    10M records, and its sizes' columns 80 MB more, at the peak of a cold
    ``recommend``.  None when the column is not plain int64 without nulls (the
    caller reads it as a column, as before).
    """
    rows = _ascending(rows)
    if rows is None:
        return None
    f = _open_checked(path, n_rows, lambda f: _int64_reader(f, column) is not None)
    if f is None:
        return None
    ident_check()
    out = _at_rows(f, path, rows, [_int64_reader(f, column)])[0]
    ident_check()
    return out


def sizes_at_rows(path, ident_check, rows: np.ndarray, n_rows: int):
    """``key_size + value_size`` (nulls 0, as int32 like :func:`dictionary_codes`' ``size``) at ``rows``, or None.

    ``rows`` ascending record numbers; only the row groups holding them are
    read.  None when the file has no ``key_size`` column (a key's size is then
    its length, which :func:`dictionary_codes` derives from the key column).
    Why: what-if kept every record's size (4 bytes a record, 40 MB at 10M)
    from the group pass to salting, which needs the hot keys' records' only.
    """
    return offsets_and_sizes_at_rows(path, ident_check, rows, n_rows, offsets=False)[1]


def offsets_and_sizes_at_rows(path, ident_check, rows: np.ndarray, n_rows: int, offsets: bool = True,
                              sizes: bool = True, ahead: int = 1):  # fmt: skip
    """(``offset`` as :func:`int64_at_rows`, sizes as :func:`sizes_at_rows`) at ``rows``, in one pass over the file.

    Each is None when not asked for or when the file does not suit it (the caller reads the columns).
    ``ahead``: row groups read ahead on threads (:func:`_row_groups`; 0 from a thread of the caller's own).
    Why one pass: salting's hot records need both, and reading them in two passes cost a cold
    10M-record ``recommend`` ~0.35 s of its ~3.3 s here (two file opens, every row group decoded
    twice, one at a time); one pass, the next row group read on a thread, took 0.18-0.23 s.
    """
    rows = _ascending(rows)
    if rows is None:
        return None, None
    got = _page_at_rows(path, ident_check, rows, n_rows, offsets, sizes)
    if got is not None:
        return got
    f = _open_checked(path, n_rows)
    readers = [_int64_reader(f, "offset") if offsets else None, _sizes_reader(f, path) if sizes else None]
    if not any(readers):
        return None, None
    ident_check()
    got = _at_rows(f, path, rows, [r for r in readers if r is not None], ahead)
    ident_check()
    it = iter(got)
    return tuple(next(it) if r is not None else None for r in readers)


# Row groups the hot records' read has in flight on threads (the caller only gathers from each: with one, the
# read ran on one core).  1.4M rows of bench_cold's 10M sample, in one process, six pairs taking turns:
# 0.196-0.222 s with one, 0.158-0.221 s with two (medians 0.205 / 0.17); the cold whatif's spread hides it.
HOT_READ_AHEAD = 2


def _page_at_rows(path, ident_check, rows: np.ndarray, n_rows: int, offsets: bool, sizes: bool):
    """:func:`offsets_and_sizes_at_rows` read by :mod:`keyscope.io.pages` (the row groups holding ``rows``, the
    next one read on a thread), or None when the file does not suit it (then pyarrow reads it, and says which
    of the two it cannot give).

    Why: pyarrow's read was most of the ~0.35 s a cold 10M-record ``whatif --salt-hot`` spent on its hot
    records, on the main thread, after importing pyarrow (0.15 s) for nothing else.
    """
    from . import pages

    def read(fd: int, ft):
        kinds = {c.name: c.physical for c in ft.columns}
        if offsets and kinds.get("offset") != pages._INT64:
            return None
        if sizes and (kinds.get("key_size") != pages._INT32 or kinds.get("value_size", pages._INT32) != pages._INT32):
            return None
        if not (offsets or sizes):
            return None, None
        if ft.num_rows != n_rows:
            raise InputError(f"{path}: columns of different lengths")
        size_cols = [c for c in ("key_size", "value_size") if c in kinds] if sizes else []
        wanted, row = [], 0  # (row group, its first row, its rows lo:hi in ``rows``)
        for g, (n, _) in enumerate(ft.row_groups):
            lo, hi = (int(x) for x in np.searchsorted(rows, [row, row + n], side="left"))
            if hi > lo:
                wanted.append((g, row, lo, hi))
            row += n
        if row != n_rows:
            raise InputError(f"{path}: columns of different lengths")
        if rows.size and (not wanted or wanted[-1][3] != rows.size):
            return None, None  # a row past the file
        ident_check()
        off = np.empty(rows.size, np.int64) if offsets else None
        size = np.empty(rows.size, np.int64) if sizes else None

        def fetch(r, g: int):
            o = r.int64(g, "offset") if offsets else None
            tot = None
            if sizes:
                tot = np.zeros(ft.row_groups[g][0], np.int64)
                for c in size_cols:
                    tot += r.column(g, c, values=True).indices
            return o, tot

        with _page_chunks(fd, ft, [w[0] for w in wanted], fetch, ahead=HOT_READ_AHEAD) as chunks:
            for (_, first, lo, hi), (o, tot) in zip(wanted, chunks):
                at = rows[lo:hi] - first
                if off is not None:
                    off[lo:hi] = o[at]
                if size is not None:
                    size[lo:hi] = tot.astype(np.int32)[at]  # (the int32 dictionary_codes stores)
        return off, size

    got = _page_read(path, read)
    if got is not None:
        ident_check()
    return got


def _at_rows(f, path, rows: np.ndarray, readers, ahead: int = 1):
    """Per reader ``(columns, values)``: ``values(table, n)`` of each row group holding some of the ascending
    ``rows``, gathered at them (int64), or None when ``values`` gives None or a row is past the file.

    One read per row group of every reader's columns (:func:`_row_groups`, ``ahead`` of them on threads);
    row groups without any of the rows are not read.
    """
    cols = list(dict.fromkeys(c for r in readers for c in r[0]))
    outs: list = [np.empty(rows.size, np.int64) for _ in readers]
    md = f.metadata
    wanted, row = [], 0  # (row group, its first row, its rows lo:hi in ``rows``, its length)
    for r in range(md.num_row_groups):
        n = md.row_group(r).num_rows
        lo = int(np.searchsorted(rows, row, side="left"))
        hi = int(np.searchsorted(rows, row + n, side="left"))
        if hi > lo:
            wanted.append((r, row, lo, hi, n))
        row += n
    if rows.size and (not wanted or wanted[-1][3] != rows.size):
        return [None] * len(readers)  # a row past the file
    for (_, first, lo, hi, n), t in zip(wanted, _row_groups(f, cols, path, groups=[w[0] for w in wanted], ahead=ahead)):
        for j, (_, values) in enumerate(readers):
            if outs[j] is None:
                continue
            vals = values(t, n)
            if vals is None:
                outs[j] = None
                continue
            outs[j][lo:hi] = vals[rows[lo:hi] - first]
            del vals
        del t
    return outs
