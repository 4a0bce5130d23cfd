"""What ``analyze`` and ``whatif`` answer from a profile, each figure marked exact or bounded.

Exact (counted over every record of the range): per-partition records and
bytes, skew ratios, partitioner agreement, and every what-if load of a
``hash % n`` partitioner for n up to the profile's ``--partitions-max``.
Bounded (a sketch): hot-key counts (frequent items: the true count lies in
``[lower, upper]``, and every key above ``threshold`` records is listed),
distinct keys (HLL, 95% bounds), record-size quantiles (KLL, rank error).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import UsageError
from ..model.keys import key_display_one
from ..stats import skew_ratio
from .profile import Profile

__all__ = ["ProfileAnalysis", "ProfileWhatIf", "analyze_profile", "whatif_profile", "today_partitioner"]


@dataclass
class Bounded:
    estimate: float
    low: float
    high: float
    exact: bool


@dataclass
class HotKey:
    key: str | None
    key_encoding: str | None
    records: Bounded
    share: Bounded


@dataclass
class ExpressionSummary:
    name: str
    records: int
    null_keys: int
    distinct_keys: Bounded
    top_keys: list[HotKey]
    max_error: int  # any key's count is within this many records of the truth
    threshold: int  # every key with more records than this is in top_keys' source list (no false negatives)


@dataclass
class PartitionRow:
    partition: int
    records: int
    bytes: int
    share: float
    null_keys: int
    first_offset: int | None
    last_offset: int | None
    min_timestamp: int | None
    max_timestamp: int | None


@dataclass
class ProfileAnalysis:
    topic: str
    partition_count: int
    complete: bool
    tasks_planned: int
    tasks_done: int
    records: int
    bytes: int
    partitions: list[PartitionRow]
    skew: dict  # {"records": x, "bytes": y, "hottest_partition": p, "exact": True}
    agreement: list[dict]  # [{"partitioner", "matches", "hashed", "share", "exact"}] best first
    today_partitioner: str | None
    expressions: list[ExpressionSummary]
    sizes: dict  # {"p50", "p90", "p99", "max", "rank_error"}
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def today_partitioner(p: Profile) -> tuple[str | None, float]:
    """The rule that put the most hashed records where they are (exact agreement), and its share."""
    best, share = None, 0.0
    for rule, (m, h) in p.agreement.items():
        s = m / h if h else 0.0
        if s > share + 1e-12:
            best, share = rule, s
    return best, share


def _bounded(x, low, high) -> Bounded:
    return Bounded(float(x), float(low), float(high), low == high)


def _expression(p: Profile, name: str, top: int) -> ExpressionSummary:
    import datasketches as ds

    e = p.expressions[name]
    freq = p.frequent_sketch(name)
    w = max(1, freq.total_weight) if not freq.is_empty() else 1
    items = freq.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES, 0) if not freq.is_empty() else []
    items.sort(key=lambda t: (-t[1], t[0]))
    max_err = max((ub - lb for _, _, lb, ub in items), default=0)
    threshold = max(int(freq.epsilon * freq.total_weight), int(max_err)) if not freq.is_empty() else 0
    if max_err:
        # Not exact: list only keys that can be above the guarantee; below it a count is noise (a uniform
        # 100k-key topic listed ten keys "330 (10-330)" while each held 10 records).
        items = [i for i in items if i[3] > threshold]
    hot = []
    for item, est, lb, ub in items[:top]:
        shown, enc = key_display_one(item.encode("latin-1"))
        hot.append(HotKey(shown, enc, _bounded(est, lb, ub), _bounded(est / w, lb / w, ub / w)))
    if e.distinct:
        h = p.distinct_sketch(name)
        distinct = Bounded(float(h.get_estimate()), float(h.get_lower_bound(2)), float(h.get_upper_bound(2)), False)
    else:
        distinct = Bounded(0.0, 0.0, 0.0, True)
    return ExpressionSummary(name, e.records, e.null_keys, distinct, hot, int(max_err), threshold)


def analyze_profile(p: Profile, top: int = 10) -> ProfileAnalysis:
    rows = []
    total = p.records or 0
    for part, s in sorted(p.partitions.items()):
        rows.append(PartitionRow(part, s.records, s.bytes, s.records / total if total else 0.0, s.null_keys,
                                 s.first_offset, s.last_offset, s.min_timestamp, s.max_timestamp))
    recs = [r.records for r in rows]
    hottest = max(range(len(rows)), key=lambda i: recs[i]) if rows else 0
    skew = {"records": skew_ratio(recs), "bytes": skew_ratio([r.bytes for r in rows]),
            "hottest_partition": rows[hottest].partition if rows else 0, "exact": True}
    agreement = []
    for rule, (m, h) in p.agreement.items():
        agreement.append({"partitioner": rule, "matches": m, "hashed": h, "share": m / h if h else 0.0, "exact": True})
    agreement.sort(key=lambda a: -a["share"])
    today, _ = today_partitioner(p)
    sizes = {"p50": 0, "p90": 0, "p99": 0, "max": 0, "rank_error": 0.0}
    if p.sizes:
        k = p.sizes_sketch()
        if not k.is_empty():
            sizes = {"p50": int(k.get_quantile(0.5)), "p90": int(k.get_quantile(0.9)), "p99": int(k.get_quantile(0.99)),
                     "max": int(k.get_max_value()), "rank_error": float(k.normalized_rank_error(False))}
    notes = list(p.notes)
    if not p.complete:
        notes.append(f"partial profile: {len(p.tasks_done)} of {p.tasks_planned} tasks were read; every figure covers "
                     "those tasks' offset ranges only")
    return ProfileAnalysis(p.topic, p.partition_count, p.complete, p.tasks_planned, len(p.tasks_done), total, p.bytes,
                           rows, skew, agreement, today, [_expression(p, n, top) for n in p.expressions], sizes, notes)


# --------------------------------------------------------------------------- what-if


@dataclass
class ScenarioLoad:
    name: str
    partitions: int
    partitioner: str
    key_expression: str
    records: list[int]  # exact: hashed records per partition
    bytes: list[int]
    unhashed_records: int  # null keys (and keys the rule does not hash): placed sticky/random by the client
    shares: list[float]  # with the unhashed records spread evenly
    skew: float  # skew ratio of records, the alert's definition (max / mean)
    bytes_skew: float
    hottest_partition: int
    exact: bool  # False when unhashed records had to be spread evenly


@dataclass
class ProfileWhatIf:
    topic: str
    records: int
    today_partitions: int
    today_partitioner: str | None
    today_match_share: float
    complete: bool
    today: ScenarioLoad
    scenarios: list[ScenarioLoad]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _scenario(p: Profile, n: int, rule: str, expr: str) -> ScenarioLoad:
    from ..partitioners import get_partitioner

    rule = get_partitioner(rule).name
    if expr not in p.expressions:
        raise UsageError(f"the profile has no counters for --key-by {expr.replace('+', ',')}; it holds "
                         f"{', '.join(x.replace('+', ',') for x in p.expressions)} (scan again with that --key-by)")
    if rule not in p.counter_rules:
        raise UsageError(f"the profile has counters for the partitioners {', '.join(p.counter_rules)}, not {rule} "
                         "(scan again with --partitioner)")
    if n > p.n_max:
        raise UsageError(f"the profile has counters for 1..{p.n_max} partitions, not {n} (scan again with "
                         f"--partitions-max {n})")
    recs = p.loads(expr, rule, n)
    byts = p.loads(expr, rule, n, "bytes")
    un, unb = p.expressions[expr].unhashed[rule]
    spread = [r + un / n for r in recs]
    total = sum(spread)
    hottest = max(range(n), key=lambda i: spread[i])
    return ScenarioLoad(f"{n}p {rule}" + (f" {expr}" if expr != "key" else ""), n, rule, expr, recs, byts, un,
                        [x / total if total else 0.0 for x in spread], skew_ratio(spread),
                        skew_ratio([b + unb / n for b in byts]), hottest, un == 0)


def whatif_profile(p: Profile, partitions=(), partitioners=(), key_by=(), today_rule: str | None = None) -> ProfileWhatIf:
    """Exact loads of every combination of ``partitions`` x ``partitioners`` x ``key_by`` (expression names)."""
    import itertools

    rule, share = today_partitioner(p)
    if today_rule:
        from ..partitioners import get_partitioner

        rule = get_partitioner(today_rule).name
    notes = []
    recs = [p.partitions[i].records if i in p.partitions else 0 for i in range(p.partition_count)]
    byts = [p.partitions[i].bytes if i in p.partitions else 0 for i in range(p.partition_count)]
    tot = sum(recs)
    hottest = max(range(len(recs)), key=lambda i: recs[i]) if recs else 0
    today = ScenarioLoad(f"today ({p.partition_count}p)", p.partition_count, rule or "unknown", "key", recs, byts, 0,
                         [r / tot if tot else 0.0 for r in recs], skew_ratio(recs), skew_ratio(byts), hottest, True)
    rules = list(partitioners) or ([rule] if rule and rule in p.counter_rules else [p.counter_rules[0]])
    if rule and rule not in p.counter_rules and not partitioners:
        notes.append(f"today's partitioner {rule} has no counters in the profile; scenarios use {rules[0]}")
    out = [_scenario(p, n, r, e) for n, r, e in itertools.product(list(partitions) or [p.partition_count], rules,
                                                                   list(key_by) or ["key"])]
    notes.append("keys moved and traffic moved need the keys themselves: a profile holds counters, so they are not given")
    if any(not s.exact for s in out):
        notes.append("null keys are not hashed (the client places them sticky or at random): they are spread evenly "
                     "over the partitions in shares and skew; records lists hashed records only")
    if not p.complete:
        notes.append(f"partial profile: {len(p.tasks_done)} of {p.tasks_planned} tasks")
    return ProfileWhatIf(p.topic, p.records, p.partition_count, rule, share, p.complete, today, out, notes)


# --------------------------------------------------------------------------- recommend


@dataclass
class ProfileAdvice:
    topic: str
    today: ScenarioLoad
    target_skew: float
    recommended: ScenarioLoad | None  # None: no partition count / partitioner in the profile reaches the target
    ranked: list[ScenarioLoad]
    reason: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def recommend_profile(p: Profile, target_skew: float = 1.25, max_partitions: int | None = None,
                      today_rule: str | None = None, top: int = 8) -> ProfileAdvice:
    """The least disruptive partition count / partitioner whose exact skew is at or under the target.

    From a profile only the remedies its counters cover are evaluated (partition counts up to
    --partitions-max, the counted partitioners): composite keys and salting need the keys.
    Least disruptive: today's partitioner before another (a new partitioner moves nearly every key),
    then fewer partitions.
    """
    w = whatif_profile(p, today_rule=today_rule)
    today_rule_name = w.today_partitioner
    hi = min(p.n_max, max_partitions or 2 * p.partition_count)
    if hi < p.partition_count:
        raise UsageError(f"--max-partitions {hi} is below today's {p.partition_count} partitions")
    cands = [_scenario(p, n, r, "key") for r in p.counter_rules for n in range(p.partition_count, hi + 1)]
    cands = [c for c in cands if not (c.partitions == p.partition_count and c.partitioner == today_rule_name)]

    def cost(c):
        return (c.partitioner != today_rule_name, c.partitions)

    ok = sorted([c for c in cands if c.skew <= target_skew], key=cost)
    ranked = ok + sorted([c for c in cands if c.skew > target_skew], key=lambda c: (c.skew, cost(c)))
    notes = ["from a profile: partition counts and partitioners only (composite keys and salting need the keys: "
             "use a sample); every skew is exact"]
    if w.today.skew <= target_skew:
        reason = f"today's skew {w.today.skew:.2f} is already at or under the target {target_skew:g}"
        rec = None
    elif ok:
        rec = ok[0]
        reason = f"{rec.name} is the least disruptive change with skew {rec.skew:.2f} <= {target_skew:g} (exact)"
    else:
        rec = None
        best = ranked[0] if ranked else None
        reason = (f"no partition count up to {hi} nor counted partitioner reaches skew {target_skew:g}"
                  + (f"; the best is {best.name} at {best.skew:.2f}" if best else "")
                  + ": a hot key needs salting or a composite key (evaluate them on a sample)")
    return ProfileAdvice(p.topic, w.today, target_skew, rec, ranked[:top], reason, notes + w.notes[:1])
