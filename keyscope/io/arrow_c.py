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


def large_binary_capsules(offsets: np.ndarray, data: np.ndarray) -> tuple:
    """(schema capsule, array capsule) of a large_binary array (int64 ``offsets``, uint8 ``data``, no nulls)."""
    assert offsets.dtype == np.int64 and offsets.ndim == 1 and offsets.size >= 1 and offsets.flags.c_contiguous
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
    bufs = (ctypes.c_void_p * 3)(None, offsets.ctypes.data, data.ctypes.data)
    arr = _Array()
    arr.length = offsets.size - 1
    arr.n_buffers = 3
    arr.buffers = ctypes.cast(bufs, ctypes.c_void_p)
    arr.release = _release_array
    arr.private_data = _keep((bufs, offsets, data))
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
