"""keyscope._elf: cached kernel objects loaded without LLVM run as LLVM's JIT runs them, and anything outside the
loader's scope falls back to the JIT.

Every keyscope module (hashes, key table, what-if passes, pages, the sampler's decoder) is compiled in a fresh
cache, then loaded from it in a process that never loads llvmlite's binding (LLVM itself); its functions give
the same answers as in a process where every module goes through LLVM's JIT (``KEYSCOPE_ELF=0``).  Damaged,
foreign or unresolvable objects are refused, and the load goes through LLVM, with the same results.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import subprocess
import sys

import pytest

from keyscope import _elf, _native

pytestmark = pytest.mark.skipif(not _elf.supported(), reason="the ELF loader is x86-64 Linux only")

IR = """
@table = private unnamed_addr constant [4 x i64] [i64 10, i64 20, i64 30, i64 40]

define i64 @pick(i64 %i, ptr %p, i64 %n) nounwind {
entry:
  %at = getelementptr [4 x i64], ptr @table, i64 0, i64 %i
  %v = load i64, ptr %at, align 8
  call void @llvm.memset.p0.i64(ptr %p, i8 7, i64 %n, i1 false)
  %r = add i64 %v, %n
  ret i64 %r
}

declare void @llvm.memset.p0.i64(ptr, i8, i64, i1)
"""
PICK = _native.Fn("pick", ctypes.c_int64, (("i", ctypes.c_int64), ("p", ctypes.c_void_p), ("n", ctypes.c_int64)))

# One process: every module loaded, then run on fixed inputs; what it loaded them with, and whether LLVM came in.
PROBE = r"""
import json, sys
import numpy as np, polars as pl
from keyscope import _kernels, _keytable
from keyscope.io import pages
from keyscope.sampling import decoder
from keyscope.whatif import kernels as wk
out = {}
keys = pl.Series([b"21", b"foobar", b"a-little-bit-long-string", b"", b"\xff" * 40])
out["hash"] = {n: _kernels.hash_binary(keys, n).tolist() for n in _kernels.NAMES}
out["encode"] = _keytable.encode(pl.Series([b"a", b"b", b"a", None, b"c", b"b"]))[0].tolist()
src = bytes([128, 1, 4, 3, 2, 2, 0, 0, 0, 0])  # a delta stream: 1, then +1 twice
o = np.empty(3, np.int64)
pages.delta(np.frombuffer(src + bytes(16), np.uint8).copy(), 0, len(src), o)
out["delta"] = o.tolist()
got = np.empty(4, np.int32)
wk.map_codes(np.array([0, 1, -1, 1], np.int32), np.array([5, 9], np.int32), -1, got)
out["map_codes"] = got.tolist()
out["decoder"] = sorted(k for k in decoder._kernels() if not k.startswith("_"))
libs = [pages._LIB.get(), wk._LIB.get(), _keytable._LIB.get(), decoder._LIB.get()]
out["engines"] = sorted({type(lib.engine).__name__ for lib in libs} | {type(_kernels._kernels()["_engine"]).__name__})
out["cached"] = all(lib.from_cache for lib in libs) and _kernels._kernels()["_from_cache"]
out["llvm"] = "llvmlite.binding" in sys.modules
print(json.dumps(out))
"""


def _probe(cache, elf: bool = True) -> dict:
    env = dict(os.environ, KEYSCOPE_CACHE_DIR=str(cache), KEYSCOPE_ELF="1" if elf else "0")
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_every_module_loads_from_the_cache_without_llvm_and_answers_as_the_jit(tmp_path):
    cold = _probe(tmp_path)
    assert cold["engines"] == ["Image"] and not cold["cached"] and cold["llvm"]  # compiled, then run from the ELF
    warm = _probe(tmp_path)
    assert warm["engines"] == ["Image"] and warm["cached"] and not warm["llvm"]
    jit = _probe(tmp_path, elf=False)
    assert jit["engines"] == ["ExecutionEngine"] and jit["llvm"]
    for a in (cold, warm):
        assert {k: a[k] for k in ("hash", "encode", "delta", "map_codes", "decoder")} == \
            {k: jit[k] for k in ("hash", "encode", "delta", "map_codes", "decoder")}  # fmt: skip
    assert warm["delta"] == [1, 2, 3] and warm["map_codes"] == [5, 9, -1, 9]


def _compiled(tmp_path, monkeypatch) -> bytes:
    monkeypatch.setenv("KEYSCOPE_CACHE_DIR", str(tmp_path))
    lib = _native.load("e", IR, (PICK,))
    assert isinstance(lib.engine, _elf.Image)
    (obj,) = tmp_path.glob("e-*.o")
    return obj.read_bytes()[32:]


def _run(fn_address: int) -> tuple[int, bytes]:
    buf = ctypes.create_string_buffer(5)
    r = PICK.ctype()(fn_address)(2, ctypes.addressof(buf), 5)
    return r, buf.raw


def test_constants_and_libc_calls_are_relocated(tmp_path, monkeypatch):
    obj = _compiled(tmp_path, monkeypatch)
    got = _elf.load(obj, ["pick"])
    assert got is not None
    assert _run(got[0]["pick"]) == (35, b"\x07" * 5)
    warm = _native.load("e", IR, (PICK,))
    assert warm.from_cache and isinstance(warm.engine, _elf.Image) and warm["pick"](1, None, 0) == 20


def _rela_entries(obj: bytes):
    """(offset of each RELA entry in ``obj``) over every relocation section."""
    shoff, = struct.unpack_from("<Q", obj, 40)
    _, shnum, _ = struct.unpack_from("<HHH", obj, 58)
    out = []
    for i in range(shnum):
        _, typ, _, _, off, size, _, _, _, _ = struct.unpack_from("<IIQQQQIIQQ", obj, shoff + 64 * i)
        if typ == 4:
            out += [off + 24 * k for k in range(size // 24)]
    return out


def test_objects_outside_the_scope_are_refused_and_loaded_through_llvm(tmp_path, monkeypatch):
    obj = _compiled(tmp_path, monkeypatch)
    assert _elf.load(obj, ["absent"]) is None  # a function it does not define
    assert _elf.load(obj[:200], ["pick"]) is None  # truncated
    assert _elf.load(b"\x7fELF" + bytes(60), ["pick"]) is None
    foreign = bytearray(obj)
    foreign[18:20] = struct.pack("<H", 183)  # aarch64
    assert _elf.load(bytes(foreign), ["pick"]) is None
    entries = _rela_entries(obj)
    assert entries
    other = bytearray(obj)
    info, = struct.unpack_from("<Q", other, entries[0] + 8)
    struct.pack_into("<Q", other, entries[0] + 8, (info >> 32) << 32 | 24)  # R_X86_64_PC64: not known here
    assert _elf.load(bytes(other), ["pick"]) is None
    unresolved = obj.replace(b"memset\0", b"nemset\0")  # a symbol not in the process
    assert unresolved != obj and _elf.load(unresolved, ["pick"]) is None
    # a refused object in the cache: the LLVM path loads the same module, with the same answers
    (cached,) = tmp_path.glob("e-*.elf")
    blob = cached.read_bytes()
    payload = blob[32:].replace(b"memset\0", b"nemset\0")
    import hashlib

    cached.write_bytes(hashlib.sha256(payload).digest() + payload)
    lib = _native.load("e", IR, (PICK,))
    assert isinstance(lib.engine, _elf.Image)  # (the .o's object, loaded afresh and cached again)
    assert lib["pick"](3, None, 0) == 40


def test_keyscope_elf_0_keeps_every_module_on_llvms_jit(tmp_path, monkeypatch):
    monkeypatch.setenv("KEYSCOPE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KEYSCOPE_ELF", "0")
    monkeypatch.setattr(_native, "_fingerprint", [])
    lib = _native.load("e", IR, (PICK,))
    assert not isinstance(lib.engine, _elf.Image) and lib["pick"](0, None, 0) == 10
    assert not list(tmp_path.glob("e-*.elf"))


def test_a_cold_analyze_and_whatif_with_the_cache_warm_never_load_llvm(tmp_path):
    """The CLI end to end (the compiled paths on at this size): the first run compiles; the next ones load
    every kernel without LLVM, and say the same."""
    from tests.test_pages_whatif import _timed, _write
    from tests.test_scenarios import make_sample

    path = tmp_path / "s.parquet"
    _write(_timed(make_sample(seed=41, n=20_000, keys=700), 3), path)
    from tests.coldcli import run_watching

    patches = ("from keyscope.io import prefetch\n"
               "import keyscope.analysis as analysis, keyscope.whatif.engine as engine\n"
               "prefetch.MIN_ROWS = prefetch.CODES_MIN_ROWS = 0\n"
               "analysis.COMPILED_MIN_ROWS = engine.COMPILED_MIN_ROWS = 1\n")  # fmt: skip
    env = dict(os.environ, KEYSCOPE_CACHE_DIR=str(tmp_path / "cache"))
    for k, args in enumerate((["analyze", str(path), "--format", "json"],
                              ["whatif", str(path), "--partitions", "6", "--key-by", "key,region", "--format", "json"])):
        runs = [run_watching("llvmlite.binding", args, patches, env=env) for _ in range(2)]
        for r, _ in runs:
            assert r.returncode == 0, r.stderr
        outs = [json.loads(r.stdout) for r, _ in runs]
        for o in outs:
            o.pop("sampled_at", None)
        assert outs[0] == outs[1]
        assert not runs[1][1], (args, runs[1][0].stderr)
        if k == 0:  # an empty cache: the first run compiled (the check sees LLVM when it is loaded)
            assert runs[0][1]


def test_damaged_objects_are_refused_or_loaded_never_a_crash(tmp_path, monkeypatch):
    """Bytes of an object flipped at random (the cache's checksum stops this before the loader; the loader must
    still never write outside its pages nor raise): each is refused or loaded, and the process lives on."""
    import random

    obj = _compiled(tmp_path, monkeypatch)
    rng = random.Random(7)
    outcomes = set()
    for _ in range(400):
        bad = bytearray(obj)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        got = _elf.load(bytes(bad), [])
        outcomes.add(got is None)
    assert outcomes == {True, False}
