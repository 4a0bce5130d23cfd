"""What-if: the load a change would put on each partition, predicted from a Sample.

A *scenario* is a key expression (the key, the key joined with captured
fields, and optionally the hottest keys salted into sub-keys) x a partitioner
x a partition count.  Everything is evaluated on *unit tables*: the sample
grouped once by (today's partition, key, fields).  Each distinct producer key
is hashed once; the partition for any count N is then ``operand % N``, so a
3 -> 6 what-if is arithmetic on a column, never a rehash per record.

Exact rules, so a producer can implement what keyscope predicted:

* composite key: ``key + sep + f1 [+ sep + f2 ...]`` over the fields as
  captured (UTF-8); a null field is skipped, so a record missing every field
  keeps its plain key.  A null key stays null (the client does not hash it).
* salting: for the hot (composite) keys only, ``subkey = key + b"#" +
  str(salt)`` with ``salt = mmh3.hash(data, seed, signed=False) % D``; ``data``
  is the salt field's UTF-8 bytes (a missing field counts as ``b""``) or, for
  ``by="offset"``, the record's offset as 8 bytes little-endian signed
  (``struct.pack("<q", offset)``).  Salting by offset models a producer that
  picks the salt at random or round-robin: exact on the sample, the same load
  in expectation in production.

Uncertainty: a sample is not the topic.  The skew interval treats sampled
records as independent draws (as ``keyscope analyze`` does): N x the interval
of the largest partition share.  It does not cover the key mix changing after
the sample window.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
from numba import njit

from .model.assignors import ASSIGNORS, ConsumerLoad, consumer_load
from .errors import InputError, UsageError
from .model.limits import MAX_PARTITIONS, MAX_SALT_BUCKETS, MAX_SALTED_KEYS, check_count
from .partitioners import KEYED, get_partitioner, hash_column
from .stats import clamp_min, max_share_interval, normal_interval, ratio_share_se, skew_ratio, wilson_interval

__all__ = [
    "Salt",
    "Scenario",
    "Result",
    "WhatIf",
    "parse_salt",
    "parse_key_by",
    "murmur3_int64",
    "murmur3_binary",
    "expected_keys_moved",
]

SALT_SEP = b"#"
MAX_GROUP_FIELDS = 4
POOL_KEYS = 16
COMPILED_MIN_ROWS = 2_000_000  # as keyscope.analysis: below this numba's start-up is not worth it  # hottest keys whose records are kept at hand for salting
_RESIDUES = 840  # lcm(2..8): offset-salt hashes are binned mod this once, for every D dividing it
DEFAULT_SEPARATOR = "|"
CONFIDENCE = 0.95


# --------------------------------------------------------------------------
# MurmurHash3 x86_32 (what ``mmh3.hash`` computes), vectorised with numpy.
# mmh3 has no batch API and building a ``bytes`` per value costs more than the
# hash, so the salt hash runs over whole columns here.

_C1 = np.uint32(0xCC9E2D51)
_C2 = np.uint32(0x1B873593)


def _rotl(x, r):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _mix_k(k):
    k = k * _C1
    k = _rotl(k, 15)
    return k * _C2


def _fmix(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def murmur3_int64(values, seed: int = 0) -> np.ndarray:
    """``mmh3.hash(struct.pack("<q", v), seed, signed=False)`` for every v."""
    v = np.ascontiguousarray(np.asarray(values, dtype="<i8")).view("<u4").reshape(-1, 2)
    with np.errstate(over="ignore"):
        h = np.full(len(v), seed & 0xFFFFFFFF, dtype=np.uint32)
        for j in (0, 1):
            h = h ^ _mix_k(v[:, j])
            h = _rotl(h, 13) * np.uint32(5) + np.uint32(0xE6546B64)
        return _fmix(h ^ np.uint32(8))


# Above this many padded bytes the column is hashed in slices.
_PAD_LIMIT = 32 << 20


def murmur3_binary(values, seed: int = 0) -> np.ndarray:
    """``mmh3.hash(v, seed, signed=False)`` for a Binary/String column; null hashes as ``b""``.

    Keys are padded into a matrix of 4-byte blocks and mixed one block column
    at a time, so the loop is over block positions, not values.
    """
    import polars as pl
    import pyarrow as pa

    s = values if isinstance(values, pl.Series) else pl.Series(values)
    if s.dtype == pl.String:
        s = s.cast(pl.Binary)
    s = s.fill_null(b"")
    n = len(s)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    lengths = s.bin.size().to_numpy().astype(np.int64)
    maxlen = int(lengths.max())
    width = (maxlen + 3) // 4 * 4 or 4
    if n * width > _PAD_LIMIT and n > 1:
        # one very long value must not make a huge matrix: hash in slices sorted by length
        order = np.argsort(lengths, kind="stable")
        out = np.empty(n, dtype=np.uint32)
        step = max(1, _PAD_LIMIT // max(width, 1) // 4)
        for i in range(0, n, step):
            idx = order[i : i + step]
            out[idx] = murmur3_binary(s.gather(idx), seed)
        return out
    arr = s.to_arrow().cast(pa.large_binary())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    total = int(offsets[-1] - offsets[0])
    pad = np.zeros((n, width), dtype=np.uint8)
    if total:
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(total) - np.repeat(offsets[:-1] - offsets[0], lengths)
        pad[rows, cols] = data[offsets[0] : offsets[-1]]
    blocks = pad.view("<u4")
    nb = lengths // 4
    has_tail = (lengths % 4) != 0
    with np.errstate(over="ignore"):
        h = np.full(n, seed & 0xFFFFFFFF, dtype=np.uint32)
        for j in range(blocks.shape[1]):
            k = _mix_k(blocks[:, j])
            full = j < nb
            body = _rotl(h ^ k, 13) * np.uint32(5) + np.uint32(0xE6546B64)
            h = np.where(full, body, h)
            # the tail block is zero-padded, so its mix equals MurmurHash3's tail step
            h = np.where((j == nb) & has_tail, h ^ k, h)
        return _fmix(h ^ lengths.astype(np.uint32))


# --------------------------------------------------------------------------
# Scenario specification


@dataclass(frozen=True)
class Salt:
    """Split the hottest keys over ``buckets`` sub-keys ``key#0 .. key#D-1``."""

    top: int | None = None  # the top K keys by traffic ...
    share: float | None = None  # ... or every key with at least this share of keyed traffic
    buckets: int = 4
    by: str = "offset"  # "offset" or a captured field
    seed: int = 0

    def __post_init__(self):
        if (self.top is None) == (self.share is None):
            raise UsageError("salting needs either a number of hot keys or a share threshold")
        if self.top is not None and self.top < 1:
            raise UsageError(f"number of hot keys to salt must be at least 1, got {self.top}")
        if self.share is not None and not (0 < self.share <= 1):
            raise UsageError(f"hot-key share threshold must be in (0, 100%], got {self.share}")
        if self.buckets < 2:
            raise UsageError(f"salting needs at least 2 sub-keys, got {self.buckets}")
        if self.buckets > MAX_SALT_BUCKETS:
            raise UsageError(f"salting into {self.buckets:,} sub-keys is too many; keyscope handles at most {MAX_SALT_BUCKETS:,}")
        if self.top is not None and self.top > MAX_SALTED_KEYS:
            raise UsageError(f"salting the top {self.top:,} keys is too many; keyscope handles at most {MAX_SALTED_KEYS:,}")

    @property
    def label(self) -> str:
        who = f"top{self.top}" if self.top is not None else f">={_pct(self.share)}"
        return f"salt {who}x{self.buckets} by {self.by}"


def _pct(x: float) -> str:
    return f"{100 * x:g}%"


_SALT_RE = re.compile(r"^\s*(?:(\d+)|(\d+(?:\.\d+)?)%)\s*(?::\s*(\d+))?\s*$")


def parse_salt(spec: str, by: str = "offset", seed: int = 0, default_buckets: int = 4) -> Salt:
    """``K[:D]`` (top K keys) or ``P%[:D]`` (keys with at least P% of traffic)."""
    m = _SALT_RE.match(spec or "")
    if not m:
        raise UsageError(f"--salt-hot {spec!r}: expected K[:D] (e.g. 1:4) or P%[:D] (e.g. 10%:8)")
    top, share, d = m.groups()
    buckets = int(d) if d else default_buckets
    if top is not None:
        return Salt(top=int(top), buckets=buckets, by=by, seed=seed)
    return Salt(share=float(share) / 100, buckets=buckets, by=by, seed=seed)


def parse_key_by(spec: str) -> tuple[str, ...]:
    """``key`` or ``key,FIELD[,FIELD]`` -> the fields appended to the key."""
    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if not parts or parts[0] != "key":
        raise UsageError(
            f"--key-by {spec!r}: a key expression starts with 'key', then captured fields, e.g. key,tenant_id"
        )
    fields = tuple(dict.fromkeys(parts[1:]))
    if "key" in fields:
        raise UsageError(f"--key-by {spec!r}: 'key' may appear only once")
    return fields


@dataclass(frozen=True)
class Scenario:
    partitions: int
    partitioner: str = "murmur2"
    key_fields: tuple[str, ...] = ()
    separator: str = DEFAULT_SEPARATOR
    salt: Salt | None = None

    def __post_init__(self):
        if not isinstance(self.partitions, int) or self.partitions < 1:
            raise UsageError(f"partition count must be a positive integer, got {self.partitions!r}")
        check_count(self.partitions, "partition count")
        object.__setattr__(self, "partitioner", get_partitioner(self.partitioner).name)
        object.__setattr__(self, "key_fields", tuple(self.key_fields))

    @property
    def key_expression(self) -> str:
        return "+".join(("key",) + self.key_fields)

    @property
    def label(self) -> str:
        parts = [f"{self.partitions}p {self.partitioner}"]
        if self.key_fields:
            parts.append(self.key_expression)
        if self.salt:
            parts.append(self.salt.label)
        return " ".join(parts)

    @property
    def order_scope(self) -> str:
        """What order survives: per key, per key+fields, and for salted keys."""
        base = self.key_expression
        if not self.salt or self.salt.by in self.key_fields:
            return f"per {base}"
        if self.salt.by == "offset":
            return f"per {base}, none for salted keys"
        return f"per {base}, salted keys per {base}+{self.salt.by}"

    def fields_needed(self) -> tuple[str, ...]:
        extra = (self.salt.by,) if self.salt and self.salt.by != "offset" else ()
        return tuple(dict.fromkeys(self.key_fields + extra))

    def to_dict(self) -> dict:
        salt = None
        if self.salt:
            salt = {
                "top": self.salt.top,
                "share": self.salt.share,
                "buckets": self.salt.buckets,
                "by": self.salt.by,
                "seed": self.salt.seed,
                "rule": salt_rule(self.salt),
            }
        return {
            "label": self.label,
            "partitions": self.partitions,
            "partitioner": self.partitioner,
            "key_expression": self.key_expression,
            "key_fields": list(self.key_fields),
            "separator": self.separator,
            "salt": salt,
        }


def salt_rule(salt: Salt) -> str:
    data = "struct.pack('<q', offset)" if salt.by == "offset" else f"(field {salt.by!r} as UTF-8, missing = b'')"
    return f"key + b'#' + str(mmh3.hash({data}, {salt.seed}, signed=False) % {salt.buckets})"


def expected_keys_moved(n: int, m: int, same_hash: bool = True) -> float:
    """Share of keys that change partition from n to m partitions, in expectation.

    Same hash: a key stays iff ``h % n == h % m``, true for min(n, m) of every
    lcm(n, m) residues.  Different (independent) hashes: min(n, m) / (n m).
    """
    if same_hash:
        return 1.0 - min(n, m) / math.lcm(n, m)
    return 1.0 - min(n, m) / (n * m)


# --------------------------------------------------------------------------
# Results


@dataclass
class Result:
    """Predicted (or, for today, observed) load and what the change costs."""

    name: str
    scenario: Scenario | None
    partitions: int
    records: np.ndarray
    bytes: np.ndarray
    skew: float
    skew_low: float
    skew_high: float
    bytes_skew: float
    unkeyed_records: float
    keys_total: int = 0
    keys_moved: int = 0
    traffic_moved_share: float = 0.0
    expected_keys_moved_share: float | None = None
    keys_split: int = 0
    order_lost_traffic_share: float = 0.0
    salted_keys: list[tuple[bytes, float]] = field(default_factory=list)
    consumer_loads: list[ConsumerLoad] = field(default_factory=list)

    @property
    def keys_moved_share(self) -> float:
        return self.keys_moved / self.keys_total if self.keys_total else 0.0

    @property
    def keys_split_share(self) -> float:
        return self.keys_split / self.keys_total if self.keys_total else 0.0

    @property
    def total(self) -> float:
        return float(self.records.sum())

    @property
    def shares(self) -> np.ndarray:
        t = self.total
        return self.records / t if t > 0 else np.zeros_like(self.records)

    @property
    def hottest_partition(self) -> int:
        return int(np.argmax(self.records)) if len(self.records) else 0

    @property
    def order_scope(self) -> str:
        return "per key" if self.scenario is None else self.scenario.order_scope

    def consumer(self, consumers: int, assignor: str) -> ConsumerLoad | None:
        for c in self.consumer_loads:
            if c.consumers == consumers and c.assignor == assignor:
                return c
        return None

    def to_dict(self) -> dict:
        from .model.keys import key_display

        import polars as pl

        salted = []
        if self.salted_keys:
            shown, enc = key_display(pl.Series([k for k, _ in self.salted_keys], dtype=pl.Binary))
            salted = [
                {"key": s, "key_encoding": e, "share": sh}
                for s, e, (_, sh) in zip(shown.to_list(), enc.to_list(), self.salted_keys)
            ]
        return {
            "name": self.name,
            "scenario": self.scenario.to_dict() if self.scenario else None,
            "partitions": self.partitions,
            "records": [_num(x) for x in self.records],
            "bytes": [_num(x) for x in self.bytes],
            "shares": [float(x) for x in self.shares],
            "hottest_partition": self.hottest_partition,
            "skew": {"value": self.skew, "low": self.skew_low, "high": self.skew_high, "confidence": CONFIDENCE},
            "bytes_skew": self.bytes_skew,
            "unkeyed_records": _num(self.unkeyed_records),
            "keys": self.keys_total,
            "keys_moved": self.keys_moved,
            "keys_moved_share": self.keys_moved_share,
            "expected_keys_moved_share": self.expected_keys_moved_share,
            "traffic_moved_share": self.traffic_moved_share,
            "order": {
                "kept": self.order_scope,
                "keys_split": self.keys_split,
                "keys_split_share": self.keys_split_share,
                "traffic_order_lost_share": self.order_lost_traffic_share,
                "salted_keys": salted,
            },
            "consumers": [c.to_dict() for c in self.consumer_loads],
        }


def _num(x) -> int | float:
    x = float(x)
    if not math.isfinite(x):
        raise ValueError(f"non-finite load {x!r}")
    return int(x) if x.is_integer() and abs(x) < 2**53 else round(x, 3)


# --------------------------------------------------------------------------
# Evaluation


@dataclass
class _Rows:
    """One row per distinct (today partition, producer key) unit."""

    src: np.ndarray  # int64, today's partition
    kid: np.ndarray  # int64, original key id (-1: null key)
    keys: object  # polars Binary Series: the producer key (null: not hashed); None when ``parts`` holds them
    n: np.ndarray  # float64 sampled records
    b: np.ndarray  # float64 sampled bytes
    splittable: bool  # may one original key land on several partitions?
    salted: list[tuple[bytes, float]] = field(default_factory=list)
    parts: list[tuple] = field(default_factory=list)  # salted: (tag, cold keys), (tag, sub-keys, row -> sub-key)


class WhatIf:
    """Evaluates scenarios on one sample; caches unit tables and hashes between them."""

    def __init__(
        self,
        sample,
        partitioner: str | None = None,
        consumers: Sequence[int] | None = None,
        group_fields: Sequence[str] = (),
    ):
        self.sample = sample
        df = sample.df
        if df.height == 0:
            raise InputError("the sample has no records: nothing to predict")
        self.today_partitions = sample.partition_count
        self.fields = sample.field_names
        self._cache: dict = {}
        from .analysis import partition_weights

        fair = partition_weights(sample)  # the rule analyze uses: re-weight an unfair sample, or refuse
        self.weights, self.notes, self.load_basis = fair.w.astype(np.float64), list(fair.notes), fair.basis
        self.scaled = fair.scaled
        self.load_unit = {
            "sample": "sampled records",
            "watermarks": "records, scaled to the topic by each partition's sampled share",
            "rate": "records/s, each partition's rate (offsets advanced per second)",
        }[fair.basis]
        firsts = [(f,) for f in dict.fromkeys(group_fields[:MAX_GROUP_FIELDS])]
        for fs in firsts:
            self.check_field(fs[0])
        coded = None
        if firsts and df.height >= COMPILED_MIN_ROWS:
            # large samples: every table (plain included) from integer codes, compiled
            coded = _group_by_codes(df, firsts, self.today_partitions)
        if coded is not None:
            key_index, tables, self._cache["record-kid"] = coded
            for fs, table in zip([(), *firsts], tables):
                self._cache[("units", fs)] = table
        else:
            # tables per field first, when composite keys will need them, all in one query: the
            # plain table then derives from the smallest instead of another pass over the records
            for fs, table in zip(firsts, (_group_by_hashes(df, firsts) or []) if firsts else []):
                self._cache[("units", fs)] = table
            for fs in firsts:
                self.units(fs)  # any the hashes could not group
        plain = self.units(())
        if plain["key"].null_count() == plain.height:
            raise InputError("every sampled record has a null key: key strategies and partition counts cannot move them")
        if coded is not None:
            self._key_index = key_index  # the tables' kid column is already this index
        else:
            self._key_index = plain.select("key").drop_nulls().unique().with_row_index("kid")
        for k, table in list(self._cache.items()):  # tables built before the key ids existed
            if k[0] == "units" and "kid" not in table.columns:
                self._cache[k] = table.join(self._key_index, on="key", how="left", maintain_order="left")
        self.consumers = sorted(set(consumers or (self.today_partitions, 2 * self.today_partitions)))
        for c in self.consumers:
            check_count(c, "consumer count", limit=2 * MAX_PARTITIONS)
        if partitioner is None:
            self.switched_from = None
            self.today_partitioner, self.today_match = self.detect_partitioner()
            if self.today_match < 0.99 and not self.switched_from:
                self.notes.append(
                    f"today's placement matches no known partitioner (best: {self.today_partitioner},"
                    f" {self.today_match:.1%} of keyed records); predictions assume {self.today_partitioner}"
                    " (set it with --today-partitioner)"
                )
        else:
            self.today_partitioner = get_partitioner(partitioner).name
            self.today_match = self._match_share(self.today_partitioner)
        self.today = self._today()

    # ---- unit tables -------------------------------------------------------

    def units(self, fields: tuple[str, ...]):
        """(partition, key, fields) -> records, bytes; from the finest table already built."""
        import polars as pl

        fields = tuple(sorted(set(fields)))
        key = ("units", fields)
        if key in self._cache:
            return self._cache[key]
        for f in fields:
            self.check_field(f)
        finer = [k for k in self._cache if k[0] == "units" and set(fields) <= set(k[1])]
        if finer:
            src = self._cache[min(finer, key=lambda k: self._cache[k].height)]
            g = src.group_by(["partition", "key", *fields]).agg(pl.col("n").sum(), pl.col("b").sum())
        elif not fields and self.sample.df.height >= COMPILED_MIN_ROWS:
            # analyze's compiled one-pass (key, partition) scan: ~2x Polars' group_by here
            from ._keytable import scan

            kp, _ = scan(self.sample.df, self.today_partitions, extremes=False)
            g = kp.select("partition", "key", pl.col("records").alias("n"), pl.col("bytes").alias("b"))
        else:
            g = _group_by_hashes(self.sample.df, [fields]) if fields else None
            if g is not None:
                g = g[0]
            else:
                size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
                g = self.sample.df.group_by(["partition", "key", *fields]).agg(
                    pl.len().cast(pl.Int64).alias("n"), size.sum().alias("b")
                )
        if "_key_index" in self.__dict__ and "kid" not in g.columns:
            g = g.join(self._key_index, on="key", how="left", maintain_order="left")
        self._cache[key] = g
        return g

    def check_field(self, name: str) -> None:
        if name not in self.fields:
            have = ", ".join(self.fields) or "none"
            raise UsageError(
                f"unknown field {name!r}; fields in this sample: {have} (capture more with keyscope sample --field)"
            )

    def _kid(self, units) -> np.ndarray:
        if "kid" not in units.columns:
            units = units.join(self._key_index, on="key", how="left", maintain_order="left")
        return units["kid"].fill_null(-1).to_numpy().astype(np.int64)

    def _composite(self, fields: tuple[str, ...], sep: str):
        """Units over ``fields`` with the producer key ``ckey`` (cached)."""
        sep = sep if fields else ""
        key = ("composite", fields, sep)
        if key not in self._cache:
            u = self.units(fields)
            u = u.with_columns(compose_keys(u["key"], [u[f] for f in fields], sep).alias("ckey"))
            self._cache[key] = u
        return self._cache[key]

    def _hash(self, tag, keys, partitioner: str) -> tuple[np.ndarray, np.ndarray]:
        """(operand, valid) per row, cached by ``tag``."""
        key = ("hash", tag, partitioner)
        if key not in self._cache:
            h = hash_column(keys, partitioner)
            valid = h.is_not_null().to_numpy()
            self._cache[key] = (h.fill_null(0).to_numpy().astype(np.int64), valid)
        return self._cache[key]

    # ---- today -------------------------------------------------------------

    def _match_share(self, partitioner: str) -> float:
        u = self._composite((), "")
        op, valid = self._hash(_rows_tag((), "", None), u["ckey"], partitioner)
        src = u["partition"].to_numpy().astype(np.int64)
        n = u["n"].to_numpy().astype(np.float64)
        keyed = n[valid].sum()
        if keyed == 0:
            return 0.0
        hit = valid & (op % self.today_partitions == src)
        return float(n[hit].sum() / keyed)

    def detect_partitioner(self) -> tuple[str, float]:
        """The partitioner producers use *now*, and the share of keyed records it explains.

        analyze's detection decides (after a detected switch: the new rule, not
        the abandoned one, even if it wrote fewer of the sampled records); when
        it names none, the rule that explains the most records.
        """
        from .detect import current_partitioner, detect_partitioner

        import polars as pl

        u = self.units(())
        kp = u.filter(pl.col("key").is_not_null()).group_by("key", "partition").agg(pl.col("n").sum().alias("records"))
        det = detect_partitioner(kp, self.today_partitions, records=self.sample.df)
        now = current_partitioner(det)
        if now is not None:
            old = (det.get("mixed") or {}).get("switched_from")
            if old:
                self.switched_from = old
                self.notes.append(f"producers switched from {old} to {now}: predictions use {now}, the current one")
            return now, self._match_share(now)
        scores = {name: self._match_share(name) for name in KEYED}
        best = max(scores, key=lambda k: (scores[k], k == "murmur2"))
        return best, scores[best]

    def _today(self) -> Result:
        u = self.units(())
        S = self.today_partitions
        src = u["partition"].to_numpy().astype(np.int64)
        n = u["n"].to_numpy().astype(np.float64)
        b = u["b"].to_numpy().astype(np.float64)
        counts = np.bincount(src, weights=n, minlength=S)
        nbytes = np.bincount(src, weights=b, minlength=S)
        w = self.weights
        records = counts * w
        lo, hi = self._interval(np.diag(counts).reshape(-1), S, np.zeros(S))  # today: null keys observed in place
        keyed = u["key"].is_not_null().to_numpy()
        res = Result(
            name="today",
            scenario=None,
            partitions=S,
            records=records,
            bytes=nbytes * w,
            skew=skew_ratio(records),
            skew_low=lo,
            skew_high=hi,
            bytes_skew=skew_ratio(nbytes * w),
            unkeyed_records=float((n[~keyed] * w[src[~keyed]]).sum()),
            keys_total=self._key_index.height,
        )
        res.consumer_loads = self._consumers(records)
        return res

    # ---- scenarios ---------------------------------------------------------

    def check(self, scenario: Scenario) -> None:
        for f in scenario.fields_needed():
            self.check_field(f)

    def evaluate(self, scenario: Scenario) -> Result:
        self.check(scenario)
        rows = self._rows(scenario)
        return self._result(scenario, rows)

    def evaluate_all(self, scenarios: Iterable[Scenario]) -> list[Result]:
        scenarios = list(scenarios)
        for s in scenarios:
            self.check(s)
        # the widest key sets first, so narrower tables derive from them
        for ks in sorted({s.key_fields for s in scenarios}, key=len, reverse=True):
            if ks:
                self.units(ks)
        return [self.evaluate(s) for s in scenarios]

    def hot_keys(self, key_fields: tuple[str, ...], sep: str, salt: Salt):
        """The (composite) keys to salt, hottest first: a Polars frame ``ckey, share``."""
        import polars as pl

        key = ("hot", key_fields, sep, salt.top, salt.share)
        if key in self._cache:
            return self._cache[key]
        u = self._composite(key_fields, sep)
        wn = u["n"].to_numpy().astype(np.float64) * self.weights[u["partition"].to_numpy().astype(np.int64)]
        weighted = pl.DataFrame({"ckey": u["ckey"], "w": wn})
        per = weighted.drop_nulls("ckey").group_by("ckey").agg(pl.col("w").sum())
        total = float(per["w"].sum())
        per = per.with_columns((pl.col("w") / clamp_min(total)).alias("share")).sort(["w", "ckey"], descending=[True, False])
        hot = per.head(salt.top) if salt.top is not None else per.filter(pl.col("share") >= salt.share)
        hot = hot.select("ckey", "share")
        self._cache[key] = hot
        return hot

    def _rows(self, sc: Scenario) -> _Rows:
        if sc.salt is None:
            key = ("plain-rows", sc.key_fields, sc.separator if sc.key_fields else "")
            if key not in self._cache:
                u = self._composite(sc.key_fields, sc.separator)
                self._cache[key] = _Rows(
                    src=u["partition"].to_numpy().astype(np.int64),
                    kid=self._kid(u),
                    keys=u["ckey"],
                    n=u["n"].to_numpy().astype(np.float64),
                    b=u["b"].to_numpy().astype(np.float64),
                    splittable=bool(sc.key_fields),
                )
            return self._cache[key]
        key = ("salted-rows", sc.key_fields, sc.separator, sc.salt)
        if key not in self._cache:
            self._cache[key] = self._rows_salted(sc)
        return self._cache[key]

    def _hot_records(self, key_fields: tuple[str, ...], sep: str, hot_keys):
        """The records of the hot (composite) keys only, with ``hid`` = index in ``hot_keys``."""
        import polars as pl

        tag = ("hot-records", key_fields, sep, tuple(hot_keys.to_list()))
        if tag not in self._cache and not key_fields and "record-kid" in self._cache:
            self._cache[tag] = self._hot_records_by_id(hot_keys)
        if tag not in self._cache:
            u = self._composite(key_fields, sep)
            originals = u.filter(pl.col("ckey").is_in(hot_keys.implode()))["key"].unique()
            size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
            pool_keys, pool = self._hot_pool()
            source = pool if originals.is_in(pool_keys.implode()).all() else self.sample.df
            recs = source.filter(pl.col("key").is_in(originals.implode()))
            recs = recs.select(pl.exclude("key_size", "value_size", "timestamp"), size.alias("size"))
            recs = recs.with_columns(compose_keys(recs["key"], [recs[f] for f in key_fields], sep).alias("ckey"))
            hot_ids = pl.DataFrame({"ckey": hot_keys}).with_row_index("hid")
            recs = recs.join(hot_ids, on="ckey", how="inner")
            hot_kid = (
                hot_ids.join(
                    recs.select("ckey", "key").unique("ckey").join(self._key_index, on="key", how="left"),
                    on="ckey",
                    how="left",
                )
                .sort("hid")["kid"]
                .fill_null(-1)
                .cast(pl.Int64)
                .to_numpy()
            )
            self._cache[tag] = (recs, hot_kid)
        return self._cache[tag]

    def _hot_records_by_id(self, hot_keys):
        """``_hot_records`` for plain keys from the per-record key ids: integer gathers, no key bytes.

        Why: filtering 10M records on key bytes (``is_in``) and joining them back
        cost ~0.5 s per recommend here; a key-id lookup table costs a few
        tens of ms.  Hot keys are keys of the sample, so each has an id.
        """
        import polars as pl

        record_kid = self._cache["record-kid"]
        hot_kid = (
            pl.DataFrame({"key": hot_keys}).join(self._key_index, on="key", how="left", maintain_order="left")["kid"]
            .cast(pl.Int64)
            .to_numpy()
        )
        lut = np.full(self._key_index.height, -1, np.int64)
        lut[hot_kid] = np.arange(len(hot_kid))
        rows, hid = _pick_rows(record_kid, lut)
        df = self.sample.df
        size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
        recs = df.select("partition", "offset", "key_size", "value_size")[rows].select(
            "partition", "offset", size.alias("size"), pl.Series("hid", hid, dtype=pl.UInt32)
        )
        return recs, hot_kid

    def _hot_pool(self):
        """Records of the hottest plain keys, read once: every salting candidate draws from it."""
        import polars as pl

        if "hot-pool" not in self._cache:
            top = self.hot_keys((), "", Salt(top=POOL_KEYS))["ckey"]
            self._cache["hot-pool"] = (top, self.sample.df.filter(pl.col("key").is_in(top.implode())))
        return self._cache["hot-pool"]

    def _salt_hashes(self, sc: Scenario, hot_keys):
        """(src, hid, mmh3 of the salt data, records, bytes) for the hot keys, cached across D.

        By offset the hash is per record; by a field, per distinct (partition,
        hot key, field value), weighted by its records.
        """
        import polars as pl

        salt = sc.salt
        binned = salt.by == "offset" and _RESIDUES % salt.buckets == 0
        tag = ("salt-hashes", sc.key_fields, sc.separator, tuple(hot_keys.to_list()), salt.by, salt.seed, binned or salt.buckets)
        if tag not in self._cache:
            if salt.by == "offset":
                recs, hot_kid = self._hot_records(sc.key_fields, sc.separator, hot_keys)
                src = recs["partition"].to_numpy().astype(np.int64)
                hid = recs["hid"].to_numpy().astype(np.int64)
                mm = murmur3_int64(recs["offset"].to_numpy(), salt.seed)
                size = recs["size"].to_numpy().astype(np.float64)
                if binned:
                    # per record once: bin by the hash mod 840, which every D in 2..8 divides,
                    # so each D is then arithmetic on these few bins
                    H = len(hot_keys)
                    code = (src * H + hid) * _RESIDUES + (mm % np.uint32(_RESIDUES)).astype(np.int64)
                    cnt = np.bincount(code, minlength=self.today_partitions * H * _RESIDUES)
                    nz = np.flatnonzero(cnt)
                    byt = np.bincount(code, weights=size, minlength=len(cnt))[nz]
                    c_src, rest = np.divmod(nz, H * _RESIDUES)
                    c_hid, res = np.divmod(rest, _RESIDUES)
                    out = (c_src, c_hid, res.astype(np.uint32), cnt[nz].astype(np.float64), byt, hot_kid)
                else:
                    out = (src, hid, mm, np.ones(len(src)), size, hot_kid)
                self._cache[tag] = out
                return out
            else:  # from the (partition, key, fields) table, not the records
                u = self.units(tuple(dict.fromkeys(sc.key_fields + (salt.by,))))
                originals = self._composite(sc.key_fields, sc.separator).filter(
                    pl.col("ckey").is_in(hot_keys.implode())
                )["key"].unique()
                sub = u.filter(pl.col("key").is_in(originals.implode()))
                sub = sub.with_columns(
                    compose_keys(sub["key"], [sub[f] for f in sc.key_fields], sc.separator).alias("ckey")
                ).join(pl.DataFrame({"ckey": hot_keys}).with_row_index("hid"), on="ckey", how="inner")
                hot_kid = np.full(len(hot_keys), -1, dtype=np.int64)
                hot_kid[sub["hid"].to_numpy().astype(np.int64)] = sub["kid"].fill_null(-1).to_numpy()
                g = sub.group_by(["partition", "hid", salt.by]).agg(pl.col("n").sum(), pl.col("b").sum())
                mm = murmur3_binary(g[salt.by], salt.seed)
            self._cache[tag] = (
                g["partition"].to_numpy().astype(np.int64),
                g["hid"].to_numpy().astype(np.int64),
                mm,
                g["n"].to_numpy().astype(np.float64),
                g["b"].to_numpy().astype(np.float64),
                hot_kid,
            )
        return self._cache[tag]

    def _rows_salted(self, sc: Scenario) -> _Rows:
        """Cold keys as they are; hot keys' records binned into (partition, hot key, salt) cells."""
        import polars as pl

        salt = sc.salt
        hot = self.hot_keys(sc.key_fields, sc.separator, salt)
        hot_keys = hot["ckey"]
        H, D, S = len(hot_keys), salt.buckets, self.today_partitions
        src, hid, mm, n_rec, b_rec, hot_kid = self._salt_hashes(sc, hot_keys)
        cell = (src * H + hid) * D + (mm % np.uint32(D)).astype(np.int64)
        n = np.bincount(cell, weights=n_rec, minlength=S * H * D)
        b = np.bincount(cell, weights=b_rec, minlength=S * H * D)
        nz = np.flatnonzero(n)
        c_src, rest = np.divmod(nz, H * D)
        c_hid, c_salt = np.divmod(rest, D)
        sub_tag = ("subkeys", tuple(hot_keys.to_list()), D)
        if sub_tag not in self._cache:
            self._cache[sub_tag] = concat_binary(
                [
                    hot_keys.gather(np.repeat(np.arange(H), D)),
                    pl.Series([f"#{j}" for j in range(D)] * H, dtype=pl.String).cast(pl.Binary),
                ]
            )
        subkeys = self._cache[sub_tag]  # index hid * D + salt
        cold_tag = ("cold-rows", sc.key_fields, sc.separator, tuple(hot_keys.to_list()))
        if cold_tag not in self._cache:
            u = self._composite(sc.key_fields, sc.separator)
            cold = u.filter(~pl.col("ckey").is_in(hot_keys.implode()).fill_null(False))
            self._cache[cold_tag] = (
                cold["ckey"],
                cold["partition"].to_numpy().astype(np.int64),
                self._kid(cold),
                cold["n"].to_numpy().astype(np.float64),
                cold["b"].to_numpy().astype(np.float64),
            )
        cold_keys, cold_src, cold_kid, cold_n, cold_b = self._cache[cold_tag]
        return _Rows(
            src=np.concatenate([cold_src, c_src]),
            kid=np.concatenate([cold_kid, hot_kid[c_hid]]),
            keys=None,
            parts=[(cold_tag, cold_keys), (sub_tag, subkeys, c_hid * D + c_salt)],
            n=np.concatenate([cold_n, n[nz]]),
            b=np.concatenate([cold_b, b[nz]]),
            splittable=True,
            salted=list(zip(hot["ckey"].to_list(), hot["share"].to_list())),
        )

    def _result(self, sc: Scenario, rows: _Rows) -> Result:
        S, N, w = self.today_partitions, sc.partitions, self.weights
        if rows.keys is not None:
            op, valid = self._hash(_rows_tag(sc.key_fields, sc.separator, None), rows.keys, sc.partitioner)
        else:  # salted: cold keys and sub-keys hashed apart (each once), rows gathered from them
            (cold_tag, cold_keys), (sub_tag, subkeys, pick) = rows.parts
            op_c, valid_c = self._hash(cold_tag, cold_keys, sc.partitioner)
            op_s, valid_s = self._hash(sub_tag, subkeys, sc.partitioner)
            op = np.concatenate([op_c, op_s[pick]])
            valid = np.concatenate([valid_c, valid_s[pick]])
        K = self._key_index.height
        counts, nbytes, unk_n, unk_b, present, moved_keys, split, keyed_total, moved_total, lost_total = _scenario_pass(
            rows.src, op, valid, rows.n, rows.b, rows.kid, self.weights, S, N, K, rows.splittable
        )
        spread = float((unk_n * w).sum()) / N  # the producer places null keys at random: even in expectation
        records = w @ counts.reshape(S, N) + spread
        by = w @ nbytes.reshape(S, N) + float((unk_b * w).sum()) / N
        lo, hi = self._interval(counts, N, unk_n)
        lost = lost_total / clamp_min(keyed_total)
        expected = None
        if not sc.key_fields and sc.salt is None and self.today_match >= 0.99:
            expected = expected_keys_moved(S, N, sc.partitioner == self.today_partitioner)
        res = Result(
            name=sc.label,
            scenario=sc,
            partitions=N,
            records=records,
            bytes=by,
            skew=skew_ratio(records),
            skew_low=lo,
            skew_high=hi,
            bytes_skew=skew_ratio(by),
            unkeyed_records=float((unk_n * w).sum()),
            keys_total=int(present),
            keys_moved=int(moved_keys),
            traffic_moved_share=moved_total / clamp_min(keyed_total),
            expected_keys_moved_share=expected,
            keys_split=int(split),
            order_lost_traffic_share=lost,
            salted_keys=rows.salted,
        )
        res.consumer_loads = self._consumers(records)
        return res

    def _interval(self, counts: np.ndarray, N: int, unk_n: np.ndarray) -> tuple[float, float]:
        """95% interval of the skew ratio, the way ``keyscope analyze`` computes it.

        skew = N x (largest partition share), so the interval is N x the
        interval of the largest share (:func:`keyscope.stats.max_share_interval`):
        Wilson per partition when every record weighs 1, else a linearised
        ratio interval over the per-partition weights.  ``counts`` are the
        sampled records per (today partition, scenario partition) cell.
        """
        S, w = self.today_partitions, self.weights
        M = counts.reshape(S, N)
        spread = unk_n / N  # null keys, spread evenly by the producer
        y = w @ M + float(w @ unk_n) / N
        total = float(y.sum())
        if total <= 0:
            return 0.0, 0.0
        shares = y / total
        if not self.scaled and not unk_n.any():
            k, n = M.sum(axis=0), float(M.sum())

            def part(z):
                return wilson_interval(k, n, z=z)
        else:
            s2 = (w * w) @ M + float((w * w) @ spread) / N

            def part(z):
                return normal_interval(shares, ratio_share_se(y, s2, total, float(s2.sum())), z=z)

        lo, hi = max_share_interval(shares, part, CONFIDENCE)
        scale = total / clamp_min(total / N)
        # the largest share is at least 1/N, so the ratio is at least 1: near-even loads
        # can give a lower share bound under 1/N, which no topic can have
        return max(float(lo * scale), 1.0), max(float(hi * scale), 1.0)

    def _consumers(self, records: np.ndarray) -> list[ConsumerLoad]:
        return [consumer_load(records, c, a) for c in self.consumers for a in ASSIGNORS]


@njit(cache=True, nogil=True)
def _scenario_pass(src, op, valid, n, b, kid, w, S, N, K, track_split):  # pragma: no cover - compiled
    """One pass over the unit rows of a scenario: every figure it reports.

    Why compiled: composite keys make millions of rows, and a dozen numpy
    passes over them (modulo, cells, moved flags, per-key partition sets)
    cost several times this single loop.  ``kid`` is >= 0 for every hashed row.
    """
    cells_n = np.zeros(S * N)
    cells_b = np.zeros(S * N)
    unk_n = np.zeros(S)
    unk_b = np.zeros(S)
    present = np.zeros(K, np.bool_)
    moved_k = np.zeros(K, np.bool_)
    first_p = np.full(K, -1, np.int64)
    split_k = np.zeros(K, np.bool_)
    keyed_w = 0.0
    moved_w = 0.0
    for i in range(src.shape[0]):
        s = src[i]
        if not valid[i]:
            unk_n[s] += n[i]
            unk_b[s] += b[i]
            continue
        p = op[i] % N
        c = s * N + p
        cells_n[c] += n[i]
        cells_b[c] += b[i]
        wn = n[i] * w[s]
        keyed_w += wn
        k = kid[i]
        present[k] = True
        if p != s:
            moved_w += wn
            moved_k[k] = True
        if track_split:
            fp = first_p[k]
            if fp < 0:
                first_p[k] = p
            elif fp != p:
                split_k[k] = True
    lost = 0.0
    if track_split:
        for i in range(src.shape[0]):
            if valid[i] and split_k[kid[i]]:
                lost += n[i] * w[src[i]]
    return cells_n, cells_b, unk_n, unk_b, present.sum(), moved_k.sum(), split_k.sum(), keyed_w, moved_w, lost


MAX_CELLS = 1 << 22  # per key: partitions x field-value combinations the compiled group-by may hold
DENSE_CELLS = 1 << 22  # (keys + 1) x cells up to this: a dense table, no sort by key


@njit(cache=True, nogil=True)
def _pick_rows(kid, lut):  # pragma: no cover - compiled
    """Rows whose key id maps to a hot key (``lut[kid] >= 0``; null keys, -1, never do) and that hot key's index."""
    rows = np.empty(kid.shape[0], np.int64)
    hid = np.empty(kid.shape[0], np.int64)
    m = 0
    for i in range(kid.shape[0]):
        k = kid[i]
        if k >= 0:
            h = lut[k]
            if h >= 0:
                rows[m] = i
                hid[m] = h
                m += 1
    return rows[:m].copy(), hid[:m].copy()


@njit(cache=True, nogil=True)
def _make_cells(part, S, codes, widths, members):  # pragma: no cover - compiled
    """Per field set (a row of ``members``: field indexes, -1 padded), partition + S x the fields' codes in mixed radix; null = the last code."""
    m, n = members.shape[0], part.shape[0]
    cells = np.empty((m, n), np.int32)
    for r in range(m):
        for i in range(n):
            combo = 0
            for j in range(members.shape[1]):
                f = members[r, j]
                if f < 0:
                    break
                c = codes[f, i]
                combo = combo * widths[f] + (c if c >= 0 else widths[f] - 1)
            cells[r, i] = part[i] + S * combo
    return cells


@njit(cache=True, nogil=True)
def _sort_by_key(kid, K, cells, size):  # pragma: no cover - compiled
    """Cells and sizes reordered by key id (a stable counting sort; null keys, -1, last) and each key's start.

    Scattered, not gathered: records are read in order and written to one
    cursor per key, which stays cheap for hot keys; the group-by then reads
    each key's records contiguously.
    """
    n = kid.shape[0]
    start = np.zeros(K + 2, np.int64)
    for i in range(n):
        k = kid[i]
        start[(k if k >= 0 else K) + 1] += 1
    for k in range(K + 1):
        start[k + 1] += start[k]
    pos = start[:-1].copy()
    m = cells.shape[0]
    s_cells = np.empty((m, n), cells.dtype)
    s_size = np.empty(n, size.dtype)
    for i in range(n):
        k = kid[i]
        k = k if k >= 0 else K
        j = pos[k]
        pos[k] = j + 1
        s_size[j] = size[i]
        for f in range(m):
            s_cells[f, j] = cells[f, i]
    return start, s_cells, s_size


@njit(cache=True, nogil=True)
def _dense_cells(kid, K, cell, W, size):  # pragma: no cover - compiled
    """``_group_cells`` when (keys + 1) x cells is small: one in-order pass into a dense table, no sort."""
    cnt = np.zeros((K + 1) * W, np.int64)
    byt = np.zeros((K + 1) * W, np.int64)
    for i in range(kid.shape[0]):
        k = kid[i]
        j = (k if k >= 0 else K) * W + cell[i]
        cnt[j] += 1
        byt[j] += size[i]
    nz = np.flatnonzero(cnt)
    return nz // W, nz % W, cnt[nz], byt[nz]


@njit(cache=True, nogil=True)
def _group_cells(start, cell, W, size):  # pragma: no cover - compiled
    """Per key id (K = null), the distinct cells in [0, W) with their records and bytes.

    Rows arrive grouped by key, so a key's cells fit a small dense scratch
    array (reset through the list of touched cells): no hash table at all.
    """
    K1 = start.shape[0] - 1
    scr_n = np.zeros(W, np.int64)
    scr_b = np.zeros(W, np.int64)
    touched = np.empty(W, np.int64)
    cap = max(1024, cell.shape[0] // 8)
    ok = np.empty(cap, np.int64)
    oc = np.empty(cap, np.int64)
    on = np.empty(cap, np.int64)
    ob = np.empty(cap, np.int64)
    ng = 0
    for k in range(K1):
        nt = 0
        for j in range(start[k], start[k + 1]):
            c = cell[j]
            if scr_n[c] == 0:
                touched[nt] = c
                nt += 1
            scr_n[c] += 1
            scr_b[c] += size[j]
        if ng + nt > cap:
            cap = max(2 * cap, ng + nt)
            ok2, oc2, on2, ob2 = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64)
            ok2[:ng], oc2[:ng], on2[:ng], ob2[:ng] = ok[:ng], oc[:ng], on[:ng], ob[:ng]
            ok, oc, on, ob = ok2, oc2, on2, ob2
        for t in range(nt):
            c = touched[t]
            ok[ng] = k
            oc[ng] = c
            on[ng] = scr_n[c]
            ob[ng] = scr_b[c]
            ng += 1
            scr_n[c] = 0
            scr_b[c] = 0
    return ok[:ng], oc[:ng], on[:ng], ob[:ng]


def _group_by_codes(df, field_sets: list[tuple[str, ...]], partitions: int):
    """(key index, per field set (partition, key, fields) -> n, b, kid, per-record key ids); None if too wide.

    Why: Polars grouping 10M records on (partition, key, field), even on column
    hashes, was most of ``recommend``'s time.  Here each column is dictionary
    encoded once (keyscope._keytable.encode: exact, bytes compared, no hash
    guesswork), the records are ordered by key id once, and each table is one
    compiled pass over small integer cells.  The per-record key ids are kept
    for the salting candidates (their hot keys' records).  The plain
    (partition, key) table is the first of the returned tables.
    """
    import polars as pl
    from concurrent.futures import ThreadPoolExecutor

    from ._keytable import encode

    S = max(int(partitions), 1)
    cols = list(dict.fromkeys(["key", *(f for fs in field_sets for f in fs)]))
    codes = np.empty((len(cols) - 1, df.height), np.int32)  # the fields' codes, one row each

    def enc_one(i_c):
        i, c = i_c
        return encode(df[c], out=codes[i - 1] if i else None)

    with ThreadPoolExecutor(max_workers=2) as pool:
        enc = dict(zip(cols, pool.map(enc_one, enumerate(cols))))
    widths = {c: len(enc[c][1]) + 1 for c in cols}  # + the null code
    sets = [(), *field_sets]
    cells_w = []
    for fs in sets:
        w = S
        for f in fs:
            w *= widths[f]
        if w > MAX_CELLS:
            return None
        cells_w.append(w)
    kid, key_firsts = enc["key"]
    K = len(key_firsts)
    part = df["partition"].to_numpy().astype(np.int32)
    size = (
        df.select(pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64))
        .to_series()
        .to_numpy()
    )
    dicts = {c: pl.concat([df[c].gather(enc[c][1]), pl.Series([None], dtype=df[c].dtype)]) for c in cols}
    fields = cols[1:]
    members = np.full((len(sets), max(1, max(len(fs) for fs in sets))), -1, np.int64)
    for r, fs in enumerate(sets):
        members[r, : len(fs)] = [fields.index(f) for f in fs]
    cells = _make_cells(part, S, codes, np.array([widths[f] for f in fields] or [1], np.int64), members)
    dense = [(K + 1) * w <= DENSE_CELLS for w in cells_w]
    wide = [r for r in range(len(sets)) if not dense[r]]
    if wide:  # one counting sort by key for every wide set
        start, s_cells, s_size = _sort_by_key(kid, K, cells[wide], size)
        sorted_row = {r: i for i, r in enumerate(wide)}

    def one(r):
        if dense[r]:
            return _dense_cells(kid, K, cells[r], cells_w[r], size)
        return _group_cells(start, s_cells[sorted_row[r]], cells_w[r], s_size)

    with ThreadPoolExecutor(max_workers=2) as pool:
        grouped = list(zip(sets, pool.map(one, range(len(sets)))))
    tables = []
    for fs, (gk, gc, gn, gb) in grouped:
        cols_out = {"partition": (gc % S).astype(np.int32), "key": dicts["key"].gather(gk)}
        rest = gc // S
        for f in reversed(fs):
            rest, code = np.divmod(rest, widths[f])
            cols_out[f] = dicts[f].gather(code)
        frame = pl.DataFrame(cols_out).select("partition", "key", *fs)
        kid_col = pl.Series("kid", gk, dtype=pl.Int64)
        frame = frame.with_columns(
            pl.Series("n", gn), pl.Series("b", gb), pl.when(kid_col < K).then(kid_col).cast(pl.UInt32).alias("kid")
        )
        tables.append(frame)
    key_index = pl.DataFrame({"key": dicts["key"].head(K)}).with_row_index("kid")
    return key_index, tables, kid


def _group_by_hashes(df, field_sets: list[tuple[str, ...]]):
    """Per field set, (partition, key, fields) -> n, b, grouped on 64-bit hashes; None on a collision.

    Why: grouping 10M records on Binary/String columns row-encodes every value
    (~0.9 s for key+user_id here); on the columns' integer hashes it is about
    half that, and all sets run in one Polars query (the key's hash and
    distinct values shared).  Exact, not probabilistic: the hash must be
    one-to-one on each column's distinct values (null included), checked on
    those few values, which are then joined back.  Else the caller groups on
    the values themselves.
    """
    import polars as pl

    cols = list(dict.fromkeys(["key", *(f for fs in field_sets for f in fs)]))
    hashed = {c: f"_h_{c}" for c in cols}
    size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
    lf = df.lazy()
    plans = [lf.select(pl.col(c).unique()).with_columns(pl.col(c).hash().alias(hashed[c])) for c in cols]
    for fs in field_sets:
        plans.append(
            lf.group_by(["partition", *(pl.col(c).hash().alias(hashed[c]) for c in ("key", *fs))]).agg(
                pl.len().cast(pl.Int64).alias("n"), size.sum().alias("b")
            )
        )
    out = pl.collect_all(plans)
    dicts = dict(zip(cols, out[: len(cols)]))
    for c, d in dicts.items():
        if d[hashed[c]].n_unique() != d.height:
            return None  # two distinct values share a hash: group on the values
    tables = []
    for fs, g in zip(field_sets, out[len(cols) :]):
        for c in ("key", *fs):
            g = g.join(dicts[c], on=hashed[c], how="left", nulls_equal=True)
        tables.append(g.select("partition", "key", *fs, "n", "b"))
    return tables


def _rows_tag(key_fields, sep, salt):
    return ("rows", key_fields, sep if key_fields else "", salt)


def compose_keys(key, fields: Sequence, sep: str):
    """``key + sep + f1 + sep + f2``, skipping null fields; a null key stays null."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    if not fields:
        return key.alias("ckey")
    # The key is never null going in: pyarrow 26 drops rows whose inputs are all
    # null under null_handling="skip" (the output gets shorter).  Null keys are
    # masked back afterwards.
    arrays = [_large_binary(key.fill_null(b""))] + [_large_binary(f.cast(pl.Binary)) for f in fields]
    joined = pc.binary_join_element_wise(*arrays, pa.scalar(sep.encode(), pa.large_binary()), null_handling="skip")
    out = pl.Series("ckey", joined, dtype=pl.Binary)
    if len(out) != len(key):  # pragma: no cover - guards the workaround above
        raise RuntimeError("composite key column lost rows")
    if key.null_count():
        out = pl.select(pl.when(key.is_not_null()).then(out)).to_series().alias("ckey")
    return out


def concat_binary(columns: Sequence):
    """Element-wise concatenation of Binary Series (null if any part is null)."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = [_large_binary(c) for c in columns]
    joined = pc.binary_join_element_wise(*arrays, pa.scalar(b"", pa.large_binary()))
    return pl.Series("key", joined, dtype=pl.Binary)


def _large_binary(series):
    import pyarrow as pa

    arr = series.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_binary())
