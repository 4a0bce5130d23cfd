"""Reproduce, bit for bit, how Kafka producers map a key to a partition.

Every partitioner here is reduced to one unsigned 32-bit *modulo operand* per
key, so that ``partition = operand % n`` for any partition count ``n``.  That
makes a 3 -> 6 what-if arithmetic on a column instead of a rehash:

``murmur2``     Java client, kafka-python, franz-go, librdkafka ``murmur2(_random)``:
                operand = ``murmur2(key) & 0x7fffffff``.
``consistent``  librdkafka's default ``consistent_random`` (confluent-kafka for
                Python, Go, .NET): operand = ``crc32(key)``.  The empty key is
                treated like a null key (random), exactly as librdkafka does.
``fnv1a``       Sarama's hash partitioner, librdkafka ``fnv1a(_random)``:
                ``abs(int32(fnv1a(key)) % n)`` which equals ``abs(int32) % n``,
                so operand = ``abs(int32(fnv1a(key)))``.

Null keys are never hashed (the clients place them sticky/random); the column
functions return null for them so callers can count them apart.

Single keys use pure Python (no JIT start-up); columns use compiled kernels
over the Arrow buffers (see :mod:`keyscope._kernels`), chosen on measured
speed (``docs/benchmarks.md``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

from .errors import UsageError

__all__ = [
    "Partitioner",
    "PARTITIONERS",
    "ALIASES",
    "get_partitioner",
    "murmur2",
    "crc32",
    "fnv1a32",
    "hash_column",
    "partition_column",
    "partition_for",
    "partition_frame",
    "partition_counts",
    "partition_records",
    "resolve_names",
]

MASK32 = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``Utils.murmur2``) as an unsigned 32-bit int."""
    length = len(data)
    m = 0x5BD1E995
    h = (0x9747B28C ^ length) & MASK32
    n4 = length & ~3
    for i in range(0, n4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & MASK32
        k ^= k >> 24
        k = (k * m) & MASK32
        h = ((h * m) & MASK32) ^ k
    tail = length & 3
    if tail >= 3:
        h ^= data[n4 + 2] << 16
    if tail >= 2:
        h ^= data[n4 + 1] << 8
    if tail >= 1:
        h ^= data[n4]
        h = (h * m) & MASK32
    h ^= h >> 13
    h = (h * m) & MASK32
    h ^= h >> 15
    return h


def crc32(data: bytes) -> int:
    """CRC-32 (IEEE), as librdkafka's ``rd_crc32``."""
    return zlib.crc32(data) & MASK32


def fnv1a32(data: bytes) -> int:
    """FNV-1a 32-bit as an unsigned int."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & MASK32
    return h


def _signed(u: int) -> int:
    return u - (1 << 32) if u & 0x80000000 else u


@dataclass(frozen=True)
class Partitioner:
    """A producer's key -> partition rule."""

    name: str
    hash_name: str
    formula: str
    clients: tuple[str, ...]
    empty_key_hashed: bool = True
    aliases: tuple[str, ...] = field(default=())

    def raw_hash(self, key: bytes) -> int:
        return _RAW[self.hash_name](key)

    def operand(self, key: bytes | None) -> int | None:
        """The unsigned value the modulo is applied to, or None when unhashed."""
        if key is None or (not key and not self.empty_key_hashed):
            return None
        return _operand_from_raw(self.name, self.raw_hash(key))

    def partition(self, key: bytes | None, partitions: int) -> int | None:
        op = self.operand(key)
        return None if op is None else op % partitions


_RAW = {"murmur2": murmur2, "crc32": crc32, "fnv1a32": fnv1a32}


def _operand_from_raw(name: str, raw: int) -> int:
    if name == "murmur2":
        return raw & 0x7FFFFFFF
    if name == "fnv1a":
        return abs(_signed(raw))
    return raw


PARTITIONERS: dict[str, Partitioner] = {
    p.name: p
    for p in (
        Partitioner(
            "murmur2",
            "murmur2",
            "(murmur2(key) & 0x7fffffff) % n",
            ("Java client", "kafka-python", "franz-go", "librdkafka murmur2/murmur2_random"),
            aliases=("java", "kafka-python", "franz-go", "murmur2_random", "default"),
        ),
        Partitioner(
            "consistent",
            "crc32",
            "crc32(key) % n  (empty key: random, like a null key)",
            ("librdkafka consistent_random (default)", "confluent-kafka Python/Go/.NET"),
            empty_key_hashed=False,
            aliases=("librdkafka", "confluent", "confluent-kafka", "consistent_random", "crc32"),
        ),
        Partitioner(
            "fnv1a",
            "fnv1a32",
            "abs(int32(fnv1a(key)) % n)",
            ("Sarama (hash partitioner)", "librdkafka fnv1a/fnv1a_random"),
            aliases=("sarama", "fnv1a_random"),
        ),
    )
}

ALIASES: dict[str, str] = {}
for _p in PARTITIONERS.values():
    ALIASES[_p.name] = _p.name
    for _a in _p.aliases:
        ALIASES[_a] = _p.name


def get_partitioner(name: str) -> Partitioner:
    """Look a partitioner up by its name or a client's name (``java``, ``sarama``...)."""
    key = name.strip().lower().replace(" ", "-")
    if key not in ALIASES:
        known = ", ".join(sorted(ALIASES))
        raise UsageError(f"unknown partitioner {name!r}; known names: {known}")
    return PARTITIONERS[ALIASES[key]]


def partition_for(key: bytes | None, partitions: int, partitioner: str = "murmur2") -> int | None:
    """The partition one key lands on (None for a key the client does not hash)."""
    _check_partitions(partitions)
    return get_partitioner(partitioner).partition(key, partitions)


def _check_partitions(partitions: int) -> None:
    if not isinstance(partitions, int) or partitions < 1:
        raise UsageError(f"partition count must be a positive integer, got {partitions!r}")
    from .limits import check_count

    check_count(partitions, "partition count")


# Below this many keys the pure-Python path beats importing Polars/llvmlite
# and loading the kernels (~60 ms once per process, ~0.2 s on a cold cache).
SMALL_COLUMN = 2_000


def hash_column(keys, partitioner: str | Partitioner = "murmur2", threads: int | None = None):
    """Modulo operands for a column of keys, as a Polars UInt32 Series.

    ``keys`` may be a Polars Series (Binary or String), a pyarrow (chunked)
    array of any binary/string layout, or a sequence of ``bytes``/``None``.
    Null keys (and, for ``consistent``, empty keys) give null.  ``threads``
    (None: automatic, up to 2 for big columns) never changes the result.
    """
    import polars as pl

    p = partitioner if isinstance(partitioner, Partitioner) else get_partitioner(partitioner)
    series = _as_binary_series(keys)
    if len(series) < SMALL_COLUMN:
        return pl.Series(
            "hash", [p.operand(k) for k in series.to_list()], dtype=pl.UInt32
        )
    from . import _kernels

    ops, empties = _kernels.hash_binary(series, p.name, threads, count_empty=True)
    result = pl.Series("hash", ops, dtype=pl.UInt32)
    invalid = series.is_null() if series.null_count() else None
    if empties and not p.empty_key_hashed:
        empty = series.bin.size() == 0
        invalid = empty if invalid is None else (invalid | empty)
    if invalid is not None:
        result = pl.select(pl.when(~invalid).then(result)).to_series().alias("hash")
    return result


def partition_column(keys, partitions: int, partitioner: str | Partitioner = "murmur2"):
    """Partition per key for ``partitions`` partitions (UInt32, null when unhashed)."""
    _check_partitions(partitions)
    return (hash_column(keys, partitioner) % partitions).alias("partition")


def _as_binary_series(keys):
    import polars as pl
    import pyarrow as pa

    if isinstance(keys, pl.Series):
        s = keys
    elif isinstance(keys, (pa.Array, pa.ChunkedArray)):
        s = pl.Series("key", keys)
    else:
        s = pl.Series("key", list(keys), dtype=pl.Binary)
    if s.dtype == pl.String:
        s = s.cast(pl.Binary)
    elif s.dtype == pl.Null:
        s = s.cast(pl.Binary)
    elif s.dtype != pl.Binary:
        raise UsageError(f"keys must be binary or string, got {s.dtype}")
    return s


def resolve_names(spec: str | None) -> list[Partitioner]:
    """``all`` or a comma-separated list of names/aliases -> partitioners."""
    if spec is None or spec.strip().lower() == "all":
        return list(PARTITIONERS.values())
    out: list[Partitioner] = []
    for part in spec.split(","):
        p = get_partitioner(part)
        if p not in out:
            out.append(p)
    return out


def partition_frame(keys, partitions: int, partitioner: str | None = "all"):
    """One row per (key, partitioner): ``key, partitioner, hash, partition``.

    ``hash`` is the unsigned 32-bit value the modulo is applied to; rows keep
    the input order of keys, partitioners in the order asked.
    """
    import numpy as np
    import polars as pl

    _check_partitions(partitions)
    chosen = resolve_names(partitioner)
    series = _as_binary_series(keys).alias("key")
    hashes = [hash_column(series, p) for p in chosen]
    k = len(chosen)
    if k == 1:
        key, hash_ = series, hashes[0]
    else:
        # Interleave (key0/p1, key0/p2, ..., key1/p1 ...) by construction, not by sorting.
        key = series.gather(np.repeat(np.arange(len(series), dtype=np.int64), k))
        vals = np.column_stack([h.fill_null(0).to_numpy() for h in hashes]).ravel()
        if any(h.null_count() for h in hashes):
            import pyarrow as pa

            nulls = np.column_stack([h.is_null().to_numpy() for h in hashes]).ravel()
            hash_ = pl.Series("hash", pa.array(vals, type=pa.uint32(), mask=nulls))
        else:
            hash_ = pl.Series("hash", vals, dtype=pl.UInt32)
    names = pl.Series("partitioner", [p.name for p in chosen], dtype=pl.String).gather(
        np.tile(np.arange(k, dtype=np.int64), len(series))
    )
    return pl.DataFrame({"key": key, "partitioner": names, "hash": hash_.alias("hash")}).with_columns(
        (pl.col("hash") % partitions).alias("partition")
    )


def partition_records(keys, partitions: int, partitioner: str | None = "all") -> list[dict]:
    """``partition_frame`` for a handful of keys, in plain Python (no Polars, no JIT).

    ``keys`` is a sequence of ``bytes``/``None``; same rows, same order.
    """
    _check_partitions(partitions)
    chosen = resolve_names(partitioner)
    rows = []
    for key in keys:
        for p in chosen:
            op = p.operand(key)
            rows.append(
                {"key": key, "partitioner": p.name, "hash": op, "partition": None if op is None else op % partitions}
            )
    return rows


def partition_counts(keys, partitions: int, partitioner: str | None = "all") -> dict[str, dict]:
    """Records per partition for each partitioner, straight from the hash columns.

    ``{name: {"records_per_partition": [int] * partitions, "unhashed": int}}``;
    ``unhashed`` counts the keys the client does not hash (null keys, and the
    empty key under ``consistent``).  A short list of keys is counted in
    plain Python, without importing Polars.
    """
    _check_partitions(partitions)
    out = {}
    if isinstance(keys, (list, tuple)) and len(keys) < SMALL_COLUMN:
        for p in resolve_names(partitioner):
            counts, unhashed = [0] * partitions, 0
            for key in keys:
                op = p.operand(key)
                if op is None:
                    unhashed += 1
                else:
                    counts[op % partitions] += 1
            out[p.name] = {"records_per_partition": counts, "unhashed": unhashed}
        return out
    import numpy as np

    series = _as_binary_series(keys)
    for p in resolve_names(partitioner):
        h = hash_column(series, p)
        ops = h.drop_nulls().to_numpy()
        counts = np.bincount(ops % np.uint32(partitions), minlength=partitions)
        out[p.name] = {"records_per_partition": [int(c) for c in counts], "unhashed": int(h.null_count())}
    return out
