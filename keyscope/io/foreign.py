"""Samples other tools made: kcat JSON (``kcat -C -J``), CSV and JSON lines.

So an engineer can analyse what they already captured during the incident.
Every reader ends in :meth:`keyscope.sample.Sample.from_frame`, so a foreign
file gives the same Sample as ``keyscope sample`` (columns it lacks are
filled, the partition count is inferred from the records and marked so).

Recognised columns: ``partition`` and ``key`` (required); ``offset``;
``timestamp`` (epoch ms or ISO-8601; kcat's ``ts``); ``value`` (kcat's
``payload``), kept only as ``value_size``; ``topic``.  Other scalar columns
become String fields, usable as composite-key parts.  Keys are text: a CSV
cell left empty is a null key, ``""`` is the empty key.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

FORMATS = ("parquet", "kcat-json", "jsonl", "csv")
_PARQUET_EXT = {".parquet", ".pq", ".parq"}
_JSON_EXT = {".json", ".jsonl", ".ndjson"}
_CSV_EXT = {".csv": ",", ".tsv": "\t"}
_KNOWN = {"partition", "key", "offset", "timestamp", "ts", "value", "payload", "topic", "key_size", "value_size"}
_KCAT_ONLY = {"tstype", "broker", "headers", "key_schema_id", "value_schema_id", "payload"}


def detect_format(path: Path) -> str:
    """``parquet``, ``json`` or ``csv`` by content first (magic bytes), then extension, then a sniff."""
    with open(path, "rb") as f:
        head = f.read(4096)
    ext = path.suffix.lower()
    if not head:
        raise InputError(f"{path}: the file is empty")
    if head.startswith(b"PAR1") or ext in _PARQUET_EXT:
        return "parquet"
    if ext in _JSON_EXT:
        return "json"
    if ext in _CSV_EXT:
        return "csv"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not text:
        raise InputError(f"{path}: the file is empty")
    if text[:1] == b"{":
        return "json"
    first = text.split(b"\n", 1)[0].lower()
    if b"partition" in first and b"key" in first:
        return "csv"
    raise InputError(
        f"{path}: not a sample keyscope can read: expected a keyscope Parquet sample, kcat -J output, "
        "or CSV/JSON lines with partition and key columns"
    )


def read_foreign(path: str | Path, kind: str | None = None):
    """A Sample from a kcat JSON, JSON lines or CSV file; one-line InputError naming the file otherwise."""
    path = Path(path)
    kind = kind or detect_format(path)
    try:
        if kind == "json":
            df, source = _read_json_lines(path)
        elif kind == "csv":
            df, source = _read_csv(path), "csv"
        else:
            raise InputError(f"{path}: unsupported format {kind!r}")
        df, extras = _normalise(df, source)
        return _to_sample(df, source, path, extras)
    except InputError as e:
        msg = str(e)
        raise InputError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


# --------------------------------------------------------------------------- JSON lines


def _read_json_lines(path: Path):
    """Polars reads well-formed UTF-8 files at column speed; anything else takes the line-by-line
    path, which also accepts kcat's raw (non-UTF-8) key bytes and names the first bad line."""
    import polars as pl

    try:
        df = pl.read_ndjson(path, infer_schema_length=None, schema_overrides={"key": pl.String})
    except Exception:
        df = _json_lines_slow(path)
    if df.width == 0 or df.height == 0 and not df.columns:
        raise InputError("no JSON records in the file")
    source = "kcat-json" if {"payload", "tstype"} & set(df.columns) else "jsonl"
    return df, source


def _json_lines_slow(path: Path):
    import polars as pl

    rows: list[dict] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            try:
                # surrogateescape keeps bytes that are not UTF-8 (kcat writes keys raw) round-trippable.
                obj = json.loads(line.decode("utf-8", "surrogateescape"))
            except ValueError as e:
                cut = "" if raw.endswith(b"\n") else " (the file looks truncated)"
                raise InputError(f"line {lineno} is not valid JSON{cut}: {e.msg}") from None
            if not isinstance(obj, dict):
                raise InputError(f"line {lineno} is not a JSON object")
            rows.append(obj)
    if not rows:
        raise InputError("no JSON records in the file")
    cols = sorted({k for r in rows for k in r}, key=lambda k: (k not in _KNOWN, k))
    data: dict[str, list] = {c: [] for c in cols}
    for r in rows:
        for c in cols:
            data[c].append(r.get(c))
    out = {}
    for c, values in data.items():
        if c in ("key", "payload", "value"):
            out[c] = pl.Series(c, [_raw_bytes(v) for v in values], dtype=pl.Binary)
        elif all(v is None or isinstance(v, (list, dict)) for v in values) and any(v is not None for v in values):
            continue  # nested (kcat headers): not a field
        else:
            out[c] = pl.Series(c, [_scalar_text(v) for v in values], dtype=pl.String)
    return pl.DataFrame(out)


def _raw_bytes(v):
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode("utf-8", "surrogateescape")
    return json.dumps(v).encode()


def _scalar_text(v):
    if v is None:
        return None
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


# --------------------------------------------------------------------------- CSV


def _read_csv(path: Path):
    import polars as pl

    sep = _CSV_EXT.get(path.suffix.lower())
    if sep is None:
        with open(path, "rb") as f:
            first = f.readline()
        sep = max(",\t;", key=lambda c: first.count(c.encode()))
    try:
        df = pl.read_csv(path, infer_schema=False, separator=sep, truncate_ragged_lines=False)
    except Exception as e:
        raise InputError(f"not readable as CSV ({_first_line(e)})") from None
    return df


# --------------------------------------------------------------------------- common


def _normalise(df, source: str):
    """Map recognised columns onto the Sample's, naming the first bad record; (frame, extras)."""
    import polars as pl

    missing = [c for c in ("partition", "key") if c not in df.columns]
    if missing:
        raise InputError(
            f"missing required column(s) {', '.join(missing)} (have: {', '.join(df.columns[:12]) or 'none'})"
        )
    if "ts" in df.columns and "timestamp" not in df.columns:
        df = df.rename({"ts": "timestamp"})
    if "payload" in df.columns and "value" not in df.columns:
        df = df.rename({"payload": "value"})
    cols = [_int_column(df, "partition", pl.Int32)]
    if "offset" in df.columns:
        cols.append(_int_column(df, "offset", pl.Int64))
    key = df["key"]
    if key.dtype not in (pl.Binary, pl.String, pl.Null):
        key = key.cast(pl.String)
    cols.append(key.cast(pl.Binary).alias("key"))
    if "timestamp" in df.columns:
        cols.append(_timestamp_column(df["timestamp"]))
    if "value" in df.columns:
        v = df["value"]
        size = v.bin.size() if v.dtype == pl.Binary else v.cast(pl.String).str.len_bytes()
        cols.append(size.fill_null(0).cast(pl.Int32).alias("value_size"))
    elif "value_size" in df.columns:
        cols.append(_int_column(df, "value_size", pl.Int32))
    out = pl.DataFrame(cols)
    dropped = []
    for c in df.columns:
        if c in _KNOWN or (source == "kcat-json" and c in _KCAT_ONLY) or c in ("ts",):
            continue
        s = df[c]
        if s.dtype.is_nested():
            dropped.append(c)
            continue
        out = out.with_columns(s.cast(pl.String).alias(c))
    topics = None
    if "topic" in df.columns:
        topics = df["topic"].cast(pl.String).drop_nulls().unique().sort().to_list()
        if len(topics) > 1:
            shown = ", ".join(topics[:5]) + (" ..." if len(topics) > 5 else "")
            raise InputError(f"holds records of {len(topics)} topics ({shown}); keyscope analyses one topic per sample")
    return out, {"topic": topics[0] if topics else None, "dropped": dropped}


def _int_column(df, name: str, dtype):
    import polars as pl

    s = df[name]
    if s.dtype == pl.Null:
        return s.cast(dtype)
    cast = s.cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False) if s.dtype == pl.String else s.cast(pl.Int64, strict=False)
    bad = cast.is_null() & s.is_not_null()
    if name == "partition":
        bad = bad | s.is_null() | (cast < 0)
    if bad.any():
        i = int(bad.arg_max())
        shown = s[i]
        raise InputError(f"record {i + 1}: {name} must be a {'non-negative ' if name == 'partition' else ''}integer, got {shown!r}")
    if name == "partition" and cast.len() and cast.max() >= 1 << 31:
        raise InputError("partition numbers beyond 2^31")
    return cast.cast(dtype).alias(name)


def _timestamp_column(s):
    """Epoch milliseconds (kcat's ts; negative = none) or ISO-8601 text -> Datetime(ms, UTC)."""
    import polars as pl

    dtype = pl.Datetime("ms", "UTC")
    if s.dtype.is_integer() or s.dtype == pl.Null:
        ms = s.cast(pl.Int64)
    else:
        text = s.cast(pl.String).str.strip_chars()
        ms = text.cast(pl.Int64, strict=False)
        iso = text.str.to_datetime(time_zone="UTC", strict=False, time_unit="ms")
        ms = ms.fill_null(iso.dt.epoch("ms"))
        bad = ms.is_null() & text.is_not_null() & (text != "")
        if bad.any():
            i = int(bad.arg_max())
            raise InputError(f"record {i + 1}: timestamp must be epoch milliseconds or ISO-8601, got {text[i]!r}")
    ms = pl.select(pl.when((ms >= 0) & (ms <= 253_402_300_799_999)).then(ms).otherwise(None).alias("t")).to_series()
    return ms.cast(dtype).alias("timestamp")


def _to_sample(df, source: str, path: Path, extras: dict):
    from ..sample import Sample

    topic = extras.get("topic") or path.stem
    dropped = extras.get("dropped") or []
    how = {"file": path.name, "partition_count_inferred": True}
    if dropped:
        how["dropped_columns"] = dropped
    return Sample.from_frame(df, topic=topic, source=source, how=how)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


__all__ = ["detect_format", "read_foreign", "FORMATS"]
