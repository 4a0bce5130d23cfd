"""Consumer-group lag, read without touching the group, in two readings side by side.

**As your alert computes it** (:mod:`keyscope.prometheus.alert`): the series the deployed
rules hold, bit for bit as kafka_exporter 1.7.0 + Prometheus 2.42 produce
them, under their real names (``kafka:group_partition_lag`` with -1 for a
partition never committed and negative lag for one committed ahead,
``kafka:group_skew_ratio``, ``kafka:group_hottest_partition`` = one series
for the whole cluster).

**Corrected** (this module, keyscope's own names, what ``keyscope rules``'
fixed set records)::

    keyscope:group_partition_lag     = end offset (true high watermark) - committed, where >= 0
    keyscope:group_skew_ratio        = max(lag) / clamp_min(avg(lag), 0.001)     per group, topic
    keyscope:group_hottest_partition = the partition(s) whose lag equals that max, per group, topic

A partition with no committed offset, or committed ahead of the log end (a
recreated topic), has no true lag: it is listed, flagged, never shown as zero
lag, and left out of max and avg.  Both readings use Prometheus 2.42's
arithmetic (incremental mean, in series order), so they differ exactly where
the data differ, and :func:`keyscope.prometheus.alert.why_differ` says why in one line.

Read-only by construction: committed offsets come from OffsetFetch and the
member count from DescribeGroups (admin requests, never JoinGroup or
OffsetCommit); end offsets from :func:`keyscope.kafka.client.watermarks`, whose
consumer has no group.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field

from .prometheus import alert as alertmod
from .kafka import client as kafka_io
from .kafka import members as _members
from .kafka.connection import Connection
from .errors import KafkaError, UsageError
from .stats import CLAMP_MIN, clamp_min

# The deployed rules' series (the alert's reading) ...
SERIES_PARTITION_LAG = alertmod.SERIES_PARTITION_LAG
SERIES_SKEW_RATIO = alertmod.SERIES_SKEW_RATIO
SERIES_HOTTEST_PARTITION = alertmod.SERIES_HOTTEST_PARTITION
SERIES = (SERIES_PARTITION_LAG, SERIES_SKEW_RATIO, SERIES_HOTTEST_PARTITION)
# ... and keyscope's own names for the corrected reading (recorded by `keyscope rules --set fixed`).
CORRECTED_PARTITION_LAG = "keyscope:group_partition_lag"
CORRECTED_SKEW_RATIO = "keyscope:group_skew_ratio"
CORRECTED_HOTTEST_PARTITION = "keyscope:group_hottest_partition"
CORRECTED_SERIES = (CORRECTED_PARTITION_LAG, CORRECTED_SKEW_RATIO, CORRECTED_HOTTEST_PARTITION)

__all__ = [
    "PartitionLag",
    "TopicLag",
    "GroupLag",
    "Trend",
    "LagReader",
    "read_group_lag",
    "summarize_topic",
    "trends",
    "to_dict",
    "SERIES",
    "CORRECTED_SERIES",
]


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    committed: int | None  # None: the group never committed this partition
    end_offset: int  # true high watermark (corrected from fetch responses)
    log_start: int
    list_offsets_end: int  # what ListOffsets said, to show when it under-reported

    @property
    def lag(self) -> int | None:
        return None if self.committed is None else self.end_offset - self.committed

    @property
    def in_ratio(self) -> bool:
        """Whether it has a true lag (a keyscope:group_partition_lag series) and enters the corrected ratio."""
        return self.lag is not None and self.lag >= 0

    @property
    def exporter_lag(self) -> int:
        """kafka_consumergroup_lag as kafka_exporter 1.7.0 reports it: ListOffsets end - committed, or -1."""
        return alertmod.exporter_lag(self.committed, self.list_offsets_end)

    @property
    def status(self) -> str:
        if self.committed is None:
            return "no committed offset"
        if self.end_offset < self.committed:
            return "committed ahead of end offset"
        if self.committed < self.log_start:
            return "committed offset below log start (records deleted unread)"
        return "ok"


@dataclass(frozen=True)
class TopicLag:
    topic: str
    partitions: list[PartitionLag]

    @property
    def series(self) -> dict[int, int]:
        """keyscope:group_partition_lag: the true lag of every partition that has one."""
        return {p.partition: p.lag for p in self.partitions if p.in_ratio}

    def _stored(self) -> list[int]:
        s = self.series
        return [s[p] for p in alertmod.stored_order(s)]

    @property
    def skew_ratio(self) -> float | None:
        """keyscope:group_skew_ratio (Prometheus's arithmetic); None when no partition has a true lag."""
        lags = self._stored()
        return alertmod.prom_skew_ratio(lags) if lags else None

    @property
    def max_lag(self) -> int | None:
        lags = list(self.series.values())
        return max(lags) if lags else None

    @property
    def avg_lag(self) -> float | None:
        lags = self._stored()
        return alertmod.prom_avg(lags) if lags else None

    @property
    def alert(self) -> "alertmod.AlertTopic | None":
        """This topic's series as the deployed rules hold them (None: kafka_exporter exports none)."""
        return alertmod.alert_topic(
            "", self.topic, {p.partition: p.committed for p in self.partitions},
            {p.partition: p.list_offsets_end for p in self.partitions},
        )

    @property
    def total_lag(self) -> int:
        return sum(self.series.values())

    @property
    def hottest(self) -> list[int]:
        """keyscope:group_hottest_partition: every partition whose true lag equals the max (ties kept)."""
        s = self.series
        if not s:
            return []
        top = max(s.values())
        return sorted(p for p, v in s.items() if v == top)

    @property
    def uncommitted(self) -> list[int]:
        return [p.partition for p in self.partitions if p.committed is None]

    @property
    def corrected_end_offsets(self) -> list[int]:
        return [p.partition for p in self.partitions if p.list_offsets_end != p.end_offset]


@dataclass(frozen=True)
class GroupLag:
    group: str
    topics: list[TopicLag]
    members: int | None  # kafka_consumergroup_members; None when the broker would not say
    state: str | None
    members_error: str | None
    read_at: float  # wall clock, epoch seconds
    monotonic: float  # for rates between readings
    notes: list[str] = field(default_factory=list)
    alert: "alertmod.AlertReading | None" = None  # the deployed alert's reading; None when not read
    group_members: "_members.GroupMembers | None" = None  # who owns what (keyscope.kafka.members)

    def alert_topic(self, name: str) -> "alertmod.AlertTopic | None":
        return None if self.alert is None else self.alert.topic(name)

    def topic(self, name: str) -> TopicLag:
        for t in self.topics:
            if t.topic == name:
                return t
        raise KeyError(name)

    def max_skew(self) -> float | None:
        vals = [t.skew_ratio for t in self.topics if t.skew_ratio is not None]
        return max(vals) if vals else None

    def skew(self, t: "TopicLag", reading: str) -> float | None:
        """The skew of topic ``t`` in ``reading`` ('alert': kafka:group_skew_ratio, 'corrected': the true one)."""
        if reading == "corrected":
            return t.skew_ratio
        a = self.alert_topic(t.topic)
        return None if a is None else a.skew_ratio


@dataclass(frozen=True)
class Trend:
    """How one partition's lag moved between two readings."""

    seconds: float
    lag_rate: float | None  # records/s; > 0 growing, < 0 draining; None without two committed offsets
    consume_rate: float | None  # committed offset advance, records/s
    produce_rate: float  # end offset advance, records/s

    @property
    def direction(self) -> str | None:
        if self.lag_rate is None:
            return None
        return "growing" if self.lag_rate > 0 else "draining" if self.lag_rate < 0 else "steady"


def summarize_topic(topic: str, committed: dict[int, int | None], marks: dict[int, "kafka_io.Watermarks"]) -> TopicLag:
    """Pure: committed offsets + watermarks -> a TopicLag (no broker involved)."""
    parts = []
    for p in sorted(marks):
        w = marks[p]
        c = committed.get(p)
        parts.append(
            PartitionLag(
                partition=p,
                committed=None if c is None or c < 0 else int(c),
                end_offset=int(w.high),
                log_start=int(w.low),
                list_offsets_end=int(w.list_offsets_high),
            )
        )
    return TopicLag(topic=topic, partitions=parts)


def trends(prev: GroupLag, cur: GroupLag) -> dict[tuple[str, int], Trend]:
    """Per-partition rates between two readings of the same group."""
    dt = clamp_min(cur.monotonic - prev.monotonic)
    before = {(t.topic, p.partition): p for t in prev.topics for p in t.partitions}
    out = {}
    for t in cur.topics:
        for p in t.partitions:
            b = before.get((t.topic, p.partition))
            if b is None:
                continue
            both = p.committed is not None and b.committed is not None
            out[(t.topic, p.partition)] = Trend(
                seconds=dt,
                lag_rate=(p.lag - b.lag) / dt if both else None,
                consume_rate=(p.committed - b.committed) / dt if both else None,
                produce_rate=(p.end_offset - b.end_offset) / dt,
            )
    return out


class LagReader:
    """Holds the two read-only clients, so ``--watch`` reuses connections between readings."""

    def __init__(self, conn: Connection, group: str, topic: str | None = None, timeout_s: float = 10.0,
                 scan_cluster: bool = True):
        if not group:
            raise UsageError("--group must not be empty")
        self.conn, self.group, self.topic, self.timeout_s = conn, group, topic, timeout_s
        self.scan_cluster = scan_cluster  # read every group's offsets for the cluster-wide topk(1)
        self._consumer = kafka_io.open_consumer(conn, timeout_s)
        try:
            self._admin = self._open_admin()
        except BaseException:
            self._consumer.close()
            raise

    def _open_admin(self):
        return kafka_io.open_admin(self.conn, self.timeout_s)

    def close(self) -> None:
        for client in (getattr(self, "_admin", None), getattr(self, "_consumer", None)):
            if client is not None:
                try:
                    client.close()
                except Exception:  # closing a dead connection is not the user's problem
                    pass

    def __enter__(self) -> "LagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _committed(self) -> dict[str, dict[int, int]]:
        got = _members.retry_coordinator(
            self._admin, self.group, lambda: self._admin.list_group_offsets({self.group: None}),
            f"committed offsets of group {self.group!r}", self.timeout_s,
            empty=lambda got: not any(om.offset is not None and om.offset >= 0
                                      for om in got.get(self.group, {}).values()),
        )
        by_topic: dict[str, dict[int, int]] = {}
        for tp, om in got.get(self.group, {}).items():
            if om.offset is not None and om.offset >= 0:
                by_topic.setdefault(tp.topic, {})[tp.partition] = om.offset
        return by_topic

    def _unknown_group(self, committed: dict[str, dict[int, int]]) -> KafkaError:
        if self.topic is not None and committed:
            others = ", ".join(sorted(committed)[:10])
            return KafkaError(
                f"group {self.group!r} has no committed offsets for topic {self.topic!r} "
                f"(it has offsets for: {others})"
            )
        try:
            known = sorted(g["group_id"] for g in self._admin.list_groups())
        except Exception:
            known = []
        import difflib

        from .kafka.client import known_hint

        near = difflib.get_close_matches(self.group, known, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else known_hint("consumer groups", known)
        where = f" for topic {self.topic!r}" if self.topic else ""
        return KafkaError(f"consumer group {self.group!r} has no committed offsets{where}{hint}")

    def read(self) -> GroupLag:
        """One reading: committed offsets first, then end offsets, so lag is never spuriously negative."""
        if self.topic is not None:
            kafka_io.topic_partitions(self._consumer, self.topic)  # unknown topic: clear error first
        committed = self._committed()
        topics = [self.topic] if self.topic is not None else sorted(committed)
        if not any(committed.get(t) for t in topics):
            raise self._unknown_group(committed)
        gm = _members.describe(self._admin, self.group)
        members, state, members_error = gm.count, gm.state, gm.error
        notes, out = list(gm.notes), []
        for name in topics:
            try:
                parts = kafka_io.topic_partitions(self._consumer, name)
            except KafkaError:
                notes.append(f"topic {name!r} has committed offsets but no longer exists: left out")
                continue
            marks = kafka_io.watermarks(self._consumer, name, parts, self.timeout_s)
            out.append(summarize_topic(name, committed.get(name, {}), marks))
        if not out:
            raise KafkaError(f"none of the topics group {self.group!r} committed offsets for exist any more")
        return GroupLag(
            group=self.group,
            topics=out,
            members=members,
            state=state,
            members_error=members_error,
            read_at=time.time(),
            monotonic=time.monotonic(),
            notes=notes,
            alert=self._alert_reading(out, committed),
            group_members=gm,
        )

    # -- the deployed alert's reading (keyscope.prometheus.alert) ------------------------------------------

    def _alert_reading(self, topics: list[TopicLag], committed: dict[str, dict[int, int]]) -> "alertmod.AlertReading":
        """The group's series as the deployed rules hold them, and the cluster-wide topk(1)."""
        own = []
        for t in topics:
            a = t.alert
            if a is not None:
                own.append(alertmod.AlertTopic(group=self.group, topic=a.topic, partition_lag=a.partition_lag))
        if not self.scan_cluster:
            return alertmod.AlertReading(topics=own, hottest=None, groups_scanned=0,
                                         scan_error="cluster scan skipped (--no-cluster-scan)")
        skipped: list[str] = []
        try:
            everything, groups = self._scan_cluster(own, skipped, committed)
        except KafkaError as e:
            return alertmod.AlertReading(topics=own, hottest=None, groups_scanned=0, scan_error=str(e))
        notes = []
        if skipped:
            names = ", ".join(repr(g) for g in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
            notes.append(f"offsets of {len(skipped)} group(s) could not be read and were left out of the "
                         f"cluster-wide {SERIES_HOTTEST_PARTITION}, as kafka_exporter leaves them out: {names}")
        return alertmod.AlertReading(topics=own, hottest=alertmod.topk1(everything),
                                     groups_scanned=groups - len(skipped), notes=notes)

    def _group_offsets(self, groups: list[str], skipped: list[str]) -> dict[str, dict[str, dict[int, int]]]:
        """group -> topic -> partition -> committed offset (OffsetFetch only: read-only).

        A group whose offsets cannot be read is skipped and named in ``skipped``, as
        kafka_exporter skips it (it logs the error and goes on).
        """
        got: dict = {}
        try:
            got = self._admin.list_group_offsets({g: None for g in groups}) if groups else {}
        except Exception:  # no multi-group OffsetFetch (v8), or one group failed: one group at a time
            for g in groups:
                try:
                    got.update(self._admin.list_group_offsets({g: None}))
                except Exception:
                    skipped.append(g)
        out: dict[str, dict[str, dict[int, int]]] = {}
        for g, offsets in got.items():
            for tp, om in (offsets or {}).items():
                if om.offset is not None and om.offset >= 0:
                    out.setdefault(g, {}).setdefault(tp.topic, {})[tp.partition] = om.offset
        return out

    def _scan_cluster(self, own: list["alertmod.AlertTopic"], skipped: list[str],
                      own_committed: dict[str, dict[int, int]]) -> tuple[list["alertmod.AlertTopic"], int]:
        """Every group's series as kafka_exporter exports them: what topk(1) without ``by`` ranks."""
        try:
            groups = sorted({g["group_id"] for g in self._admin.list_groups()} | {self.group})
        except Exception as e:
            raise KafkaError(f"cannot list consumer groups: {_one_line(e)}") from None
        mine = {t.topic for t in own}
        committed = self._group_offsets([g for g in groups if g != self.group], skipped)
        committed[self.group] = own_committed  # read once, for the report and the scan alike
        wanted = sorted({t for g, topics in committed.items() for t in topics if not (g == self.group and t in mine)})
        parts: dict[str, list[int]] = {}
        for name in wanted:
            try:
                parts[name] = kafka_io.topic_partitions(self._consumer, name)
            except KafkaError:
                continue  # a deleted topic: kafka_exporter no longer asks for it either
        ends = kafka_io.end_offsets(self._consumer, parts, self.timeout_s)
        out = list(own)
        for g in groups:
            for name, offs in sorted(committed.get(g, {}).items()):
                if name not in parts or (g == self.group and name in mine):
                    continue
                a = alertmod.alert_topic(g, name, offs, {p: ends[(name, p)] for p in parts[name]})
                if a is not None:
                    out.append(a)
        return out, len(groups)


def read_group_lag(conn: Connection, group: str, topic: str | None = None, timeout_s: float = 10.0,
                   scan_cluster: bool = True) -> GroupLag:
    """One reading of ``group``'s lag (on ``topic``, or every topic it committed offsets for)."""
    with LagReader(conn, group, topic, timeout_s, scan_cluster=scan_cluster) as reader:
        return reader.read()


def to_dict(g: GroupLag, trend: dict[tuple[str, int], Trend] | None = None) -> dict:
    """The JSON shape (docs/lag.md): series names as keys, null where Prometheus has no series."""
    topics = []
    for t in g.topics:
        rows = []
        for p in t.partitions:
            row = {
                "partition": p.partition,
                "committed_offset": p.committed,
                "end_offset": p.end_offset,
                "log_start_offset": p.log_start,
                "list_offsets_end": p.list_offsets_end,
                "lag": p.lag,
                "exporter_lag": p.exporter_lag,
                "in_ratio": p.in_ratio,
                "status": p.status,
            }
            if trend is not None:
                tr = trend.get((t.topic, p.partition))
                row["trend"] = None if tr is None else {
                    "seconds": tr.seconds,
                    "direction": tr.direction,
                    "lag_per_s": tr.lag_rate,
                    "consumed_per_s": tr.consume_rate,
                    "produced_per_s": tr.produce_rate,
                }
            rows.append(row)
        topics.append(
            {
                "topic": t.topic,
                "partition_count": len(t.partitions),
                "partitions": rows,
                **_alert_topic_dict(t, g.alert_topic(t.topic)),
                CORRECTED_PARTITION_LAG: [{"partition": p, "value": v} for p, v in t.series.items()],
                CORRECTED_SKEW_RATIO: t.skew_ratio,
                CORRECTED_HOTTEST_PARTITION: [{"partition": p, "value": t.series[p]} for p in t.hottest],
                "max_lag": t.max_lag,
                "avg_lag": t.avg_lag,
                "total_lag": t.total_lag,
                "clamp_min": CLAMP_MIN,
                "partitions_without_committed_offset": t.uncommitted,
                "end_offsets_corrected_from_fetch": t.corrected_end_offsets,
                "members_below_partitions": None if g.members is None else g.members < len(t.partitions),
            }
        )
    return _members.annotate({
        "group": g.group,
        "read_at": _dt.datetime.fromtimestamp(g.read_at, _dt.timezone.utc).isoformat(timespec="milliseconds"),
        "members": g.members,
        "state": g.state,
        "members_error": g.members_error,
        "topics": topics,
        **_alert_group_dict(g.alert),
        "notes": g.notes,
    }, g.group_members)


def _alert_topic_dict(t: TopicLag, a: "alertmod.AlertTopic | None") -> dict:
    """The deployed alert's series for one topic, under their real names (null: kafka_exporter exports none)."""
    return {
        SERIES_PARTITION_LAG: [] if a is None else [{"partition": p, "value": v} for p, v in a.partition_lag],
        SERIES_SKEW_RATIO: None if a is None else a.skew_ratio,
        "alert": None if a is None else {
            "max_lag": a.max_lag,
            "avg_lag": a.avg_lag,
            "partitions_reported_as_minus_one": a.sentinels,
            "series_order": [p for p, _ in a.partition_lag],
        },
        "why_differ": alertmod.why_differ(t, a),
    }


def _alert_group_dict(a: "alertmod.AlertReading | None") -> dict:
    h = None if a is None else a.hottest
    return {
        SERIES_HOTTEST_PARTITION: None if h is None else {
            "consumergroup": h.group,
            "topic": h.topic,
            "partition": h.partition,
            "value": h.value,
            "ties": [{"consumergroup": g, "topic": t, "partition": p} for g, t, p in h.ties],
        },
        "alert_scan": {
            "groups_scanned": 0 if a is None else a.groups_scanned,
            "error": "not read" if a is None else a.scan_error,
        },
    }


def _one_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
