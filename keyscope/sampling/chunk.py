"""One fetched chunk of one partition -> an Arrow table: the kernel's output buffers and the field columns."""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import KafkaError
from . import wire
from .codecs import _CODEC_NAMES, _inflate
from .decoder import (
    _COMPRESSED, _CORRUPT, _KPOS, _LEGACY, _N, _NEXT, _POS, _ST_LEN, _STOP, _VPOS, JSON_MAX_FIELDS, DecodeArgs,
    _count_records, _kernels, _utf8_valid,
)
# (at the top, not in _FieldPlan: the scan builds plans on several threads at once, and a first import there
# once failed a CI run with "No module named 'keyscope.sampling.jsonfields'"; it only needs re)
from .jsonfields import simple_path
from .options import MAX_TIMESTAMP_MS, FieldSpec, _first_line
from .wire import BATCH, HEADER_BYTES


class _Columns:
    """Output buffers for one fetched chunk of one partition, grown as batches inflate."""

    def __init__(self, cap: int, nbytes: int, plan: "_FieldPlan"):
        # The table keeps off, ts, klen and koff as they are; the rest is copied out of (_to_arrow), so
        # it lives in this thread's scratch, reused chunk after chunk (see _scratch).
        self.off = np.empty(cap, np.int64)
        self.ts = np.empty(cap, np.int64)
        self.klen = np.empty(cap, np.int32)
        self.koff = np.zeros(cap + 1, np.int32)
        self.vlen = _scratch("vlen", cap, np.int32)
        self.kdata = _scratch("kdata", max(nbytes, 16), np.uint8)
        self.want_values = plan.want_values
        want = bool(plan.want_values)
        self.voff = _scratch("voff", cap + 1 if want else 1, np.int64, zero=True)
        self.vdata = _scratch("vdata", max(nbytes, 16) if want else 1, np.uint8)
        rows = len(plan.headers) + len(plan.native)  # header fields, then the JSON fields ks_json fills
        self.hoff = _scratch("hoff", rows * (cap + 1), np.int64, zero=True).reshape(rows, cap + 1)
        self.hvalid = _scratch("hvalid", rows * cap, np.uint8, zero=True).reshape(rows, cap)
        width = max(nbytes, 16) if rows else 1
        self.hdata = _scratch("hdata", rows * width, np.uint8).reshape(rows, width)

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


_SCRATCH = threading.local()


def _scratch(name: str, n: int, dtype, zero: bool = False):
    """``n`` items of this thread's scratch buffer ``name``, grown as needed and reused by the next chunk.

    Why: a fresh buffer per chunk (the key bytes alone are sized to the fetched chunk, ~4 MB, for
    ~0.5 MB of keys) churned the allocator, whose free space fragmented and grew with the records
    read (docs/benchmarks.md, samprss7).  Only for what ``_to_arrow`` copies out of."""
    bufs = _SCRATCH.__dict__
    a = bufs.get(name)
    if a is None or a.size < n or a.dtype != dtype:
        a = bufs[name] = np.empty(max(n, int(a.size * 1.25) if a is not None and a.dtype == dtype else 0), dtype)
    v = a[:n]
    if zero:
        v.fill(0)
    return v


def _grow(a, need: int, used: int):
    b = np.empty(max(need, 2 * a.size), a.dtype)
    b[:used] = a[:used]
    return b


class _FieldPlan:
    """The fields as the kernel takes them: header names, and the JSON paths it walks itself
    (``native``: simple dotted paths, see jsonfields.py) apart from those left to Polars."""

    def __init__(self, fields: list[FieldSpec]):
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
            bend = wire.batch_end(records, p)
            codec = records[p + wire.ATTRIBUTES_LOW] & wire.CODEC_MASK
            base = wire.read(records, p, "base_offset", signed=True)
            try:
                inner = _inflate(codec, bytes(records[p + HEADER_BYTES : bend]))  # records may be a memoryview
            except Exception as e:
                what = _CODEC_NAMES.get(codec, f"codec {codec}")
                raise KafkaError(
                    f"partition {partition}: cannot decompress the {what} batch at offset {base}: {_first_line(e)}"
                ) from None
            # The same batch, uncompressed: its header with the codec bits cleared, then the records.
            head = bytearray(records[p : p + HEADER_BYTES])
            at, width = BATCH["batch_length"]
            head[at : at + width] = (wire.MIN_BATCH_LENGTH + len(inner)).to_bytes(width, "big")
            head[wire.ATTRIBUTES_LOW] &= ~wire.CODEC_MASK & 0xFF
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
        pos = wire.batch_end(records, pos)
    wrec = _count_records(buf[:pos]) if pos else 0
    table = _to_arrow(partition, n, st, cols, plan) if n else None
    return _Chunk(table, n, nxt, stopped, pos, wrec)


def _to_arrow(partition: int, n: int, st, cols: _Columns, plan: _FieldPlan):
    """The chunk's records as an Arrow table, every array built from its buffers.

    Why ``from_buffers`` and not ``pa.array(ndarray)``: the latter imports pandas when it is
    installed (0.47 s of a cold 5M-record ``keyscope sample``, pyinstrument). The fixed-width
    columns are the kernel's own arrays, sized to the chunk's records, so they are not copied;
    the key bytes are (their buffer is sized to the whole fetched chunk).
    """
    import pyarrow as pa

    klen = cols.klen[:n]
    key_valid = klen >= 0
    kbytes = cols.kdata[: int(st[_KPOS])].copy()
    key_nulls = int(n - np.count_nonzero(key_valid))
    key = pa.Array.from_buffers(
        pa.binary(), n, [_bitmap(key_valid) if key_nulls else None, _buf(cols.koff[: n + 1]), pa.py_buffer(kbytes)],
        null_count=key_nulls,
    )
    ts = cols.ts[:n]
    ts_valid = (ts >= 0) & (ts <= MAX_TIMESTAMP_MS)
    ts_nulls = int(n - np.count_nonzero(ts_valid))
    arrays = {
        "partition": _fixed(pa.int32(), np.full(n, partition, np.int32)),
        "offset": _fixed(pa.int64(), cols.off[:n]),
        "timestamp": _fixed(pa.timestamp("ms", tz="UTC"), ts, ts_valid, ts_nulls),
        "key": key,
        "key_size": _fixed(pa.int32(), klen, key_valid, key_nulls),
        "value_size": _fixed(pa.int32(), np.maximum(cols.vlen[:n], 0).astype(np.int32)),
    }
    if plan.json:
        arrays.update(_json_columns(n, st, cols, plan))
    for i, f in enumerate(plan.headers):
        hvalid = cols.hvalid[i, :n].copy()
        offs = cols.hoff[i, : n + 1]
        _utf8_valid(cols.hdata[i], offs, n, hvalid)
        arrays[f.name] = _large_string(n, offs, cols.hdata[i, : int(offs[n])], hvalid)
    return pa.Table.from_arrays(list(arrays.values()), names=list(arrays))


def _buf(a):
    """An Arrow buffer over a contiguous numpy array (no copy; the buffer keeps the array alive)."""
    import pyarrow as pa

    return pa.py_buffer(np.ascontiguousarray(a))


def _fixed(typ, values, valid=None, nulls: int = 0):
    """A fixed-width Arrow array over ``values`` (no copy), null where ``valid`` is False."""
    import pyarrow as pa

    bitmap = _bitmap(valid) if nulls else None
    return pa.Array.from_buffers(typ, len(values), [bitmap, _buf(values)], null_count=nulls)


def _json_columns(n: int, st, cols: _Columns, plan: _FieldPlan) -> dict:
    """The JSON fields' columns: ks_json's rows, and Polars for the values it handed back."""
    import pyarrow as pa

    out = {}
    if plan.polars:  # every value was copied
        import polars as pl

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
            import polars as pl  # only then (its import is 0.18 s of a cold sample)

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

