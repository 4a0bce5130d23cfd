"""What keeps a streamed sample's memory bounded: the fetch-ahead cap, the chunks' scratch, the allocators."""

from __future__ import annotations

import os
import subprocess
import sys

from keyscope.sampling import FieldSpec, _decode_chunk, _FieldPlan
from keyscope.sampling.fetch import _ahead_target, _pace_target, _Part
from keyscope.sampling.options import FETCH_AHEAD_RATIO, FETCH_AHEAD_RECORDS, FETCH_AHEAD_STEP
from keyscope.sampling.wire import LENGTH_END
from tests.test_sampling_decoder import build_batch


def _part(budget: int) -> _Part:
    return _Part(0, 0, budget, budget, 0, budget, budget, 0)


def test_what_is_fetched_ahead_does_not_grow_with_the_budget():
    """The ratio alone let a partition of a 20M-record sample hold ~10% of its budget beyond the pace."""
    for budget in (10_000_000, 100_000_000):
        x = _part(budget)
        for frontier in (0.0, 0.3, 0.9):
            ahead = _ahead_target(x, frontier)
            assert ahead - _pace_target(x, frontier) == FETCH_AHEAD_RECORDS
            assert ahead < _pace_target(x, frontier, FETCH_AHEAD_RATIO, FETCH_AHEAD_STEP)


def test_small_budgets_keep_the_ratio():
    x = _part(100_000)
    for frontier in (0.0, 0.5, 1.0):
        assert _ahead_target(x, frontier) == _pace_target(x, frontier, FETCH_AHEAD_RATIO, FETCH_AHEAD_STEP)


def _records(base: int, n: int, tag: str) -> bytes:
    rows = [{"delta": i, "ts": 1_700_000_000_000 + i, "key": f"{tag}-key-{i}".encode(),
             "value": ('{"region":"%s-%d","user":"u%d"}' % (tag, i % 7, i)).encode(), "headers": [("h", tag.encode())]}
            for i in range(n)]
    return build_batch(base, rows)


def test_a_chunk_decoded_later_does_not_change_an_earlier_chunks_table():
    """The key, value and field buffers are reused chunk after chunk: what a table holds must be its own."""
    fields = [FieldSpec("region", "$.region"), FieldSpec("user", "$.user"), FieldSpec("h", "header:h"),
              FieldSpec("deep", "$..user")]  # a path only Polars reads: every value is copied
    plan = _FieldPlan(fields)
    a = _records(0, 300, "a")
    first = _decode_chunk(0, a, 0, 1 << 62, 1 << 62, plan)[0].to_pylist()
    table = _decode_chunk(0, a, 0, 1 << 62, 1 << 62, plan)[0]
    _decode_chunk(0, _records(0, 300, "z"), 0, 1 << 62, 1 << 62, plan)  # as big: the same scratch
    _decode_chunk(0, _records(300, 2000, "bbbbbbbb"), 300, 1 << 62, 1 << 62, plan)  # bigger: it grows
    _decode_chunk(0, _records(5, 3, "c"), 5, 1 << 62, 1 << 62, plan)
    assert table.to_pylist() == first
    assert first[7]["key"] == b"a-key-7" and first[7]["region"] == "a-0" and first[7]["h"] == "a"


def test_a_memoryview_of_the_answer_decodes_as_its_bytes():
    """The lean client hands the sampler views into the fetch answer, not copies."""
    plan = _FieldPlan([FieldSpec("user", "$.user")])
    raw = b"\0" * 16 + _records(0, 50, "v") + _records(50, 10, "w")[: LENGTH_END + 3]
    view = memoryview(bytearray(raw))[16:]
    got = _decode_chunk(0, view, 0, 1 << 62, 1 << 62, plan)
    want = _decode_chunk(0, raw[16:], 0, 1 << 62, 1 << 62, plan)
    assert got[1:] == want[1:] == (50, 50, False)
    assert got[0].equals(want[0])


def _pool_in_child(env: dict) -> str:
    code = ("from keyscope.cli import memory; memory.tune_for_sampling(); import pyarrow as pa; "
            "print(pa.default_memory_pool().backend_name)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return r.stdout.strip()


def test_tune_puts_arrow_on_the_system_allocator_unless_told_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    assert _pool_in_child(env) == "system"
    assert _pool_in_child(dict(env, ARROW_DEFAULT_MEMORY_POOL="jemalloc")) == "jemalloc"


def _arenas_in_child(env: dict, tune: bool) -> int:
    """glibc arenas after four threads each allocated, as ``malloc_stats`` lists them ("Arena N:")."""
    code = ("import ctypes, threading\n"
            + ("from keyscope.cli import memory; memory.one_arena()\n" if tune else "")
            + "libc = ctypes.CDLL(None)\nlibc.malloc.restype = ctypes.c_void_p\nlibc.free.argtypes = [ctypes.c_void_p]\n"
            "go = threading.Barrier(4)\n"
            "def work():\n    go.wait()\n    ps = [libc.malloc(4096) for _ in range(2000)]\n    go.wait()\n"
            "    for p in ps: libc.free(p)\n"
            "ts = [threading.Thread(target=work) for _ in range(4)]\n[t.start() for t in ts]\n[t.join() for t in ts]\n"
            "libc.malloc_stats()\n")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return sum(1 for line in r.stderr.splitlines() if line.startswith("Arena "))


def test_one_arena_makes_the_threads_share_the_main_arena_unless_told_otherwise():
    """What whatif, recommend and sample call before their threads start (keyscope/cli/memory.py)."""
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert _arenas_in_child(env, tune=False) > 1  # glibc's default: threads that contend get arenas of their own
    assert _arenas_in_child(env, tune=True) == 1
    assert _arenas_in_child(dict(env, MALLOC_ARENA_MAX="4"), tune=True) > 1  # the user's setting stands
