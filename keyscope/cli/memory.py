"""The allocators of a keyscope CLI process: what one thread frees is reused by the others, not kept in idle pools.

Why, ``keyscope sample``: a streamed sample allocates and frees the same few buffers over and over
(a fetch answer, a chunk's decoded columns, a row group being encoded) on three threads: the reader,
the broker's fetch thread and the file's writer.  glibc gave each thread an arena of its own, each
keeping what was freed in it, and Arrow's default pool (jemalloc) kept its own freed pages besides:
the process held every pool's high-water mark.  bench_cold's topic, 5M records, peak RSS (real
Kafka, docs/benchmarks.md samprss7): Arrow on the system allocator and one glibc arena, 262 -> 228 MB
plain and 277 -> 251 MB with two ``--field`` paths, at no CPU cost.

Why, ``whatif``/``recommend``: their reads, hashes and the prefetch run on pool threads, each of
which got an arena keeping its high-water mark: one arena took a cold 10M-record recommend from
618-627 to 555-557 MB and 1M from 351-357 to 328-333 MB, CPU within noise (three runs each), and
``whatif --key-by key,region --salt-hot 1:8`` at 10M from 588-612 to 550-570 MB.  Arrow stays on
its default pool there (mimalloc: :func:`keyscope.io.parquet.release_memory` and the row-group
readers hand its pages back).  Not ``analyze``: its one prefetch thread gave no RSS back (10M:
298-304 MB either way) and its wall was a little longer (median of 5: 1.25 against 1.15 s).

Measured and left out for ``sample``, each trading system CPU (pages given back are faulted in
again) for RSS: ``malloc_trim`` after each row group (-5 to -30 MB, +0.3 s per 5M records, +1.5 s
per 20M), jemalloc with its decay at 0 (-8 to -35 MB, +0.6 / +1.5 s), a fixed mmap threshold
(4 MiB: -5 MB at 5M, no gain at 20M once the chunks' scratch is reused).

For the CLI's process only (the commands call these first): a library user's process keeps its
allocators as it set them.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's malloc.h


def one_arena() -> None:
    """One glibc arena for every thread, unless MALLOC_ARENA_MAX says otherwise (glibc read it at start-up:
    the user's own choice).  Before the command starts a thread.  A libc without ``mallopt`` (not glibc)
    is left as it is.  (``ctypes.CDLL(None)``: the process's own libc; ``ctypes.util.find_library``
    runs a subprocess, ~20 ms.)"""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mallopt(M_ARENA_MAX, 1)


def tune_for_sampling() -> None:
    """Arrow on the system allocator (unless ARROW_DEFAULT_MEMORY_POOL says otherwise), and :func:`one_arena`.

    Before pyarrow is imported: Arrow reads ARROW_DEFAULT_MEMORY_POOL once, when its default pool is
    first asked for."""
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    one_arena()
