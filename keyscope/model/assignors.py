"""Kafka's consumer-side assignors, so keyscope can say what more consumers would buy.

A partition is consumed by exactly one member of a group, so the busiest
consumer can never carry less than the hottest partition: adding consumers
cannot split one hot partition.  These functions make that visible in numbers.

Single topic, members sorted by member id (numbered 0..C-1 here), as Kafka's
``RangeAssignor`` and ``RoundRobinAssignor`` do; the sticky assignors balance
partition *counts* like round-robin and hit the same floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..errors import UsageError

ASSIGNORS = ("range", "roundrobin")


def _check(partitions: int, consumers: int) -> None:
    if partitions < 1:
        raise UsageError(f"partition count must be positive, got {partitions}")
    if consumers < 1:
        raise UsageError(f"consumer count must be positive, got {consumers}")


def range_assignment(partitions: int, consumers: int) -> list[list[int]]:
    """Contiguous blocks; the first ``partitions % consumers`` members get one extra."""
    _check(partitions, consumers)
    per, extra = divmod(partitions, consumers)
    out, start = [], 0
    for i in range(consumers):
        size = per + (1 if i < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


def round_robin_assignment(partitions: int, consumers: int) -> list[list[int]]:
    """Partitions dealt in order: partition p goes to member ``p % consumers``."""
    _check(partitions, consumers)
    return [list(range(i, partitions, consumers)) for i in range(consumers)]


def assignment(assignor: str, partitions: int, consumers: int) -> list[list[int]]:
    if assignor == "range":
        return range_assignment(partitions, consumers)
    if assignor == "roundrobin":
        return round_robin_assignment(partitions, consumers)
    raise UsageError(f"unknown assignor {assignor!r}; known: {', '.join(ASSIGNORS)}")


@dataclass
class ConsumerLoad:
    """The busiest member of a group of ``consumers`` under one assignor."""

    consumers: int
    assignor: str
    busiest: int  # member index
    busiest_partitions: list[int]
    busiest_load: float
    busiest_share: float  # of all load
    ideal_share: float  # 1 / useful members
    idle: int  # members with no partition (consumers > partitions)
    floor_share: float  # the hottest partition's share: no group size goes below it
    at_floor: bool  # the busiest member is held up by one partition alone

    def to_dict(self) -> dict:
        return {
            "consumers": self.consumers,
            "assignor": self.assignor,
            "busiest_consumer": self.busiest,
            "busiest_partitions": self.busiest_partitions,
            "busiest_load": _load(self.busiest_load),
            "busiest_share": self.busiest_share,
            "ideal_share": self.ideal_share,
            "idle_consumers": self.idle,
            "hottest_partition_share": self.floor_share,
            "limited_by_one_partition": self.at_floor,
        }


def _load(x: float) -> int | float:
    """As the per-partition ``records`` of a whatif result: an integer when whole, else 3 decimals."""
    x = float(x)
    return int(x) if x.is_integer() and abs(x) < 2**53 else round(x, 3)


def consumer_load(loads: Sequence[float], consumers: int, assignor: str = "range") -> ConsumerLoad:
    """Load of the busiest consumer when ``consumers`` members share these partitions."""
    loads = [float(x) for x in loads]
    parts = assignment(assignor, len(loads), consumers)
    per_member = [sum(loads[p] for p in ps) for ps in parts]
    total = sum(loads)
    busiest = max(range(consumers), key=lambda i: (per_member[i], -i))
    hottest = max(loads) if loads else 0.0
    share = per_member[busiest] / total if total > 0 else 0.0
    useful = min(consumers, len(loads))
    return ConsumerLoad(
        consumers=consumers,
        assignor=assignor,
        busiest=busiest,
        busiest_partitions=parts[busiest],
        busiest_load=per_member[busiest],
        busiest_share=share,
        ideal_share=1.0 / useful,
        idle=sum(1 for ps in parts if not ps),
        floor_share=hottest / total if total > 0 else 0.0,
        at_floor=total > 0 and per_member[busiest] <= hottest * (1 + 1e-12),
    )
