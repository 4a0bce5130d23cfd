"""Advice: generate remedies, rank them under the user's constraints, say why and how.

Ranking is by the *upper* end of the predicted skew's 95% interval (a remedy
must work on the traffic we have not seen too), among scenarios that respect
the constraints.  A fix that is good enough beats a marginally better one that
disrupts more: every scenario whose upper bound is at or under the target skew
(``--target-skew``, default 1.25) counts as fixing it, and the least disruptive
of those is recommended.  When none reaches the target, scenarios within 2% of
the best upper bound are a tie, settled the same way.  Disruption is, in order:
traffic that loses per-key order, traffic that changes partition, partitions
added, number of producer changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import UsageError
from .partitioners import PARTITIONERS, get_partitioner  # noqa: F401  (PARTITIONERS re-exported for callers)

# Rules to suggest moving to: the defaults of the common clients (Java, librdkafka, Sarama).
SWITCH_TO = ("murmur2", "consistent", "fnv1a")
from .whatif.engine import WhatIf
from .whatif.result import Result
from .whatif.spec import DEFAULT_SEPARATOR, Salt, Scenario, salt_rule

__all__ = ["Constraints", "Advice", "candidates", "violations", "recommend", "snippets", "TIE_TOLERANCE"]

TIE_TOLERANCE = 0.02  # relative, on the skew's upper bound
DEFAULT_TARGET_SKEW = 1.25  # hottest partition at most 25% above the mean: no consumer far behind the rest
SALT_BUCKETS = (2, 4, 8)
MAX_SALTED_KEYS = 16
MAX_INLINE_KEY = 256  # bytes: a longer hot key is named by its size in snippets, not pasted


@dataclass(frozen=True)
class Constraints:
    keep_order_by: str = "key"  # "key", a captured field (order per key+FIELD), or "none"
    max_partitions: int | None = None  # default: twice today's count
    max_keys_moved: float = 1.0  # share of distinct keys allowed to change partition
    target_skew: float = DEFAULT_TARGET_SKEW  # a skew (upper bound) at or under this counts as fixed

    def describe(self, today_partitions: int) -> str:
        order = {"key": "per-key order kept", "none": "ordering may break"}.get(
            self.keep_order_by, f"order kept per key+{self.keep_order_by}"
        )
        return (
            f"{order}; at most {self.limit(today_partitions)} partitions;"
            f" at most {self.max_keys_moved:.0%} of keys moved; fixed at skew <= {self.target_skew:g}"
        )

    def limit(self, today_partitions: int) -> int:
        return self.max_partitions if self.max_partitions is not None else 2 * today_partitions


def _keeps_order(sc: Scenario, keep: str) -> bool:
    if keep == "none":
        return True
    if keep == "key":
        return not sc.key_fields and sc.salt is None
    # order per key+FIELD: the partition may depend on the key and that field only
    if set(sc.key_fields) - {keep}:
        return False
    return sc.salt is None or sc.salt.by == keep


def violations(result: Result, c: Constraints, today_partitions: int) -> list[str]:
    """Why a scenario is not allowed (empty: allowed)."""
    sc = result.scenario
    out = []
    if sc.partitions < today_partitions:
        out.append("Kafka cannot reduce a topic's partitions")
    if sc.partitions > c.limit(today_partitions):
        out.append(f"needs {sc.partitions} partitions (> max {c.limit(today_partitions)})")
    if not _keeps_order(sc, c.keep_order_by):
        what = "per-key order" if c.keep_order_by == "key" else f"order per key+{c.keep_order_by}"
        out.append(f"breaks {what}")
    if result.keys_moved_share > c.max_keys_moved + 1e-12:
        out.append(f"moves {result.keys_moved_share:.1%} of keys (> max {c.max_keys_moved:.0%})")
    return out


def disruption(r: Result, today_partitions: int, today_partitioner: str) -> tuple:
    sc = r.scenario
    changes = (
        int(sc.partitions != today_partitions)
        + int(sc.partitioner != today_partitioner)
        + int(bool(sc.key_fields))
        + int(sc.salt is not None)
    )
    salt_d = sc.salt.buckets if sc.salt else 0
    return (
        round(r.order_lost_traffic_share, 3),
        round(r.traffic_moved_share, 3),
        sc.partitions - today_partitions,
        changes,
        salt_d,
        sc.label,
    )


# --------------------------------------------------------------------------
# Candidates


def _counts(n: int, limit: int) -> tuple[list[int], list[int]]:
    """Partition counts to try within the limit, and a few beyond it (to say what relaxing buys)."""
    if limit - n <= 24:
        inside = list(range(n, limit + 1))
    else:
        # multiples of n up to 16n, then powers of two: a --max-partitions of 100,000 must not
        # mean 33,000 counts to evaluate
        powers = (2**k for k in range(1, max(limit, 2).bit_length()))
        inside = sorted({*range(n, n + 9), *range(2 * n, min(limit, 16 * n) + 1, n), *powers, limit})
        inside = [c for c in inside if n <= c <= limit]
    beyond = sorted({c for c in (2 * n, 3 * n, 4 * n) if c > limit})
    return inside, beyond


def spreading_fields(w: WhatIf, hot_key: bytes | None) -> list[str]:
    """Captured fields that vary within the hottest key, so keying on them can spread it.

    A field qualifies when, within the hottest key, it is mostly present and no
    single value holds half the key's records.
    """
    import polars as pl

    if hot_key is None or not w.fields:
        return []
    out = []
    for f in w.fields:
        u = w.key_units((f,), hot_key)  # the field's table is built once, then cached; only this key's values gathered
        counts = u.group_by(f).agg(pl.col("n").sum())
        total = float(counts["n"].sum())
        counts = counts.drop_nulls(f)
        if total == 0 or counts.height < 2:
            continue
        present = float(counts["n"].sum())
        top = float(counts["n"].max())
        if present / total >= 0.5 and top / total < 0.5:
            out.append(f)
    return out


def candidates(w: WhatIf, c: Constraints, separator: str = DEFAULT_SEPARATOR) -> list[Scenario]:
    """The remedies to evaluate: counts x partitioners, composite keys, salting, and combinations.

    Includes a few scenarios just beyond the constraints so the report can say
    which constraint to relax; ranking filters them out.
    """
    n, p0 = w.today_partitions, w.today_partitioner
    limit = c.limit(n)
    if limit < n:
        raise UsageError(f"--max-partitions {limit} is below today's {n}; Kafka cannot reduce partitions")
    inside, beyond = _counts(n, limit)
    counts = inside + beyond
    out: list[Scenario] = []
    for cnt in counts:
        for p in dict.fromkeys((*SWITCH_TO, p0)):  # the rules a producer can move to, and today's
            if (cnt, p) != (n, p0):
                out.append(Scenario(cnt, p))
    few = sorted({n, min(2 * n, limit), limit} | ({beyond[0]} if beyond else set()))
    hot = w.hot_keys((), "", Salt(top=1))
    hot_key = hot["ckey"][0] if len(hot) else None
    fields = spreading_fields(w, hot_key)
    # one field at a time: each already spreads the hot key, and two fields at once
    # multiply the distinct keys to evaluate for little more spread (whatif --key-by can ask)
    key_sets = [(f,) for f in fields]
    for ks in key_sets:
        for cnt in few:
            out.append(Scenario(cnt, p0, key_fields=ks, separator=separator))
    # salting: the hottest key alone, and every key above half a partition's fair share
    shares = w.hot_keys((), "", Salt(top=MAX_SALTED_KEYS))["share"].to_list()
    k_hot = max(1, sum(1 for s in shares if s >= 1 / (2 * n)))
    for k in sorted({1, k_hot}):
        for d in SALT_BUCKETS:
            for by in ["offset", *fields]:
                for cnt in sorted({n, min(2 * n, limit)}):
                    out.append(Scenario(cnt, p0, salt=Salt(top=k, buckets=d, by=by)))
    return list(dict.fromkeys(out))


# --------------------------------------------------------------------------
# Advice


@dataclass
class Advice:
    today: Result
    constraints: Constraints
    today_partitioner: str
    today_match: float
    ranked: list[Result]  # allowed, recommended first
    rejected: list[tuple[Result, list[str]]]
    recommended: Result | None
    helps: bool
    verdict: str
    why: list[str] = field(default_factory=list)
    cost: list[str] = field(default_factory=list)
    snippets: dict[str, str] = field(default_factory=dict)
    migration: list[str] = field(default_factory=list)
    relax: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    evaluated: int = 0

    def to_dict(self, top: int = 10) -> dict:
        return {
            "verdict": self.verdict,
            "helps": self.helps,
            "today": self.today.to_dict(),
            "today_partitioner": {"name": self.today_partitioner, "match_share": self.today_match},
            "constraints": {
                "keep_order_by": self.constraints.keep_order_by,
                "max_partitions": self.constraints.limit(self.today.partitions),
                "max_keys_moved": self.constraints.max_keys_moved,
                "target_skew": self.constraints.target_skew,
            },
            # Only a remedy that helps is "recommended": a script reading this
            # field must never be handed a change that makes things worse.
            "recommended": self.recommended.to_dict() if self.recommended and self.helps else None,
            "best_allowed": self.recommended.to_dict() if self.recommended else None,
            "why": self.why,
            "cost": self.cost,
            "producer_change": self.snippets,
            "migration": self.migration,
            "relax": self.relax,
            "ranked": [r.to_dict() for r in self.ranked[:top]],
            "evaluated": self.evaluated,
            "rejected": _rejection_summary(self.rejected),
            "notes": self.notes,
        }


def _rejection_summary(rejected) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, reasons in rejected:
        for reason in reasons:
            kind = reason.split(" (")[0] if reason.startswith(("moves", "needs")) else reason
            kind = "moves too many keys" if kind.startswith("moves") else kind
            kind = "needs more partitions" if kind.startswith("needs") else kind
            out[kind] = out.get(kind, 0) + 1
    return out


def recommend(
    sample,
    constraints: Constraints = Constraints(),
    consumers: int | None = None,
    partitioner: str | None = None,
    separator: str = DEFAULT_SEPARATOR,
    whatif: WhatIf | None = None,
) -> Advice:
    """Evaluate the generated candidates and pick the remedy to recommend."""
    if not constraints.target_skew >= 1:
        raise UsageError(f"--target-skew must be at least 1 (a perfectly even load), got {constraints.target_skew}")
    if constraints.max_keys_moved < 0 or constraints.max_keys_moved > 1:
        raise UsageError(f"--max-keys-moved must be a share in [0, 1], got {constraints.max_keys_moved}")
    w = whatif or WhatIf(
        sample, partitioner=partitioner, consumers=[consumers] if consumers else None, group_fields=sample.field_names
    )
    keep = constraints.keep_order_by
    if keep not in ("key", "none"):
        w.check_field(keep)
    n = w.today_partitions
    results = w.evaluate_all(candidates(w, constraints, separator))
    today = w.today
    allowed, rejected = [], []
    for r in results:
        v = violations(r, constraints, n)
        (rejected.append((r, v)) if v else allowed.append(r))
    dis = lambda r: disruption(r, n, w.today_partitioner)  # noqa: E731
    allowed.sort(key=lambda r: (r.skew_high, dis(r)))
    recommended = None
    if allowed:
        best = allowed[0].skew_high
        near = [r for r in allowed if r.skew_high <= max(best * (1 + TIE_TOLERANCE), constraints.target_skew)]
        recommended = min(near, key=dis)
        allowed.remove(recommended)
        allowed.insert(0, recommended)
    helps = recommended is not None and recommended.skew_high < today.skew_low
    adv = Advice(
        today=today,
        constraints=constraints,
        today_partitioner=w.today_partitioner,
        today_match=w.today_match,
        ranked=allowed,
        rejected=rejected,
        recommended=recommended,
        helps=helps,
        verdict="",
        notes=list(w.notes),
        evaluated=len(results),
    )
    adv.relax = _relaxations(results, constraints, n, today, dis)
    consumers_shown = consumers or n
    if helps:
        sc = recommended.scenario
        adv.verdict = f"{describe(sc, w)}: skew {today.skew:.2f} -> {recommended.skew:.2f}"
        adv.why = _why(recommended, today, consumers_shown, w)
        adv.cost = _cost(recommended, today, w)
        adv.snippets = snippets(sc, n, recommended.salted_keys, topic=w.sample.meta.topic)
        adv.migration = migration_notes(sc, today.partitions, w.today_partitioner)
    else:
        adv.verdict = _nothing_helps(today, recommended, constraints, adv.relax)
        adv.why = _hot_key_facts(today, w)
    return adv


def describe(sc: Scenario, w: WhatIf) -> str:
    """The change in words, from today's setup."""
    parts = []
    if sc.salt:
        s = sc.salt
        who = f"the {s.top} hottest key{'s' if s.top != 1 else ''}" if s.top else f"keys above {s.share:.0%} of traffic"
        by = "a round-robin/random salt" if s.by == "offset" else f"a hash of {s.by}"
        parts.append(f"salt {who} over {s.buckets} sub-keys ({by})")
    if sc.key_fields:
        parts.append(f"key by {sc.key_expression} (separator {sc.separator!r})")
    if sc.partitioner != w.today_partitioner:
        parts.append(f"switch the producers' partitioner {w.today_partitioner} -> {sc.partitioner}")
    if sc.partitions != w.today_partitions:
        parts.append(f"grow the topic {w.today_partitions} -> {sc.partitions} partitions")
    return "; ".join(parts) or "no change"


def _busiest(r: Result, consumers: int) -> float:
    c = r.consumer(consumers, "range")
    return c.busiest_share if c else float(r.shares.max())


def _why(r: Result, today: Result, consumers: int, w: WhatIf) -> list[str]:
    out = [
        f"predicted skew {r.skew:.2f} (95% interval {r.skew_low:.2f}-{r.skew_high:.2f}) against"
        f" {today.skew:.2f} today ({today.skew_low:.2f}-{today.skew_high:.2f})",
        f"hottest partition carries {r.shares.max():.1%} of traffic instead of {today.shares.max():.1%}"
        f" (an even spread over {r.partitions} would be {1 / r.partitions:.1%})",
        f"with {consumers} consumer(s) (range assignor) the busiest carries {_busiest(r, consumers):.1%}"
        f" instead of {_busiest(today, consumers):.1%}",
    ]
    return out + _hot_key_facts(today, w)[:1]


def _hot_key_facts(today: Result, w: WhatIf) -> list[str]:
    hot = w.hot_keys((), "", Salt(top=1))
    if not len(hot):
        return []
    key, share = hot["ckey"][0], float(hot["share"][0])
    out = [
        f"the hottest key {_show(key)} alone is {share:.1%} of keyed traffic: as long as it stays one key,"
        f" some partition carries at least that, whatever the partition count"
    ]
    c = today.consumer(max(w.consumers), "range")
    if c is not None and c.at_floor:
        out.append(
            f"adding consumers cannot split a partition: even {c.consumers} consumers leave one carrying"
            f" {c.busiest_share:.1%} (the hottest partition)"
        )
    return out


def _cost(r: Result, today: Result, w: WhatIf) -> list[str]:
    sc = r.scenario
    out = []
    exp = f", expected {r.expected_keys_moved_share:.1%} for any keys" if r.expected_keys_moved_share is not None else ""
    out.append(
        f"{_share(r.keys_moved_share)} of keys ({r.keys_moved:,}) and {r.traffic_moved_share:.1%} of traffic change"
        f" partition{exp}: their order breaks across the switch unless producers pause and consumers drain first"
    )
    out.append(f"ordering kept afterwards: {sc.order_scope}")
    if r.keys_split:
        out.append(
            f"{r.keys_split:,} key(s) ({r.order_lost_traffic_share:.1%} of traffic) spread over several partitions"
            " and lose per-key order"
        )
    if sc.salt:
        keys = ", ".join(_show(k) for k, _ in r.salted_keys[:5]) + (" ..." if len(r.salted_keys) > 5 else "")
        out.append(
            f"consumers must merge the salted keys' sub-streams ({keys} -> key#0..key#{sc.salt.buckets - 1}):"
            " aggregate on the original key, strip the '#n' suffix"
        )
    if sc.partitions > w.today_partitions:
        out.append(f"{sc.partitions - w.today_partitions} more partitions; Kafka cannot remove them again")
    return out


def _nothing_helps(today: Result, best: Result | None, c: Constraints, relax: list[dict]) -> str:
    head = "nothing under these constraints lowers the skew beyond sampling noise"
    if best is not None:
        head += (
            f" (today {today.skew:.2f}, {today.skew_low:.2f}-{today.skew_high:.2f}; best allowed"
            f" {best.scenario.label}: {best.skew:.2f}, up to {best.skew_high:.2f})"
        )
    if today.skew_high <= 1.1:
        head += "; today's load is already close to even"
    if relax:
        r = relax[0]
        head += f"; relax {r['constraint']} ({r['change']}): {r['scenario']} gives {r['skew']:.2f}"
    return head


def _relaxations(results, c: Constraints, n: int, today: Result, dis) -> list[dict]:
    """For each constraint, the best remedy if only that one were relaxed (and it helps)."""
    trials = []
    fields = []
    if c.keep_order_by != "none":
        for r in results:
            if r.scenario.key_fields:
                fields.extend(r.scenario.key_fields)
        for f in dict.fromkeys(fields):
            if f != c.keep_order_by:
                trials.append(("--keep-order-by", f"to {f}", Constraints(f, c.max_partitions, c.max_keys_moved)))
        trials.append(("--keep-order-by", "to none", Constraints("none", c.max_partitions, c.max_keys_moved)))
    trials.append(("--max-partitions", "raise it", Constraints(c.keep_order_by, 10**6, c.max_keys_moved)))
    if c.max_keys_moved < 1:
        trials.append(("--max-keys-moved", "to 1.0", Constraints(c.keep_order_by, c.max_partitions, 1.0)))
    out = []
    for name, change, relaxed in trials:
        ok = [r for r in results if not violations(r, relaxed, n)]
        strict = [r for r in ok if violations(r, c, n)]  # only what the relaxation newly allows
        if not strict:
            continue
        best = min(strict, key=lambda r: (r.skew_high, dis(r)))
        if best.skew_high < today.skew_low:
            out.append(
                {
                    "constraint": name,
                    "change": change,
                    "scenario": best.scenario.label,
                    "skew": best.skew,
                    "skew_high": best.skew_high,
                    "keys_moved_share": best.keys_moved_share,
                    "order": best.scenario.order_scope,
                }
            )
    # the mildest relaxation that allows a scenario names it (a field before "none")
    seen, unique = set(), []
    for d in out:
        if d["scenario"] not in seen:
            seen.add(d["scenario"])
            unique.append(d)
    unique.sort(key=lambda d: d["skew_high"])
    return unique


def _share(x: float) -> str:
    return "<0.1%" if 0 < x < 0.001 else f"{x:.1%}"


def _show(key: bytes) -> str:
    from .model.keys import key_label

    return key_label(key)


# --------------------------------------------------------------------------
# Producer snippets


def _py_bytes(k: bytes) -> str:
    return repr(bytes(k))


def _java_str(k: bytes) -> str:
    text = k.decode("utf-8", errors="strict")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def snippets(
    sc: Scenario, today_partitions: int, salted: list[tuple[bytes, float]] = (), topic: str = "TOPIC"
) -> dict[str, str]:
    """Short producer changes for kafka-python, confluent-kafka and the Java client.

    The key function is the exact rule keyscope evaluated; ``record`` stands
    for the decoded value the fields were captured from.
    """
    hot = [k for k, _ in salted]
    code = _CODE_RULE.get(get_partitioner(sc.partitioner).family)
    if code is None:  # a rule only its own client has (Sarama's custom hashers, KafkaJS legacy ...)
        out = {client: _keep_partitioner(sc, hot, topic, client) for client in ("kafka-python", "confluent-kafka", "java")}
    else:  # the same placement for every non-empty key: show it with the three clients' own settings
        as_code = replace(sc, partitioner=code)
        out = {
            "kafka-python": _kafka_python(as_code, hot, topic),
            "confluent-kafka": _confluent(as_code, hot, topic, _RDKAFKA_SETTING.get(sc.partitioner)),
            "java": _java(as_code, hot, topic),
        }
    if sc.partitions != today_partitions:
        out["topic"] = f"kafka-topics.sh --bootstrap-server HOST:9092 --alter --topic {topic} --partitions {sc.partitions}"
    return out


# Hash family -> the rule the snippets write code for; rules of a family agree on every non-empty key.
_CODE_RULE = {"murmur2": "murmur2", "crc32": "consistent", "fnv1a": "fnv1a"}
# librdkafka's own names for the non-random variants (null keys to one partition, the empty key hashed).
_RDKAFKA_SETTING = {"rdkafka-murmur2": "murmur2", "rdkafka-consistent": "consistent", "rdkafka-fnv1a": "fnv1a"}


def _keep_partitioner(sc: Scenario, hot: list[bytes], topic: str, client: str) -> str:
    """Only the key changes: the rule is one the producers' own client has and these clients lack."""
    rule = get_partitioner(sc.partitioner)
    keep = f"keep the partitioner your producers use now ({rule.name}: {rule.clients[0]}); only the key changes"
    if client == "java":
        lines = _java(replace(sc, partitioner="murmur2"), hot, topic).splitlines()
        return "\n".join(f"// {keep}" if "partitioner" in line and line.startswith("//") else line for line in lines)
    lines = _py_key_fn(sc, hot) if _needs_key_fn(sc) else []
    key = "keyscope_key(key, record)" if _needs_key_fn(sc) else "key"
    return "\n".join([f"# {keep}", *lines, "", f"producer.send({topic!r}, key={key}, value=value)" if client == "kafka-python"
                      else f"producer.produce({topic!r}, key={key}, value=value)"])


def _needs_key_fn(sc: Scenario) -> bool:
    return bool(sc.key_fields or sc.salt)


def _py_key_fn(sc: Scenario, hot: list[bytes]) -> list[str]:
    lines = []
    if sc.salt:
        lines.append("import mmh3  # pip install mmh3" if sc.salt.by != "offset" else "import itertools")
        inline, more = _inline(hot)
        literal = f"{{{', '.join(_py_bytes(k) for k in inline)}}}" if inline else "set()"
        lines.append(f"HOT = {literal}  # salted keys (keyscope){more}")
        if sc.salt.by == "offset":
            lines.append("_turn = itertools.count()  # round-robin salt; keyscope predicted with an equivalent even spread")
    lines.append("")
    lines.append("def keyscope_key(key: bytes, record: dict) -> bytes:")
    sep = sc.separator.encode()
    for f in sc.key_fields:
        lines.append(f"    if record.get({f!r}) is not None:")
        lines.append(f"        key = key + {_py_bytes(sep)} + str(record[{f!r}]).encode()")
    if sc.salt:
        lines.append("    if key in HOT:")
        if sc.salt.by == "offset":
            lines.append(f"        salt = next(_turn) % {sc.salt.buckets}")
        else:
            f = sc.salt.by
            lines.append(f"        data = b'' if record.get({f!r}) is None else str(record[{f!r}]).encode()")
            lines.append(f"        salt = mmh3.hash(data, {sc.salt.seed}, signed=False) % {sc.salt.buckets}")
        lines.append("        key = key + b'#' + str(salt).encode()")
    lines.append("    return key")
    return lines


def _kafka_python(sc: Scenario, hot: list[bytes], topic: str) -> str:
    lines = ["from kafka import KafkaProducer"]
    if _needs_key_fn(sc):
        lines += _py_key_fn(sc, hot)
        lines.append("")
    if sc.partitioner == "murmur2":
        lines.append("producer = KafkaProducer(bootstrap_servers='HOST:9092')  # default partitioner = murmur2")
    else:
        op = "zlib.crc32(k)" if sc.partitioner == "consistent" else "abs(fnv1a_signed(k)) "
        lines += ["import random, zlib", "from kafka.partitioner import Partitioner", ""]
        if sc.partitioner == "fnv1a":
            lines += [
                "def fnv1a_signed(data: bytes) -> int:",
                "    h = 0x811C9DC5",
                "    for b in data:",
                "        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF",
                "    return h - (1 << 32) if h & 0x80000000 else h",
                "",
            ]
        name = "Crc32Partitioner" if sc.partitioner == "consistent" else "Fnv1aPartitioner"
        lines += [
            f"class {name}(Partitioner):  # same placement as librdkafka's {sc.partitioner}",
            "    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):",
            "        parts = sorted(cluster.partitions_for_topic(topic))",
            "        k = serialized_key",
            "        if k is None" + (" or k == b''" if sc.partitioner == "consistent" else "") + ":",
            "            return random.choice(parts)",
            f"        return parts[{op.strip()} % len(parts)]",
            "",
            f"producer = KafkaProducer(bootstrap_servers='HOST:9092', partitioner={name}())",
        ]
    key = "keyscope_key(key, record)" if _needs_key_fn(sc) else "key"
    lines.append(f"producer.send({topic!r}, key={key}, value=value)")
    return "\n".join(lines)


def _confluent(sc: Scenario, hot: list[bytes], topic: str, setting: str | None = None) -> str:
    lines = ["from confluent_kafka import Producer"]
    if _needs_key_fn(sc):
        lines += _py_key_fn(sc, hot)
        lines.append("")
    conf = setting or {"murmur2": "murmur2_random", "consistent": "consistent_random", "fnv1a": "fnv1a_random"}[sc.partitioner]
    note = "  # the default" if conf == "consistent_random" else ""
    lines.append(f"producer = Producer({{'bootstrap.servers': 'HOST:9092', 'partitioner': '{conf}'}}){note}")
    key = "keyscope_key(key, record)" if _needs_key_fn(sc) else "key"
    lines.append(f"producer.produce({topic!r}, key={key}, value=value)")
    return "\n".join(lines)


def _java(sc: Scenario, hot: list[bytes], topic: str) -> str:
    lines = []
    text_keys = all(_is_text(k) for k in hot)
    if _needs_key_fn(sc):
        if sc.salt:
            if text_keys:
                lines.append(f"static final Set<String> HOT = Set.of({', '.join(_java_str(k) for k in hot)});")
            else:
                lines.append("// salted keys are binary or long: compare their bytes (hex) "
                             + ", ".join(k.hex() if len(k) <= MAX_INLINE_KEY else f"({len(k):,} bytes)" for k in hot))
                lines.append("static final Set<String> HOT = Set.of(/* keys as the producer builds them */);")
            if sc.salt.by == "offset":
                lines.append("static final AtomicLong TURN = new AtomicLong();  // round-robin salt")
        fields = ", ".join(f"String {_java_ident(f)}" for f in dict.fromkeys(sc.key_fields + ((sc.salt.by,) if sc.salt and sc.salt.by != "offset" else ())))
        lines.append(f"static String keyscopeKey(String key{', ' + fields if fields else ''}) {{")
        for f in sc.key_fields:
            v = _java_ident(f)
            lines.append(f"    if ({v} != null) key = key + {_java_str(sc.separator.encode())} + {v};")
        if sc.salt:
            lines.append("    if (HOT.contains(key)) {")
            if sc.salt.by == "offset":
                lines.append(f"        long salt = TURN.getAndIncrement() % {sc.salt.buckets};")
            else:
                v = _java_ident(sc.salt.by)
                lines.append(f"        byte[] d = ({v} == null ? \"\" : {v}).getBytes(StandardCharsets.UTF_8);")
                lines.append("        // commons-codec: MurmurHash3.hash32x86 == Python mmh3.hash")
                lines.append(f"        int h = MurmurHash3.hash32x86(d, 0, d.length, {sc.salt.seed});")
                lines.append(f"        int salt = Integer.remainderUnsigned(h, {sc.salt.buckets});")
            lines.append('        key = key + "#" + salt;')
            lines.append("    }")
        lines.append("    return key;")
        lines.append("}")
        lines.append("")
    if sc.partitioner == "murmur2":
        lines.append("// the Java client's default partitioner is murmur2: no partitioner setting needed")
    else:
        name = "Crc32Partitioner" if sc.partitioner == "consistent" else "Fnv1aPartitioner"
        body = (
            ["        CRC32 crc = new CRC32(); crc.update(keyBytes);", "        return (int) (crc.getValue() % n);"]
            if sc.partitioner == "consistent"
            else [
                "        int h = 0x811C9DC5;",
                "        for (byte b : keyBytes) { h ^= (b & 0xff); h *= 0x01000193; }",
                "        return Math.abs(h % n);",
            ]
        )
        empty = " || keyBytes.length == 0" if sc.partitioner == "consistent" else ""
        lines += [
            f"public class {name} implements Partitioner {{  // = librdkafka {sc.partitioner}",
            "    public int partition(String topic, Object key, byte[] keyBytes, Object value, byte[] valueBytes, Cluster cluster) {",
            "        int n = cluster.partitionsForTopic(topic).size();",
            f"        if (keyBytes == null{empty}) return ThreadLocalRandom.current().nextInt(n);",
            *body,
            "    }",
            "    public void configure(Map<String, ?> configs) {}",
            "    public void close() {}",
            "}",
            f"props.put(ProducerConfig.PARTITIONER_CLASS_CONFIG, {name}.class.getName());",
        ]
    args = ", ".join(["key", *(_java_ident(f) for f in dict.fromkeys(sc.key_fields + ((sc.salt.by,) if sc.salt and sc.salt.by != "offset" else ())))])
    key = f"keyscopeKey({args})" if _needs_key_fn(sc) else "key"
    lines.append(f"producer.send(new ProducerRecord<>({_java_str(topic.encode())}, {key}, value));")
    return "\n".join(lines)


def _is_text(k: bytes) -> bool:
    """Can the key be a string literal in a snippet?  The one display rule, and short enough to paste."""
    from .model.keys import key_display_one

    return len(k) <= MAX_INLINE_KEY and key_display_one(k)[1] == "utf8"


def _inline(hot: list[bytes]) -> tuple[list[bytes], str]:
    """Hot keys short enough to paste into a snippet, and a note for the rest."""
    keep = [k for k in hot if len(k) <= MAX_INLINE_KEY]
    skipped = [k for k in hot if len(k) > MAX_INLINE_KEY]
    if not skipped:
        return keep, ""
    from .model.keys import byte_size

    sizes = ", ".join(byte_size(len(k)) for k in skipped[:3])
    return keep, f"; {len(skipped)} more too long to paste ({sizes}): add them as the producer builds them"


def _java_ident(name: str) -> str:
    import re

    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    ident = (parts[0].lower() + "".join(p[:1].upper() + p[1:] for p in parts[1:])) if parts else "field"
    return ident if not ident[0].isdigit() else "f" + ident


def migration_notes(sc: Scenario, today_partitions: int, today_partitioner: str) -> list[str]:
    notes = []
    if sc.partitions != today_partitions or sc.partitioner != today_partitioner or sc.key_fields or sc.salt:
        notes.append(
            "keys that change partition lose order across the switch: pause the producers, let every consumer"
            " group drain (lag 0), make the change, then resume"
        )
    if sc.partitions != today_partitions:
        notes.append(
            f"grow the topic to {sc.partitions} partitions while producers are paused; producers pick the new count"
            " up on their next metadata refresh (metadata.max.age.ms), so restart them or wait it out before resuming"
        )
    if sc.partitioner != today_partitioner:
        notes.append("switch every producer of the topic at once: mixed partitioners put one key on two partitions")
    if sc.key_fields:
        notes.append(
            f"consumers relying on per-key order get it per {sc.key_expression} only; deploy the new key function"
            " to every producer together"
        )
    if sc.salt:
        notes.append(
            "deploy salt-aware consumers first (they must accept key#n and merge on the original key), then the producers;"
            f" the rule is {salt_rule(sc.salt)}"
        )
        notes.append("re-run keyscope after a while: the hot-key list is a snapshot of this sample")
    return notes
