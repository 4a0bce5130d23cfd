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
from .errors import InputError

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
        d = json.loads(text)
        parts = {int(k): PartitionInfo(**v) for k, v in d.pop("partitions", {}).items()}
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(partitions=parts, **known)


class Sample:
    """Records plus metadata.  Build with :meth:`from_frame`, load with :func:`read_sample`."""

    def __init__(self, df, meta: SampleMeta):
        self.df = df
        self.meta = meta

    def __len__(self) -> int:
        return self.df.height

    def __repr__(self) -> str:
        return f"<Sample topic={self.meta.topic!r} records={len(self)} partitions={self.partition_count}>"

    @property
    def partition_count(self) -> int:
        """Partitions of the topic (not only those sampled)."""
        seen = int(self.df["partition"].max()) + 1 if self.df.height else 0
        return max(self.meta.partition_count or 0, seen)

    @property
    def field_names(self) -> list[str]:
        return [c for c in self.df.columns if c not in BASE_COLUMNS]

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
        if df.height and df["partition"].min() < 0:
            raise InputError("sample has negative partition numbers")
        m = SampleMeta(topic=topic, **meta)
        seen = int(df["partition"].max()) + 1 if df.height else 0
        m.partition_count = max(partition_count or 0, m.partition_count or 0, seen)
        if not m.sampled_at:
            m.sampled_at = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if not m.partitions and df.height:
            m.partitions = _ranges_from_frame(df)
        return cls(df, m)

    def write(self, path: str | Path) -> Path:
        """Write Parquet with metadata; atomically (temp file then rename)."""
        import pyarrow.parquet as pq

        path = Path(path)
        table = self.df.to_arrow()
        md = dict(table.schema.metadata or {})
        md[META_KEY.encode()] = self.meta.to_json().encode()
        table = table.replace_schema_metadata(md)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
        return path


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


def read_sample(path: str | Path) -> Sample:
    """Load a sample: keyscope Parquet, or kcat JSON / CSV / JSON lines (see :mod:`keyscope.sources`).

    A one-line InputError naming the file for anything unreadable.
    """
    import polars as pl
    import pyarrow.parquet as pq

    from .sources import detect_format, read_foreign

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a sample file")
    try:
        kind = detect_format(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if kind != "parquet":
        return read_foreign(path, kind)
    try:
        table = pq.read_table(path)
    except Exception as e:  # ArrowInvalid, OSError... on corrupt or truncated files
        raise InputError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    md = table.schema.metadata or {}
    raw = md.get(META_KEY.encode())
    try:
        meta = SampleMeta.from_json(raw.decode()) if raw else SampleMeta(source="parquet")
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: keyscope metadata is damaged ({_first_line(e)})") from None
    try:
        df = pl.from_arrow(table.replace_schema_metadata(None))
        sample = Sample.from_frame(df, topic=meta.topic, partition_count=meta.partition_count)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    except Exception as e:  # a column of a type we cannot use
        raise InputError(f"{path}: unusable columns ({_first_line(e)})") from None
    sample.meta = meta if raw else sample.meta
    sample.meta.partition_count = max(meta.partition_count, sample.partition_count)
    return sample


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
