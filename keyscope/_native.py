"""The one loader of keyscope's native code: LLVM IR compiled by llvmlite, cached, called through checked signatures.

Why one technology and this one: every kernel (hashes, the sampler's decoder,
the key table, the what-if passes) is LLVM IR handed to llvmlite.  In a fresh
process llvmlite imports in ~0.03 s and loads a module's object code from the
disk cache in ~0.01 s; numba, which keyscope used before, cost ~0.2 s to import
and ~0.5 s to load even a cached kernel (docs/benchmarks.md, "One native
technology").  The compiled code runs at the speed of ``gcc -O3 -march=native``
(benchmarks/bench_partitioners.py) and is called through ctypes, which
releases the GIL, so callers may split work over threads.

Once compiled, a module's object code is cached per machine; a later process
loads it without LLVM where :mod:`keyscope._elf` applies (x86-64 Linux: llvmlite's
import and initialisation cost ~40 ms and 43 MB of resident memory a process),
else into llvmlite's JIT.

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
    """The loaded functions of one module, by name; ``engine`` owns the machine code (an LLVM JIT, or the
    :class:`keyscope._elf.Image` its cached object was loaded into); ``cpu`` and ``features``: LLVM's names
    of the host CPU and its features, as the object was compiled for them."""

    functions: dict[str, Callable[..., Any]]
    engine: Any
    from_cache: bool
    cpu: str = ""
    features: str = ""

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


def load(name: str, ir: str, fns: tuple[Fn, ...], opt: int = 3, check: Callable[[], None] | None = None) -> Library:
    """Compile ``ir`` (or load its object code from the cache) and return the declared functions.

    ``opt`` is the LLVM optimisation level; it is part of the cache key.  The
    first process on a machine compiles (~0.05-0.3 s per module); later ones
    load the cached object code without LLVM (:mod:`keyscope._elf`; llvmlite's
    import and initialisation cost each process ~40 ms and 43 MB), or, where
    that loader does not apply, straight into LLVM's JIT (:func:`_from_object`);
    neither parses or checks the IR: the cache key holds the IR and the
    declared signatures, and an object is cached only after they were checked.
    ``check`` (e.g. a struct layout against LLVM's) runs wherever LLVM is
    loaded, before the object is cached for the LLVM-free loader.
    """
    elf_path = elf_cache_file(name, ir, opt, fns)
    if elf_path is not None:
        lib = _from_elf_cache(elf_path, fns)
        if lib is not None:
            return lib
    llvm = _llvm()
    target = llvm.Target.from_default_triple()
    cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    path = cache_file(name, ir, opt, llvm, cpu, features, fns)
    cached = _read_cache(path)
    if cached is not None:
        # each engine owns (and frees) its target machine: one per engine
        lib = _from_object(llvm, target.create_target_machine(cpu=cpu, features=features, opt=opt), cached, fns)
        if lib is not None:
            lib.cpu, lib.features = cpu, features
            if check is not None:
                check()
            return _as_elf(elf_path, cached, fns, lib)
    tm = target.create_target_machine(cpu=cpu, features=features, opt=opt)
    mod = llvm.parse_assembly(ir)
    mod.verify()
    for fn in fns:
        check_signature(mod, fn)
    if opt > 0:
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=opt))
        pb.getModulePassManager().run(mod, pb)
    engine = llvm.create_mcjit_compiler(mod, tm)
    objects: list[bytes] = []
    engine.set_object_cache(notify_func=lambda _mod, obj: (objects.append(bytes(obj)), _write_cache(path, obj)))
    engine.finalize_object()
    functions = {fn.name: fn.ctype()(engine.get_function_address(fn.name)) for fn in fns}
    lib = Library(functions, engine, False, cpu, features)
    if check is not None:
        check()
    return _as_elf(elf_path, objects[0], fns, lib) if objects else lib


# ---- object code loaded without LLVM ------------------------------------------------------------

_ELF_MAGIC = b"keyscope-elf 1\n"


def _elf_enabled() -> bool:
    """``KEYSCOPE_ELF=0`` loads every module through LLVM's JIT, as before :mod:`keyscope._elf` (for comparison)."""
    from . import _elf

    return os.environ.get("KEYSCOPE_ELF", "1") != "0" and _elf.supported()


_fingerprint: list = []  # (computed once a process)


def machine_fingerprint() -> str | None:
    """What decides the object code LLVM writes here, read without LLVM: the CPU's vendor, family, model and
    feature flags (``/proc/cpuinfo``, the first processor), the machine and llvmlite's version; None where
    :mod:`keyscope._elf` does not apply."""
    if not _elf_enabled():
        return None
    if not _fingerprint:
        _fingerprint.append(_read_fingerprint())
    return _fingerprint[0]


def _read_fingerprint() -> str | None:
    import platform

    import llvmlite  # (the package only: its version; the binding, LLVM itself, is not loaded)

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            first = f.read(1 << 16).split("\n\n", 1)[0]
    except OSError:
        return None
    keep = ("vendor_id", "cpu family", "model", "model name", "flags")
    lines = sorted(ln.split(":", 1)[0].strip() + "=" + ln.split(":", 1)[1].strip()
                   for ln in first.splitlines() if ":" in ln and ln.split(":", 1)[0].strip() in keep)  # fmt: skip
    if not any(ln.startswith("flags=") for ln in lines):
        return None
    return "\0".join([platform.machine(), llvmlite.__version__, *lines])


def _signatures(fns: tuple[Fn, ...]) -> str:
    """The declared signatures as text, for the cache keys: a changed one is another build."""
    return ";".join(f"{fn.name}:{_LLVM_OF[fn.restype]}({','.join(_LLVM_OF[t] for _, t in fn.args)})" for fn in fns)


def elf_cache_file(name: str, ir: str, opt: int, fns: tuple[Fn, ...] = ()) -> Path | None:
    """Where this build's object code is kept for :mod:`keyscope._elf`, keyed without LLVM (the IR, the
    signatures, ``opt`` and :func:`machine_fingerprint`); None where that loader does not apply."""
    fp = machine_fingerprint()
    if fp is None:
        return None
    ident = "\0".join(["elf", ir, _signatures(fns), str(opt), fp])
    return cache_dir() / f"{name}-{hashlib.sha256(ident.encode()).hexdigest()[:32]}.elf"


def _elf_library(obj: bytes, fns: tuple[Fn, ...], from_cache: bool, cpu: str, features: str) -> Library | None:
    from . import _elf

    got = _elf.load(obj, [fn.name for fn in fns])
    if got is None:
        return None
    addresses, image = got
    return Library({fn.name: fn.ctype()(addresses[fn.name]) for fn in fns}, image, from_cache, cpu, features)


def _from_elf_cache(path: Path, fns: tuple[Fn, ...]) -> Library | None:
    """The declared functions of the object cached at ``path`` (:func:`elf_cache_file`), or None."""
    blob = _read_cache(path)
    if blob is None or not blob.startswith(_ELF_MAGIC):
        return None
    try:
        cpu, features, obj = blob[len(_ELF_MAGIC):].split(b"\n", 2)
    except ValueError:
        return None
    return _elf_library(obj, fns, True, cpu.decode(), features.decode())


def _as_elf(path: Path | None, obj: bytes, fns: tuple[Fn, ...], lib: Library) -> Library:
    """``lib`` as the LLVM-free loader loads its object ``obj`` (cached at ``path`` for the processes after
    this one), so that this process runs what they will; ``lib`` itself where that loader does not apply."""
    if path is None:
        return lib
    got = _elf_library(obj, fns, lib.from_cache, lib.cpu, lib.features)
    if got is None:
        return lib
    _write_cache(path, _ELF_MAGIC + lib.cpu.encode() + b"\n" + lib.features.encode() + b"\n" + obj)
    return got


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

    def __init__(self, name: str, ir: Callable[[], str], fns: tuple[Fn, ...], opt: int = 3,
                 check: Callable[[], None] | None = None):  # fmt: skip
        self._args = (name, ir, fns, opt, check)
        self._lib: Library | None = None
        self._lock = threading.Lock()

    def get(self) -> Library:
        lib = self._lib
        if lib is None:
            with self._lock:
                if self._lib is None:
                    name, ir, fns, opt, check = self._args
                    self._lib = load(name, ir(), fns, opt, check)
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

    ident = "\0".join(
        [ir, _signatures(fns), str(opt), llvmlite.__version__, repr(llvm.llvm_version_info), llvm.get_process_triple(),
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
