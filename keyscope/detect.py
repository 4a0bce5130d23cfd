"""Which partitioner wrote this topic, judged from where each keyed record sits.

Works on the (key, partition) table, so every hash is computed once per
distinct key.  Rules come in *families* (keyscope.partitioners.FAMILIES): the
rules of one family put every non-empty key on the same partition and differ
only in the empty and the null key.  So the family is judged on non-empty keys
alone, and the empty and null keys are evidence apart, for the rule within the
family (``rule_evidence``).  A family "explains" the topic when every non-empty
keyed record sits on ``hash % n``.

When none does: placement that does not depend on the key at all (random,
round-robin, sticky, explicit partitions) agrees with every family at chance,
about 1/n, and splits repeated keys; two producers with different rules, or a
partition count that changed, leave every record explained by one of two rules
(or by ``hash % m`` for an earlier ``m < n``).  The offsets and timestamps
decide between "at the same time" and "one after the other", counting batches,
not records, because producers interleave whole batches.
"""

from __future__ import annotations

import math
from itertools import combinations

from .partitioners import FAMILIES, KEYED, PARTITIONERS, family_partition, hash_column

# A named verdict needs a wrong family's chance of matching every key to be below this.
CHANCE_LIMIT = 1e-3
# Mismatching records "stopped" (a switch, a count change) when, with batches of
# either kind interleaved at random, this few orders would end with as many
# batches of the other kind as seen.
ORDERED_CHANCE = 1e-3
# Agreement this many standard errors above chance (1/n) is not chance.
CHANCE_SIGMAS = 4.0

# The rule that names each family in ``agreement`` (the family's first rule).
FAMILY_RULE = {}
for _name in KEYED:
    FAMILY_RULE.setdefault(PARTITIONERS[_name].family, _name)
RULES_OF = {f: [n for n in KEYED if PARTITIONERS[n].family == f] for f in FAMILIES}


def detect_partitioner(kp, partitions: int, records=None, null_keys: dict | None = None) -> dict:
    """Verdict on the producers' partitioner.

    ``kp``: the keyed (key, partition, records) table; ``records``: the
    sample's frame (offsets, timestamps, null keys), read again for the
    empty/null-key evidence and when the verdict is "mixed".  ``null_keys``
    (partition -> null-key records) stands in for ``records``' null keys when
    given, so the key column need not be read for them.  Returns plain data
    (docs/analyze.md, ``partitioner``).
    """
    import polars as pl

    keyed = int(kp["records"].sum()) if kp.height else 0
    out: dict = {
        "verdict": "no-keys",
        "keyed_records": keyed,
        "distinct_keys": 0,
        "split_keys": 0,
        "agreement": {},
        "candidates": [],
        "chance_match_probability": None,
        "rule_evidence": None,
        "mixed": None,
        "explanation": "",
    }
    if keyed == 0 or partitions < 1:
        out["explanation"] = "no keyed records: nothing tells which partitioner the producers use"
        return out

    n = partitions
    keys = kp.group_by("key").agg(pl.len().alias("n_partitions"), pl.col("records").sum().alias("key_records"))
    out["distinct_keys"] = keys.height
    # Empty keys are judged apart: rules of one family differ on them.
    keys = keys.filter(pl.col("key").bin.size() > 0)
    out["split_keys"] = int((keys["n_partitions"] > 1).sum())
    table = kp.filter(pl.col("key").bin.size() > 0)
    if table.height == 0:
        out["verdict"] = "ambiguous"
        out["candidates"] = list(KEYED)
        out["explanation"] = "only empty keys: every rule puts them on one partition, or at random"
        return out
    ops = {f: hash_column(keys["key"], FAMILY_RULE[f]).alias(f) for f in FAMILIES}
    table = table.join(keys.select("key", *ops.values()), on="key", how="left")
    match = {f: (pl.col(f) % n == pl.col("partition").cast(pl.UInt32)).fill_null(False) for f in FAMILIES}
    sums = table.select(
        *[pl.col("records").filter(match[f]).sum().alias(f) for f in FAMILIES], pl.col("records").sum().alias("_all")
    ).row(0, named=True)
    hashed = int(sums["_all"] or 0)
    for f in FAMILIES:
        matched = int(sums[f] or 0)
        out["agreement"][FAMILY_RULE[f]] = {
            "matched_records": matched,
            "hashed_records": hashed,
            "fraction": matched / hashed if hashed else None,
            "formula": FAMILIES[f][2].replace("% n", f"% {n}"),
            "rules": RULES_OF[f],
        }
    full = [f for f in FAMILIES if hashed and int(sums[f] or 0) == hashed]
    distinct = keys.height
    # The chance that a wrong family matches every distinct key: families are not
    # independent (a mask and an abs of one hash agree on half the keys and on 1/n
    # of the rest), so per key it is at least (1 + 1/n) / 2, or what the closest
    # other family is seen to match.
    others = [int(sums[f] or 0) / hashed for f in FAMILIES if f not in full[:1]] if hashed else [0.0]
    per_key = min(1.0, max((1 + 1 / n) / 2, max(others, default=0.0))) if n > 1 else 1.0
    chance = math.exp(distinct * math.log(per_key)) if per_key > 0 else 0.0
    out["chance_match_probability"] = chance

    if n == 1:
        out["verdict"] = "ambiguous"
        out["candidates"] = list(KEYED)
        out["explanation"] = "one partition: every partitioner puts every key on partition 0"
        return out
    if len(full) == 1:
        fam = full[0]
        ev = _rule_evidence(fam, kp, n, records, null_keys)
        out["rule_evidence"] = ev
        out["verdict"] = ev["rule"]
        out["candidates"] = ev["candidates"]
        p = PARTITIONERS[ev["rule"]]
        out["explanation"] = f"every non-empty keyed record sits where {fam} puts it ({', '.join(p.clients)})"
        if ev["notes"]:
            out["explanation"] += "; " + "; ".join(ev["notes"])
        if chance > CHANCE_LIMIT:
            out["explanation"] += f"; but only {distinct} distinct key(s), so this could be chance"
        return out
    if len(full) > 1:
        out["verdict"] = "ambiguous"
        out["candidates"] = [r for f in full for r in RULES_OF[f]]
        out["explanation"] = (
            f"{' and '.join(full)} both explain every keyed record "
            f"({distinct} distinct key(s) are too few to tell them apart)"
        )
        return out

    indep = _key_independent(out, keys, n, hashed)
    if indep is not None:
        out["verdict"], out["explanation"] = indep
        if out["verdict"] == "key-independent":
            out["candidates"] = [name for name, p in PARTITIONERS.items() if p.key_independent]
        return out
    pair = _pair_explaining_all(table, match)
    if out["split_keys"] or pair:
        out["verdict"] = "mixed"
        out["mixed"] = _explain_mixed(table, match, n, pair, out, records)
        out["explanation"] = out["mixed"]["explanation"]
        return out
    best = max(out["agreement"].items(), key=lambda kv: kv[1]["fraction"] or 0.0)
    out["verdict"] = "unknown"
    out["explanation"] = (
        "no known partitioner explains the keyed records (best: "
        f"{best[0]} at {100 * (best[1]['fraction'] or 0):.1f}%, chance level is {100 / n:.1f}%): "
        "a custom partitioner, or producers choosing partitions explicitly"
    )
    return out


def _key_independent(out: dict, keys, n: int, hashed: int) -> tuple[str, str] | None:
    """("key-independent" | "unknown", why) when every family agrees only at chance, else None.

    Placement that ignores the key matches any hash rule for ~1/n of records.
    That alone does not prove key independence (a custom rule does the same);
    keys that repeat and land on several partitions do.
    """
    import polars as pl

    p0 = 1 / n
    se = math.sqrt(p0 * (1 - p0) / hashed)
    fractions = {name: a["fraction"] or 0.0 for name, a in out["agreement"].items()}
    if max(fractions.values()) > p0 + CHANCE_SIGMAS * se:
        return None
    lo, hi = min(fractions.values()), max(fractions.values())
    seen = f"every rule agrees at chance: {100 * lo:.1f}-{100 * hi:.1f}% of keyed records, chance is {100 * p0:.1f}%"
    repeated = keys.filter(pl.col("key_records") > 1)
    split = int((repeated["n_partitions"] > 1).sum()) if repeated.height else 0
    if repeated.height and split:
        return "key-independent", (
            f"placement does not depend on the key ({seen}; {split:,} of {repeated.height:,} repeated keys sit on "
            "more than one partition): random, round-robin or sticky partitioning, or explicit partitions"
        )
    if repeated.height:
        return "unknown", (
            f"no known rule ({seen}), yet each of {repeated.height:,} repeated keys stays on one partition: "
            "a custom partitioner that hashes the key"
        )
    return "unknown", (
        f"no known rule ({seen}); no key repeats, so placement that ignores the key (random, round-robin, "
        "explicit partitions) and a custom key rule look the same"
    )


def _rule_evidence(fam: str, kp, n: int, records, null_keys: dict | None = None) -> dict:
    """Which rule of family ``fam``: where the empty-key and the null-key records sit.

    A record off the partition a rule gives the empty key rules out that the
    rule hashes it (exact).  All of them on that partition favours hashing
    for the empty key; for null keys it does not decide, because one sticky
    batch run lands there too (chance 1/n), so the family's usual rule stays
    the verdict and the other is listed as a candidate.
    """
    import polars as pl

    rules = RULES_OF[fam]
    target = family_partition(fam, b"", n)
    empty = kp.filter(pl.col("key").bin.size() == 0)
    empty_parts = sorted(empty["partition"].unique().to_list()) if empty.height else []
    empty_n = int(empty["records"].sum()) if empty.height else 0
    null_parts, null_n = [], 0
    if null_keys is not None:
        null_n = int(sum(null_keys.values()))
        null_parts = sorted(int(p) for p, v in null_keys.items() if v)
    elif records is not None and "key" in records.columns:
        nulls = records.filter(pl.col("key").is_null())
        null_n = nulls.height
        null_parts = sorted(nulls["partition"].unique().to_list()) if null_n else []

    def side(count, parts):
        if not count:
            return None
        return parts == [target]

    e_on, z_on = side(empty_n, empty_parts), side(null_n, null_parts)
    cands = [r for r in rules
             if (e_on is None or e_on or not PARTITIONERS[r].empty_key_hashed)
             and (z_on is None or z_on or not PARTITIONERS[r].null_key_hashed)]  # fmt: skip
    cands = cands or list(rules)
    # The empty key decides when its records all sit on the hashed partition.
    if e_on:
        cands = [r for r in cands if PARTITIONERS[r].empty_key_hashed] or cands
    # Null keys on the fixed partition only *allow* the null-hashing rule.
    rule = next((r for r in cands if not PARTITIONERS[r].null_key_hashed), cands[0])
    notes = []
    if empty_n:
        notes.append(
            f"{empty_n:,} empty-key record(s) "
            + (f"all on partition {target}, where {fam} hashes the empty key" if e_on
               else f"on partition(s) {_parts(empty_parts)}, not all on {target}: the empty key is not hashed")  # fmt: skip
        )
    if null_n:
        if z_on:
            others = [r for r in cands if PARTITIONERS[r].null_key_hashed]
            alt = (f": {', '.join(others)} ({'; '.join(PARTITIONERS[others[0]].clients)}) puts null keys there, "
                   f"a sticky producer by chance (1/{n})") if others else ""  # fmt: skip
            notes.append(f"{null_n:,} null-key record(s) all on partition {target}{alt}")
        else:
            notes.append(f"{null_n:,} null-key record(s) on partition(s) {_parts(null_parts)}: null keys are not hashed")
    return {
        "rule": rule,
        "candidates": cands,
        "empty_key": {"records": empty_n, "partitions": empty_parts, "hashed_partition": target,
                      "all_on_hashed_partition": e_on},  # fmt: skip
        "null_key": {"records": null_n, "partitions": null_parts, "hashed_partition": target,
                     "all_on_hashed_partition": z_on},  # fmt: skip
        "notes": notes,
    }


def _parts(parts: list[int]) -> str:
    return ", ".join(str(p) for p in parts[:8]) + (", ..." if len(parts) > 8 else "")


def current_partitioner(det: dict) -> str | None:
    """The rule producers use *now*, from a detection: the verdict, or after a switch the new rule."""
    verdict = det.get("verdict")
    if verdict in PARTITIONERS and not PARTITIONERS[verdict].key_independent:
        return verdict
    mixed = det.get("mixed") or {}
    if mixed.get("switched_to"):
        return mixed["switched_to"]
    if mixed.get("likelier") == "partition-count-changed":
        return mixed.get("majority_partitioner")
    return None


def _pair_explaining_all(table, match) -> list[str] | None:
    import polars as pl

    names = list(match)
    best = None
    for a, b in combinations(names, 2):
        miss = table.select(pl.col("records").filter(~(match[a] | match[b])).sum()).item() or 0
        if miss == 0:
            share = table.select(pl.col("records").filter(match[a]).sum()).item() or 0
            cand = (share, [a, b])
            best = cand if best is None or cand[0] > best[0] else best
    return best[1] if best else None


def _explain_mixed(table, match, n: int, pair, out: dict, records) -> dict:
    """Two producers (at once, or one after the other), or a partition count that changed."""
    import polars as pl

    agreement = {f: out["agreement"][FAMILY_RULE[f]] for f in match}
    best = max(agreement, key=lambda k: agreement[k]["matched_records"])
    mism = table.filter(~match[best] & pl.col(best).is_not_null())
    mism_records = int(mism["records"].sum()) if mism.height else 0
    # Earlier partition count m < n under the best family.
    prev_m, prev_share = None, 0.0
    if mism_records:
        for m in range(1, n):
            hit = mism.select(
                pl.col("records").filter(pl.col(best) % m == pl.col("partition").cast(pl.UInt32)).sum()
            ).item() or 0
            share = hit / mism_records
            if share > prev_share:
                prev_m, prev_share = m, share
    count_change = prev_m is not None and prev_share >= 1.0
    res = {
        "likelier": "unexplained",
        "partitioners": [FAMILY_RULE[best]],
        "majority_partitioner": FAMILY_RULE[best],
        "mismatching_records": mism_records,
        "previous_partition_count": prev_m if count_change else None,
        "switched_from": None,
        "switched_to": None,
        "trailing_matching_records": None,
        "interleaved_chance": None,
        "batch_size_estimate": None,
        "explanation": "",
    }
    split = out["split_keys"]
    lead = f"{split} key(s) sit on more than one partition; " if split else ""

    def stopped(x, y):
        run = _stopped(table, x, y, records)
        return run, run is not None and run[1] < ORDERED_CHANCE

    if count_change:
        # the mismatching (older-count) records stop; everything after them matches
        run, ordered = stopped(~match[best], match[best])
        if ordered or not pair:
            res.update(likelier="partition-count-changed", trailing_matching_records=run and run[0],
                       interleaved_chance=run and run[1], batch_size_estimate=run and run[2])  # fmt: skip
            res["explanation"] = (
                f"{lead}the partition count likely changed from {prev_m} to {n}: all {mism_records:,} "
                f"records that {FAMILY_RULE[best]} does not place at {n} partitions sit where it puts them at {prev_m}"
                + (f"; they stop: the last {run[0]:,} records of their partitions all match "
                   f"(chance if batches were interleaved: {_chance(run[1])})" if ordered else "")  # fmt: skip
            )
            return res
    if pair:
        a, b = (best, pair[1] if pair[0] == best else pair[0])
        only_a, only_b = match[a] & ~match[b], match[b] & ~match[a]
        a_then_b, a_first = stopped(only_a, only_b)
        b_then_a, b_first = stopped(only_b, only_a)
        ra, rb = FAMILY_RULE[a], FAMILY_RULE[b]
        res.update(likelier="two-producers", partitioners=[ra, rb])
        if a_first or b_first:
            first_a = a_first and (not b_first or a_then_b[1] <= b_then_a[1])
            old, new, run = (ra, rb, a_then_b) if first_a else (rb, ra, b_then_a)
            res.update(switched_from=old, switched_to=new, trailing_matching_records=run[0],
                       interleaved_chance=run[1], batch_size_estimate=run[2])  # fmt: skip
            res["explanation"] = (
                f"{lead}producers switched from {old} to {new}: every keyed record sits where one of them "
                f"puts it, and records only {old} explains stop: the last {run[0]:,} records that tell them apart "
                f"all follow {new} (chance if their batches were interleaved: {_chance(run[1])}); "
                "e.g. a move between client libraries"
            )
        else:
            run = a_then_b or b_then_a
            res.update(trailing_matching_records=run and run[0], interleaved_chance=run and run[1],
                       batch_size_estimate=run and run[2])  # fmt: skip
            res["explanation"] = (
                f"{lead}two producers with different partitioners write at the same time: every keyed record "
                f"sits where {ra} or {rb} puts it, their batches interleaved up to the newest records"
            )
        return res
    run, _ = stopped(~match[best], match[best])
    res.update(trailing_matching_records=run and run[0], interleaved_chance=run and run[1],
               batch_size_estimate=run and run[2])  # fmt: skip
    res["explanation"] = (
        f"{lead}no single known partitioner, pair of them, or earlier partition count explains them all "
        f"(best: {FAMILY_RULE[best]}, {100 * (agreement[best]['fraction'] or 0):.1f}% of keyed records)"
    )
    return res


def _chance(p: float) -> str:
    return "< 1e-300" if p <= 0 else f"{p:.0e}"


def _stopped(table, x_expr, y_expr, records) -> tuple[int, float, float] | None:
    """Did records of kind x stop while kind y went on?

    Returns (y records after the last x record, the chance of that if the two
    kinds' *batches* were interleaved at random, the batch size b assumed).

    Producers interleave whole batches, not records, so the unit is a batch.
    In each partition (offset order) consecutive records of one kind form a
    run; the runs that lie between two runs of the other kind show how many
    records a batch holds (b: their median), and a run counts as
    max(1, round(len / b)) batches.  When no partition interleaves the kinds
    at all, b = 1: hundreds of records of one kind, then hundreds of the other,
    in every partition, is not what two producers writing at once leave.
    With record timestamps, batches are ordered in time across partitions and
    the chance that the last T of X + Y batches are all y is
    C(X+Y-T, X) / C(X+Y, X); without, each partition's trailing run is judged
    on its own (geometric runs, summed: negative binomial).
    """
    import polars as pl

    if records is None or "offset" not in records.columns:
        return None
    has_ts = "timestamp" in records.columns and records["timestamp"].null_count() < records.height
    flags = table.select("key", "partition", x_expr.alias("_x"), y_expr.alias("_y"))
    cols = ["key", "partition", "offset"] + (["timestamp"] if has_ts else [])
    recs = (
        records.lazy()
        .filter(pl.col("key").is_not_null())
        .select(cols)
        .join(flags.lazy().filter(pl.col("_x") | pl.col("_y")), on=["key", "partition"], how="inner")
        .sort("partition", "offset")
        .with_columns(
            (pl.col("_x") != pl.col("_x").shift(1).over("partition")).fill_null(True).cum_sum().alias("_run"),
            (pl.col("timestamp").dt.epoch("ms") if has_ts else pl.col("offset")).alias("_t"),
        )
        .collect()
    )
    if recs.height == 0 or not recs["_x"].any():
        return None
    runs = (
        recs.group_by("partition", "_run")
        .agg(pl.col("_x").first(), pl.len().alias("len"), pl.col("_t").min().alias("t0"), pl.col("_t").max().alias("t1"))
        .with_columns(
            (pl.col("_run") > pl.col("_run").min().over("partition")).alias("_after_first"),
            (pl.col("_run") < pl.col("_run").max().over("partition")).alias("_before_last"),
        )
    )
    interior = runs.filter(pl.col("_after_first") & pl.col("_before_last"))["len"]
    b = float(interior.median()) if interior.len() >= 3 else 1.0
    runs = runs.with_columns((pl.col("len") / b).round().clip(lower_bound=1).cast(pl.Int64).alias("_u"))
    xs, ys = runs.filter(pl.col("_x")), runs.filter(~pl.col("_x"))
    X, Y = int(xs["_u"].sum()), int(ys["_u"].sum())
    if has_ts:
        trailing = ys.filter(pl.col("t0") > xs["t1"].max())
    else:
        last = xs.group_by("partition").agg(pl.col("_run").max().alias("_lx"))
        trailing = ys.join(last, on="partition", how="inner").filter(pl.col("_run") > pl.col("_lx"))
    T = int(trailing["_u"].sum()) if trailing.height else 0
    after = int(trailing["len"].sum()) if trailing.height else 0
    if T == 0 or Y == 0:
        return after, 1.0, b
    if has_ts:
        chance = math.exp(_log_comb(X + Y - T, X) - _log_comb(X + Y, X))
    else:
        from .stats import binomial_cdf

        k, q = xs["partition"].n_unique(), X / (X + Y)
        # P(sum of k geometric runs >= T) = P(fewer than k x-batches in the last T + k - 1).
        chance = binomial_cdf(k - 1, T + k - 1, q) if q < 1.0 else 1.0
    return after, min(max(chance, 0.0), 1.0), b


def _log_comb(n: int, k: int) -> float:
    if k < 0 or k > n:
        return -math.inf
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
