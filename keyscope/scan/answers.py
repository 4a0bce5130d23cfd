"""What ``analyze`` and ``whatif`` answer from a profile, each figure marked exact or bounded.

Exact (counted over every record of the range): per-partition records and
bytes, skew ratios, partitioner agreement, and every what-if load of a
``hash % n`` partitioner for n up to the profile's ``--partitions-max``.
Bounded (a sketch): hot-key counts (frequent items: the true count lies in
``[lower, upper]``, and every key above ``threshold`` records is listed),
distinct keys (HLL, 95% bounds), record-size quantiles (KLL, rank error).
Salting the hot keys (``whatif --salt-hot``) moves the hot keys' records to
their sub-keys: exact when the frequent-items sketch is exact and the
profile's per-field distribution of each salted key is complete (salting by a
captured field), bounded otherwise (``bounds``: per-partition low/high), and
an expectation when salting by offset (a random/round-robin salt).
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
    # per captured field: {"values": [[value, records], ...] (the 5 most frequent), "other": records of the
    # other kept values and beyond the cap, "cut": records before the key was tracked (values unknown)}
    fields: dict = field(default_factory=dict)


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
        raw = item.encode("latin-1")
        shown, enc = key_display_one(raw)
        fields = {}
        t = e.tracked.get(raw)
        if t is not None:
            for f, (vals, other) in sorted(t.fields.items()):
                ranked = sorted(vals.items(), key=lambda x: (-x[1], x[0] is not None, x[0] or ""))
                fields[f] = {"values": [[v, n] for v, n in ranked[:5]], "other": other + sum(n for _, n in ranked[5:]),
                             "cut": max(0, int(est) - t.records)}
        hot.append(HotKey(shown, enc, _bounded(est, lb, ub), _bounded(est / w, lb / w, ub / w), fields))
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
    exact: bool  # False when unhashed records had to be spread evenly, or a salted figure carries a bound
    salt: dict | None = None  # salting: {"label", "top", "share", "buckets", "by", "seed", "rule", "keys", "basis"}
    bounds: dict | None = None  # bounded figures: {"low": [...], "high": [...], "skew_high": x}, records per partition


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


def _scenario(p: Profile, n: int, rule: str, expr: str, salt=None) -> ScenarioLoad:
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
    name = f"{n}p {rule}" + (f" {expr}" if expr != "key" else "")
    if salt is not None:
        return _salted(p, n, rule, expr, salt, name, recs, byts, un, unb)
    spread = [r + un / n for r in recs]
    total = sum(spread)
    hottest = max(range(n), key=lambda i: spread[i])
    return ScenarioLoad(name, n, rule, expr, recs, byts, un,
                        [x / total if total else 0.0 for x in spread], skew_ratio(spread),
                        skew_ratio([b + unb / n for b in byts]), hottest, un == 0)


def hot_items(p: Profile, expr: str) -> list[tuple[bytes, float, float, float]]:
    """(key, estimate, low, high) of every key the sketch can place above its guarantee, hottest first."""
    import datasketches as ds

    fs = p.frequent_sketch(expr)
    if fs.is_empty():
        return []
    items = fs.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES, 0)
    items.sort(key=lambda t: (-t[1], t[0]))
    return [(k.encode("latin-1"), float(est), float(lb), float(ub)) for k, est, lb, ub in items]


def _salted(p: Profile, n: int, rule: str, expr: str, salt, name: str, recs, byts, un, unb) -> ScenarioLoad:
    """Loads with the hot keys salted into sub-keys ``key#0..key#D-1`` (keyscope.whatif's rule).

    Each salted key's records leave its partition and go to its sub-keys' partitions.  By a captured
    field, the profile's per-field distribution of the key gives each value's sub-key
    (``mmh3(value, seed) % D``); records the distribution did not cover (the "cut": before the key was
    tracked, values beyond the cap) could land on any of its sub-keys: the bounds widen by them.  By
    offset, a random/round-robin salt: each sub-key gets 1/D of the key's records in expectation.
    """
    import numpy as np
    import polars as pl

    from ..partitioners import get_partitioner
    from ..whatif.murmur import murmur3_binary
    from ..whatif.spec import salt_rule

    r = get_partitioner(rule)
    e = p.expressions[expr]
    keyed = max(1, e.records - e.null_keys)
    items = hot_items(p, expr)
    if salt.top is not None:
        hot = items[: salt.top]
    else:
        hot = [i for i in items if i[1] / keyed >= salt.share]
    if salt.by != "offset" and not any(salt.by in t.fields for t in e.tracked.values()):
        have = sorted({f for t in e.tracked.values() for f in t.fields})
        raise UsageError(f"the profile has no distribution of {salt.by!r} for the hot keys of {expr.replace('+', ',')}"
                         + (f" (it has {', '.join(have)})" if have else "")
                         + f": scan again with --field {salt.by}=PATH, or salt by offset")
    est = np.asarray(recs, np.float64)
    low, high = est.copy(), est.copy()
    mean_size = e.bytes / e.records if e.records else 0.0
    byt = np.asarray(byts, np.float64)
    exact = un == 0
    basis = "exact"
    shown = []
    for key, c, lb, ub in hot:
        op = r.operand(key)
        if op is None:  # a key the rule does not hash (the empty key under some rules): nothing to salt
            continue
        shown.append(key_display_one(key)[0])
        at = op % n
        est[at] -= c
        low[at] -= ub
        high[at] -= lb
        byt[at] -= c * mean_size
        sub = [int(r.operand(key + b"#" + str(s).encode()) % n) for s in range(salt.buckets)]
        if lb != ub:
            exact, basis = False, "bounded"
        if salt.by == "offset":
            exact, basis = False, "expected"
            for s in range(salt.buckets):
                est[sub[s]] += c / salt.buckets
                low[sub[s]] += lb / salt.buckets
                high[sub[s]] += ub / salt.buckets
                byt[sub[s]] += c * mean_size / salt.buckets
            continue
        t = e.tracked.get(key)
        vals, other = t.fields.get(salt.by, ({}, 0)) if t is not None else ({}, 0)
        per = np.zeros(salt.buckets, np.float64)
        if vals:
            values = list(vals)
            data = pl.Series([v.encode("utf-8") if v is not None else b"" for v in values], dtype=pl.Binary)
            buckets = murmur3_binary(data, salt.seed) % np.uint32(salt.buckets)
            np.add.at(per, buckets.astype(np.int64), np.asarray([vals[v] for v in values], np.float64))
        known = float(per.sum())
        cut_est, cut_high = max(0.0, c - known), max(0.0, ub - known)
        if cut_high > 0:
            exact, basis = False, "bounded"
        share = per / known if known else np.full(salt.buckets, 1.0 / salt.buckets)
        got = set()
        for s in range(salt.buckets):
            est[sub[s]] += per[s] + cut_est * share[s]
            low[sub[s]] += per[s]
            high[sub[s]] += per[s]
            byt[sub[s]] += (per[s] + cut_est * share[s]) * mean_size
            got.add(sub[s])
        for q in got:  # any sub-key may hold the whole cut
            high[q] += cut_high
    est = np.maximum(est, 0.0)
    low = np.maximum(low, 0.0)
    spread = est + un / n
    total = float(spread.sum())
    hottest = int(np.argmax(spread))
    mean = total / n if n else 0.0
    skew_high = float(max(high + un / n) / mean) if mean > 0 else 0.0
    info = {"label": salt.label, "top": salt.top, "share": salt.share, "buckets": salt.buckets, "by": salt.by,
            "seed": salt.seed, "rule": salt_rule(salt), "keys": shown, "basis": basis}
    bounds = None
    if not exact:
        bounds = {"low": [int(np.floor(x + 1e-9)) for x in low], "high": [int(np.ceil(x - 1e-9)) for x in high],
                  "skew_high": max(skew_high, skew_ratio(spread.tolist()))}
    return ScenarioLoad(f"{name} {salt.label}", n, rule, expr, [int(round(x)) for x in est],
                        [int(round(max(0.0, x))) for x in byt], un, [float(x / total) if total else 0.0 for x in spread],
                        skew_ratio(spread.tolist()), skew_ratio((np.maximum(byt, 0) + unb / n).tolist()), hottest,
                        exact, info, bounds)


def whatif_profile(p: Profile, partitions=(), partitioners=(), key_by=(), today_rule: str | None = None,
                   salts=()) -> ProfileWhatIf:
    """Loads of every combination of ``partitions`` x ``partitioners`` x ``key_by`` (expression names)
    x ``salts``: exact, except salted figures, which say their bound."""
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
    out = [_scenario(p, n, r, e, s) for n, r, e, s in itertools.product(
        list(partitions) or [p.partition_count], rules, list(key_by) or ["key"], list(salts) or [None])]
    notes.append("keys moved and traffic moved need the keys themselves: a profile holds counters, so they are not given")
    notes += _salt_notes(out)
    if any(not s.exact for s in out):
        notes.append("null keys are not hashed (the client places them sticky or at random): they are spread evenly "
                     "over the partitions in shares and skew; records lists hashed records only")
    if not p.complete:
        notes.append(f"partial profile: {len(p.tasks_done)} of {p.tasks_planned} tasks")
    return ProfileWhatIf(p.topic, p.records, p.partition_count, rule, share, p.complete, today, out, notes)


def _salt_notes(out: list[ScenarioLoad]) -> list[str]:
    notes = []
    bases = {s.salt["basis"] for s in out if s.salt}
    if "exact" in bases:
        notes.append("salted by a field, exact: every salted key's count is exact and its per-field distribution "
                     "complete (bytes of moved records use the mean record size)")
    if "bounded" in bases:
        notes.append("salted, bounded: a salted key's count carries the sketch bound, or part of its records (before "
                     "it was tracked, or beyond the value cap) has no known value; bounds gives each partition's "
                     "low/high records")
    if "expected" in bases:
        notes.append("salted by offset: a random/round-robin salt gives each sub-key 1/D of the key's records in "
                     "expectation (a sample gives the exact mmh3-of-offset split); bytes of moved records use the "
                     "mean record size")
    return notes


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
                      today_rule: str | None = None, top: int = 8, keep: str = "key") -> ProfileAdvice:
    """The least disruptive remedy whose skew is at or under the target.

    From a profile: partition counts up to --partitions-max and the counted partitioners (exact); with
    ``keep`` (--keep-order-by) ``none`` or a FIELD, also the composite keys the profile counted (exact)
    and salting the hot keys by offset or by a captured field (bounded or exact, see ``_salted``),
    each judged by its highest skew the bound allows.  Least disruptive: fewer changes, then today's
    partitioner before another (a new one moves nearly every key), fewer partitions, fewer sub-keys.
    """
    from ..advice import SALT_BUCKETS
    from ..whatif.spec import Salt

    w = whatif_profile(p, today_rule=today_rule)
    today_rule_name = w.today_partitioner
    hi = min(p.n_max, max_partitions or 2 * p.partition_count)
    if hi < p.partition_count:
        raise UsageError(f"--max-partitions {hi} is below today's {p.partition_count} partitions")
    n0 = p.partition_count
    cands = [_scenario(p, n, r, "key") for r in p.counter_rules for n in range(n0, hi + 1)]
    cands = [c for c in cands if not (c.partitions == n0 and c.partitioner == today_rule_name)]
    rule0 = today_rule_name if today_rule_name in p.counter_rules else p.counter_rules[0]
    few = sorted({n0, min(2 * n0, hi)})
    if keep != "key":
        for name, e in p.expressions.items():
            if e.fields and (keep == "none" or set(e.fields) <= {keep}):
                cands += [_scenario(p, n, rule0, name) for n in few]
        fields = sorted({f for t in p.expressions["key"].tracked.values() for f in t.fields}) if "key" in p.expressions else []
        bys = (["offset"] if keep == "none" else []) + [f for f in fields if keep in ("none", f)]
        items = hot_items(p, "key") if "key" in p.expressions else []
        e = p.expressions.get("key")
        keyed = max(1, e.records - e.null_keys) if e else 1
        k_hot = max(1, min(16, sum(1 for i in items if i[1] / keyed >= 1 / (2 * n0))))
        for k in sorted({1, k_hot}) if items else []:
            for d in SALT_BUCKETS:
                for by in bys:
                    cands += [_scenario(p, n, rule0, "key", Salt(top=k, buckets=d, by=by)) for n in few]

    def worst(c):
        return c.bounds["skew_high"] if c.bounds else c.skew

    def cost(c):
        changes = (int(c.partitions != n0) + int(c.partitioner != today_rule_name) + int(c.key_expression != "key")
                   + int(c.salt is not None))
        return (changes, c.partitioner != today_rule_name, c.partitions, c.salt["buckets"] if c.salt else 0, c.name)

    ok = sorted([c for c in cands if worst(c) <= target_skew], key=cost)
    ranked = ok + sorted([c for c in cands if worst(c) > target_skew], key=lambda c: (worst(c), cost(c)))
    if keep == "key":
        notes = ["from a profile with --keep-order-by key: partition counts and partitioners only (composite keys "
                 "and salting break per-key order; --keep-order-by none or FIELD evaluates them); every skew is exact"]
    else:
        notes = ["from a profile: partition counts, partitioners and the composite keys it counted are exact; salted "
                 "candidates are judged by the highest skew their bound allows"]
    if w.today.skew <= target_skew:
        reason = f"today's skew {w.today.skew:.2f} is already at or under the target {target_skew:g}"
        rec = None
    elif ok:
        rec = ok[0]
        how = "exact" if rec.exact or not rec.bounds else f"at most {worst(rec):.2f} within the bound"
        reason = f"{rec.name} is the least disruptive change with skew {rec.skew:.2f} <= {target_skew:g} ({how})"
    else:
        rec = None
        best = ranked[0] if ranked else None
        reason = (f"no partition count up to {hi} nor counted partitioner reaches skew {target_skew:g}"
                  + (f"; the best is {best.name} at {best.skew:.2f}" if best else "")
                  + (": a hot key needs salting or a composite key (--keep-order-by none evaluates them)"
                     if keep == "key" else ""))
    return ProfileAdvice(p.topic, w.today, target_skew, rec, ranked[:top], reason,
                         notes + w.notes[:1] + _salt_notes([c for c in ranked[:top] if c.salt]))
