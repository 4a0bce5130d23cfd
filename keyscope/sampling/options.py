"""What to sample: the options (``--field``, ``--from-time``, ``--partitions``, ``--max-bytes``), their
defaults and bounds, and what the sampler reports back (Progress, Phase)."""

from __future__ import annotations

import datetime as _dt
import math
import re
import time
from dataclasses import dataclass, field


from ..errors import UsageError
from ..model.limits import MAX_PARTITIONS

DEFAULT_MAX_RECORDS = 100_000  # when neither --per-partition nor --max-records is given
DEFAULT_MAX_BYTES = 256 << 20
DEFAULT_TIMEOUT_S = 60.0
FETCH_MAX_BYTES = 32 << 20  # per request; brokers may exceed it by one batch
PARTITION_FETCH_BYTES = 4 << 20  # per partition and request, at most
FIRST_FETCH_BYTES = 64 << 10  # least ask for a batch bigger than its ask (then x4 each time)
GUESS_RECORD_BYTES = 256  # bytes per record assumed until the first answers tell
MIN_FETCH_BYTES = 4 << 10
# Pacing: no partition keeps more than PACE_RATIO x the lowest share of its budget kept, plus PACE_STEP,
# so a sample cut at any point keeps the partitions' shares.  Fetches look further ahead (FETCH_AHEAD_*):
# records decoded beyond the pace are held, and kept when the others catch up (dropped at a cut).
PACE_RATIO, PACE_STEP = 1.05, 0.002
# 1.5 and 0.05 held up to 1M of 5M records decoded beyond the pace (bench_cold's topic, one
# partition holding 37%); 1.2 and 0.02 hold ~0.4M, 31 MB less peak RSS, no slower (docs/benchmarks.md).
FETCH_AHEAD_RATIO, FETCH_AHEAD_STEP = 1.2, 0.02
# ... and at most this many records past a partition's pace: the ratio alone let what is held grow with
# the records read (peak RSS 260 -> 310 MB from 5M to 20M records, 296 -> 373 MB with two --field
# paths).  bench_cold's topic, 5M / 20M records, peak RSS: 16Ki 216 / 233 MB, 32Ki 221 / 244 MB, 64Ki
# 225 / 265 MB, no CPU difference; 32Ki (~2 MB of ~56-byte records per partition and request) keeps
# fetches large enough for a broker farther away than loopback (one request per partition in flight).
FETCH_AHEAD_RECORDS = 1 << 15
ISOLATIONS = ("read_committed", "read_uncommitted")
MAX_IN_FLIGHT = 4  # fetch requests out at once
PARTITIONS_PER_REQUEST = 32  # Tansu returns ~1 MB per partition whatever the limits; keeps answers < 100 MB frames
MODES = ("latest", "earliest", "time")
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z; later (damaged) timestamps become null


@dataclass(frozen=True)
class FieldSpec:
    """A column pulled from each record: a JSON path into the value, or a header."""

    name: str
    path: str  # "$.a.b" or "header:NAME"

    @property
    def header(self) -> str | None:
        return self.path[len("header:") :] if self.path.startswith("header:") else None


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_RESERVED = {"partition", "offset", "timestamp", "key", "key_size", "value_size"}


def parse_field(text: str) -> FieldSpec:
    """``NAME=PATH`` as given to ``--field``; PATH is ``$.json.path`` or ``header:NAME``."""
    if "=" not in text:
        raise UsageError(f"--field expects NAME=PATH (e.g. tenant=$.tenant_id or trace=header:trace-id), got {text!r}")
    name, path = (s.strip() for s in text.split("=", 1))
    if not _NAME.match(name):
        raise UsageError(f"--field name {name!r} must start with a letter or _ and hold only letters, digits, _ . -")
    if name in _RESERVED:
        raise UsageError(f"--field name {name!r} is taken by a sample column; choose another")
    if path.startswith("header:"):
        if not path[len("header:") :]:
            raise UsageError(f"--field {name}: header: needs a header name, e.g. header:trace-id")
        return FieldSpec(name, path)
    if not path.startswith("$"):
        raise UsageError(f"--field {name}: PATH must be a JSON path starting with $ (e.g. $.tenant_id) or header:NAME")
    from .jsonfields import simple_path

    if simple_path(path) is not None:  # a dotted path is valid JSONPath: no Polars import (0.18 s) to say so
        return FieldSpec(name, path)
    import polars as pl

    try:
        pl.Series(["{}"]).str.json_path_match(path)
    except Exception as e:
        raise UsageError(f"--field {name}: invalid JSON path {path!r} ({_first_line(e)})") from None
    return FieldSpec(name, path)


_REL = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d|w))+$")
_REL_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_time(text: str, now_ms: int | None = None) -> int:
    """``--from-time``: ISO-8601 (no zone = UTC) or a span back from now (``90s``, ``2h``, ``1h30m``, ``7d``)."""
    t = text.strip()
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    if _REL.match(t):
        span = sum(float(n) * _UNIT_MS[u] for n, u in _REL_PART.findall(t))
        return _after_1970(now_ms - span, text)
    try:
        d = _dt.datetime.fromisoformat(t.replace("z", "Z"))
    except ValueError:
        raise UsageError(
            f"--from-time {text!r}: expected ISO-8601 (2026-11-28T09:30:00Z) or a span back from now (30m, 2h, 1d)"
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=_dt.timezone.utc)
    return _after_1970(d.timestamp() * 1000, text)


def _after_1970(ms: float, text: str) -> int:
    """Kafka timestamps are milliseconds since 1970 (ListOffsets reads -1 and -2 as latest/earliest)."""
    if not (math.isfinite(ms) and ms >= 0):
        raise UsageError(f"--from-time {text!r} is before 1970-01-01T00:00:00Z, where Kafka timestamps start")
    return int(ms)


def parse_partitions(text: str) -> list[int]:
    """``0,2,5-7`` -> [0, 2, 5, 6, 7]."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.match(r"^(\d+)(?:-(\d+))?$", part)
        if not m:
            raise UsageError(f"--partitions expects numbers and ranges like 0,2,5-7, got {text!r}")
        a, b = int(m.group(1)), int(m.group(2) or m.group(1))
        if b >= MAX_PARTITIONS:
            raise UsageError(
                f"--partitions {part!r}: partition ids go up to {MAX_PARTITIONS - 1:,} "
                f"(keyscope handles at most {MAX_PARTITIONS:,} partitions per topic)"
            )
        if b < a:
            raise UsageError(f"--partitions range {part!r} runs backwards")
        out.update(range(a, b + 1))
    return sorted(out)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?$", re.I)


def parse_size(text: str) -> int:
    """``--max-bytes``: ``1000``, ``64KB``, ``256MiB``, ``1g`` (K/M/G are 1024-based, as kcat's)."""
    m = _SIZE.match(str(text).strip())
    if not m:
        raise UsageError(f"--max-bytes expects a size like 64MB or 1GiB, got {text!r}")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    n = int(float(m.group(1)) * mult)
    if n <= 0:
        raise UsageError(f"--max-bytes must be positive, got {text!r}")
    return n


@dataclass
class SampleSpec:
    """What to read.  Bounds left None take the defaults described in docs/sampling.md."""

    topic: str
    start: str = "latest"  # latest | earliest | time
    from_time_ms: int | None = None
    from_time_text: str | None = None  # as the user wrote it, for the metadata
    partitions: list[int] | None = None
    per_partition: int | None = None
    max_records: int | None = None
    max_bytes: int | None = None
    timeout_s: float | None = None
    fields: list[FieldSpec] = field(default_factory=list)
    # How long a lost broker may take to come back, or its partitions to get a new leader, before the
    # sample is cut short.  Kafka fences a dead broker after broker.session.timeout.ms (9 s by default)
    # and a controller failover adds seconds: 10 s cut samples short on real Kafka.
    retry_s: float = 30.0
    isolation: str = "read_committed"  # what a read_committed consumer sees; read_uncommitted adds aborted records
    fetch_max_bytes: int | None = None  # per Fetch request (Kafka's fetch.max.bytes) [FETCH_MAX_BYTES]
    partition_fetch_bytes: int | None = None  # per partition (max.partition.fetch.bytes) [PARTITION_FETCH_BYTES]

    def validate(self) -> "SampleSpec":
        if self.start not in MODES:
            raise UsageError(f"--from must be one of latest, earliest (or use --from-time), got {self.start!r}")
        if self.start == "time" and self.from_time_ms is None:
            raise UsageError("--from-time needs a time")
        if self.isolation not in ISOLATIONS:
            raise UsageError(f"--isolation must be read_committed or read_uncommitted, got {self.isolation!r}")
        for name in ("per_partition", "max_records", "max_bytes", "fetch_max_bytes", "partition_fetch_bytes"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise UsageError(f"--timeout must be a positive number of seconds, got {self.timeout_s}")
        names = [f.name for f in self.fields]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise UsageError(f"--field name(s) given twice: {', '.join(sorted(dup))}")
        return self

    @property
    def effective_max_records(self) -> int | None:
        if self.max_records is None and self.per_partition is None:
            return DEFAULT_MAX_RECORDS
        return self.max_records


@dataclass
class Progress:
    """Handed to the progress callback after every fetch answer."""

    records: int
    bytes: int
    partitions_done: int
    partitions_total: int
    elapsed_s: float


@dataclass
class Phase:
    """Where :func:`sample_topic` is, for a signal handler: ``"reading"`` until the fetch loop ends (an
    interrupt then cuts the read short and the records read are kept), ``"assembling"`` after it
    (closing the consumer, building the Sample: an interrupt there would lose the records)."""

    name: str = "reading"



def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]

