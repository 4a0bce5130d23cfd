"""What a scenario is: the key expression, salting, partitioner and count, parsed from the CLI's spellings."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import UsageError
from ..model.limits import MAX_SALT_BUCKETS, MAX_SALTED_KEYS, check_count
from ..partitioners import get_partitioner

MAX_GROUP_FIELDS = 4
DEFAULT_SEPARATOR = "|"


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

