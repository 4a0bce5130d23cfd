"""The one loader of keyscope's native code: LLVM IR compiled by llvmlite, cached, called through checked signatures.

Why one technology and this one: every kernel (hashes, the sampler's decoder,
the key table, the what-if passes) is LLVM IR handed to llvmlite.  In a fresh
process llvmlite imports in ~0.03 s and loads a module's object code from the
disk cache in ~0.01 s; numba, which keyscope used before, cost ~0.2 s to import
and ~0.5 s to load even a cached kernel (docs/benchmarks.md, "One native
technology").  The compiled code runs at the speed of ``gcc -O3 -march=native``
(benchmarks/bench_partitioners.py) and is called through ctypes, which
releases the GIL, so callers may split work over threads.

A module declares each exported function's signature as a :class:`Fn`; the
loader checks it against the IR's own function type before handing out a
ctypes pointer, so an argument added to the IR but not to the Python side (or
the other way round) fails at load with both types named, not as a crash.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

# ctypes type -> the LLVM type it must meet in the IR.
_LLVM_OF = {
    ctypes.c_void_p: "ptr",
    ctypes.c_int64: "i64",
    ctypes.c_uint64: "i64",
    ctypes.c_int32: "i32",
    ctypes.c_uint32: "i32",
    ctypes.c_int8: "i8",
    ctypes.c_uint8: "i8",
    ctypes.c_double: "double",
    None: "void",
}


@dataclass(frozen=True)
class Fn:
    """One exported function: its IR name, result type and named arguments (ctypes types)."""

    name: str
    restype: Any
    args: tuple[tuple[str, Any], ...]

    def ctype(self):
        return ctypes.CFUNCTYPE(self.restype, *(t for _, t in self.args))


class SignatureError(RuntimeError):
    """The IR and its declared signature disagree: a programming error, caught at load."""


@dataclass
class Library:
    """The loaded functions of one module, by name; ``engine`` owns the machine code."""

    functions: dict[str, Callable[..., Any]]
    engine: Any
    from_cache: bool

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return self.functions[name]


_llvm_lock = threading.Lock()
_llvm_ready = False


def _llvm():
    global _llvm_ready
    import llvmlite.binding as llvm

    with _llvm_lock:
        if not _llvm_ready:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _llvm_ready = True
    return llvm


def check_signature(mod, fn: Fn) -> None:
    """Raise :class:`SignatureError` unless ``mod`` defines ``fn.name`` with exactly ``fn``'s types."""
    try:
        f = mod.get_function(fn.name)
    except NameError:
        raise SignatureError(f"native function {fn.name} is declared but not in the IR") from None
    ftype = f.global_value_type
    have_ret = str(ftype.get_function_return())
    have_args = [str(a.type) for a in f.arguments]
    want_ret = _LLVM_OF[fn.restype]
    want_args = [_LLVM_OF[t] for _, t in fn.args]
    if have_ret != want_ret or have_args != want_args:
        names = ", ".join(f"{_LLVM_OF[t]} {n}" for n, t in fn.args)
        raise SignatureError(
            f"native function {fn.name}: the IR has {have_ret} ({', '.join(have_args)}), "
            f"Python declares {want_ret} ({names})"
        )


def load(name: str, ir: str, fns: tuple[Fn, ...], opt: int = 3) -> Library:
    """Compile ``ir`` (or load its object code from the cache) and return the declared functions.

    ``opt`` is the LLVM optimisation level; it is part of the cache key.  The
    first process on a machine compiles (~0.05-0.3 s per module); later ones
    load the cached object code straight into the JIT (:func:`_from_object`),
    without parsing or checking the IR: the cache key holds the IR and the
    declared signatures, and an object is cached only after they were checked.
    """
    llvm = _llvm()
    target = llvm.Target.from_default_triple()
    cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    path = cache_file(name, ir, opt, llvm, cpu, features, fns)
    cached = _read_cache(path)
    if cached is not None:
        # each engine owns (and frees) its target machine: one per engine
        lib = _from_object(llvm, target.create_target_machine(cpu=cpu, features=features, opt=opt), cached, fns)
        if lib is not None:
            return lib
    tm = target.create_target_machine(cpu=cpu, features=features, opt=opt)
    mod = llvm.parse_assembly(ir)
    mod.verify()
    for fn in fns:
        check_signature(mod, fn)
    if opt > 0:
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=opt))
        pb.getModulePassManager().run(mod, pb)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.set_object_cache(notify_func=lambda _mod, obj: _write_cache(path, obj))
    engine.finalize_object()
    functions = {fn.name: fn.ctype()(engine.get_function_address(fn.name)) for fn in fns}
    return Library(functions, engine, False)


def _from_object(llvm, tm, obj: bytes, fns: tuple[Fn, ...]) -> Library | None:
    """The declared functions of cached object code, added to a JIT of an empty module; None if one is missing.

    Why not MCJIT's object cache (which this loader used before): that still parses and verifies
    the IR and walks its signatures, ~70% of a cached load: the 186 kB hash module took 19 ms,
    this 7 ms; the key table and what-if modules 6-11 ms, this 3-4 ms (one process, load ~3).
    """
    try:
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm)
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        addresses = {fn.name: engine.get_function_address(fn.name) for fn in fns}
    except (RuntimeError, OSError):  # pragma: no cover - an object this LLVM wrote for this machine loads
        return None
    if not all(addresses.values()):
        return None
    functions = {fn.name: fn.ctype()(addresses[fn.name]) for fn in fns}
    # The object's bytes live as long as the engine (whoever keeps only ``lib.engine`` alive keeps them too):
    # llvmlite may hand LLVM a reference to them rather than a copy.
    engine._keyscope_object = obj
    return Library(functions, engine, True)


class Lazy:
    """A module compiled on first use, once per process, thread-safe: ``Lazy(name, ir_fn, fns).get()``."""

    def __init__(self, name: str, ir: Callable[[], str], fns: tuple[Fn, ...], opt: int = 3):
        self._args = (name, ir, fns, opt)
        self._lib: Library | None = None
        self._lock = threading.Lock()

    def get(self) -> Library:
        lib = self._lib
        if lib is None:
            with self._lock:
                if self._lib is None:
                    name, ir, fns, opt = self._args
                    self._lib = load(name, ir(), fns, opt)
                lib = self._lib
        return lib


def cache_dir() -> Path:
    """``$KEYSCOPE_CACHE_DIR``, else ``$XDG_CACHE_HOME/keyscope`` or ``~/.cache/keyscope``."""
    base = os.environ.get("KEYSCOPE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "keyscope"
    )
    return Path(base)


def cache_file(name: str, ir: str, opt: int, llvm, cpu: str, features: str, fns: tuple[Fn, ...] = ()) -> Path:
    """Where this exact build (IR, declared signatures, opt level, LLVM, CPU and its features) keeps its object code.

    Any change to the IR, a signature or the machine changes the name, so a stale file is never
    loaded, and a cached object's functions are the ones declared (checked when it was written).
    """
    import llvmlite

    signatures = ";".join(f"{fn.name}:{_LLVM_OF[fn.restype]}({','.join(_LLVM_OF[t] for _, t in fn.args)})"
                          for fn in fns)
    ident = "\0".join(
        [ir, signatures, str(opt), llvmlite.__version__, repr(llvm.llvm_version_info), llvm.get_process_triple(),
         cpu, features]
    )
    return cache_dir() / f"{name}-{hashlib.sha256(ident.encode()).hexdigest()[:32]}.o"


def _read_cache(path: Path) -> bytes | None:
    """The cached object code, or None when absent, unreadable or not intact."""
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    digest, obj = blob[:32], blob[32:]
    return obj if obj and hashlib.sha256(obj).digest() == digest else None


def _write_cache(path: Path, obj: bytes) -> None:
    """Store object code with its checksum, atomically; a read-only home just means no cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(hashlib.sha256(obj).digest() + bytes(obj))
        os.replace(tmp, path)
    except OSError:
        pass
