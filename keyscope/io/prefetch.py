"""Start reading a sample's key table (``analyze``) or dictionary codes (``whatif``, ``recommend``) on a thread
before the rest of the command is imported.

Why: a cold ``keyscope analyze`` of 10M records spent ~0.5 s importing Polars,
numpy and the report code, and ~1 s of CPU reading the key, partition and
value-size pages and summing them (pyarrow and the compiled kernel, both
without the GIL).  On two cores the two overlap: :func:`start` is called by the
CLI before it imports anything heavy; the thread runs
:func:`keyscope.io.parquet.dictionary_sums` (no Polars) for the partition count
the file's footer gives, and :func:`keyscope.io.parquet.dictionary_keys` takes
its result (:func:`take`) when it was made for the same file (same identity:
device, inode, size, mtime before and after the read) and the same partition
count; anything else (an error, another count, a small file) and it is
recomputed on the main thread, so the result never depends on the thread.
``whatif`` and ``recommend`` do the same with
:func:`keyscope.io.parquet.dictionary_codes` of the fields they group by
(:func:`start_codes`, taken by ``WhatIf`` with :func:`take_codes`, for the
same columns of the same file only).

This module imports only the standard library: the thread imports the rest.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

# Smaller samples are summed on the main thread.  Measured cold (load ~3, median of 5, the
# same code with the thread on/off): 3M records 0.47 s with it vs 0.43 s without (the thread's
# GIL hand-offs cost ~0.04 s of CPU and there is little to overlap), 10M 0.62 vs 0.72 s, 30M
# 0.90 vs 1.23 s.  At least analysis.COMPILED_MIN_ROWS: below that Polars' group_by counts
# (tests/test_sample_footer.py).
MIN_ROWS = 5_000_000

_jobs: dict[str, "_Job"] = {}


class _Job:
    def __init__(self, path: str, read=None):
        self.path = path
        self.read = read or _read
        self.stop = threading.Event()
        self.result: tuple | None = None  # (identity before, identity after, what it was made for, result)
        self.thread = threading.Thread(target=self._run, name="keyscope-prefetch", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.read(self.path, self.stop)
        except BaseException:  # noqa: BLE001 - any failure: the main thread reads the file itself, with its errors
            self.result = None

    def taken(self, made_for):
        """The result (waiting for it) if made for ``made_for`` of the file as it is now, else None."""
        self.thread.join()
        if self.result is None:
            return None
        before, after, made, got = self.result
        try:
            now = _identity(self.path)
        except OSError:
            return None
        if made != made_for or before != now or after != now:
            return None
        return got


def _identity(path: str) -> tuple:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _partition_count(md) -> int | None:
    """max(the keyscope metadata's partition_count, largest partition in the row groups' statistics + 1), as
    read_sample computes it; None without statistics on every row group (then no prefetch)."""
    import json

    schema = md.schema
    names = [schema.column(i).path for i in range(len(schema))]
    if "partition" not in names:
        return None
    ci = names.index("partition")
    top = -1
    for i in range(md.num_row_groups):
        st = md.row_group(i).column(ci).statistics
        if st is None or not st.has_min_max or st.null_count is None or st.null_count or st.physical_type != "INT32":
            return None
        if int(st.min) < 0:
            return None
        top = max(top, int(st.max))
    raw = (md.metadata or {}).get(b"keyscope")
    if raw is None:
        return None
    count = json.loads(raw).get("partition_count", 0)
    if not isinstance(count, int) or isinstance(count, bool):
        return None
    return max(count, top + 1, 1)


def _footer_count(footer) -> int | None:
    """:func:`_partition_count` of a :class:`keyscope.io.pages.Footer` (no pyarrow)."""
    import json

    got = footer.int32_range("partition")
    raw = footer.metadata.get(b"keyscope")
    if got is None or got[0] < 0 or raw is None:
        return None
    count = json.loads(raw).get("partition_count", 0)
    if not isinstance(count, int) or isinstance(count, bool):
        return None
    return max(count, got[1] + 1, 1)


def _rows_and_names(path: str) -> tuple[int, list[str]]:
    """The file's row count and column names, from its footer read without pyarrow when it can be (pyarrow's
    import cost the thread 0.15-0.2 s), else by pyarrow."""
    from . import pages

    try:
        footer = pages.footer_of(path)
        return footer.num_rows, [c.name for c in footer.columns]
    except pages.Unsupported:
        import pyarrow.parquet as pq

        f = pq.ParquetFile(path)
        return f.metadata.num_rows, list(f.schema_arrow.names)


def _read(path: str, stop: threading.Event):
    from ..model.limits import MAX_PARTITIONS
    from . import pages
    from .parquet import dictionary_sums

    before = _identity(path)
    try:  # the footer read without pyarrow (whose import cost the thread 0.2 s), as the sums are
        footer = pages.footer_of(path)
        rows, P = footer.num_rows, _footer_count(footer)
        names = {c.name for c in footer.columns}
    except pages.Unsupported:
        import pyarrow.parquet as pq

        md = pq.ParquetFile(path).metadata
        rows, P = md.num_rows, _partition_count(md)
        names = set(md.schema.to_arrow_schema().names)
    if rows < MIN_ROWS or P is None or P > MAX_PARTITIONS:
        return None
    sums = dictionary_sums(path, lambda: None, P, names, None, stop=stop)
    return before, _identity(path), P, sums


def start(path) -> None:
    """Begin summing the key table of the Parquet sample at ``path`` on a thread (at most once per path)."""
    key = str(Path(path))
    if key in _jobs:
        return
    job = _jobs[key] = _Job(key)
    job.thread.start()


def take(path, P: int):
    """The prefetched sums of ``path`` for ``P`` partitions (waiting for them), or None (then compute them).

    The caller has checked the file is still the one it opened; the sums count only if the file had that
    identity before and after the thread read it.
    """
    job = _jobs.pop(str(Path(path)), None)
    return None if job is None else job.taken(P)


# ---- what-if's dictionary codes ---------------------------------------------------

# From this many records ``keyscope whatif``/``recommend`` read the dictionary codes on the thread,
# while the main thread imports Polars and the rest (~0.5 s).  Measured cold (median of 7, load ~1,
# with the thread / without): 1M recommend 1.23 / 1.33 s, whatif --key-by key,region --salt-hot 1:8
# 0.93 / 1.16 s; 10M recommend: the codes ready 0.26 s sooner (the thread's read takes 0.84 s
# against 0.65 s alone: the two share the GIL).  At least whatif.engine.COMPILED_MIN_ROWS (below
# it the codes are not read from the pages at all).
CODES_MIN_ROWS = 1_000_000
_codes: dict[str, "_Job"] = {}


def _code_columns(names: list[str], fields) -> list[str]:
    """The columns WhatIf reads codes of (``key``, then the fields, at most MAX_GROUP_FIELDS) for a file
    with column ``names``: ``fields`` those present, or None for every field of the file (recommend)."""
    from ..sample import BASE_COLUMNS
    from ..whatif.spec import MAX_GROUP_FIELDS

    have = [c for c in names if c not in BASE_COLUMNS]
    chosen = have if fields is None else [f for f in dict.fromkeys(fields) if f in have]
    return ["key", *dict.fromkeys(chosen[:MAX_GROUP_FIELDS])]


def _read_codes(fields):
    def read(path: str, stop: threading.Event):
        from ..whatif.kernels import map_codes
        from .parquet import dictionary_codes

        before = _identity(path)
        n, names = _rows_and_names(path)
        cols = _code_columns(names, fields)
        if n < CODES_MIN_ROWS or len(cols) < 2:
            return None
        got = dictionary_codes(path, lambda: None, cols, set(names), n, map_codes, stop=stop)
        return before, _identity(path), (cols, n), got

    return read


def start_codes(path, fields=None) -> None:
    """Begin reading the dictionary codes what-if will ask for (``fields``; None: every field) on a thread."""
    key = str(Path(path))
    if key in _codes:
        return
    job = _codes[key] = _Job(key, _read_codes(None if fields is None else list(fields)))
    job.thread.start()


def take_codes(path, cols: list[str], n_rows: int):
    """What :func:`keyscope.io.parquet.dictionary_codes` gave on the thread for ``cols`` of this file as it is
    now, with ``n_rows`` rows (waiting for it), or None: the caller reads them itself."""
    job = _codes.pop(str(Path(path)), None)
    return None if job is None else job.taken((list(cols), n_rows))


@atexit.register
def _stop_all() -> None:
    """A command that ends early (an error) stops its prefetch between row groups rather than mid-exit."""
    jobs = [*_jobs.values(), *_codes.values()]
    for job in jobs:
        job.stop.set()
    for job in jobs:
        job.thread.join(timeout=5)
