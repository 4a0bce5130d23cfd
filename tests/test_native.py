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


def test_a_cached_load_does_not_parse_the_ir(tmp_path, monkeypatch):
    """From the cache the object code goes straight into the JIT: the IR is neither parsed nor walked."""
    monkeypatch.setenv("KEYSCOPE_CACHE_DIR", str(tmp_path))
    _native.load("t", IR, (ADD3,))
    llvm = _native._llvm()
    real = llvm.parse_assembly

    def only_empty(text, *a, **k):
        assert text == "", "the IR was parsed on a cached load"
        return real(text, *a, **k)

    monkeypatch.setattr(llvm, "parse_assembly", only_empty)
    warm = _native.load("t", IR, (ADD3,))
    x = ctypes.c_int64(1)
    assert warm.from_cache and warm["add3"](ctypes.addressof(x), 2) == 6


def test_a_signature_change_is_checked_even_with_the_ir_cached(tmp_path, monkeypatch):
    """The declared signatures are part of the cache key: a cached object never skips their check."""
    monkeypatch.setenv("KEYSCOPE_CACHE_DIR", str(tmp_path))
    _native.load("t", IR, (ADD3,))
    bad = _native.Fn("add3", ctypes.c_int64, (("p", ctypes.c_void_p),))
    with pytest.raises(_native.SignatureError, match="add3"):
        _native.load("t", IR, (bad,))


def test_a_cached_object_without_a_declared_function_is_compiled_again(tmp_path, monkeypatch):
    """An object under this key that lacks a declared function (it cannot be written so, but a file is a
    file) is not used: the IR is compiled and the cache written again."""
    monkeypatch.setenv("KEYSCOPE_CACHE_DIR", str(tmp_path))
    other_ir = IR.replace("@add3", "@other")
    other = _native.Fn("other", ctypes.c_int64, ADD3.args)
    _native.load("o", other_ir, (other,))
    [obj] = tmp_path.glob("o-*.o")
    llvm = _native._llvm()
    cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    path = _native.cache_file("t", IR, 3, llvm, cpu, features, (ADD3,))
    path.write_bytes(obj.read_bytes())
    lib = _native.load("t", IR, (ADD3,))
    x = ctypes.c_int64(0)
    assert not lib.from_cache and lib["add3"](ctypes.addressof(x), 0) == 3
    assert path.read_bytes() != obj.read_bytes() and _native.load("t", IR, (ADD3,)).from_cache
