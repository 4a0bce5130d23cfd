"""The Sample: sampled records as a Polars DataFrame plus what is known about them.

One Parquet file carries both (metadata in the file's key-value metadata under
``keyscope``), so every command after ``keyscope sample`` works offline from
one file that can be attached to an incident.

Columns (one row per sampled record)::

    partition  Int32     offset      Int64
    timestamp  Datetime(ms, UTC), null when unknown
    key        Binary, null for a null key
    key_size   Int32, null for a null key
    value_size Int32, 0 for a null value (tombstone)
    <field>    String, one per captured --field (null where absent)
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError, UsageError
from .model.limits import MAX_PARTITIONS

META_KEY = "keyscope"
FORMAT_VERSION = 1

BASE_COLUMNS = ("partition", "offset", "timestamp", "key", "key_size", "value_size")


def base_schema():
    import polars as pl

    return {
        "partition": pl.Int32,
        "offset": pl.Int64,
        "timestamp": pl.Datetime("ms", "UTC"),
        "key": pl.Binary,
        "key_size": pl.Int32,
        "value_size": pl.Int32,
    }


@dataclass
class PartitionInfo:
    """What we know of one partition: its watermarks and the offsets we read."""

    partition: int
    low: int | None = None  # low watermark (log start offset)
    high: int | None = None  # high watermark (next offset to be written)
    first: int | None = None  # first offset sampled
    last: int | None = None  # last offset sampled
    records: int = 0  # records sampled
    first_timestamp_ms: int | None = None
    last_timestamp_ms: int | None = None
    # keyscope sample only (None elsewhere):
    last_stable: int | None = None  # last stable offset when sampling began: read_committed reads up to it
    budget: int | None = None  # records the plan asked of this partition (its share of the bounds)
    read_to: int | None = None  # offsets from how.ranges' start up to this one (exclusive) were read in full


@dataclass
class SampleMeta:
    topic: str = "unknown"
    partition_count: int = 0
    partitions: dict[int, PartitionInfo] = field(default_factory=dict)
    source: str = "unknown"  # kafka | kcat-json | csv | jsonl | synthetic
    how: dict[str, Any] = field(default_factory=dict)  # mode and bounds, never secrets
    fields: dict[str, str] = field(default_factory=dict)  # column name -> JSON path / header:NAME
    field_misses: dict[str, int] = field(default_factory=dict)
    sampled_at: str = ""
    keyscope_version: str = __version__
    partial: bool = False
    partial_reason: str | None = None
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        d = asdict(self)
        d["partitions"] = {str(k): v for k, v in sorted(d["partitions"].items())}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SampleMeta":
        """Parse and check every field's type and size: a file is not trusted (ValueError names the field)."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, got {type(d).__name__}")
        raw_parts = d.pop("partitions", {})
        if not isinstance(raw_parts, dict):
            raise ValueError(f"'partitions' must be an object, got {_json_type(raw_parts)}")
        parts = {}
        for k, v in raw_parts.items():
            try:
                p = int(k)
            except ValueError:
                raise ValueError(f"partition {k!r} is not a number") from None
            _check_partition_id(p)
            if not isinstance(v, dict):
                raise ValueError(f"partition {p}: expected an object, got {_json_type(v)}")
            unknown = sorted(set(v) - set(PartitionInfo.__dataclass_fields__))
            if unknown:
                raise ValueError(f"partition {p}: unknown field(s) {', '.join(unknown)}")
            for name, value in v.items():
                if name == "records":
                    _want(value, int, f"partition {p}: records", nullable=False)
                else:
                    _want(value, int, f"partition {p}: {name}")
            parts[p] = PartitionInfo(**{**v, "partition": p})
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for name, typ in _META_TYPES.items():
            if name in known:
                _want(known[name], typ, repr(name), nullable=name == "partial_reason")
        count = known.get("partition_count", 0)
        if not 0 <= count <= MAX_PARTITIONS:
            raise ValueError(
                f"partition count {count:,} is beyond keyscope's limit of {MAX_PARTITIONS:,} partitions per topic"
            )
        for name in ("fields", "field_misses"):
            for k, v in known.get(name, {}).items():
                _want(v, int if name == "field_misses" else str, f"{name}[{k!r}]", nullable=False)
        return cls(partitions=parts, **known)


_META_TYPES = {
    "topic": str, "partition_count": int, "source": str, "how": dict, "fields": dict, "field_misses": dict,
    "sampled_at": str, "keyscope_version": str, "partial": bool, "partial_reason": str, "format_version": int,
}


def _json_type(v) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(v), "a number"
    )


def _want(value, typ, what: str, nullable: bool = True) -> None:
    if value is None and nullable:
        return
    ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
    if not ok:
        name = {int: "a whole number", str: "text", dict: "an object", bool: "true/false"}[typ]
        raise ValueError(f"{what} must be {name}, got {_json_type(value)} {json.dumps(value)[:40]}")
    if typ is int and abs(value) >= 1 << 63:
        raise ValueError(f"{what} is out of range: {value}")


def _check_partition_id(p: int) -> None:
    if p < 0:
        raise ValueError(f"partition {p} is negative")
    if p >= MAX_PARTITIONS:
        raise ValueError(
            f"partition {p} is beyond keyscope's limit of {MAX_PARTITIONS:,} partitions per topic"
        )


class Sample:
    """Records plus metadata.  Build with :meth:`from_frame`, load with :func:`read_sample`."""

    def __init__(self, df, meta: SampleMeta, pending: "_Pending | None" = None, footer: tuple | None = None):
        self._df = df
        self.meta = meta
        self._pending = pending  # columns still in the file (read_sample reads only partition and key)
        # (records, largest partition + 1) from the file's footer while even the partition column is
        # still in the file (read_sample(..., columns=())); None once it is read
        self._footer = footer

    @property
    def df(self):
        """Every column (reads any still in the file: commands that need only some use :meth:`frame`)."""
        if self._pending is not None:
            self._load(self._pending.names)
        return self._df

    @df.setter
    def df(self, df) -> None:
        self._df, self._pending, self._footer = df, None, None

    def loaded(self, name: str) -> bool:
        """Is column ``name`` in memory (not only in the file)?"""
        return name in self._df.columns

    @property
    def columns(self) -> list[str]:
        if self._pending is None:
            return list(self._df.columns)
        return self._pending.order

    def frame(self, *names: str):
        """Only the named columns, read from the file if not yet in memory.

        Why: reading every column of a 10M-record sample took 2.9-4.2 s cold
        (pyarrow ``read_table`` of offsets, timestamps and fields), most of
        ``analyze``; ``analyze`` needs three columns (docs/benchmarks.md).
        """
        if self._pending is not None:
            want = [n for n in names if n in self._pending.names]
            if want:
                self._load(want)
        return self._df.select(names)

    def key_file(self):
        """(path, a check that raises if the file changed, its column names) while the keys are still only
        in the Parquet file (``read_sample(..., columns=("partition",))``), else None."""
        p = self._pending
        if p is None or "key" not in p.names or "key" not in p.file_names:
            return None
        return p.path, p.check_same, set(p.file_names)

    def _load(self, names) -> None:
        if self._footer is not None:  # the partition column first: every other column is hstacked to it
            names = ["partition", *(n for n in names if n != "partition")]
        path = self._pending.path
        df, self._pending = self._pending.load(self._df, names)
        if self._footer is not None:
            if df.height != self._footer[0]:
                raise InputError(f"{path}: columns of different lengths")
            self._footer = None
        self._df = df

    def __len__(self) -> int:
        return self._df.height if self._footer is None else self._footer[0]

    def __repr__(self) -> str:
        return f"<Sample topic={self.meta.topic!r} records={len(self)} partitions={self.partition_count}>"

    @property
    def partition_count(self) -> int:
        """Partitions of the topic (not only those sampled)."""
        if self._footer is not None:
            return max(self.meta.partition_count or 0, self._footer[1])
        seen = int(self._df["partition"].max()) + 1 if self._df.height else 0
        return max(self.meta.partition_count or 0, seen)

    @property
    def field_names(self) -> list[str]:
        return [c for c in self.columns if c not in BASE_COLUMNS]

    def meta_dict(self) -> dict:
        """The metadata as plain JSON-able data (what ``keyscope info --format json`` shows)."""
        return self.meta.to_dict()

    def summary(self) -> dict:
        """Counts a person checks first: records and null/empty/distinct keys, per partition, field misses."""
        import polars as pl

        df = self.df
        n = df.height
        per: dict[int, dict] = {}
        if n:
            g = df.group_by("partition").agg(
                pl.len().alias("records"),
                pl.col("key").null_count().alias("null_keys"),
                pl.col("offset").min().alias("first"),
                pl.col("offset").max().alias("last"),
            )
            per = {int(r["partition"]): r for r in g.iter_rows(named=True)}
        rows = []
        for p in sorted(set(self.meta.partitions) | set(per)):
            info = self.meta.partitions.get(p)
            r = per.get(p, {})
            rows.append({
                "partition": p,
                "low": info.low if info else None,
                "high": info.high if info else None,
                "first": info.first if info and info.first is not None else r.get("first"),
                "last": info.last if info and info.last is not None else r.get("last"),
                "records": int(r.get("records", 0)),
                "null_keys": int(r.get("null_keys", 0)),
            })
        fields = {}
        for name in self.field_names:
            misses = self.meta.field_misses.get(name, int(df[name].null_count()))
            fields[name] = {"path": self.meta.fields.get(name), "misses": misses, "miss_rate": misses / n if n else None}
        keys = df["key"]
        ts = df["timestamp"].drop_nulls()
        return {
            "topic": self.meta.topic,
            "source": self.meta.source,
            "records": n,
            "partition_count": self.partition_count,
            "partitions_sampled": len(per),
            "null_keys": int(keys.null_count()),
            "empty_keys": int((df["key_size"] == 0).sum()) if n else 0,
            "distinct_keys": int(keys.drop_nulls().n_unique()) if n else 0,
            "key_bytes": int(df["key_size"].sum() or 0) if n else 0,
            "value_bytes": int(df["value_size"].sum() or 0) if n else 0,
            "first_timestamp": ts.min().isoformat() if ts.len() else None,
            "last_timestamp": ts.max().isoformat() if ts.len() else None,
            "partial": bool(self.meta.partial),
            "partial_reason": self.meta.partial_reason,
            "fields": fields,
            "partitions": rows,
        }

    @classmethod
    def from_frame(cls, df, topic: str = "unknown", partition_count: int | None = None, **meta) -> "Sample":
        """Normalise any frame with at least ``partition`` and ``key`` into a Sample.

        Missing optional columns are filled (offsets by row order within each
        partition, sizes from the key); extra columns become fields (String).
        """
        import polars as pl

        if "partition" not in df.columns or "key" not in df.columns:
            missing = [c for c in ("partition", "key") if c not in df.columns]
            raise InputError(f"sample is missing required column(s): {', '.join(missing)}")
        schema = base_schema()
        if df.schema["key"] == pl.String:
            df = df.with_columns(pl.col("key").cast(pl.Binary))
        elif df.schema["key"] == pl.Null:
            df = df.with_columns(pl.col("key").cast(pl.Binary))
        if "offset" not in df.columns:
            df = df.with_columns(pl.int_range(pl.len()).over("partition").alias("offset"))
        if "timestamp" not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=schema["timestamp"]).alias("timestamp"))
        if "key_size" not in df.columns:
            df = df.with_columns(pl.col("key").bin.size().alias("key_size"))
        if "value_size" not in df.columns:
            df = df.with_columns(pl.lit(0).alias("value_size"))
        extra = [c for c in df.columns if c not in BASE_COLUMNS]
        df = df.select(
            [pl.col(c).cast(t) for c, t in schema.items()] + [pl.col(c).cast(pl.String) for c in extra]
        )
        _check_partitions(df)
        m = SampleMeta(topic=topic, **meta)
        seen = int(df["partition"].max()) + 1 if df.height else 0
        m.partition_count = max(partition_count or 0, m.partition_count or 0, seen)
        if m.partition_count > MAX_PARTITIONS:
            raise InputError(f"partition count {m.partition_count:,} is beyond keyscope's limit of {MAX_PARTITIONS:,}")
        if not m.sampled_at:
            m.sampled_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if not m.partitions and df.height:
            m.partitions = _ranges_from_frame(df)
        return cls(df, m)

    def write(self, path: str | Path, overwrite: bool = True) -> Path:
        """Write Parquet with metadata, atomically: readers see no file or the whole file.

        The records go to a temp file of a unique name in the same directory
        (two writers never share one), then it is published in one step: with
        ``overwrite`` by rename over any regular file; without, by a hard link
        that fails if the name exists (no-clobber), so of two runs racing for
        one name exactly one wins.  The loser's sample is not lost: it is
        published under ``NAME.PID.parquet`` and :class:`OutputTaken` says where.
        """
        import os
        import tempfile

        import pyarrow.parquet as pq

        path = Path(path)
        table = self.df.to_arrow()
        md = dict(table.schema.metadata or {})
        md[META_KEY.encode()] = self.meta.to_json().encode()
        table = table.replace_schema_metadata(md)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            mask = os.umask(0)
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)  # as an ordinary new file, not mkstemp's 0600
            from .io.sample_format import parquet_options

            with os.fdopen(fd, "wb") as f:
                pq.write_table(table, f, **parquet_options(self.field_names))
            if overwrite:
                _refuse_special(path)
                os.replace(tmp, path)
            elif not _publish_new(tmp, path):
                for i in range(100):
                    tag = f"{os.getpid()}" + (f"-{i}" if i else "")
                    other = path.with_name(f"{path.stem}.{tag}{path.suffix or '.parquet'}")
                    if _publish_new(tmp, other):
                        raise OutputTaken(path, other)
                raise InputError(f"cannot write {path}: it was created by another process while sampling")
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        return path


class OutputTaken(UsageError):
    """Another process created the output while we sampled; ours is kept under another name."""

    def __init__(self, path: Path, kept: Path):
        super().__init__(
            f"{path} was created by another process while sampling; this sample is kept in {kept}"
        )
        self.path, self.kept = path, kept


def _publish_new(tmp: str, path: Path) -> bool:
    """Give ``tmp`` the name ``path`` only if nothing has it (atomic); False if taken."""
    import os

    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a filesystem without hard links: claim the name exclusively, then replace it
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            return False
        os.replace(tmp, path)
        return True


def _refuse_special(path: Path) -> None:
    """--force replaces a file, never a device, pipe or directory (os.replace would, as root)."""
    import os
    import stat

    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"cannot write {path}: it is a directory")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise InputError(f"cannot write {path}: not a regular file (a device or pipe); choose a file name")


def _ranges_from_frame(df) -> dict[int, PartitionInfo]:
    import polars as pl

    g = (
        df.group_by("partition")
        .agg(
            pl.col("offset").min().alias("first"),
            pl.col("offset").max().alias("last"),
            pl.len().alias("records"),
        )
        .sort("partition")
    )
    return {
        int(r["partition"]): PartitionInfo(
            partition=int(r["partition"]), first=int(r["first"]), last=int(r["last"]), records=int(r["records"])
        )
        for r in g.iter_rows(named=True)
    }


def read_sample(path: str | Path, columns=("partition", "key")) -> Sample:
    """Load a sample: keyscope Parquet, or kcat JSON / CSV / JSON lines (see :mod:`keyscope.io.foreign`).

    A one-line InputError naming the file for anything unreadable.  Of a
    Parquet file only ``partition`` and (if in ``columns``) ``key`` are read
    here; the other columns when a command first asks for them
    (:meth:`Sample.frame`), each checked and cast as :meth:`Sample.from_frame`
    would.  ``columns=("partition",)``: ``analyze`` reads the keys from the
    file's dictionary pages instead (:meth:`Sample.key_file`), never as a column.
    ``columns=()``: not the partition column either, when the footer says
    enough (a keyscope file whose every row group has the partitions'
    min/max statistics and no null partition): the record count and the
    largest partition come from it, and ``analyze`` reads the partitions with
    the keys' pages (:mod:`keyscope.io.parquet`); otherwise as ``("partition",)``.
    """
    import polars as pl

    from .io.foreign import detect_format, read_foreign

    path = Path(path)
    _check_regular(path)
    try:
        kind = detect_format(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if kind != "parquet":
        return read_foreign(path, kind)
    with_key = "key" in columns
    # Polars reads Parquet straight into its frame: 10M records, every column, in 1.0 s
    # against 2.9 s for pyarrow's read_table + from_arrow (docs/benchmarks.md), and
    # without importing pyarrow.parquet (0.18 s).
    try:
        ident = _identity(path)
        md = pl.read_parquet_metadata(path)
        schema = pl.read_parquet_schema(path)
    except Exception as e:  # ComputeError, OSError... on corrupt or truncated files
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    raw = md.get(META_KEY)
    try:
        meta = SampleMeta.from_json(raw) if raw else SampleMeta(source="parquet")
    except (ValueError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: keyscope metadata is damaged ({_first_line(e)})") from None
    missing = [c for c in ("partition", "key") if c not in schema]
    if missing:
        raise InputError(f"{path}: sample is missing required column(s): {', '.join(missing)}")
    names = list(schema)
    extra = [c for c in names if c not in BASE_COLUMNS]
    try:  # every column's cast checked now, on an empty frame, as from_frame would on all rows
        _normalise(pl.DataFrame(schema=schema), extra)
    except Exception as e:  # a column of a type we cannot use
        raise InputError(f"{path}: unusable columns ({_first_line(e)})") from None
    footer = None
    if not with_key and "partition" not in columns and raw and schema["partition"] == pl.Int32 \
            and not _risky_columns(schema):  # (a risky column is read below, with the partitions)
        footer = _footer_partitions(path)
    if footer is not None:
        n, pmin, pmax = footer
        try:
            _check_partition_range(pmin, pmax)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
        sample = Sample(pl.DataFrame(), meta, _Pending(path, ident, names, extra, False, False), footer=(n, pmax + 1))
        sample.meta.partition_count = max(meta.partition_count or 0, pmax + 1)
        if sample.meta.partition_count > MAX_PARTITIONS:
            raise InputError(f"{path}: partition count {sample.meta.partition_count:,} is beyond keyscope's "
                             f"limit of {MAX_PARTITIONS:,}")  # fmt: skip
        return sample
    try:
        # one chunk: every later ``to_numpy()`` of the partitions is then a view, not a 40 MB copy per
        # 10M records (a row group per chunk made what-if's weights and group pass copy it each)
        df = pl.read_parquet(path, columns=["partition", "key"] if with_key else ["partition"])
        df = df.with_columns(df["partition"].rechunk())  # (the key column, when read, stays as it is: no copy)
    except Exception as e:
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    pending = _Pending(path, ident, names, extra, with_key)
    try:
        df = _normalise(df, [])
        _check_partitions(df)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    except Exception as e:
        raise InputError(f"{path}: unusable columns ({_first_line(e)})") from None
    if not raw:
        m = SampleMeta(topic=meta.topic)
        m.sampled_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        meta = m
    sample = Sample(df, meta, pending)
    risky = _risky_columns(schema)
    if risky:  # a cast that may fail on some value: fail now, as reading every column did
        sample.frame(*risky)
    if not raw and df.height:
        sample.meta.partitions = _ranges_from_frame(sample.frame("partition", "offset"))
    seen = int(df["partition"].max()) + 1 if df.height else 0
    sample.meta.partition_count = max(meta.partition_count or 0, seen)
    if sample.meta.partition_count > MAX_PARTITIONS:
        raise InputError(
            f"{path}: partition count {sample.meta.partition_count:,} is beyond keyscope's limit of {MAX_PARTITIONS:,}"
        )
    return sample


def _risky_columns(schema) -> list[str]:
    """Columns whose cast (see _normalise) can fail on a value: any base column not of its type, nested fields.

    keyscope's own files have none, so nothing more is read for them here.
    """
    import polars as pl

    base = base_schema()
    out = []
    for c, t in schema.items():
        if c in ("partition", "key"):
            continue
        if c in base:
            ok = t == base[c]
        else:
            ok = t in (pl.String, pl.Categorical, pl.Boolean) or isinstance(t, pl.Enum) or t.is_numeric() or t.is_temporal()
        if not ok:
            out.append(c)
    return out


def _identity(path: Path) -> tuple:
    import os

    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _normalise(df, extra):
    """from_frame's casts for the columns ``df`` has: base columns to their types, fields to String."""
    import polars as pl

    schema = base_schema()
    if "key" in df.columns and df.schema["key"] in (pl.String, pl.Null):
        df = df.with_columns(pl.col("key").cast(pl.Binary))
    return df.select(
        [pl.col(c).cast(schema[c]) if c in schema else pl.col(c).cast(pl.String) for c in df.columns]
    )


def _check_partitions(df) -> None:
    if df.height:
        _check_partition_range(df["partition"].min(), df["partition"].max())


def _check_partition_range(pmin, pmax) -> None:
    if pmin is not None and pmin < 0:
        raise InputError("sample has negative partition numbers")
    if pmax is not None and pmax >= MAX_PARTITIONS:
        raise InputError(
            f"a record on partition {pmax} is beyond keyscope's limit of {MAX_PARTITIONS:,} partitions per topic"
        )


def _footer_partitions(path: Path) -> tuple[int, int, int] | None:
    """(records, smallest, largest partition) from the Parquet footer's row-group statistics, or None.

    None (read the column) unless every row group has min/max statistics for an INT32 partition
    column and counts no null partition, and there is at least one record.  keyscope's writers
    keep those statistics (keyscope.io.sample_format).  Read by :mod:`keyscope.io.pages` (importing
    pyarrow cost a cold ``analyze`` 0.2 s on its main thread), else by pyarrow.
    """
    from .io import pages

    try:
        ft = pages.footer_of(path)
    except (pages.Unsupported, OSError):
        return _footer_partitions_arrow(path)
    if ft.num_rows <= 0 or sum(rows for rows, _ in ft.row_groups) != ft.num_rows:
        return None
    got = ft.int32_range("partition")
    return None if got is None else (ft.num_rows, got[0], got[1])


def _footer_partitions_arrow(path: Path) -> tuple[int, int, int] | None:
    """:func:`_footer_partitions` read by pyarrow."""
    import pyarrow.parquet as pq

    try:
        md = pq.ParquetFile(path).metadata
    except Exception as e:
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    schema = md.schema
    names = [schema.column(i).path for i in range(len(schema))]
    if "partition" not in names or md.num_rows <= 0:
        return None
    ci = names.index("partition")
    lo, hi, rows = None, None, 0
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        rows += rg.num_rows
        if rg.num_rows == 0:
            continue
        st = rg.column(ci).statistics
        if st is None or not st.has_min_max or st.null_count is None or st.null_count or st.physical_type != "INT32":
            return None
        lo = int(st.min) if lo is None else min(lo, int(st.min))
        hi = int(st.max) if hi is None else max(hi, int(st.max))
    if lo is None or hi is None or rows != md.num_rows:
        return None
    return md.num_rows, lo, hi


class _Pending:
    """Columns of a sample file not yet read; read on demand, from the same file only."""

    def __init__(self, path: Path, ident: tuple, file_names: list[str], extra: list[str], key_read: bool = True,
                 partition_read: bool = True):  # fmt: skip
        self.path, self.ident = path, ident
        self.file_names = set(file_names)
        self.order = [*BASE_COLUMNS, *extra]  # from_frame's column order
        read = (("partition",) if partition_read else ()) + (("key",) if key_read else ())
        self.names = [c for c in self.order if c not in read]

    def check_same(self) -> None:
        """InputError unless the file is still the one opened (columns of two files never mix)."""
        try:
            same = _identity(self.path) == self.ident
        except OSError:
            same = False
        if not same:
            raise InputError(f"{self.path}: the file changed while keyscope was reading it; run the command again")

    def load(self, df, names):
        """(``df`` with ``names`` added, what is still pending or None)."""
        import polars as pl

        path = self.path
        if "key_size" in names and "key_size" not in self.file_names and "key" in self.names and "key" not in names:
            names = ["key", *names]  # key sizes are made from the keys
        from_file = [c for c in names if c in self.file_names]
        if from_file:
            self.check_same()
            try:
                cols = pl.read_parquet(path, columns=from_file)
            except Exception as e:
                raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
            if df.width and cols.height != df.height:
                raise InputError(f"{path}: columns of different lengths")
            try:
                cols = _normalise(cols, [c for c in from_file if c not in BASE_COLUMNS])
            except Exception as e:
                raise InputError(f"{path}: unusable columns ({_first_line(e)})") from None
            if "partition" in from_file:  # (read_sample(..., columns=()): the range the footer gave, checked)
                try:
                    _check_partitions(cols)
                except InputError as e:
                    raise InputError(f"{path}: {e}") from None
            df = df.hstack(cols) if df.width else cols
        fill = {
            "offset": pl.int_range(pl.len()).over("partition").cast(pl.Int64),
            "timestamp": pl.lit(None, dtype=pl.Datetime("ms", "UTC")),
            "key_size": pl.col("key").bin.size().cast(pl.Int32),
            "value_size": pl.lit(0, dtype=pl.Int32),
        }
        made = [fill[c].alias(c) for c in names if c not in self.file_names]
        if made:
            df = df.with_columns(made)
        self.names = [c for c in self.names if c not in names]
        if not self.names:
            return df.select(self.order), None
        return df, self


def _check_regular(path: Path) -> None:
    """A sample is a regular file: a FIFO with no writer would block forever, a device never ends."""
    import os
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, not a sample file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: not a regular file (a pipe or device); save the sample to a file first")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: cannot read (permission denied)")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
