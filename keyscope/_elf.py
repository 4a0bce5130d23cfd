"""Cached kernel object code put into memory without LLVM: a small loader of x86-64 ELF relocatable objects.

Why: every keyscope kernel is LLVM IR compiled once per machine and cached as object
code (:mod:`keyscope._native`).  Loading that object through llvmlite's JIT meant
importing and initialising LLVM in every process: ~40 ms, and 43 MB of resident
memory before any kernel ran (libllvmlite.so), plus ~9 MB per loaded module; that was
a third of ``keyscope sample``'s 142 MB floor (docs/benchmarks.md, samprss7).  The
objects LLVM writes for a JIT target use the large code model: every reference to
code, constants or an external function (``memcpy``, ``memset``) is one absolute
64-bit relocation, so loading one is copying its sections into fresh pages, writing
those addresses, and making the pages executable.

Scope: what the JIT target machine emits for keyscope's modules on x86-64 Linux:
PROGBITS/NOBITS sections, ``R_X86_64_64`` relocations (``R_X86_64_PC32``/``PLT32``
within the image too), no writable data, symbols defined in the object or found in
the process (libc).  Anything else (another machine, a relocation type it does not
know, a missing symbol) returns None and the caller loads the object through LLVM,
as before.  Unwind tables (``.eh_frame``) are not loaded: no exception passes
through a kernel.
"""

from __future__ import annotations

import ctypes
import struct
import sys
from dataclasses import dataclass

_SHT_PROGBITS, _SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS = 1, 2, 4, 8
_SHF_WRITE, _SHF_ALLOC, _SHF_EXECINSTR = 1, 2, 4
_SHN_UNDEF, _SHN_ABS = 0, 0xFFF1
_STT_FUNC, _STT_SECTION = 2, 3
_R_X86_64_64, _R_X86_64_PC32, _R_X86_64_PLT32 = 1, 2, 4
_EM_X86_64, _ET_REL = 62, 1
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20
_PAGE = 4096


@dataclass
class Image:
    """The loaded sections of one object (mapped for the life of the process: its functions may be held anywhere)."""

    address: int
    size: int


class _Refused(Exception):
    pass


def supported() -> bool:
    """Can this machine run the loader at all (x86-64 Linux, a libc with mmap)?"""
    import platform

    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64") and _libc() is not None


_libc_handle: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL | None:
    global _libc_handle
    if _libc_handle is None:
        try:
            lib = ctypes.CDLL(None, use_errno=True)
            lib.mmap.restype = ctypes.c_void_p
            lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                 ctypes.c_long]  # fmt: skip
            lib.mprotect.restype = ctypes.c_int
            lib.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            lib.munmap.restype = ctypes.c_int
            lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        except (OSError, AttributeError):
            return None
        _libc_handle = lib
    return _libc_handle


def _cstr(table: bytes, at: int) -> str:
    end = table.index(b"\0", at)
    return table[at:end].decode("utf-8", "replace")


def load(obj: bytes, names: list[str]) -> tuple[dict[str, int], Image] | None:
    """The addresses of the functions ``names`` in object code ``obj``, loaded into executable memory, and the
    image holding them; None when the object is outside this loader's scope (then load it through LLVM)."""
    if not supported():
        return None
    try:
        return _load(obj, names)
    except (_Refused, struct.error, IndexError, ValueError, OverflowError):
        return None


def _load(obj: bytes, names: list[str]) -> tuple[dict[str, int], Image]:
    if obj[:4] != b"\x7fELF" or obj[4] != 2 or obj[5] != 1:
        raise _Refused("not a little-endian ELF64 object")
    e_type, e_machine = struct.unpack_from("<HH", obj, 16)
    if e_type != _ET_REL or e_machine != _EM_X86_64:
        raise _Refused("not an x86-64 relocatable object")
    e_shoff, = struct.unpack_from("<Q", obj, 40)
    e_shentsize, e_shnum, e_shstrndx = struct.unpack_from("<HHH", obj, 58)
    if e_shentsize != 64:
        raise _Refused("section headers of another size")
    secs = [struct.unpack_from("<IIQQQQIIQQ", obj, e_shoff + 64 * i) for i in range(e_shnum)]
    for _, typ, _, _, off, sz, _, _, align, _ in secs:  # every section's bytes within the object
        if (typ != _SHT_NOBITS and off + sz > len(obj)) or align > _PAGE or sz > 1 << 30:
            raise _Refused("a section past the end of the object")
    if e_shstrndx >= e_shnum:
        raise _Refused("no section names")
    sh = secs[e_shstrndx]
    shstr = obj[sh[4]:sh[4] + sh[5]]
    names_of = [_cstr(shstr, s[0]) for s in secs]
    # layout: every allocated section but the unwind tables on pages of its own, the code first.  Packed at
    # their own alignments (the CRC tables beside the code), crc32 over 2M short keys took 16.1 ms against
    # 12.5 ms loaded by LLVM's JIT; the code apart but the constants packed, 14.9 against 13.0; each section on
    # its own pages, 13.3 against 13.0 (medians of 6 runs taking turns)
    place: dict[int, int] = {}
    size = code = 0
    for exec_part in (True, False):
        for i, (_, typ, flags, _, _, sz, _, _, align, _) in enumerate(secs):
            if not flags & _SHF_ALLOC or names_of[i].startswith(".eh_frame") or bool(flags & _SHF_EXECINSTR) != exec_part:
                continue
            if typ not in (_SHT_PROGBITS, _SHT_NOBITS):
                raise _Refused(f"section {names_of[i]} of type {typ}")
            if flags & _SHF_WRITE and sz:
                raise _Refused(f"writable section {names_of[i]}")
            size = -(-size // _PAGE) * _PAGE  # (every alignment an ELF section asks for divides a page)
            place[i] = size
            size += sz
        if exec_part:
            size = code = -(-size // _PAGE) * _PAGE
    if not place:
        raise _Refused("nothing to load")
    symtabs = [i for i, s in enumerate(secs) if s[1] == _SHT_SYMTAB]
    if len(symtabs) != 1:
        raise _Refused("not one symbol table")
    st = secs[symtabs[0]]
    strtab = obj[secs[st[6]][4]:secs[st[6]][4] + secs[st[6]][5]]
    syms = [struct.unpack_from("<IBBHQQ", obj, st[4] + 24 * j) for j in range(st[5] // 24)]
    libc = _libc()
    assert libc is not None
    total = -(-size // _PAGE) * _PAGE
    base = libc.mmap(None, total, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if base is None or base == ctypes.c_void_p(-1).value:
        raise _Refused("mmap failed")
    try:
        for i, at in place.items():
            _, typ, _, _, off, sz, _, _, _, _ = secs[i]
            if typ == _SHT_PROGBITS and sz:
                if off + sz > len(obj):
                    raise _Refused("a section past the end of the object")
                ctypes.memmove(base + at, obj[off:off + sz], sz)  # (NOBITS: mmap's pages are zero)
        process = ctypes.CDLL(None)

        def address(j: int) -> int:
            name_at, info, _, shndx, value, _ = syms[j]
            if shndx == _SHN_UNDEF:
                name = _cstr(strtab, name_at)
                try:
                    return ctypes.cast(getattr(process, name), ctypes.c_void_p).value or 0
                except AttributeError:
                    raise _Refused(f"symbol {name} not in the process") from None
            if shndx == _SHN_ABS:
                return value
            if shndx not in place:
                raise _Refused("a symbol in a section not loaded")
            return base + place[shndx] + value

        for i, (_, typ, _, _, off, sz, link, target, _, entsize) in enumerate(secs):
            if typ != _SHT_RELA or target not in place:
                continue
            if entsize != 24 or link != symtabs[0]:
                raise _Refused("relocations of another layout")
            tsize = secs[target][5]
            for k in range(sz // 24):
                r_off, r_info, addend = struct.unpack_from("<QQq", obj, off + 24 * k)
                kind, j = r_info & 0xFFFFFFFF, r_info >> 32
                s = address(j) + addend
                p = base + place[target] + r_off
                if kind == _R_X86_64_64:
                    if r_off + 8 > tsize:
                        raise _Refused("a relocation past its section")
                    ctypes.c_uint64.from_address(p).value = s & (1 << 64) - 1
                elif kind in (_R_X86_64_PC32, _R_X86_64_PLT32):
                    rel = s - p
                    if r_off + 4 > tsize or not -(1 << 31) <= rel < 1 << 31:
                        raise _Refused("a PC-relative relocation out of reach")
                    ctypes.c_int32.from_address(p).value = rel
                else:
                    raise _Refused(f"relocation type {kind}")
        found: dict[str, int] = {}
        want = set(names)
        for j, (name_at, info, _, shndx, value, _) in enumerate(syms):
            if info & 0xF == _STT_FUNC and shndx in place:
                name = _cstr(strtab, name_at)
                if name in want:
                    found[name] = base + place[shndx] + value
        if set(found) != want:
            raise _Refused(f"functions missing: {sorted(want - set(found))}")
        if (code and libc.mprotect(base, code, _PROT_READ | _PROT_EXEC) != 0) or \
                (total > code and libc.mprotect(base + code, total - code, _PROT_READ) != 0):
            raise _Refused("mprotect failed")
    except BaseException:
        libc.munmap(base, total)
        raise
    return found, Image(base, total)
