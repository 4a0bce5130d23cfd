"""The one native loader: signatures are checked against the IR, object code is cached per module."""

import ctypes

import pytest

from keyscope import _native

IR = """
define i64 @add3(ptr %p, i64 %n) nounwind {
entry:
  %v = load i64, ptr %p, align 8
  %s = add i64 %v, %n
  %t = add i64 %s, 3
  ret i64 %t
}
"""
ADD3 = _native.Fn("add3", ctypes.c_int64, (("p", ctypes.c_void_p), ("n", ctypes.c_int64)))


def test_loaded_function_runs_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYSCOPE_CACHE_DIR", str(tmp_path))
    x = ctypes.c_int64(39)
    cold = _native.load("t", IR, (ADD3,))
    assert cold["add3"](ctypes.addressof(x), 0) == 42 and not cold.from_cache
    assert len(list(tmp_path.glob("t-*.o"))) == 1
    warm = _native.load("t", IR, (ADD3,))
    assert warm["add3"](ctypes.addressof(x), 1) == 43 and warm.from_cache
    # Another optimisation level is another build: not the cached object.
    assert not _native.load("t", IR, (ADD3,), opt=0).from_cache


@pytest.mark.parametrize(
    "fn",
    [
        _native.Fn("add3", ctypes.c_int64, (("p", ctypes.c_void_p),)),  # an argument missing
        _native.Fn("add3", ctypes.c_int32, (("p", ctypes.c_void_p), ("n", ctypes.c_int64))),  # result type
        _native.Fn("add3", ctypes.c_int64, (("n", ctypes.c_int64), ("p", ctypes.c_void_p))),  # order
        _native.Fn("absent", ctypes.c_int64, ()),
    ],
)
def test_signature_mismatch_fails_at_load_naming_both_sides(fn, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYSCOPE_CACHE_DIR", str(tmp_path))
    with pytest.raises(_native.SignatureError, match=fn.name):
        _native.load("t", IR, (fn,))


def test_lazy_compiles_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYSCOPE_CACHE_DIR", str(tmp_path))
    calls = []
    lazy = _native.Lazy("t", lambda: calls.append(1) or IR, (ADD3,))
    assert lazy.get() is lazy.get() and calls == [1]
