"""Writing a sample while it is read: Parquet row groups as records are kept, the metadata at the end.

Why: holding the whole topic and writing it at the end kept three copies of the
records at the write (the fetched tables, the Polars frame, its ``to_arrow``):
846 MB peak RSS for 5M records, 1.4 GB with two ``--field`` paths
(docs/benchmarks.md).  Here each kept table goes to a writer thread, which cuts
row groups of exactly ``row_group_records`` rows and writes them (pyarrow
encodes and compresses without the GIL, so the write overlaps the fetch and
the decoder), and counts what the report shows as it goes.

The metadata is known only at the end, and pyarrow puts the Arrow schema (with
its metadata) in the footer when the writer opens.  So the footer is written
again at the end: the same row groups under the schema carrying the
``keyscope`` metadata.  The file is then byte for byte what
``pq.write_table(table, row_group_size=row_group_records, **parquet_options(fields))``
writes of the same rows with the metadata in the schema (tested); :meth:`keyscope.sample.Sample.write`
writes with the same options.

Rows are in the order they were kept: each partition's in offset order, the
partitions interleaved (a file written at once has them partition by partition).

The file is a temp file in the output's directory until :meth:`SampleFile.publish`
gives it its name (rename, or a no-clobber link), so Ctrl-C, an error or a kill
never leaves a half-written file at the output path.
"""

from __future__ import annotations

import collections
import datetime as _dt
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io.sample_format import arrow_schema, parquet_options

# Rows per row group (pq.write_table's default is 1Mi), and how many row groups' rows may wait
# for the writer before the reader waits.  bench_cold's 5M records in one process, peak RSS
# (load ~5): 256Ki rows x 2 queued 392 MB, 128Ki x 1 354 MB (with fetching less far ahead,
# options.FETCH_AHEAD_*: 323 MB), 64Ki x 1 330 MB; no slower.  Reading the file back is no
# slower either (Polars reads row groups in parallel).
ROW_GROUP_RECORDS = 1 << 17
MAX_QUEUED_GROUPS = 1
# Distinct keys: the row groups' sets are merged into the set so far once they hold as many keys as it
# (and at least this many), so each key is hashed a bounded number of times: merging every 8 row groups
# re-hashed the whole set each time, 0.23 s of CPU for 5M records / 189k keys against 0.13 s.
MIN_MERGE_KEYS = 1 << 16


@dataclass
class _PartStats:
    records: int = 0
    null_keys: int = 0
    first: int | None = None
    last: int | None = None
    t0: int | None = None  # timestamp (ms) at ``first``
    t1: int | None = None  # timestamp (ms) at ``last``


@dataclass
class Written:
    """What the writer counted of the rows it wrote: the summary a report shows, without the rows."""

    records: int = 0
    parts: dict[int, _PartStats] = field(default_factory=dict)
    null_keys: int = 0
    empty_keys: int = 0
    key_bytes: int = 0
    value_bytes: int = 0
    ts_min: int | None = None
    ts_max: int | None = None
    field_nulls: dict[str, int] = field(default_factory=dict)
    distinct_keys: int = 0
    row_groups: int = 0


class SampleFile:
    """A sample file being written: ``add`` kept tables, then ``publish`` (or ``discard``)."""

    def __init__(self, path: str | Path, fields: list[str], row_group_records: int = ROW_GROUP_RECORDS):
        import tempfile

        import pyarrow.parquet as pq

        if row_group_records < 1:
            raise ValueError("row_group_records must be positive")
        self.path = Path(path)
        self.fields = list(fields)
        self.schema = arrow_schema(self.fields)
        self.row_group_records = row_group_records
        self.stats = Written(field_nulls={f: 0 for f in self.fields})
        try:
            fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as e:
            raise InputError(f"cannot write {self.path}: {e.strerror or e}") from None
        self._published = False
        try:
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)  # as an ordinary new file, not mkstemp's 0600
            self._f = os.fdopen(fd, "wb+")
        except BaseException:
            os.close(fd)
            os.unlink(self.tmp)
            raise
        self._writer = pq.ParquetWriter(self._f, self.schema, **parquet_options(self.fields))
        self._cv = threading.Condition()
        self._inbox: collections.deque = collections.deque()
        self._queued = 0  # rows in the inbox
        self._closing = False
        self._error: BaseException | None = None
        self._uniques: list = []  # distinct keys so far: the merged set first, then row groups' own
        self._unmerged = 0  # keys in the row groups' sets not merged yet
        self._merged = 0  # keys in the merged set
        self._thread = threading.Thread(target=self._loop, name="keyscope-sample-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the reader's side

    def add(self, partition: int, table) -> None:
        """Queue one partition's kept records (a decoded table) for the file; waits while the writer is behind."""
        if self._error is not None:
            self._raise()
        with self._cv:
            self._inbox.append((partition, table))
            self._queued += table.num_rows
            self._cv.notify_all()
            limit = MAX_QUEUED_GROUPS * self.row_group_records
            while self._queued > limit and self._error is None and self._thread.is_alive():
                self._cv.wait(0.1)
        if self._error is not None:
            self._raise()

    def finish(self):
        """Write what is queued and the last row group; the :class:`Written` counts."""
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()
        if self._error is not None:
            self._raise()
        self._merge_uniques(final=True)
        return self.stats

    def publish(self, meta, overwrite: bool = True) -> Path:
        """The footer with ``meta``, then the file under its name (see :meth:`Sample.write`); returns the path."""
        import io

        import pyarrow.parquet as pq

        from ..sample import META_KEY, OutputTaken, _publish_new, _refuse_special

        self.finish()
        path = self.path
        try:
            self._writer.close()
            written = self._writer.writer.metadata
            # The footer again, with the metadata in the Arrow schema: write_metadata writes
            # 'PAR1' + footer + length + 'PAR1' for these row groups; the data pages stay where they are.
            buf = io.BytesIO()
            md = self.schema.with_metadata({META_KEY: meta.to_json()})
            pq.write_metadata(md, buf, metadata_collector=[written], **parquet_options(self.fields))
            footer = buf.getvalue()
            f = self._f
            f.seek(-8, os.SEEK_END)
            tail = f.read(8)
            if tail[4:] != b"PAR1":
                raise InputError(f"cannot write {path}: the Parquet writer left no footer")
            f.seek(-8 - int.from_bytes(tail[:4], "little"), os.SEEK_END)
            f.truncate()
            f.write(footer[4:])
            f.close()
            if overwrite:
                _refuse_special(path)
                os.replace(self.tmp, path)
            elif not _publish_new(self.tmp, path):
                for i in range(100):
                    tag = f"{os.getpid()}" + (f"-{i}" if i else "")
                    other = path.with_name(f"{path.stem}.{tag}{path.suffix or '.parquet'}")
                    if _publish_new(self.tmp, other):
                        self._published = True
                        raise OutputTaken(path, other)
                raise InputError(f"cannot write {path}: it was created by another process while sampling")
            self._published = True
        except OSError as e:
            raise InputError(f"cannot write {path}: {e.strerror or e}") from None
        finally:
            self.discard()
        return path

    def discard(self) -> None:
        """Stop the writer and remove the temp file (nothing at the output path); idempotent."""
        with self._cv:
            self._closing = True
            self._inbox.clear()
            self._cv.notify_all()
        self._thread.join()
        for close in (self._writer.close, self._f.close):  # the writer first: its close writes to the file
            try:
                if close != self._writer.close or self._writer.is_open:
                    close()
            except Exception:  # a failed write left them in a state close complains about
                pass
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "SampleFile":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    def _raise(self):
        e = self._error
        if isinstance(e, OSError):
            raise InputError(f"cannot write {self.path}: {e.strerror or e}") from None
        raise e  # type: ignore[misc]

    # ------------------------------------------------------------------ the writer thread

    def _loop(self) -> None:
        import pyarrow as pa

        pending: list = []  # tables of the next row group
        n = 0
        try:
            while True:
                with self._cv:
                    while not self._inbox and not self._closing:
                        self._cv.wait()
                    items = list(self._inbox)
                    self._inbox.clear()
                    closing = self._closing
                for p, t in items:
                    self._count_part(p, t)
                    pending.append(t)
                    n += t.num_rows
                    with self._cv:
                        self._queued -= t.num_rows
                        self._cv.notify_all()
                    while n >= self.row_group_records:
                        whole = pa.concat_tables(pending)
                        self._write(whole.slice(0, self.row_group_records))
                        rest = whole.slice(self.row_group_records)
                        pending, n = ([rest] if rest.num_rows else []), rest.num_rows
                if closing and not items:
                    if n:
                        self._write(pa.concat_tables(pending))
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the reader, which raises it
            self._error = e
            with self._cv:
                self._cv.notify_all()

    def _write(self, t) -> None:
        """One row group, from contiguous columns in the file's schema: the bytes then depend only on the rows."""
        import pyarrow as pa

        t = t.combine_chunks()
        if not t.schema.equals(self.schema):  # the decoder's key is binary; the file's large_binary
            t = pa.Table.from_arrays([t.column(f.name).cast(f.type) for f in self.schema], schema=self.schema)
        self._writer.write_table(t, row_group_size=self.row_group_records)
        self._count_group(t)
        self.stats.row_groups += 1
        u = _unique_keys(t.column("key"))
        self._uniques.append(u)
        self._unmerged += len(u)
        if self._unmerged >= max(self._merged, MIN_MERGE_KEYS):
            self._merge_uniques()

    def _merge_uniques(self, final: bool = False) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        if len(self._uniques) > 1:
            self._uniques = [pc.unique(pa.chunked_array(self._uniques, type=self.schema.field("key").type))]
        self._unmerged = 0
        self._merged = len(self._uniques[0]) if self._uniques else 0
        if final:
            self.stats.distinct_keys = len(self._uniques[0]) if self._uniques else 0

    def _count_part(self, p: int, t) -> None:
        """One partition's records, first and last offsets (and their times), from one kept table.

        Per table, so it is cheap: ~600 tables for 5M records, where a dozen pyarrow.compute calls
        each cost 0.3 s of the writer thread; the rest is counted per row group (_count_group)."""

        n = t.num_rows
        if not n:
            return
        ps = self.stats.parts.setdefault(p, _PartStats())
        key = t.column("key")
        ps.records += n
        ps.null_keys += key.null_count
        offs = int64_values(t.column("offset"))
        i, j = int(offs.argmin()), int(offs.argmax())
        ts = t.column("timestamp")
        if ps.first is None or int(offs[i]) < ps.first:
            ps.first, ps.t0 = int(offs[i]), _ms(ts[i])
        if ps.last is None or int(offs[j]) > ps.last:
            ps.last, ps.t1 = int(offs[j]), _ms(ts[j])

    def _count_group(self, t) -> None:
        """What the report shows of all records, from one row group."""
        import pyarrow.compute as pc

        s = self.stats
        n = t.num_rows
        s.records += n
        s.null_keys += t.column("key").null_count
        ks = t.column("key_size")
        s.key_bytes += pc.sum(ks).as_py() or 0
        s.empty_keys += pc.sum(pc.equal(ks, _int32_zero())).as_py() or 0
        s.value_bytes += pc.sum(t.column("value_size")).as_py() or 0
        ts = t.column("timestamp")
        if ts.null_count < n:
            mm = pc.min_max(ts.cast("int64"))
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            s.ts_min = lo if s.ts_min is None else min(s.ts_min, lo)
            s.ts_max = hi if s.ts_max is None else max(s.ts_max, hi)
        for f in self.fields:
            s.field_nulls[f] += t.column(f).null_count


def int64_values(col):
    """The values of an int64 column with no nulls, as one numpy array (over its buffers: no copy of one chunk).

    Not ``to_numpy()``: pyarrow's imports pandas when it is installed (0.28-0.43 s of a cold
    ``keyscope sample`` and ~40 MB of RSS, python -X importtime)."""
    import numpy as np

    parts = [np.frombuffer(c.buffers()[1], np.int64, count=len(c), offset=c.offset * 8) for c in col.chunks]
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _int32_zero():
    """An int32 0 as an Arrow scalar: a Python 0 given to pyarrow.compute imports pandas (as to_numpy)."""
    import numpy as np
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int32(), 1, [None, pa.py_buffer(np.zeros(1, np.int32))])[0]


def _ms(v) -> int | None:
    return None if not v.is_valid else v.value


def _unique_keys(col):
    import pyarrow.compute as pc

    return pc.unique(pc.drop_null(col).combine_chunks())


def _iso(ms: int | None) -> str | None:
    """As Polars' Datetime(ms, UTC) gives it to Python and ``isoformat`` writes it."""
    if ms is None:
        return None
    t = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(milliseconds=ms)
    return t.isoformat()


class StreamedSample:
    """A sample already in its file: its metadata and the counts, not the rows.

    What ``keyscope sample`` reports: ``summary()`` gives what :meth:`Sample.summary`
    gives for the same file (tested), from the writer's counts.
    """

    def __init__(self, meta, written: Written, path: Path):
        self.meta = meta
        self.written = written
        self.path = path

    def __len__(self) -> int:
        return self.written.records

    @property
    def partition_count(self) -> int:
        seen = max(self.written.parts) + 1 if self.written.parts else 0
        return max(self.meta.partition_count or 0, seen)

    @property
    def field_names(self) -> list[str]:
        return list(self.written.field_nulls)

    def meta_dict(self) -> dict:
        return self.meta.to_dict()

    def summary(self) -> dict[str, Any]:
        w = self.written
        n = w.records
        rows = []
        for p in sorted(set(self.meta.partitions) | set(w.parts)):
            info = self.meta.partitions.get(p)
            r = w.parts.get(p)
            rows.append({
                "partition": p,
                "low": info.low if info else None,
                "high": info.high if info else None,
                "first": info.first if info and info.first is not None else (r.first if r else None),
                "last": info.last if info and info.last is not None else (r.last if r else None),
                "records": r.records if r else 0,
                "null_keys": r.null_keys if r else 0,
            })
        fields = {}
        for name, nulls in w.field_nulls.items():
            misses = self.meta.field_misses.get(name, nulls)
            fields[name] = {"path": self.meta.fields.get(name), "misses": misses, "miss_rate": misses / n if n else None}
        return {
            "topic": self.meta.topic,
            "source": self.meta.source,
            "records": n,
            "partition_count": self.partition_count,
            "partitions_sampled": sum(1 for r in w.parts.values() if r.records),
            "null_keys": w.null_keys,
            "empty_keys": w.empty_keys if n else 0,
            "distinct_keys": w.distinct_keys if n else 0,
            "key_bytes": w.key_bytes if n else 0,
            "value_bytes": w.value_bytes if n else 0,
            "first_timestamp": _iso(w.ts_min),
            "last_timestamp": _iso(w.ts_max),
            "partial": bool(self.meta.partial),
            "partial_reason": self.meta.partial_reason,
            "fields": fields,
            "partitions": rows,
        }


def sample_to_file(conn, spec, path: str | Path, overwrite: bool = True, progress=None, phase=None, finish=None,
                   row_group_records: int = ROW_GROUP_RECORDS) -> StreamedSample:
    """Sample ``spec.topic`` straight into the Parquet file ``path``, never holding the topic.

    As :func:`keyscope.sampling.sample_topic` (bounds, pacing, partial samples on
    Ctrl-C or a lost broker), but the kept records go to the file as they come.
    ``finish(sample)`` may amend the metadata before the file is published.
    Nothing is left at ``path`` unless the whole file was written.
    """
    from .fetch import sample_topic

    out = SampleFile(path, [f.name for f in spec.fields], row_group_records)
    try:
        s = sample_topic(conn, spec, progress=progress, phase=phase, sink=out)
        if finish is not None:
            finish(s)
        out.publish(s.meta, overwrite=overwrite)
        return s
    finally:
        out.discard()
