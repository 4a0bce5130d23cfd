"""Bounds on sizes that come from the user or from a file, so that no input can
make keyscope allocate until memory is gone.  Documented in docs/exit-codes.md.

Kafka's own limits first: a partition id is an int32 and a topic name at most
249 characters of ``[a-zA-Z0-9._-]``.  Kafka sets no partition-count limit per
topic; the largest clusters run a few hundred thousand partitions in all, and
arrays here are sized by the partition count, so 100,000 per topic is the
bound (a what-if to more than that is not a plan anyone runs).
"""

from __future__ import annotations

import math

from ..errors import UsageError

MAX_PARTITIONS = 100_000  # per topic: partition counts, partition ids (< this), consumers
MAX_PARTITION_ID = 2**31 - 1  # Kafka: partition ids are int32
MAX_SALT_BUCKETS = 1_024  # sub-keys per salted key
MAX_SALTED_KEYS = 10_000  # --salt-hot K


def check_count(value: int, what: str, limit: int = MAX_PARTITIONS, error=UsageError) -> int:
    """``value`` within 1..limit, or a one-line error naming the option and the bound."""
    if value < 1:
        raise error(f"{what}: {value} must be at least 1")
    if value > limit:
        raise error(f"{what}: {value:,} is too many; keyscope handles at most {limit:,}")
    return value


def finite_threshold(ctx, param, value):
    """click callback: a threshold that is a finite number (``nan`` compares false with everything)."""
    if value is not None and not math.isfinite(value):
        name = param.opts[0] if param.opts else param.name
        raise UsageError(f"{name} must be a finite number, got {value}")
    return value
