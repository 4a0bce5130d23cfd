"""The compiled kernels (keyscope._kernels): exact on every key length, every
Arrow layout, any thread split, and never reading a null slot's view."""

from __future__ import annotations

import random
import struct
import zlib

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from keyscope import _kernels
from keyscope import partitioners as P


def reference(name: str, key: bytes) -> int:
    """The kernel's uint32 from the clients' own code (kafka-python, zlib), else keyscope's pure Python twin."""
    if name == "murmur2":
        return kafka_python_murmur2(key) & 0x7FFFFFFF
    if name == "murmur2_raw":
        return kafka_python_murmur2(key) & 0xFFFFFFFF
    if name in ("consistent", "consistent_table", "consistent_clmul"):
        return zlib.crc32(key)
    if name == "fnv1a":
        h = P.fnv1a32(key)
        return (1 << 32) - h if h & 0x80000000 else h
    return _kernels._references()[name](key)


def _has_clmul() -> bool:
    import llvmlite.binding as llvm

    flags = llvm.get_host_cpu_features().flatten().split(",")
    return _kernels._X86 and all(f in flags for f in _kernels.CLMUL_FEATURES)


# Every kernel a column can be hashed with on this machine: the rules' kernels
# plus CRC-32's two implementations (tables; carry-less multiply, which only
# runs on a CPU that has PCLMULQDQ, so it is only listed there).
VARIANTS = (*_kernels.NAMES, "consistent_table", *(("consistent_clmul",) if _has_clmul() else ()))


@pytest.mark.parametrize("name", VARIANTS)
def test_every_length_from_0_to_80_and_around_the_inline_limit(name):
    # Lengths 0..80 cover every murmur2 tail (len & 3), every CRC by-8/by-4/byte
    # split, and both view layouts (inline <= 12 bytes, buffer > 12).
    rng = np.random.default_rng(1)
    keys = [rng.integers(0, 256, ln, dtype=np.uint8).tobytes() for ln in range(81) for _ in range(3)]
    keys += [b"\xff" * ln for ln in range(20)] + [b"\x00" * ln for ln in range(20)]
    got = _kernels.hash_arrow(pa.array(keys, type=pa.binary_view()), name, threads=1)
    assert got.tolist() == [reference(name, k) for k in keys]


@pytest.mark.parametrize("name", VARIANTS)
def test_a_long_key(name):
    key = bytes(range(256)) * 300  # 76,800 bytes
    got = _kernels.hash_arrow(pa.array([key, b"x"], type=pa.binary_view()), name)
    assert got.tolist() == [reference(name, key), reference(name, b"x")]


def test_null_slot_view_is_never_dereferenced():
    # Arrow leaves a null slot's view undefined.  Forge one claiming 1,000
    # bytes in data buffer 2**31-16 (which does not exist): following it would
    # crash; the kernel must skip it via the validity bitmap.
    good = b"a-key-longer-than-twelve-bytes"
    data = pa.py_buffer(good)
    views = struct.pack("<iiii", len(good), int.from_bytes(good[:4], "little"), 0, 0)
    views += struct.pack("<iiii", 1000, 0, 0x7FFFFFF0, 123456)
    views += struct.pack("<i12s", 2, b"ok")
    validity = pa.py_buffer(bytes([0b101]))
    arr = pa.Array.from_buffers(pa.binary_view(), 3, [validity, pa.py_buffer(views), data], null_count=1)
    for name in VARIANTS:
        got = _kernels.hash_arrow(arr, name, threads=1)
        assert got[0] == reference(name, good) and got[1] == 0 and got[2] == reference(name, b"ok")


def test_thread_split_is_exact_for_chunks_slices_and_nulls(monkeypatch):
    # Force the multi-thread split on small columns, with chunk and slice
    # offsets that are not multiples of 8 (validity bits mid-byte).
    monkeypatch.setattr(_kernels, "PARALLEL_MIN_ROWS", 64)
    keys = [None if i % 17 == 0 else (b"" if i % 29 == 0 else f"k{i}-{'x' * (i % 23)}".encode()) for i in range(3001)]
    chunked = pa.chunked_array(
        [pa.array(keys[:1001], type=pa.binary_view()), pa.array(keys[1001:], type=pa.binary_view()).slice(0)]
    )
    sliced = pa.array(keys, type=pa.binary_view()).slice(5, 2990)
    for name in VARIANTS:
        expected = [0 if k is None else reference(name, k) for k in keys]
        for threads in (1, 2, 3, None):
            assert _kernels.hash_arrow(chunked, name, threads).tolist() == expected
            assert _kernels.hash_arrow(sliced, name, threads).tolist() == expected[5:2995]


def test_hash_column_threads_argument_never_changes_the_result():
    keys = pl.Series([f"tenant-{i % 5000}:{i}".encode() for i in range(_kernels.PARALLEL_MIN_ROWS + 1234)] + [None])
    for name in P.KEYED:  # every family, so every kernel and numpy step
        one = P.hash_column(keys, name, threads=1)
        two = P.hash_column(keys, name, threads=2)
        auto = P.hash_column(keys, name)
        assert one.equals(two) and one.equals(auto)
        # the null key: unhashed, or hashed as the empty key by librdkafka's non-random rules
        assert one.null_count() == (0 if P.PARTITIONERS[name].null_key_hashed else 1)
        assert one[-1] == P.PARTITIONERS[name].operand(None)
        assert one[:20].to_list() == [P.PARTITIONERS[name].operand(k) for k in keys[:20].to_list()]



def test_other_arrow_layouts_are_converted_not_misread():
    keys = [b"short", b"a key well beyond twelve bytes", b"", None]
    for typ in (pa.binary(), pa.large_binary(), pa.string(), pa.large_string(), pa.string_view()):
        arr = pa.array([k.decode() if k is not None and "string" in str(typ) else k for k in keys], type=typ)
        got = _kernels.hash_arrow(arr, "murmur2")
        assert got.tolist() == [0 if k is None else reference("murmur2", k) for k in keys]


def test_compiled_once_per_process_and_without_numba():
    import subprocess
    import sys

    code = (
        "import sys, polars as pl\n"
        "from keyscope import _kernels\n"
        "a = _kernels._kernels(); _kernels.hash_binary(pl.Series([b'x'] * 10), 'murmur2')\n"
        "assert _kernels._kernels() is a\n"
        "print('numba' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_module_ir_is_valid_llvm():
    import llvmlite.binding as llvm

    mod = llvm.parse_assembly(_kernels.module_ir())
    mod.verify()
    assert {f.name for f in mod.functions if not f.is_declaration} >= {f"views_{n}" for n in _kernels.NAMES}



def _call_graph(ir: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """Each defined function's IR body and the functions it calls, from the module's text."""
    import re

    bodies: dict[str, str] = {}
    for m in re.finditer(r"^define [^@]*@([\w.]+)\(.*?^}$", ir, re.M | re.S):
        bodies[m.group(1)] = m.group(0)
    calls = {f: set(re.findall(r"call [^@]*@([\w.]+)\(", b)) & set(bodies) for f, b in bodies.items()}
    return bodies, calls


def test_a_view_is_read_through_rbp_only_where_rbp_is_no_frame_pointer():
    """The pin puts a row's view address in rbp; a callee with an over-aligned alloca makes rbp the
    frame pointer, which the pin would overwrite (fnv1a crashed so): none may be reachable."""
    ir = _kernels.module_ir()
    bodies, calls = _call_graph(ir)
    pinned = {f for f, b in bodies.items() if '"={rbp},0"' in b}
    if not _kernels._X86:
        assert not pinned
        return
    assert {"views_consistent", "views_murmur2", "views_consistent_clmul"} <= pinned
    assert not pinned & {f"views_{h}" for h in _kernels._FRAME_ALLOCA}
    for f in pinned:
        assert '"frame-pointer"="none"' in bodies[f].split("{", 1)[0], f
        seen, todo = set(), [f]
        while todo:
            g = todo.pop()
            if g not in seen:
                seen.add(g)
                todo += calls[g]
        assert not [g for g in seen if "alloca" in bodies[g]], f
    # and the fnv1a kernels that are left out do keep such a table
    assert any("alloca" in bodies[g] for g in calls["views_fnv1a"] | {"fnv1a_short"})

def _run_with_cache(cache_dir) -> dict:
    import subprocess
    import sys

    code = (
        "import json, polars as pl\n"
        "from keyscope import _kernels\n"
        "keys = pl.Series([b'21', b'foobar', b'a-little-bit-long-string', b'123456789', b''])\n"
        "out = {n: _kernels.hash_binary(keys, n).tolist() for n in _kernels.NAMES}\n"
        "out['_from_cache'] = _kernels._kernels()['_from_cache']\n"
        "print(json.dumps(out))\n"
    )
    env = dict(__import__("os").environ, KEYSCOPE_CACHE_DIR=str(cache_dir))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    return __import__("json").loads(r.stdout)


def test_object_code_cache_is_used_verified_and_optional(tmp_path):
    keys = [b"21", b"foobar", b"a-little-bit-long-string", b"123456789", b""]
    expected = {n: [reference(n, k) for k in keys] for n in _kernels.NAMES}

    cold = _run_with_cache(tmp_path)
    assert cold.pop("_from_cache") is False and cold == expected
    (obj,) = tmp_path.glob("kernels-*.o")
    (elf,) = tmp_path.glob("kernels-*.elf")  # (the same object, for the loader without LLVM)

    warm = _run_with_cache(tmp_path)
    assert warm.pop("_from_cache") is True and warm == expected

    # A damaged file fails its checksum: compiled afresh, then rewritten intact.
    for f in (obj, elf):
        blob = bytearray(f.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        f.write_bytes(bytes(blob))
        assert _kernels._read_cache(f) is None
    again = _run_with_cache(tmp_path)
    assert again.pop("_from_cache") is False and again == expected
    assert _kernels._read_cache(obj) is not None and _kernels._read_cache(elf) is not None

    # No usable cache directory (a file stands in the way): still exact.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    nowhere = _run_with_cache(blocker / "cache")
    assert nowhere.pop("_from_cache") is False and nowhere == expected


def test_kernels_count_non_null_empty_keys():
    keys = [b"", None, b"x", b"", b"a key longer than twelve", None, b""] * 700
    for name in VARIANTS:
        for threads in (1, 2):
            out, empties = _kernels.hash_arrow(pa.array(keys, type=pa.binary_view()), name, threads, count_empty=True)
            assert empties == 3 * 700
            assert out.tolist() == [0 if k is None else reference(name, k) for k in keys]
        assert _kernels.hash_arrow(pa.array([b"x", None], type=pa.binary_view()), name, count_empty=True)[1] == 0


def test_simd_murmur2_equals_scalar_on_groups_remainders_nulls_and_slices():
    # The vector kernel takes 16 keys per group, mixes inline and buffer keys
    # of different lengths in one group, masks null rows, and hands the last
    # n % 16 rows to the scalar kernel.  Both must equal kafka-python.
    rng = np.random.default_rng(7)
    keys = []
    for i in range(5003):
        if i % 41 == 0:
            keys.append(None)
        else:
            keys.append(rng.integers(0, 256, int(rng.integers(0, 70)), dtype=np.uint8).tobytes())
    expected = [0 if k is None else reference("murmur2", k) for k in keys]
    arr = pa.array(keys, type=pa.binary_view())
    for offset in (0, 1, 5, 13, 16, 17):
        part = arr.slice(offset)
        for variant in ("murmur2_simd", "murmur2_scalar"):
            out, empties = _kernels.hash_arrow(part, variant, threads=1, count_empty=True)
            assert out.tolist() == expected[offset:]
            assert empties == sum(1 for k in keys[offset:] if k == b"")
    no_nulls = pa.array([k or b"x" for k in keys], type=pa.binary_view())
    assert _kernels.hash_arrow(no_nulls, "murmur2_simd").tolist() == [reference("murmur2", k or b"x") for k in keys]


def test_simd_never_dereferences_a_null_rows_view():
    # 40 rows (two full groups and a remainder); every third one is null with
    # a forged view claiming 1,000 bytes in data buffer 2**31-16: looking that
    # buffer up, let alone reading it, would crash.
    good = b"a key in the data buffer, not inline"
    views, valid_bits = b"", 0
    for i in range(40):
        if i % 3 == 1:
            views += struct.pack("<iiii", 1000, 0, 0x7FFFFFF0, 123456)
        else:
            views += struct.pack("<iiii", len(good), int.from_bytes(good[:4], "little"), 0, 0)
            valid_bits |= 1 << i
    arr = pa.Array.from_buffers(
        pa.binary_view(), 40, [pa.py_buffer(valid_bits.to_bytes(8, "little")), pa.py_buffer(views), pa.py_buffer(good)],
        null_count=sum(1 for i in range(40) if i % 3 == 1),
    )
    out = _kernels.hash_arrow(arr, "murmur2_simd", threads=1)
    assert out.tolist() == [0 if i % 3 == 1 else reference("murmur2", good) for i in range(40)]


def test_simd_is_only_chosen_where_avx512_is_and_can_be_turned_off():
    import subprocess
    import sys

    code = (
        "import llvmlite.binding as llvm\n"
        "from keyscope import _kernels\n"
        "f = _kernels._kernels()\n"
        "has = ('+avx512f' in llvm.get_host_cpu_features().flatten().split(',')\n"
        "       and llvm.get_host_cpu_name() not in _kernels.SLOW_GATHERS)\n"
        "print(f['_simd'], has, f['murmur2'] is f['murmur2_simd'])\n"
    )
    env = dict(__import__("os").environ)
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(env, KEYSCOPE_SIMD="0"))
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    simd, has, chosen = on.stdout.split()
    assert simd == has == chosen
    assert off.stdout.split()[0] == "False" and off.stdout.split()[2] == "False"


PAIR_LENGTHS = range(65)


@pytest.mark.parametrize("name", VARIANTS)
def test_adjacent_keys_of_every_length_pair_0_to_64(name):
    # The CRC and FNV kernels hash two adjacent long keys in one loop, then
    # each remainder alone: every (len_a, len_b) in 0..64 x 0..64 sits in
    # adjacent rows, at an even and an odd start (so a pair also straddles
    # two combinations), with a null every 7th row and an odd row count.
    rng = np.random.default_rng(3)
    pool = rng.integers(0, 256, 64 * 4, dtype=np.uint8).tobytes()
    keys: list[bytes | None] = []
    for la in PAIR_LENGTHS:
        for lb in PAIR_LENGTHS:
            keys += [pool[la : 2 * la], pool[64 + lb : 64 + 2 * lb]]
    keys = [None if i % 7 == 3 else k for i, k in enumerate(keys)] + [pool[:40]]
    expected = [0 if k is None else reference(name, k) for k in keys]
    arr = pa.array(keys, type=pa.binary_view())
    for start in (0, 1):
        out, empties = _kernels.hash_arrow(arr.slice(start), name, threads=1, count_empty=True)
        assert out.tolist() == expected[start:]
        assert empties == sum(1 for k in keys[start:] if k == b"")
    no_nulls = pa.array([k or b"" for k in keys], type=pa.binary_view())
    assert _kernels.hash_arrow(no_nulls, name, threads=1).tolist() == [reference(name, k or b"") for k in keys]


def test_pairs_never_dereference_a_null_neighbours_view():
    # A long valid key next to a null row whose forged view claims 1,000
    # bytes in data buffer 2**31-16, before and after it: the pair path must
    # check the neighbour's validity before following its view.
    good = b"a key in the data buffer, not inline"
    forged = struct.pack("<iiii", 1000, 0, 0x7FFFFFF0, 123456)
    real = struct.pack("<iiii", len(good), int.from_bytes(good[:4], "little"), 0, 0)
    pattern = [True, False, True, True, False, False, True, True, True, False, True]
    views = b"".join(real if ok else forged for ok in pattern)
    bits = sum(1 << i for i, ok in enumerate(pattern) if ok)
    arr = pa.Array.from_buffers(pa.binary_view(), len(pattern),
                                [pa.py_buffer(bits.to_bytes(2, "little")), pa.py_buffer(views), pa.py_buffer(good)],
                                null_count=pattern.count(False))
    for name in VARIANTS:
        assert _kernels.hash_arrow(arr, name, threads=1).tolist() == [
            reference(name, good) if ok else 0 for ok in pattern]


def test_inline_keys_ignore_whatever_follows_them_in_the_view():
    # The branch-free inline kernels (murmur2, FNV-1a) read all 12 inline
    # bytes; Arrow zero-pads them, but a view built elsewhere may not.
    keys = [bytes(range(1, 1 + ln)) for ln in range(13)]
    views = b"".join(struct.pack("<i", len(k)) + k + b"\xa5" * (12 - len(k)) for k in keys)
    arr = pa.Array.from_buffers(pa.binary_view(), len(keys), [None, pa.py_buffer(views)], null_count=0)
    for name in VARIANTS:
        assert _kernels.hash_arrow(arr, name, threads=1).tolist() == [reference(name, k) for k in keys]


def _random_keys(rng, n: int, max_len: int = 100, nulls: bool = True) -> list[bytes | None]:
    """Random bytes (not UTF-8), lengths 0..max_len with runs of one length, empty keys and nulls."""
    keys: list[bytes | None] = []
    while len(keys) < n:
        ln = int(rng.integers(0, max_len + 1))
        for _ in range(int(rng.integers(1, 6))):  # runs: groups of equal and of mixed lengths
            keys.append(rng.integers(0, 256, ln, dtype=np.uint8).tobytes())
        if nulls and rng.random() < 0.08:
            keys.append(None)
        if rng.random() < 0.03:
            keys.append(b"")
    return keys[:n]


@pytest.mark.parametrize("name", ["consistent_table", "consistent_clmul", "consistent"])
def test_crc32_equals_zlib_on_random_keys_slices_and_offsets(name):
    # Both CRC-32 kernels: the tables (slicing-by-8 blocks, a branch-free
    # 9-16-byte tail, inline keys by distance-from-the-end tables) and the
    # carry-less-multiply folds (first len % 16 bytes shuffled to the top of
    # a chunk, ~0 folded into the first 4 bytes), against zlib.crc32.
    if name == "consistent_clmul" and not _has_clmul():
        pytest.skip("this CPU has no PCLMULQDQ: the carry-less kernel cannot run here")
    rng = np.random.default_rng(11)
    keys = _random_keys(rng, 6000)
    keys += [b"\xff" * ln for ln in range(101)] + [bytes(range(200, 256)) * 2, "ключ-ü-€".encode()]
    expected = [0 if k is None else zlib.crc32(k) for k in keys]
    arr = pa.array(keys, type=pa.binary_view())
    for offset in (0, 1, 2, 3, 7, 13):
        assert _kernels.hash_arrow(arr.slice(offset), name, threads=1).tolist() == expected[offset:]
    assert _kernels.hash_arrow(arr.slice(9, 4000), name, threads=2).tolist() == expected[9:4009]
    # a sliced Polars column: its Arrow export starts at a view offset, with validity bits mid-byte
    col = pl.Series(keys, dtype=pl.Binary).slice(5)
    assert _kernels.hash_binary(col, name, threads=1).tolist() == expected[5:]


@pytest.mark.parametrize("name", ["fnv1a", "fnv1a_raw"])
def test_fnv1a_groups_of_four_equal_the_pure_python_hash(name):
    # The FNV-1a kernel hashes four adjacent long keys per loop, then each
    # one's extra blocks and a branch-free 5-12-byte tail; runs of equal and
    # mixed lengths, nulls and inline keys break groups at every position.
    rng = np.random.default_rng(12)
    keys = _random_keys(rng, 6000)
    ref = _kernels._references()[name]
    expected = [0 if k is None else ref(k) for k in keys]
    arr = pa.array(keys, type=pa.binary_view())
    for offset in (0, 1, 2, 3, 5):
        assert _kernels.hash_arrow(arr.slice(offset), name, threads=1).tolist() == expected[offset:]
    long_only = [k for k in keys if k is not None and len(k) > 12]
    got = _kernels.hash_arrow(pa.array(long_only, type=pa.binary_view()), name, threads=1)
    assert got.tolist() == [ref(k) for k in long_only]
    col = pl.Series(keys, dtype=pl.Binary).slice(3)
    assert _kernels.hash_binary(col, name, threads=1).tolist() == expected[3:]


def test_groups_never_dereference_a_null_at_any_position():
    # Runs of long valid keys with a null (forged view: 1,000 bytes in buffer
    # 2**31-16) as the 2nd, 3rd or 4th row of a would-be group of four.
    good = b"a key in the data buffer, not inline"
    forged = struct.pack("<iiii", 1000, 0, 0x7FFFFFF0, 123456)
    real = struct.pack("<iiii", len(good), int.from_bytes(good[:4], "little"), 0, 0)
    pattern = [True] * 5 + [False] + [True] * 2 + [False] + [True] * 3 + [False] + [True] * 4 + [False, True]
    views = b"".join(real if ok else forged for ok in pattern)
    bits = sum(1 << i for i, ok in enumerate(pattern) if ok)
    arr = pa.Array.from_buffers(pa.binary_view(), len(pattern),
                                [pa.py_buffer(bits.to_bytes(4, "little")), pa.py_buffer(views), pa.py_buffer(good)],
                                null_count=pattern.count(False))
    for name in VARIANTS:
        assert _kernels.hash_arrow(arr, name, threads=1).tolist() == [
            reference(name, good) if ok else 0 for ok in pattern]


def test_carry_less_crc_is_chosen_only_with_pclmulqdq_and_can_be_turned_off():
    import subprocess
    import sys

    code = (
        "from keyscope import _kernels\n"
        "f = _kernels._kernels()\n"
        "print(f['_clmul'], f['consistent'] is f.get('consistent_clmul'), f['consistent'] is f['consistent_table'])\n"
    )
    env = dict(__import__("os").environ)
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(env, KEYSCOPE_CLMUL="0"))
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    has = str(_has_clmul())
    assert on.stdout.split() == [has, has, str(not _has_clmul())]
    assert off.stdout.split() == ["False", "False", "True"]


def test_inline_pairs_skip_null_neighbours_and_odd_rows():
    # FNV-1a hashes two adjacent valid inline keys at once: a null neighbour
    # (its view: an inline length and junk) must end the pair, and it must
    # still give 0; runs of odd length leave a last row alone.
    keys = [b"ab", None, b"tenant-1", b"tenant-22", b"x", None, None, b"", b"tenant-333", b"y" * 12, b"z"]
    views = b"".join(struct.pack("<i", 7) + b"\xa5" * 12 if k is None else struct.pack("<i", len(k)) + k.ljust(12, b"\0")
                     for k in keys)
    bits = sum(1 << i for i, k in enumerate(keys) if k is not None)
    arr = pa.Array.from_buffers(pa.binary_view(), len(keys), [pa.py_buffer(bits.to_bytes(2, "little")),
                                                              pa.py_buffer(views)], null_count=keys.count(None))
    for name in VARIANTS:
        for start in (0, 1, 2):
            out, empties = _kernels.hash_arrow(arr.slice(start), name, threads=1, count_empty=True)
            assert out.tolist() == [0 if k is None else reference(name, k) for k in keys[start:]]
            assert empties == 1


@pytest.mark.parametrize("name", _kernels.NAMES)
@pytest.mark.parametrize("sep,nfields", [(b"|", 2), (b"", 1), (b"::=", 3), (b"|", 0)])
def test_hash_coded_equals_hashing_the_composed_keys(name, sep, nfields):
    """hash_coded composes ``key + (sep + field)...`` in its scratch and hashes it: the operands of
    hash_arrow over the composed keys, for every composed length 0-100 (inline and long views), null
    keys (0) and null fields (no separator), on one thread and split over two."""
    rng = random.Random(hash((name, sep, nfields)) & 0xFFFF)
    keys = [bytes(rng.randrange(256) for _ in range(i % 41)) for i in range(300)]  # keys[L]: L bytes
    values = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 21))) for _ in range(60)] + [b""]

    def dictionary(vals):
        off = np.zeros(len(vals) + 1, np.int64)
        off[1:] = np.cumsum([len(v) for v in vals])
        return off, _kernels.padded(np.frombuffer(b"".join(vals), np.uint8))

    n = 5_000
    kid = np.array([rng.randrange(-1, len(keys)) for _ in range(n)], np.int64)
    codes = [np.array([rng.randrange(-1, len(values)) for _ in range(n)], np.int32) for _ in range(nfields)]
    kid[:41] = np.arange(41)  # every key length alone (fields null), the empty key included
    for c in codes:
        c[:41] = -1
    composed = []
    for i in range(n):
        if kid[i] < 0:
            composed.append(None)
            continue
        composed.append(keys[kid[i]] + b"".join(sep + values[c[i]] for c in codes if c[i] >= 0))
    assert {len(k) for k in composed if k is not None} >= set(range(0, 41))
    want = _kernels.hash_arrow(pa.array(composed, type=pa.binary_view()), name, threads=1)
    k, v = dictionary(keys), dictionary(values)
    for threads in (1, 2):
        got = _kernels.hash_coded(name, k, kid, [(*v, c) for c in codes], sep, threads=threads)
        assert got.dtype == np.int64
        assert got.tolist() == want.tolist()
