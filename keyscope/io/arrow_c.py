"""Binary values handed to Polars through the Arrow C data interface, without pyarrow.

Why: :mod:`keyscope.io.pages` reads a sample's keys into numpy buffers, and
wrapping them in a pyarrow array only to pass them on cost a cold ``analyze``
the 0.2 s import of pyarrow.  The interface is two C structs in PyCapsules
(https://arrow.apache.org/docs/format/CDataInterface.html); the consumer moves
them out and calls ``release`` when it is done, which drops the numpy buffers
kept alive here until then.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np


class _Schema(ctypes.Structure):
    pass


class _Array(ctypes.Structure):
    pass


_SchemaRelease = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Schema))
_ArrayRelease = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Array))

_Schema._fields_ = [
    ("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
    ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64), ("children", ctypes.c_void_p),
    ("dictionary", ctypes.c_void_p), ("release", _SchemaRelease), ("private_data", ctypes.c_void_p),
]  # fmt: skip
_Array._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64), ("buffers", ctypes.c_void_p),
    ("children", ctypes.c_void_p), ("dictionary", ctypes.c_void_p), ("release", _ArrayRelease),
    ("private_data", ctypes.c_void_p),
]  # fmt: skip

# What a struct handed out keeps alive (its buffers), by its private_data, until its release is called;
# and the structs themselves, by address, until their capsule is destroyed (the consumer moves a struct
# out of its capsule and may release it first).
_alive: dict[int, tuple] = {}
_structs: dict[int, object] = {}
_lock = threading.Lock()
_next = [1]


def _keep(objs: tuple) -> int:
    with _lock:
        k = _next[0]
        _next[0] += 1
        _alive[k] = objs
        return k


def _release(p, kind) -> None:
    """A struct's ``release``: drop what it kept alive and mark it released (as the interface asks)."""
    s = p.contents
    with _lock:
        _alive.pop(s.private_data or 0, None)
    s.release = kind()


_release_schema = _SchemaRelease(lambda p: _release(p, _SchemaRelease))
_release_array = _ArrayRelease(lambda p: _release(p, _ArrayRelease))


# (the capsule as a bare pointer: it is being destroyed, so it must not become a Python object again)
_PyCapsule_Destructor = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_new = ctypes.pythonapi.PyCapsule_New
_new.restype = ctypes.py_object
_new.argtypes = [ctypes.c_void_p, ctypes.c_char_p, _PyCapsule_Destructor]
_get = ctypes.pythonapi.PyCapsule_GetPointer
_get.restype = ctypes.c_void_p
_get.argtypes = [ctypes.c_void_p, ctypes.c_char_p]


def _drop(cap, name: bytes, kind) -> None:
    """A capsule's destructor: release its struct if no consumer took it, then free the struct."""
    at = _get(cap, name)
    s = kind.from_address(at)
    if s.release:  # never imported: release it here
        s.release(ctypes.pointer(s))
    with _lock:
        _structs.pop(at, None)


_drop_schema = _PyCapsule_Destructor(lambda cap: _drop(cap, b"arrow_schema", _Schema))
_drop_array = _PyCapsule_Destructor(lambda cap: _drop(cap, b"arrow_array", _Array))


def large_binary_capsules(offsets: np.ndarray, data: np.ndarray, valid: np.ndarray | None = None) -> tuple:
    """(schema capsule, array capsule) of a large_binary array (int64 ``offsets``, uint8 ``data``; ``valid``: one
    bool a row, False where null, or None: no null)."""
    assert offsets.dtype == np.int64 and offsets.ndim == 1 and offsets.size >= 1 and offsets.flags.c_contiguous
    bits, nulls = None, 0
    if valid is not None:
        valid = np.asarray(valid, np.bool_)
        assert valid.shape == (offsets.size - 1,)
        nulls = int(valid.size - np.count_nonzero(valid))
        bits = np.packbits(valid, bitorder="little") if nulls else None
    data = np.ascontiguousarray(data, np.uint8)
    if data.size == 0:
        data = np.zeros(1, np.uint8)  # (a buffer pointer is never null)
    schema = _Schema()
    fmt = ctypes.create_string_buffer(b"Z")
    name = ctypes.create_string_buffer(b"")
    schema.format = ctypes.cast(fmt, ctypes.c_char_p)
    schema.name = ctypes.cast(name, ctypes.c_char_p)
    schema.flags = 2  # nullable
    schema.release = _release_schema
    schema.private_data = _keep((fmt, name))
    bufs = (ctypes.c_void_p * 3)(None if bits is None else bits.ctypes.data, offsets.ctypes.data, data.ctypes.data)
    arr = _Array()
    arr.length = offsets.size - 1
    arr.null_count = nulls if bits is not None else 0
    arr.n_buffers = 3
    arr.buffers = ctypes.cast(bufs, ctypes.c_void_p)
    arr.release = _release_array
    arr.private_data = _keep((bufs, offsets, data, bits))
    with _lock:
        _structs[ctypes.addressof(schema)] = schema
        _structs[ctypes.addressof(arr)] = arr
    return (_new(ctypes.addressof(schema), b"arrow_schema", _drop_schema),
            _new(ctypes.addressof(arr), b"arrow_array", _drop_array))  # fmt: skip


def alive() -> int:
    """How many structs handed out are not yet released (for tests)."""
    with _lock:
        return len(_alive) + len(_structs)


class Exported:
    """A Polars Series' one chunk, exported through the C data interface (released by :meth:`close`)."""

    def __init__(self, series):
        self.array, self.schema = _Array(), _Schema()
        series._export_arrow_to_c(ctypes.addressof(self.array), ctypes.addressof(self.schema))

    @property
    def format(self) -> bytes:
        return self.schema.format or b""

    def buffer(self, i: int) -> int:
        """The address of buffer ``i`` (0: none)."""
        return ctypes.cast(self.array.buffers, ctypes.POINTER(ctypes.c_void_p))[i] or 0

    def close(self) -> None:
        for s in (self.array, self.schema):
            if s.release:
                s.release(ctypes.pointer(s))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _memory(address: int, size: int, dtype) -> np.ndarray:
    """``size`` bytes at ``address`` as a numpy array (valid while their owner is)."""
    if size == 0:
        return np.zeros(0, dtype)
    return np.frombuffer(memoryview((ctypes.c_char * size).from_address(address)).cast("B"), dtype)


def binary_parts(series) -> tuple[np.ndarray, np.ndarray]:
    """(int64 offsets, uint8 bytes) of a Polars Binary or String Series in the large_binary layout (a null row
    empty), copied from its binary views through the C interface (``kp_unview``), or through pyarrow if
    Polars exports another layout.

    Why: ``to_arrow`` imports pyarrow (~50 ms and ~45 MB of a cold ``whatif`` that needed it for nothing else).
    """
    import polars as pl

    got = _view_parts(series)
    if got is not None:
        return got
    s = series.cast(pl.Binary) if series.dtype != pl.Binary else series
    arr = s.rechunk().to_arrow(compat_level=pl.CompatLevel.oldest())
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(0, np.uint8)
    return off, data


def _view_parts(series) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`binary_parts` from the Series' binary views, or None when Polars exports another layout."""
    from . import pages

    exported: list[Exported] = []
    try:
        parts = []
        for chunk in series.get_chunks() if series.n_chunks() > 1 else [series]:
            ex = Exported(chunk)
            exported.append(ex)
            a = ex.array
            if ex.format not in (b"vz", b"vu") or a.n_buffers < 3 or a.length != len(chunk):
                return None
            n, at = a.length, a.offset
            views = ex.buffer(1) + 16 * at
            lens = _memory(views, 16 * n, np.int32)[::4].astype(np.int64)
            if a.null_count and n:
                bits = _memory(ex.buffer(0), (at + n + 7) // 8, np.uint8)
                lens[~np.unpackbits(bits, bitorder="little")[at:at + n].astype(bool)] = 0
            bufs = np.array([ex.buffer(i) for i in range(2, a.n_buffers - 1)] or [0], np.int64)
            parts.append((views, n, bufs, lens))
        offsets = np.zeros(1 + sum(p[1] for p in parts), np.int64)
        np.cumsum(np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.int64), out=offsets[1:])
        data = np.empty(int(offsets[-1]), np.uint8)
        row = 0
        for views, n, bufs, _ in parts:
            pages.unview(views, n, bufs, offsets[row:row + n + 1], data)
            row += n
        return offsets, data
    finally:
        for ex in exported:
            ex.close()
