"""A scenario's predicted load (or today's observed one), and what the change costs, as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..model.assignors import ConsumerLoad
from .spec import Scenario

CONFIDENCE = 0.95  # of every skew interval whatif reports


def expected_keys_moved(n: int, m: int, same_hash: bool = True) -> float:
    """Share of keys that change partition from n to m partitions, in expectation.

    Same hash: a key stays iff ``h % n == h % m``, true for min(n, m) of every
    lcm(n, m) residues.  Different (independent) hashes: min(n, m) / (n m).
    """
    if same_hash:
        return 1.0 - min(n, m) / math.lcm(n, m)
    return 1.0 - min(n, m) / (n * m)



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
        from ..model.keys import key_display

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


