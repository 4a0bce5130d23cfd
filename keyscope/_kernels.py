"""Compiled hash kernels over Arrow binary-view buffers (LLVM IR, via llvmlite).

Why LLVM IR and not ``@njit``: the kernels are three short loops, and numba's
fixed cost per process (import ~0.17 s, then ~0.4-0.6 s to load even a
*cached* kernel, because it initialises its whole CPU target and BLAS hooks)
was 25x the time spent hashing a million keys.  The same loops written as IR
and handed to llvmlite (numba's own backend) compile in ~30 ms, run at the
speed of ``gcc -O3 -march=native`` (benchmarks/bench_partitioners.py), and are
called through ctypes, which releases the GIL, so chunks can be hashed on
several threads with no shared state.

Why raw views: a key column arrives from Polars as a binary *view* array
(16-byte views: length, then the key inline when <= 12 bytes, else a prefix,
a buffer index and an offset).  Copying it to offsets+data would cost more
than hashing it (PERF-NOTES), so the kernels read the views directly; the
caller keeps the Arrow buffers alive for the duration of the call.

Each kernel writes, for every row, the *modulo operand* of
:mod:`keyscope.partitioners` (``partition = operand % n``); null rows get 0
and are masked by the caller.  Exactness is proven against kafka-python and
zlib by the property tests in tests/test_partitioners.py.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

import numpy as np

if sys.byteorder != "little":  # pragma: no cover - every supported target is LE
    raise ImportError("keyscope's hash kernels assume a little-endian machine")

NAMES = ("murmur2", "consistent", "fnv1a")

# Below this many rows one thread is faster than handing chunks to a pool.
PARALLEL_MIN_ROWS = 1 << 18


def _crc_tables() -> list[int]:
    """Slicing-by-8 tables for CRC-32 (IEEE, reflected 0xEDB88320), flattened."""
    t0 = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[i] >> 8) ^ t0[prev[i] & 0xFF] for i in range(256)])
    return [v for t in tables for v in t]


def _crc_lookup(var: str, src: str, shift: int, table: int | str) -> str:
    """IR for ``var = T[table][(src >> shift) & 0xff]`` (``table``: a constant or an i32 register)."""
    base = f"{table * 256}" if isinstance(table, int) else f"%{var}.tb"
    pre = "" if isinstance(table, int) else f"  %{var}.tb = shl i32 %{table}, 8\n"
    return pre + (
        f"  %{var}.s = lshr i32 %{src}, {shift}\n"
        f"  %{var}.b = and i32 %{var}.s, 255\n"
        f"  %{var}.i = add i32 %{var}.b, {base}\n"
        f"  %{var}.e = zext i32 %{var}.i to i64\n"
        f"  %{var}.p = getelementptr [2048 x i32], ptr @crc_tables, i64 0, i64 %{var}.e\n"
        f"  %{var} = load i32, ptr %{var}.p, align 4\n"
    )


def _xor_all(out: str, names: list[str]) -> str:
    lines, acc = [], names[0]
    for i, n in enumerate(names[1:]):
        nxt = out if i == len(names) - 2 else f"{out}.x{i}"
        lines.append(f"  %{nxt} = xor i32 %{acc}, %{n}\n")
        acc = nxt
    return "".join(lines)


def _crc_block8(out: str, c: str, w0: str, w1: str) -> str:
    """IR: one slicing-by-8 step, ``out`` = CRC state after the 8 bytes ``w0``, ``w1`` (LE words)."""
    ir = f"  %{out}.one = xor i32 %{w0}, %{c}\n"
    ir += "".join(
        _crc_lookup(f"{out}.a{k}", f"{out}.one", 8 * k, 7 - k) + _crc_lookup(f"{out}.b{k}", w1, 8 * k, 3 - k)
        for k in range(4)
    )
    return ir + _xor_all(out, [f"{out}.a{k}" for k in range(4)] + [f"{out}.b{k}" for k in range(4)])


_MURMUR2 = r"""
; Kafka's Utils.murmur2, then & 0x7fffffff (the modulo operand).
define internal i32 @murmur2(ptr %p, i32 %len) alwaysinline nounwind {
entry:
  %h0 = xor i32 %len, 2538058380            ; seed 0x9747b28c ^ length
  %n4 = and i32 %len, -4
  %any = icmp ne i32 %n4, 0
  br i1 %any, label %body, label %tail
body:
  %i = phi i32 [0, %entry], [%i.next, %body]
  %h = phi i32 [%h0, %entry], [%h.next, %body]
  %ie = zext i32 %i to i64
  %q = getelementptr i8, ptr %p, i64 %ie
  %k0 = load i32, ptr %q, align 1
  %k1 = mul i32 %k0, 1540483477             ; m = 0x5bd1e995
  %k1s = lshr i32 %k1, 24
  %k2 = xor i32 %k1, %k1s
  %k3 = mul i32 %k2, 1540483477
  %hm = mul i32 %h, 1540483477
  %h.next = xor i32 %hm, %k3
  %i.next = add i32 %i, 4
  %more = icmp ult i32 %i.next, %n4
  br i1 %more, label %body, label %tail
tail:
  ; The last 1-3 bytes: load the 4 bytes that end the key and shift the tail
  ; down (in bounds: a long key has >= 13 bytes).  One two-way branch, taken
  ; the same way for every key of a fixed length (UUIDs).
  %ht = phi i32 [%h0, %entry], [%h.next, %body]
  %rest = and i32 %len, 3
  %hastail = icmp ne i32 %rest, 0
  br i1 %hastail, label %t1, label %fin
t1:
  %lene = zext i32 %len to i64
  %endp = getelementptr i8, ptr %p, i64 %lene
  %lastp = getelementptr i8, ptr %endp, i64 -4
  %last = load i32, ptr %lastp, align 1
  %restbits = shl i32 %rest, 3
  %drop = sub i32 32, %restbits
  %tw = lshr i32 %last, %drop
  %htx = xor i32 %ht, %tw
  %h1 = mul i32 %htx, 1540483477
  br label %fin
fin:
  %hf = phi i32 [%ht, %tail], [%h1, %t1]
  %f1s = lshr i32 %hf, 13
  %f1 = xor i32 %hf, %f1s
  %f2 = mul i32 %f1, 1540483477
  %f2s = lshr i32 %f2, 15
  %f3 = xor i32 %f2, %f2s
  %r = and i32 %f3, 2147483647
  ret i32 %r
}
"""

_MURMUR2_SHORT = r"""
; murmur2 for a key inline in its view (<= 12 bytes, zero padded to 12): the
; same arithmetic with no branch at all -- each of the 3 possible blocks is
; computed and kept only when the key has it -- so that keys of mixed lengths
; cost no mispredicted branches.
define internal i32 @murmur2_short(ptr %p, i32 %len) alwaysinline nounwind {
entry:
  %h0 = xor i32 %len, 2538058380
  %nb = lshr i32 %len, 2
"""
for _k in range(3):
    _MURMUR2_SHORT += f"""  %q{_k} = getelementptr i8, ptr %p, i64 {4 * _k}
  %w{_k} = load i32, ptr %q{_k}, align 1
  %a{_k} = mul i32 %w{_k}, 1540483477
  %as{_k} = lshr i32 %a{_k}, 24
  %b{_k} = xor i32 %a{_k}, %as{_k}
  %k{_k} = mul i32 %b{_k}, 1540483477
  %hm{_k} = mul i32 %h{_k}, 1540483477
  %hx{_k} = xor i32 %hm{_k}, %k{_k}
  %use{_k} = icmp ugt i32 %nb, {_k}
  %h{_k + 1} = select i1 %use{_k}, i32 %hx{_k}, i32 %h{_k}
"""
_MURMUR2_SHORT += r"""  %ht = add i32 %h3, 0
  %rest = and i32 %len, 3
  %lene = zext i32 %len to i64
  %endp = getelementptr i8, ptr %p, i64 %lene
  %lastp = getelementptr i8, ptr %endp, i64 -4
  %last = load i32, ptr %lastp, align 1
  %restbits = shl i32 %rest, 3
  %drop = sub i32 32, %restbits
  %hastail = icmp ne i32 %rest, 0
  %dropsafe = select i1 %hastail, i32 %drop, i32 0
  %tw = lshr i32 %last, %dropsafe
  %htx = xor i32 %ht, %tw
  %htm = mul i32 %htx, 1540483477
  %hf = select i1 %hastail, i32 %htm, i32 %ht
  %f1s = lshr i32 %hf, 13
  %f1 = xor i32 %hf, %f1s
  %f2 = mul i32 %f1, 1540483477
  %f2s = lshr i32 %f2, 15
  %f3 = xor i32 %f2, %f2s
  %r = and i32 %f3, 2147483647
  ret i32 %r
}
"""

_FNV1A = r"""
; FNV-1a 32, then abs() of it as a signed int32 (Sarama / librdkafka fnv1a).
define internal i32 @fnv1a(ptr %p, i32 %len) alwaysinline nounwind {
entry:
  %any = icmp ne i32 %len, 0
  br i1 %any, label %body, label %fin
body:
  %i = phi i32 [0, %entry], [%i.next, %body]
  %h = phi i32 [2166136261, %entry], [%h.next, %body]    ; offset basis
  %ie = zext i32 %i to i64
  %q = getelementptr i8, ptr %p, i64 %ie
  %b = load i8, ptr %q, align 1
  %bw = zext i8 %b to i32
  %hx = xor i32 %h, %bw
  %h.next = mul i32 %hx, 16777619                        ; FNV prime
  %i.next = add i32 %i, 1
  %more = icmp ult i32 %i.next, %len
  br i1 %more, label %body, label %fin
fin:
  %hf = phi i32 [2166136261, %entry], [%h.next, %body]
  %neg = icmp slt i32 %hf, 0
  %minus = sub i32 0, %hf             ; int32 min stays 0x80000000 = 2**31 unsigned
  %r = select i1 %neg, i32 %minus, i32 %hf
  ret i32 %r
}
"""


def _crc32_ir() -> str:
    table = ", ".join(f"i32 {v}" for v in _crc_tables())
    b4 = "".join(_crc_lookup(f"d{k}", "one4", 8 * k, 3 - k) for k in range(4))
    return (
        f"@crc_tables = internal unnamed_addr constant [2048 x i32] [{table}], align 64\n"
        + r"""
; CRC-32 (IEEE) as zlib / librdkafka rd_crc32: slicing-by-8, one by-4 step,
; then 0-3 single bytes.  (Measured: a branch-free tail with 8 selected
; lookups, and a by-8-then-bytes loop like the C reference, were both slower.)
define internal i32 @consistent(ptr %p, i32 %len) alwaysinline nounwind {
entry:
  %n8 = lshr i32 %len, 3
  %any8 = icmp ne i32 %n8, 0
  br i1 %any8, label %b8, label %after8
b8:
  %j = phi i32 [0, %entry], [%j.next, %b8]
  %c = phi i32 [-1, %entry], [%c8, %b8]
  %je = zext i32 %j to i64
  %off = shl i64 %je, 3
  %q = getelementptr i8, ptr %p, i64 %off
  %w0 = load i32, ptr %q, align 1
  %q4 = getelementptr i8, ptr %q, i64 4
  %w1 = load i32, ptr %q4, align 1
"""
        + _crc_block8("c8", "c", "w0", "w1")
        + r"""  %j.next = add i32 %j, 1
  %more8 = icmp ult i32 %j.next, %n8
  br i1 %more8, label %b8, label %after8
after8:
  %ca = phi i32 [-1, %entry], [%c8, %b8]
  %done8 = and i32 %len, -8
  %d8e = zext i32 %done8 to i64
  %p8 = getelementptr i8, ptr %p, i64 %d8e
  %has4 = and i32 %len, 4
  %is4 = icmp ne i32 %has4, 0
  br i1 %is4, label %s4, label %after4
s4:
  %w4 = load i32, ptr %p8, align 1
  %one4 = xor i32 %w4, %ca
"""
        + b4
        + _xor_all("c4", [f"d{k}" for k in range(4)])
        + r"""  %p4 = getelementptr i8, ptr %p8, i64 4
  br label %after4
after4:
  %cb = phi i32 [%ca, %after8], [%c4, %s4]
  %pb = phi ptr [%p8, %after8], [%p4, %s4]
  %nb = and i32 %len, 3
  %anyb = icmp ne i32 %nb, 0
  br i1 %anyb, label %bytes, label %fin
bytes:
  %k = phi i32 [0, %after4], [%k.next, %bytes]
  %cc = phi i32 [%cb, %after4], [%cc.next, %bytes]
  %ke = zext i32 %k to i64
  %bp = getelementptr i8, ptr %pb, i64 %ke
  %bv = load i8, ptr %bp, align 1
  %bw = zext i8 %bv to i32
  %cx = xor i32 %cc, %bw
"""
        + _crc_lookup("t", "cx", 0, 0)
        + r"""  %csh = lshr i32 %cc, 8
  %cc.next = xor i32 %t, %csh
  %k.next = add i32 %k, 1
  %moreb = icmp ult i32 %k.next, %nb
  br i1 %moreb, label %bytes, label %fin
fin:
  %cf = phi i32 [%cb, %after4], [%cc.next, %bytes]
  %res = xor i32 %cf, -1
  ret i32 %res
}
"""
    )


# One kernel per hash over one chunk of views: the hash is inlined, so the
# per-key loop has no call and no branch on the algorithm.  ``valid`` is the
# Arrow validity bitmap (or null) and ``vbit`` the chunk's bit offset in it:
# a null row's view may hold anything, so it is never dereferenced.
_VIEWS_KERNEL = r"""
define void @views_{h}(ptr noalias %views, i64 %n, ptr noalias %bufs, ptr noalias %out,
                       ptr noalias %valid, i64 %vbit) nounwind {{
entry:
  %any = icmp sgt i64 %n, 0
  %hasmask = icmp ne ptr %valid, null
  br i1 %any, label %loop, label %done
loop:
  %i = phi i64 [0, %entry], [%i.next, %store]
  br i1 %hasmask, label %check, label %view
check:
  %bit = add i64 %i, %vbit
  %byte = lshr i64 %bit, 3
  %bitin = and i64 %bit, 7
  %vp = getelementptr i8, ptr %valid, i64 %byte
  %vb = load i8, ptr %vp, align 1
  %vbw = zext i8 %vb to i64
  %vsh = lshr i64 %vbw, %bitin
  %vset = and i64 %vsh, 1
  %isvalid = icmp ne i64 %vset, 0
  br i1 %isvalid, label %view, label %store
view:
  %voff = shl i64 %i, 4
  %v = getelementptr i8, ptr %views, i64 %voff
  %len = load i32, ptr %v, align 4
  %inline = icmp sle i32 %len, 12
  br i1 %inline, label %short, label %long
short:
  %ps = getelementptr i8, ptr %v, i64 4
  %hs = call i32 @{short}(ptr %ps, i32 %len)
  br label %store
long:
  %bip = getelementptr i8, ptr %v, i64 8
  %bi = load i32, ptr %bip, align 4
  %bie = zext i32 %bi to i64
  %bpp = getelementptr i64, ptr %bufs, i64 %bie
  %base = load ptr, ptr %bpp, align 8
  %offp = getelementptr i8, ptr %v, i64 12
  %off = load i32, ptr %offp, align 4
  %offe = zext i32 %off to i64
  %pl = getelementptr i8, ptr %base, i64 %offe
  %hl = call i32 @{h}(ptr %pl, i32 %len)
  br label %store
store:
  %res = phi i32 [0, %check], [%hs, %short], [%hl, %long]
  %op = getelementptr i32, ptr %out, i64 %i
  store i32 %res, ptr %op, align 4
  %i.next = add i64 %i, 1
  %more = icmp slt i64 %i.next, %n
  br i1 %more, label %loop, label %done
done:
  ret void
}}
"""


# Hashes with a branch-free variant for keys inline in their view.
_SHORT = {"murmur2": "murmur2_short"}


def module_ir() -> str:
    """The whole kernel module as LLVM IR text (also handy for reading the code)."""
    return "".join(
        [_MURMUR2, _MURMUR2_SHORT, _FNV1A, _crc32_ir()]
        + [_VIEWS_KERNEL.format(h=h, short=_SHORT.get(h, h)) for h in NAMES]
    )


_KERNEL_TYPE = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64
)
_lock = threading.Lock()
_compiled: dict | None = None


def _kernels() -> dict:
    """Compile the module once per process (~30 ms) and return name -> ctypes function."""
    global _compiled
    if _compiled is not None:
        return _compiled
    with _lock:
        if _compiled is None:
            import llvmlite.binding as llvm

            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            mod = llvm.parse_assembly(module_ir())
            mod.verify()
            target = llvm.Target.from_default_triple()
            tm = target.create_target_machine(
                cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3
            )
            pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
            pb.getModulePassManager().run(mod, pb)
            engine = llvm.create_mcjit_compiler(mod, tm)
            engine.finalize_object()
            fns = {h: _KERNEL_TYPE(engine.get_function_address(f"views_{h}")) for h in NAMES}
            fns["_engine"] = engine  # owns the machine code: keep it alive
            _compiled = fns
    return _compiled


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _chunk_jobs(arr, out: np.ndarray):
    """(args for one kernel call, keep-alive) per Arrow chunk, in row order."""
    import pyarrow as pa

    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    jobs, keep, pos = [], [], 0
    for chunk in chunks:
        n = len(chunk)
        if n == 0:
            continue
        if not (pa.types.is_binary_view(chunk.type) or pa.types.is_string_view(chunk.type)):
            chunk = chunk.cast(pa.binary_view())
        bufs = chunk.buffers()
        buf_addrs = np.array([b.address if b is not None else 0 for b in bufs[2:]] or [0], dtype=np.int64)
        valid = bufs[0].address if (bufs[0] is not None and chunk.null_count) else None
        keep += [chunk, buf_addrs]
        jobs.append(
            (bufs[1].address + 16 * chunk.offset, n, buf_addrs.ctypes.data, out[pos : pos + n], valid, chunk.offset)
        )
        pos += n
    return jobs, keep


def hash_arrow(arr, name: str, threads: int | None = None) -> np.ndarray:
    """Modulo operands (uint32) for every row of an Arrow (chunked) binary/string array.

    ``threads``: None = up to 2 when the column is large; results are the
    same for any value (each thread writes its own slice of the output).
    """
    if name not in NAMES:  # pragma: no cover - names are validated by partitioners
        raise ValueError(name)
    fn = _kernels()[name]
    out = np.empty(len(arr), dtype=np.uint32)
    jobs, keep = _chunk_jobs(arr, out)
    if threads is None:
        threads = min(2, _cpus()) if len(out) >= PARALLEL_MIN_ROWS else 1
    tasks = []
    for views, n, bufs, dest, valid, vbit in jobs:
        # Split big chunks so every thread gets work; views are 16 bytes apart.
        parts = max(1, min(threads, n // (PARALLEL_MIN_ROWS // 2) or 1))
        step = -(-n // parts)
        for s in range(0, n, step):
            m = min(step, n - s)
            tasks.append((views + 16 * s, m, bufs, dest[s : s + m].ctypes.data, valid, vbit + s))
    if threads <= 1 or len(tasks) == 1:
        for t in tasks:
            fn(*t)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(lambda t: fn(*t), tasks))
    del keep
    return out


def hash_binary(series, name: str, threads: int | None = None) -> np.ndarray:
    """Modulo operands (uint32) for every row of a Polars Binary/String Series (null rows: 0)."""
    import polars as pl

    return hash_arrow(series.to_arrow(compat_level=pl.CompatLevel.newest()), name, threads)


def warm() -> None:
    """Compile the kernels now (e.g. before timing steady state)."""
    _kernels()
