"""The skew alert as deployed computes it: kafka_exporter 1.7.0 + Prometheus 2.42 + the rules, bit for bit.

The deployed recording rules (printed verbatim by ``keyscope rules --set deployed``)::

    kafka:group_partition_lag     = max by (topic, consumergroup, partition) (kafka_consumergroup_lag)
    kafka:group_skew_ratio        = max by (topic, consumergroup) (kafka:group_partition_lag)
                                    / clamp_min(avg by (topic, consumergroup) (kafka:group_partition_lag), 0.001)
    kafka:group_hottest_partition = topk(1, sum by (topic, consumergroup, partition) (kafka:group_partition_lag))

What kafka_exporter 1.7.0 exports as ``kafka_consumergroup_lag`` (kafka_exporter.go):
for every group, every topic on which the group committed at least one
offset, every partition of that topic: ListOffsets(latest) - committed, or
**-1** where the group never committed ("forcing lag to -1 to be able to
alert on that").  A committed offset ahead of the end gives a negative lag.
The rules keep both, so both enter max and avg.

Prometheus 2.42's arithmetic (promql/engine.go, ``aggregation``): ``avg`` is an
incremental mean, ``mean += v/n - mean/n`` over the series in the order the
engine holds them, which is not ``sum/n`` to the last bit; ``max`` and
``topk`` keep the first of equal values.  ``topk(1, …)`` without ``by`` keeps
**one series for the whole cluster**, not one per group.

Series order: kafka_exporter's exposition is sorted by label values as text
(consumergroup, partition, topic: client_golang), series are stored in the
order they were first scraped, and the engine reads them in that order.  So
within a group and topic partitions come in text order 0, 1, 10, 11, 2, …
keyscope assumes that order everywhere; it is exact unless partitions were
added to a topic after its series first appeared (then only the last digit of
the mean, and which of tied series ``topk`` keeps, can differ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

SENTINEL = -1  # kafka_exporter's lag for a partition the group never committed
CLAMP_MIN = 0.001
PROMETHEUS_VERSION = "2.42"
EXPORTER_VERSION = "kafka_exporter 1.7.0"

SERIES_PARTITION_LAG = "kafka:group_partition_lag"
SERIES_SKEW_RATIO = "kafka:group_skew_ratio"
SERIES_HOTTEST_PARTITION = "kafka:group_hottest_partition"

__all__ = [
    "AlertTopic",
    "HottestSeries",
    "AlertReading",
    "exporter_lag",
    "alert_topic",
    "prom_avg",
    "prom_max",
    "prom_clamp_min",
    "prom_skew_ratio",
    "stored_order",
    "topk1",
    "why_differ",
]


def exporter_lag(committed: int | None, end: int) -> int:
    """kafka_consumergroup_lag as kafka_exporter 1.7.0 computes it (``end`` from ListOffsets latest)."""
    return SENTINEL if committed is None else int(end) - int(committed)


def stored_order(partitions: Iterable[int]) -> list[int]:
    """Partitions in the order Prometheus holds their series: label value as text (0, 1, 10, 2, …)."""
    return sorted(partitions, key=str)


def prom_avg(values: Sequence[float]) -> float:
    """``avg`` as Prometheus 2.42 computes it: an incremental mean, in series order."""
    it = iter(values)
    mean = float(next(it))
    n = 1
    for v in it:
        n += 1
        mean += float(v) / n - mean / n
    return mean


def prom_max(values: Sequence[float]) -> float:
    return max(float(v) for v in values)


def prom_clamp_min(x: float, floor: float = CLAMP_MIN) -> float:
    """``clamp_min``: Go's math.Max(floor, x) for finite values."""
    return x if x > floor else floor


def prom_skew_ratio(values: Sequence[float]) -> float:
    """max / clamp_min(avg, 0.001) with Prometheus 2.42's arithmetic; ``values`` in series order."""
    return prom_max(values) / prom_clamp_min(prom_avg(values))


@dataclass(frozen=True)
class AlertTopic:
    """The deployed rules' series for one group and topic."""

    group: str
    topic: str
    partition_lag: tuple[tuple[int, float], ...]  # (partition, kafka:group_partition_lag), series order

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.partition_lag]

    @property
    def max_lag(self) -> float:
        return prom_max(self.values)

    @property
    def avg_lag(self) -> float:
        return prom_avg(self.values)

    @property
    def skew_ratio(self) -> float:
        """kafka:group_skew_ratio, bit for bit."""
        return prom_skew_ratio(self.values)

    @property
    def sentinels(self) -> list[int]:
        """Partitions reported as -1 because the group never committed them."""
        return [p for p, v in self.partition_lag if v == SENTINEL]


def alert_topic(group: str, topic: str, committed: dict[int, int | None], list_offsets_end: dict[int, int]) -> AlertTopic | None:
    """The series kafka_exporter + rule 1 give for ``group`` on ``topic``; None if it exports none.

    ``committed``: partition -> committed offset (None or absent: never committed);
    ``list_offsets_end``: partition -> ListOffsets(latest), for every partition of the topic.
    """
    if not any(committed.get(p) is not None for p in list_offsets_end):
        return None  # kafka_exporter skips a topic the group never committed on
    rows = tuple(
        (p, float(exporter_lag(committed.get(p), list_offsets_end[p]))) for p in stored_order(list_offsets_end)
    )
    return AlertTopic(group=group, topic=topic, partition_lag=rows)


@dataclass(frozen=True)
class HottestSeries:
    """kafka:group_hottest_partition: the one series ``topk(1, …)`` keeps for the whole cluster."""

    group: str
    topic: str
    partition: int
    value: float
    ties: tuple[tuple[str, str, int], ...] = ()  # other series with the same value (which one Prometheus keeps: see module doc)


def _label_key(group: str, topic: str, partition: int) -> tuple[str, str, str]:
    return (group, str(partition), topic)  # label names sorted: consumergroup, partition, topic


def topk1(series: Iterable[AlertTopic]) -> HottestSeries | None:
    """``topk(1, sum by (topic, consumergroup, partition) (…))``: the first series with the largest value."""
    flat = sorted(
        ((t.group, t.topic, p, v) for t in series for p, v in t.partition_lag),
        key=lambda s: _label_key(s[0], s[1], s[2]),
    )
    if not flat:
        return None
    best = flat[0]
    for s in flat[1:]:
        if best[3] < s[3]:
            best = s
    ties = tuple((g, t, p) for g, t, p, v in flat if v == best[3] and (g, t, p) != best[:3])
    return HottestSeries(group=best[0], topic=best[1], partition=best[2], value=best[3], ties=ties)


@dataclass(frozen=True)
class AlertReading:
    """What the deployed alert holds right now for the group asked about, and the cluster's hottest series."""

    topics: list[AlertTopic]  # the group's (topics where kafka_exporter exports lag)
    hottest: HottestSeries | None  # cluster-wide; None when no group in the cluster has a lag series
    groups_scanned: int  # groups whose offsets the cluster-wide topk(1) was computed from
    scan_error: str | None = None  # the cluster scan failed: hottest is then None
    notes: list[str] = field(default_factory=list)

    def topic(self, name: str) -> AlertTopic | None:
        for t in self.topics:
            if t.topic == name:
                return t
        return None


def _num(x: float) -> str:
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:,.3f}".rstrip("0").rstrip(".")


def _parts(ids: list[int]) -> str:
    return ("partition " if len(ids) == 1 else "partitions ") + ", ".join(map(str, ids))


def why_differ(corrected, alert: AlertTopic | None) -> str | None:
    """One line on why the alert's kafka:group_skew_ratio differs from the true skew; None when equal.

    ``corrected`` is a :class:`keyscope.lag.TopicLag` (duck-typed: ``partitions``, ``skew_ratio``).
    """
    if alert is None:
        if corrected.skew_ratio is None:
            return None
        return "kafka_exporter exports no lag for this topic (the group never committed on it); the alert has no series"
    ratio = alert.skew_ratio
    true = corrected.skew_ratio
    if true is not None and ratio == true:
        return None
    reasons = []
    never = [p.partition for p in corrected.partitions if p.committed is None]
    if never:
        verb = "was" if len(never) == 1 else "were"
        reasons.append(f"{_parts(never)} {verb} never committed: kafka_exporter reports -1, which lowers the mean")
    ahead = [p for p in corrected.partitions if p.committed is not None and p.committed > p.end_offset]
    for p in ahead:
        gap = p.committed - p.end_offset
        reasons.append(
            f"partition {p.partition} is committed {gap:,} ahead of its end offset: kafka_exporter reports lag "
            f"{p.exporter_lag:,}, which lowers the mean"
        )
    under = [p for p in corrected.partitions if p.committed is not None and p.list_offsets_end < p.end_offset
             and p not in ahead]
    if under:
        worst = max(p.end_offset - p.list_offsets_end for p in under)
        negative = [p.partition for p in under if p.exporter_lag < 0]
        text = (f"ListOffsets under-reports the end offset of {_parts([p.partition for p in under])} by up to "
                f"{worst:,}, and kafka_exporter subtracts from it")
        if negative:
            text += f" (a negative lag on {_parts(negative)}, though {'it is' if len(negative) == 1 else 'they are'} caught up)"
        reasons.append(text)
    if not reasons:
        reasons.append("the lags kafka_exporter reports differ from the true lags")
    n = len(alert.partition_lag)
    bound = f" (above {n}: no {n} lags >= 0 can give that)" if ratio > n else ""
    real = f"the real skew is {prom_text(true)}" if true is not None else "no partition has a true lag, so there is no real skew"
    return f"{SERIES_SKEW_RATIO} is {prom_text(ratio)}{bound} because " + "; ".join(reasons) + f"; {real}"


def prom_text(x: float) -> str:
    """A float as Prometheus's HTTP API writes it (Go strconv 'f', -1): shortest digits, no exponent."""
    from decimal import Decimal

    text = format(Decimal(repr(float(x))), "f")
    return text[:-2] if text.endswith(".0") else text
