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
    "FAMILIES",
    "KEYED",
    "kafkajs_legacy_murmur2",
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


def kafkajs_legacy_murmur2(data: bytes) -> int:
    """KafkaJS ``LegacyPartitioner``'s murmur2 (its 1.x default), as an unsigned 32-bit int.

    A port of Java's murmur2 in plain JavaScript numbers: ``k *= M`` is a double
    product rounded to 53 bits before ``^``/``>>>`` take its low 32 bits, and the
    block loop runs ``i < length / 4`` (a fraction), so a length that is not a
    multiple of 4 gets one more block, zero padded, before the usual tail.
    Python's int -> float conversion rounds as JavaScript does (to nearest, ties
    to even), so this is exact.
    """

    def js_mul(x: int) -> int:  # x: a 32-bit pattern; JavaScript sees it as int32
        return int(float(_signed(x & MASK32) * 0x5BD1E995)) & MASK32

    def block(h: int, k: int) -> int:
        k = js_mul(k)
        k ^= k >> 24
        return js_mul(h) ^ js_mul(k)

    length = len(data)
    h = (0x9747B28C ^ length) & MASK32
    n4 = length & ~3
    for i in range(0, n4, 4):
        h = block(h, int.from_bytes(data[i : i + 4], "little"))
    if length & 3:
        w = int.from_bytes(data[n4:], "little")
        h = block(h, w)  # the extra iteration of ``i < length / 4``
        h = js_mul(h ^ w)
    h ^= h >> 13
    h = js_mul(h)
    h ^= h >> 15
    return h


def _signed(u: int) -> int:
    return u - (1 << 32) if u & 0x80000000 else u


# Hash families: a raw 32-bit hash, and how the client turns it into the modulo
# operand (``mask``: & 0x7fffffff; ``abs``: abs() of it as int32, which equals
# Go's/C's ``abs(int32(h) % n)``; ``unsigned``: as is).  Rules of one family put
# every non-empty key on the same partition; they differ in null/empty keys only.
FAMILIES: dict[str, tuple[str, str, str]] = {
    # family: (raw hash, operand, formula for a non-empty key)
    "murmur2": ("murmur2", "mask", "(murmur2(key) & 0x7fffffff) % n"),
    "crc32": ("crc32", "unsigned", "crc32(key) % n"),
    "fnv1a": ("fnv1a32", "abs", "abs(int32(fnv1a(key)) % n)"),
    "fnv1a-reference": ("fnv1a32", "mask", "(int32(fnv1a(key)) & 0x7fffffff) % n"),
    "fnv1a-unsigned": ("fnv1a32", "unsigned", "uint32(fnv1a(key)) % n"),
    "murmur2-abs": ("murmur2", "abs", "abs(int32(murmur2(key)) % n)"),
    "crc32-abs": ("crc32", "abs", "abs(int32(crc32(key)) % n)"),
    "kafkajs-legacy": ("kafkajs_legacy", "mask", "(kafkajs_legacy_murmur2(key) & 0x7fffffff) % n"),
}

# family -> (compiled kernel, numpy step on its output); see keyscope._kernels.NAMES
_FAMILY_KERNEL = {
    "murmur2": ("murmur2", None),
    "crc32": ("consistent", None),
    "fnv1a": ("fnv1a", None),
    "fnv1a-reference": ("fnv1a_raw", "mask"),
    "fnv1a-unsigned": ("fnv1a_raw", None),
    "murmur2-abs": ("murmur2_raw", "abs"),
    "crc32-abs": ("consistent", "abs"),
    "kafkajs-legacy": ("kafkajs_legacy", None),
}


@dataclass(frozen=True)
class Partitioner:
    """A producer's key -> partition rule.

    ``family`` fixes the partition of every non-empty key; ``empty_key_hashed``
    and ``null_key_hashed`` say whether the empty key ``b""`` and a null key
    are hashed (a null key then as the empty key: one fixed partition) or
    placed without the key (``empty_key`` / ``null_key`` say how).  A
    ``key_independent`` rule (random, round-robin) never looks at the key.
    """

    name: str
    family: str | None
    formula: str
    clients: tuple[str, ...]
    empty_key_hashed: bool = True
    null_key_hashed: bool = False
    aliases: tuple[str, ...] = field(default=())
    empty_key: str = "hashed"
    null_key: str = "not hashed: sticky or random"
    key_independent: bool = False

    @property
    def hash_name(self) -> str | None:
        return FAMILIES[self.family][0] if self.family else None

    def raw_hash(self, key: bytes) -> int:
        return _RAW[self.hash_name](key)

    def operand(self, key: bytes | None) -> int | None:
        """The unsigned value the modulo is applied to, or None when unhashed."""
        if self.key_independent:
            return None
        if key is None:
            if not self.null_key_hashed:
                return None
            key = b""
        if not key and not self.empty_key_hashed:
            return None
        return _operand_from_raw(FAMILIES[self.family][1], self.raw_hash(key))

    def partition(self, key: bytes | None, partitions: int) -> int | None:
        op = self.operand(key)
        return None if op is None else op % partitions


_RAW = {"murmur2": murmur2, "crc32": crc32, "fnv1a32": fnv1a32, "kafkajs_legacy": kafkajs_legacy_murmur2}


def _operand_from_raw(kind: str, raw: int) -> int:
    if kind == "mask":
        return raw & 0x7FFFFFFF
    if kind == "abs":
        return abs(_signed(raw))
    return raw


def family_partition(family: str, key: bytes, partitions: int) -> int:
    """Where every rule of ``family`` that hashes ``key`` puts it (the empty key included)."""
    raw_name, kind, _ = FAMILIES[family]
    return _operand_from_raw(kind, _RAW[raw_name](key)) % partitions


def _rule(name, family, clients, aliases=(), note="", **kw) -> Partitioner:
    formula = FAMILIES[family][2] + (f"  ({note})" if note else "")
    return Partitioner(name, family, formula, tuple(clients), aliases=tuple(aliases), **kw)


_NULL_FIXED = "hashed as the empty key: all on one partition"

PARTITIONERS: dict[str, Partitioner] = {
    p.name: p
    for p in (
        _rule(
            "murmur2", "murmur2",
            ("Java client (default)", "kafka-python", "franz-go (default)", "KafkaJS 2.x DefaultPartitioner",
             "librdkafka murmur2_random", "kafka-go Murmur2Balancer", "Sarama NewMurmur2Partitioner"),
            aliases=("java", "kafka-python", "franz-go", "kafkajs", "kafkajs-default", "javacompatiblepartitioner",
                     "murmur2_random", "default", "kafka-go-murmur2", "sarama-murmur2"),
            null_key="not hashed: sticky (Java, franz-go, librdkafka), random (kafka-python, kafka-go, Sarama), "
                     "round-robin (KafkaJS)",
        ),
        _rule(
            "rdkafka-murmur2", "murmur2",
            ("librdkafka murmur2", "kafka-go Murmur2Balancer{Consistent: true}"),
            aliases=("librdkafka-murmur2", "kafka-go-murmur2-consistent"),
            note="null key: as the empty key", null_key_hashed=True, null_key=_NULL_FIXED,
        ),
        _rule(
            "consistent", "crc32",
            ("librdkafka consistent_random (default)", "confluent-kafka Python/Go/.NET", "kcat",
             "kafka-go CRC32Balancer"),
            aliases=("librdkafka", "confluent", "confluent-kafka", "consistent_random", "crc32", "kafka-go-crc32"),
            note="empty key: random, like a null key", empty_key_hashed=False,
            empty_key="not hashed: random", null_key="not hashed: random (sticky in librdkafka)",
        ),
        _rule(
            "rdkafka-consistent", "crc32",
            ("librdkafka consistent", "kafka-go CRC32Balancer{Consistent: true}"),
            aliases=("librdkafka-consistent", "kafka-go-crc32-consistent"),
            note="null and empty key: crc32 of nothing = 0, partition 0", null_key_hashed=True,
            empty_key="hashed: crc32(b'') = 0, partition 0", null_key="hashed as the empty key: partition 0",
        ),
        _rule(
            "sarama-crc32", "crc32",
            ("Sarama NewConsistentCRCHashPartitioner", "franz-go SaramaHasher(crc32)"),
            aliases=("sarama-consistent-crc", "newconsistentcrchashpartitioner", "franz-go-sarama-hasher-crc32"),
            note="empty key: hashed, partition 0", empty_key="hashed: crc32(b'') = 0, partition 0",
            null_key="not hashed: random (franz-go: sticky)",
        ),
        _rule(
            "fnv1a", "fnv1a",
            ("Sarama NewHashPartitioner (default)", "librdkafka fnv1a_random", "kafka-go Hash (0.3.5+)",
             "franz-go SaramaCompatHasher(fnv32a)"),
            aliases=("sarama", "fnv1a_random", "sarama-hash", "newhashpartitioner", "kafka-go-hash",
                     "franz-go-sarama-compat"),
            null_key="not hashed: random (Sarama, librdkafka sticky), round-robin (kafka-go), sticky (franz-go)",
        ),
        _rule(
            "rdkafka-fnv1a", "fnv1a",
            ("librdkafka fnv1a",),
            aliases=("librdkafka-fnv1a",),
            note="null key: as the empty key", null_key_hashed=True, null_key=_NULL_FIXED,
        ),
        _rule(
            "fnv1a-reference", "fnv1a-reference",
            ("Sarama NewReferenceHashPartitioner", "Sarama NewCustomPartitioner(WithAbsFirst())",
             "kafka-go ReferenceHash"),
            aliases=("sarama-reference", "newreferencehashpartitioner", "kafka-go-reference", "referencehash",
                     "sarama-abs-first"),
            null_key="not hashed: random",
        ),
        _rule(
            "fnv1a-unsigned", "fnv1a-unsigned",
            ("kafka-go Hash before 0.3.5", "franz-go SaramaHasher(fnv32a)",
             "Sarama NewCustomPartitioner(WithHashUnsigned())"),
            aliases=("kafka-go-old", "kafka-go-hash-old", "franz-go-sarama-hasher", "sarama-hash-unsigned"),
            null_key="not hashed: round-robin (kafka-go), sticky (franz-go), random (Sarama)",
        ),
        _rule(
            "murmur2-abs", "murmur2-abs",
            ("Sarama NewCustomHashPartitioner with a murmur2 hasher",),
            aliases=("sarama-custom-murmur2",),
            null_key="not hashed: random",
        ),
        _rule(
            "crc32-abs", "crc32-abs",
            ("Sarama NewCustomHashPartitioner with crc32.NewIEEE", "franz-go SaramaCompatHasher(crc32)"),
            aliases=("sarama-custom-crc32", "franz-go-sarama-compat-crc32"),
            null_key="not hashed: random (franz-go: sticky)",
        ),
        _rule(
            "kafkajs-legacy", "kafkajs-legacy",
            ("KafkaJS LegacyPartitioner (the 1.x default)",),
            aliases=("legacypartitioner", "kafkajs-1"),
            null_key="not hashed: round-robin",
        ),
        Partitioner(
            "random", None, "a random partition per record or batch, whatever the key",
            ("librdkafka random", "Sarama NewRandomPartitioner", "Java partitioner.ignore.keys=true (sticky)"),
            aliases=("librdkafka-random", "sticky", "uniform-sticky"), empty_key="random", null_key="random",
            empty_key_hashed=False, key_independent=True,
        ),
        Partitioner(
            "round-robin", None, "each record to the next partition in turn, whatever the key",
            ("Java RoundRobinPartitioner", "Sarama NewRoundRobinPartitioner", "kafka-go RoundRobin",
             "franz-go RoundRobinPartitioner"),
            aliases=("roundrobin", "roundrobinpartitioner"), empty_key="round-robin", null_key="round-robin",
            empty_key_hashed=False, key_independent=True,
        ),
    )
}

# Rules that look at the key (``all`` in the CLI, detection's candidates).
KEYED = tuple(name for name, p in PARTITIONERS.items() if not p.key_independent)

ALIASES: dict[str, str] = {}
for _p in PARTITIONERS.values():
    ALIASES[_p.name] = _p.name
    for _a in _p.aliases:
        ALIASES[_a] = _p.name
        ALIASES[_a.replace("_", "-")] = _p.name


def get_partitioner(name: str) -> Partitioner:
    """Look a partitioner up by its name or a client's name (``java``, ``sarama``...)."""
    key = name.strip().lower().replace(" ", "-")
    if key not in ALIASES:
        known = ", ".join(PARTITIONERS)
        raise UsageError(
            f"unknown partitioner {name!r}; known rules: {known}, or a client's name "
            "(java, sarama, kafkajs-legacy, ...: see docs/partitioners.md)"
        )
    return PARTITIONERS[ALIASES[key]]


def partition_for(key: bytes | None, partitions: int, partitioner: str = "murmur2") -> int | None:
    """The partition one key lands on (None for a key the client does not hash)."""
    _check_partitions(partitions)
    return get_partitioner(partitioner).partition(key, partitions)


def _check_partitions(partitions: int) -> None:
    if not isinstance(partitions, int) or partitions < 1:
        raise UsageError(f"partition count must be a positive integer, got {partitions!r}")
    from .model.limits import check_count

    check_count(partitions, "partition count")


# Below this many keys the pure-Python path beats importing Polars/llvmlite
# and loading the kernels (~60 ms once per process, ~0.2 s on a cold cache).
SMALL_COLUMN = 2_000


def hash_column(keys, partitioner: str | Partitioner = "murmur2", threads: int | None = None):
    """Modulo operands for a column of keys, as a Polars UInt32 Series.

    ``keys`` may be a Polars Series (Binary or String), a pyarrow (chunked)
    array of any binary/string layout, or a sequence of ``bytes``/``None``.
    Keys the rule does not hash give null: null keys (unless the rule hashes
    them as the empty key), the empty key where the rule does not hash it, and
    every key under a key-independent rule.  ``threads`` (None: automatic, up
    to 2 for big columns) never changes the result.
    """
    import polars as pl

    p = partitioner if isinstance(partitioner, Partitioner) else get_partitioner(partitioner)
    series = _as_binary_series(keys)
    if len(series) < SMALL_COLUMN or p.key_independent:
        return pl.Series("hash", [p.operand(k) for k in series.to_list()], dtype=pl.UInt32)
    import numpy as np

    from . import _kernels

    kernel, step = _FAMILY_KERNEL[p.family]
    ops, empties = _kernels.hash_binary(series, kernel, threads, count_empty=True)
    if step == "mask":
        ops &= np.uint32(0x7FFFFFFF)
    elif step == "abs":
        ops = np.abs(ops.view(np.int32)).view(np.uint32)  # int32 min stays 2**31
    result = pl.Series("hash", ops, dtype=pl.UInt32)
    nulls = series.null_count()
    if nulls and p.null_key_hashed:
        result = pl.select(pl.when(series.is_null()).then(pl.lit(p.operand(None), pl.UInt32)).otherwise(result))
        result = result.to_series().alias("hash")
        nulls = 0
    invalid = series.is_null() if nulls else None
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
    import sys

    import polars as pl

    pa = sys.modules.get("pyarrow")  # (an Arrow array means pyarrow is imported: not imported for the test)
    if isinstance(keys, pl.Series):
        s = keys
    elif pa is not None and isinstance(keys, (pa.Array, pa.ChunkedArray)):
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
    """``all`` (every rule that looks at the key) or a comma-separated list of names/aliases."""
    if spec is None or spec.strip().lower() == "all":
        return [PARTITIONERS[name] for name in KEYED]
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

    import dataclasses

    series = _as_binary_series(keys)
    nulls = int(series.null_count())
    empties = None
    per_family: dict[str, np.ndarray] = {}
    for p in resolve_names(partitioner):
        if p.key_independent:
            out[p.name] = {"records_per_partition": [0] * partitions, "unhashed": len(series)}
            continue
        # One hash per family (rules of a family differ only on the empty and null key):
        # count with the empty key hashed and null keys not, then move those records.
        if p.family not in per_family:
            base = dataclasses.replace(p, empty_key_hashed=True, null_key_hashed=False)
            ops = hash_column(series, base).drop_nulls().to_numpy()
            per_family[p.family] = np.bincount(ops % np.uint32(partitions), minlength=partitions)
        counts, unhashed = per_family[p.family].copy(), nulls
        if not p.empty_key_hashed or p.null_key_hashed:
            if empties is None:
                empties = int((series.bin.size() == 0).sum())
            at = family_partition(p.family, b"", partitions)
            if not p.empty_key_hashed:
                counts[at] -= empties
                unhashed += empties
            if p.null_key_hashed:
                counts[at] += nulls
                unhashed -= nulls
        out[p.name] = {"records_per_partition": [int(c) for c in counts], "unhashed": int(unhashed)}
    return out
