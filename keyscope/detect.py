"""Which partitioner wrote this topic, judged from where each keyed record sits.

Works on the (key, partition) table, so every hash is computed once per
distinct key.  A partitioner family "explains" the topic when every keyed
record it hashes sits on ``hash % n``.  When the same key sits on more than one
partition, something mixed: two producers with different partitioners, or a
partition count that changed (old records follow ``hash % m`` for an earlier
``m < n`` and are older in their partition).  The offsets decide which.
"""

from __future__ import annotations

import math
from itertools import combinations

from .partitioners import PARTITIONERS, hash_column

# A named verdict needs a wrong family's chance of matching every key to be below this.
CHANCE_LIMIT = 1e-3
# If mismatching records were interleaved at random with the rest, partitions
# would not end with long runs of matching records; below this chance of runs
# as long as those seen, the mismatches stopped at some point (ordered in time).
ORDERED_CHANCE = 1e-3


def detect_partitioner(kp, partitions: int, records=None) -> dict:
    """Verdict on the producers' partitioner.

    ``kp``: the keyed (key, partition, records) table; ``records``: the
    sample's frame, read again only when the verdict is "mixed" (for the
    offsets).  Returns plain data (see docs/json-schema.md, ``partitioner``).
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
        "mixed": None,
        "explanation": "",
    }
    if keyed == 0 or partitions < 1:
        out["explanation"] = "no keyed records: nothing tells which partitioner the producers use"
        return out

    keys = kp.group_by("key").agg(pl.len().alias("n_partitions"))
    out["distinct_keys"] = keys.height
    out["split_keys"] = int((keys["n_partitions"] > 1).sum())
    ops = {name: hash_column(keys["key"], p).alias(name) for name, p in PARTITIONERS.items()}
    table = kp.join(keys.select("key", *ops.values()), on="key", how="left")
    n = partitions
    match = {
        name: (pl.col(name) % n == pl.col("partition").cast(pl.UInt32)).fill_null(False) for name in PARTITIONERS
    }
    sums = table.select(
        *[pl.col("records").filter(match[name]).sum().alias(f"m_{name}") for name in PARTITIONERS],
        *[pl.col("records").filter(pl.col(name).is_not_null()).sum().alias(f"h_{name}") for name in PARTITIONERS],
    ).row(0, named=True)
    hashed_keys = {name: int(ops[name].is_not_null().sum()) for name in PARTITIONERS}
    for name, p in PARTITIONERS.items():
        matched, hashed = int(sums[f"m_{name}"] or 0), int(sums[f"h_{name}"] or 0)
        out["agreement"][name] = {
            "matched_records": matched,
            "hashed_records": hashed,
            "fraction": (matched / hashed) if hashed else None,
            "formula": p.formula.split("  (")[0].replace("% n", f"% {n}"),
        }
    full = [name for name, a in out["agreement"].items() if a["hashed_records"] and a["matched_records"] == a["hashed_records"]]
    distinct = max(hashed_keys.values())
    chance = math.exp(-distinct * math.log(n)) if n > 1 else 1.0
    out["chance_match_probability"] = chance

    if n == 1:
        out["verdict"] = "ambiguous"
        out["candidates"] = list(PARTITIONERS)
        out["explanation"] = "one partition: every partitioner puts every key on partition 0"
        return out
    if len(full) == 1:
        name = full[0]
        out["verdict"] = name
        out["candidates"] = full
        out["explanation"] = (
            f"every keyed record sits where {name} puts it "
            f"({', '.join(PARTITIONERS[name].clients)})"
        )
        if chance > CHANCE_LIMIT:
            out["explanation"] += f"; but only {distinct} distinct key(s), so this could be chance"
        return out
    if len(full) > 1:
        out["verdict"] = "ambiguous"
        out["candidates"] = full
        out["explanation"] = (
            f"{' and '.join(full)} both explain every keyed record "
            f"({distinct} distinct key(s) are too few to tell them apart)"
        )
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

    agreement = out["agreement"]
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
        "partitioners": [best],
        "majority_partitioner": best,
        "mismatching_records": mism_records,
        "previous_partition_count": prev_m if count_change else None,
        "switched_from": None,
        "switched_to": None,
        "trailing_matching_records": None,
        "interleaved_chance": None,
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
                       interleaved_chance=run and run[1])  # fmt: skip
            res["explanation"] = (
                f"{lead}the partition count likely changed from {prev_m} to {n}: all {mism_records:,} "
                f"records that {best} does not place at {n} partitions sit where it puts them at {prev_m}"
                + (f"; they stop: the last {run[0]:,} records of their partitions all match "
                   f"(chance if interleaved: {_chance(run[1])})" if ordered else "")  # fmt: skip
            )
            return res
    if pair:
        a, b = (best, pair[1] if pair[0] == best else pair[0])
        only_a, only_b = match[a] & ~match[b], match[b] & ~match[a]
        a_then_b, a_first = stopped(only_a, only_b)
        b_then_a, b_first = stopped(only_b, only_a)
        res.update(likelier="two-producers", partitioners=[a, b])
        if a_first or b_first:
            old, new, run = (a, b, a_then_b) if a_first and (not b_first or a_then_b[1] <= b_then_a[1]) else (b, a, b_then_a)
            res.update(switched_from=old, switched_to=new, trailing_matching_records=run[0], interleaved_chance=run[1])
            res["explanation"] = (
                f"{lead}producers switched from {old} to {new}: every keyed record sits where one of them "
                f"puts it, and records only {old} explains stop: the last {run[0]:,} records that tell them apart "
                f"all follow {new} (chance if interleaved: {_chance(run[1])}); e.g. a move between client libraries"
            )
        else:
            run = a_then_b or b_then_a
            res.update(trailing_matching_records=run and run[0], interleaved_chance=run and run[1])
            res["explanation"] = (
                f"{lead}two producers with different partitioners write at the same time: every keyed record "
                f"sits where {a} or {b} puts it, interleaved up to the newest records"
            )
        return res
    run, _ = stopped(~match[best], match[best])
    res.update(trailing_matching_records=run and run[0], interleaved_chance=run and run[1])
    res["explanation"] = (
        f"{lead}no single known partitioner, pair of them, or earlier partition count explains them all "
        f"(best: {best}, {100 * (agreement[best]['fraction'] or 0):.1f}% of keyed records)"
    )
    return res


def _chance(p: float) -> str:
    return "< 1e-300" if p <= 0 else f"{p:.0e}"


def _stopped(table, x_expr, y_expr, records) -> tuple[int, float] | None:
    """Did records of kind x stop while kind y went on?  (y records after each partition's
    last x record, and the chance of runs that long if x and y were interleaved.)

    Under interleaving at the observed rate q of x among x-or-y records, a run
    of L y-records has chance (1 - q)^L; summed over k partitions the runs are
    negative binomial.  One pass over the records (mixed case only).
    """
    import polars as pl

    if records is None or "offset" not in records.columns:
        return None
    flags = table.select("key", "partition", x_expr.alias("_x"), y_expr.alias("_y"))
    per = (
        records.lazy()
        .filter(pl.col("key").is_not_null())
        .select("key", "partition", "offset")
        .join(flags.lazy().filter(pl.col("_x") | pl.col("_y")), on=["key", "partition"], how="inner")
        .with_columns(pl.col("offset").filter(pl.col("_x")).max().over("partition").alias("_last_x"))
        .filter(pl.col("_last_x").is_not_null())
        .group_by("partition")
        .agg(
            pl.len().alias("n"),
            pl.col("_x").sum().alias("x"),
            (pl.col("offset") > pl.col("_last_x")).sum().alias("after"),
        )
        .collect()
    )
    if per.height == 0:
        return None
    from scipy.special import bdtr  # binomial CDF without scipy.stats' import

    n, x, after = int(per["n"].sum()), int(per["x"].sum()), int(per["after"].sum())
    k = per.height
    q = x / n if n else 0.0
    # P(sum of k geometric runs >= L) = P(fewer than k x-records in the last L + k - 1).
    chance = float(bdtr(k - 1, after + k - 1, q)) if after and q < 1.0 else 1.0
    return after, min(max(chance, 0.0), 1.0)
