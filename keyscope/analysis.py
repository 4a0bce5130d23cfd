"""Analysis of a Sample: partition load, hot keys, baseline, uncertainty, partitioner.

Everything is computed from one pass over the records: the (key, partition)
table (``group_by(key, partition)``), from which per-partition sums and the
distinct-key table follow at the size of the key set, not of the sample.
Hashes are computed per distinct key (:mod:`keyscope.detect`).

Load basis.  Sample counts are the load only when the sample is a random or
time-window slice of the topic.  ``keyscope sample --from latest`` takes the
same number of records from every partition, so its counts are flat by
construction; then each partition's real rate (offsets advanced per second of
record timestamps) is the load, and each sampled record stands for
``rate_p / sampled_p`` records/s of its partition (a stratified sample).
``load="auto"`` picks the rate basis when the sample looks capped per
partition and every partition has a rate.

The result is plain data (:class:`Analysis`, ``to_dict()``), rendered by the CLI.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from .errors import UnfairSample, UsageError
from .stats import (
    CONFIDENCE,
    chi_square_uniform,
    clamp_min,
    coefficient_of_variation,
    gini,
    max_share_interval,
    normal_interval,
    random_hashing_skews,
    ratio_share_se,
    skew_ratio,
    wilson_interval,
    z_value,
)

BY = ("records", "bytes")
LOADS = ("auto", "sample", "watermarks", "rate")
# Fewer sampled records than this per partition (on average) and the skew
# ratio's interval is too wide to act on: say so.
MIN_RECORDS_PER_PARTITION = 30
# A skew ratio whose interval reaches this wide (hi/lo) gets a warning too.
WIDE_INTERVAL = 1.5
# Below this ratio the topic is called balanced (the alert fires at 4).
BALANCED_BELOW = 1.2
# At most this many keys covering the hottest partition's excess make it a hot-key problem.
HOT_KEY_MAX = 3


@dataclass
class Analysis:
    """What ``keyscope analyze`` knows; every number finite, every share in [0, 1]."""

    topic: str
    partition_count: int
    by: str
    load_basis: str
    confidence: float
    sample: dict[str, Any]
    skew: dict[str, Any]
    partitions: list[dict[str, Any]]
    hottest: dict[str, Any]
    hot_keys: list[dict[str, Any]]
    baseline: dict[str, Any]
    partitioner: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    @property
    def skew_ratio(self) -> float:
        """The headline ratio (by ``by`` on the load basis), as the alert computes it."""
        return self.skew["ratio"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "keyscope_version": __version__,
            "topic": self.topic,
            "partition_count": self.partition_count,
            "by": self.by,
            "load_basis": self.load_basis,
            "confidence": self.confidence,
            "sample": self.sample,
            "skew": self.skew,
            "partitions": self.partitions,
            "hottest": self.hottest,
            "hot_keys": self.hot_keys,
            "baseline": self.baseline,
            "partitioner": self.partitioner,
            "warnings": self.warnings,
        }


# From this many records the compiled one-pass scan (keyscope._keytable, LLVM IR)
# is used; below it, Polars' group_by.  Measured in fresh processes (docs/benchmarks.md,
# "The key table in LLVM IR"): the scan costs ~25 ms once (import, load from the
# object cache; the hash kernels are loaded anyway for partitioner detection), and warm it
# runs 1.1x Polars at 100k records, 1.5x at 300k, ~4x at 3M (one thread).  A
# whole cold `keyscope analyze` cost 0.03-0.04 s more CPU compiled at 10k-300k
# records and 0.04 s less at 1M: the crossover lies between.  (With numba this
# was 2,000,000: its ~0.6 s start-up.)
COMPILED_MIN_ROWS = 500_000


def key_partition_table(df, squares: bool = True):
    """One row per (key, partition): records, bytes (key + value) and bytes squared.

    The Polars way (small samples; the reference the compiled scan is tested
    against); null keys form one row per partition.
    """
    import polars as pl

    size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
    aggs = [pl.len().cast(pl.Int64).alias("records"), size.sum().alias("bytes")]
    if squares:
        aggs.append((size.cast(pl.Float64) ** 2).sum().alias("bytes_sq"))
    out = df.lazy().group_by("key", "partition").agg(aggs).collect()
    if not squares:
        out = out.with_columns(pl.col("bytes").cast(pl.Float64).alias("bytes_sq"))
    return out


def scan_records(df, partitions: int, compiled: bool | None = None, extremes: bool = True):
    """The one pass over the records: (kp table, per-partition offset/time extremes or None).

    ``compiled``: None picks by size; the results are the same either way.
    ``extremes``: False when the metadata already has every partition's times.
    """
    if compiled is None:
        compiled = df.height >= COMPILED_MIN_ROWS
    if compiled and df.height:
        from ._keytable import I64_MAX, scan

        kp, ext = scan(df, partitions, extremes=extremes)
        extremes = {}
        for p in range(len(ext["tmin"])):
            if ext["tmin"][p] != I64_MAX:
                extremes[p] = (int(ext["omin"][p]), int(ext["omax"][p]), int(ext["tmin"][p]), int(ext["tmax"][p]))
        return kp, extremes
    return key_partition_table(df), None


def detect_on_sample(kp, partitions: int, sample, null_keys: dict | None = None) -> dict:
    """keyscope.detect.detect_partitioner with the records' offsets and times read only when it uses them.

    It uses them only to tell a switch from two producers at once (verdict
    "mixed"); otherwise the result is the same without them.  ``null_keys``
    (partition -> null-key records, from the key table): then the key column
    is not read for the null-key evidence either.
    """
    from .detect import detect_partitioner

    if null_keys is not None:
        det = detect_partitioner(kp, partitions, null_keys=null_keys)
    else:
        det = detect_partitioner(kp, partitions, records=sample.frame("partition", "key"))
    if det.get("verdict") == "mixed":
        det = detect_partitioner(kp, partitions, records=sample.frame("partition", "offset", "timestamp", "key"))
    return det


def partition_rates(sample, extremes: dict | None = None) -> dict[int, dict[str, Any]]:
    """Per partition: first/last offset and timestamp, and records/s between them.

    Prefers the metadata (what the sampler saw); falls back to the records
    (``extremes`` from :func:`scan_records` when it has them: (min offset,
    max offset, min time, max time) over records with a timestamp).  The rate
    counts offsets, so it includes records the sample skipped.
    """
    import polars as pl

    meta = sample.meta
    out: dict[int, dict[str, Any]] = {}
    for p, info in meta.partitions.items():
        out[int(p)] = {
            "low": info.low,
            "high": info.high,
            "first_offset": info.first,
            "last_offset": info.last,
            "first_ms": info.first_timestamp_ms,
            "last_ms": info.last_timestamp_ms,
        }
    need = [p for p, r in out.items() if r["first_ms"] is None or r["last_ms"] is None]
    if len(sample) and (need or not out):
        df = sample.frame("partition", "offset", "timestamp") if extremes is None else None
        if extremes is None and df["timestamp"].null_count() < df.height:
            g = (
                df.lazy()
                .filter(pl.col("timestamp").is_not_null())
                .group_by("partition")
                .agg(
                    pl.col("offset").min().alias("o0"),
                    pl.col("offset").max().alias("o1"),
                    pl.col("timestamp").min().dt.epoch("ms").alias("t0"),
                    pl.col("timestamp").max().dt.epoch("ms").alias("t1"),
                )
                .collect()
            )
            extremes = {int(r[0]): (r[1], r[2], r[3], r[4]) for r in g.select("partition", "o0", "o1", "t0", "t1").iter_rows()}
        for p, (o0, o1, t0, t1) in (extremes or {}).items():
            rec = out.setdefault(int(p), {"low": None, "high": None})
            # Offsets and times from the same records, so the rate is consistent.
            rec.update(first_offset=o0, last_offset=o1, first_ms=t0, last_ms=t1)
    for rec in out.values():
        rate = None
        o0, o1, t0, t1 = rec.get("first_offset"), rec.get("last_offset"), rec.get("first_ms"), rec.get("last_ms")
        if None not in (o0, o1, t0, t1) and t1 > t0 and o1 > o0:
            rate = (o1 - o0) / ((t1 - t0) / 1000.0)
        rec["rate_per_s"] = rate
        lo, hi = rec.get("low"), rec.get("high")
        rec["retained"] = (hi - lo) if lo is not None and hi is not None and hi >= lo else None
    return out


# ----------------------------------------------------------------------------- fair weights
#
# One rule, used by analyze, whatif and recommend (keyscope.whatif.engine.WhatIf):
# what each sampled record stands for.  A sample whose partitions were read in
# proportion to what they hold is its own load (weight 1).  One cut short
# (--timeout, --max-bytes, --max-records, Ctrl-C: the sampler stopped before
# the hot partition's share was read) or capped (--per-partition) is
# re-weighted from its metadata alone, whatever order the sampler read in:
# partition p holds S_p offsets in the range sampled (watermarks) and the
# sample covers R_p of them with n_p records, so it stands for
# n_p * S_p / R_p records and each record weighs S_p / R_p.  Intervals then
# come from the weighted (linearised ratio) variance, which grows as the
# weights grow unequal: a partition read 10% carries 10x the variance per
# record.  Without watermarks, each partition's rate (offsets/s) is the load.
# With neither, or with a partition that holds records of which none were
# read, no re-weighting can give its share: the verdict is refused
# (UnfairSample, exit 7).

PROPORTIONAL_SLACK = 0.02  # a partition read within 2% (or 2 offsets) of its fair share is in proportion


@dataclass
class Weights:
    """What each sampled record of a partition stands for, and why."""

    basis: str  # sample | watermarks | rate
    w: np.ndarray  # per partition: load per sampled record (records, or records/s on the rate basis)
    coverage: list  # per partition: share of its range read (None where unknown)
    notes: list[str] = field(default_factory=list)

    @property
    def scaled(self) -> bool:
        return self.basis != "sample"


def partition_weights(sample, load: str = "auto", counts: np.ndarray | None = None, rates: dict | None = None) -> Weights:
    """The one rule for samples that are not proportional across partitions (see above).

    ``load``: auto (the rule), sample (counts as they are), watermarks or rate (forced).
    Raises UnfairSample when the verdict cannot be made fair.
    """
    P = max(int(sample.partition_count), 0)
    if counts is None:
        counts = partition_counts(sample.frame("partition")["partition"].to_numpy(), P) if len(sample) else \
            np.zeros(P, dtype=np.int64)
    n_p = np.asarray(counts, dtype=np.float64)
    ones = np.ones(P)
    if load == "sample" or P == 0:
        return Weights("sample", ones, [None] * P)
    spans, read = _spans(sample, n_p, P)
    known = spans is not None
    coverage = [float(read[p] / spans[p]) if known and spans[p] > 0 else None for p in range(P)]
    missing = [p for p in range(P) if known and spans[p] > 0 and n_p[p] == 0]
    capped = _capped_per_partition(sample, n_p)
    cut = _cut_short(sample)
    if load in ("auto", "watermarks") and known:
        if load == "auto" and not missing and _proportional(read, spans):
            return Weights("sample", ones, coverage)
        if missing:
            raise UnfairSample(
                f"partition(s) {_list(missing)} hold records "
                f"({', '.join(f'{int(spans[p]):,}' for p in missing[:5])} by their offsets) but none were read, "
                "so no skew or cause can be told from this sample; sample again with a longer --timeout, "
                "a larger --max-bytes, or --partitions to choose"
            )
        w = ones.copy()
        sampled = n_p > 0
        w[sampled] = spans[sampled] / read[sampled]
        cov = [c for c in coverage if c is not None]
        notes = [
            f"partitions were read unevenly ({min(cov):.1%} to {max(cov):.1%} of their records): loads are "
            "re-weighted by each partition's record count from its offsets, intervals widened to match"
        ]
        return Weights("watermarks", w, coverage, notes)
    if load == "watermarks":
        raise UsageError("--load watermarks needs every sampled partition's low and high watermark; this sample lacks them")
    if rates is None:
        rates = partition_rates(sample) if len(sample) else {}
    rate = [(rates.get(p) or {}).get("rate_per_s") for p in range(P)]
    rate_known = all(rate[p] is not None or n_p[p] == 0 and (rates.get(p) or {}).get("retained") == 0 for p in range(P))
    if load == "rate" or (capped or cut) and rate_known:
        if not rate_known:
            raise UsageError(
                "--load rate needs a rate for every partition (first/last offsets and timestamps); "
                "this sample lacks them for some partitions"
            )
        w = np.array([float(rate[p]) / n_p[p] if rate[p] is not None and n_p[p] > 0 else 0.0 for p in range(P)])
        return Weights("rate", w, coverage, ["loads are each partition's rate (offsets advanced per second)"])
    if capped or cut:
        why = "capped per partition (--per-partition)" if capped else f"cut short ({_cut_reason(sample)})"
        raise UnfairSample(
            f"the sample was {why} and has neither watermarks nor timestamps to re-weight its partitions: "
            "its counts are not the topic's load, so no skew or cause can be told; sample again with keyscope sample"
        )
    return Weights("sample", ones, coverage)


COUNT_CHUNK = 1 << 20  # partitions bincounted at a time: np.bincount casts to int64, 8 MB a chunk


def partition_counts(part: np.ndarray, P: int) -> np.ndarray:
    """Records per partition (int64, length P) of the partition numbers ``part`` (int32, all in [0, P)).

    A chunk at a time: ``np.bincount`` of the whole column cast it to int64 first, and with the
    ``astype`` before it held 120 MB beside the 40 MB column at 10M records (what-if's first peak).
    """
    out = np.zeros(P, np.int64)
    for lo in range(0, part.shape[0], COUNT_CHUNK):
        out += np.bincount(part[lo:lo + COUNT_CHUNK], minlength=P)[:P]
    return out


def _spans(sample, n_p: np.ndarray, P: int):
    """(offsets in each partition's sampled range, offsets the sample covers), or (None, None) when unknown."""
    infos = sample.meta.partitions
    how = sample.meta.how if isinstance(sample.meta.how, dict) else {}
    ranges = how.get("ranges") if isinstance(how.get("ranges"), dict) else {}
    mode = how.get("mode")
    spans = np.zeros(P)
    read = np.zeros(P)
    lo_hi = None
    for p in range(P):
        info = infos.get(p)
        if info is None:
            if n_p[p]:
                return None, None  # records on a partition the metadata does not know
            continue
        if info.low is None or info.high is None or info.high < info.low:
            return None, None
        r = ranges.get(str(p))
        if mode != "latest" and isinstance(r, list) and len(r) == 2 and all(isinstance(x, int) for x in r):
            spans[p] = max(0, r[1] - r[0])
        else:
            spans[p] = info.high - info.low
        if n_p[p]:
            if info.first is not None and info.last is not None and info.last >= info.first:
                read[p] = info.last - info.first + 1
            else:
                if lo_hi is None:
                    lo_hi = _offset_extremes(sample.frame("partition", "offset"))
                o0, o1 = lo_hi.get(p, (0, n_p[p] - 1))
                read[p] = o1 - o0 + 1
            read[p] = max(read[p], n_p[p])
            if read[p] > spans[p]:
                return None, None  # the sample holds more than the watermarks allow: do not trust them
    return spans, read


def _offset_extremes(df) -> dict:
    import polars as pl

    g = df.group_by("partition").agg(pl.col("offset").min().alias("a"), pl.col("offset").max().alias("b"))
    return {int(p): (int(a), int(b)) for p, a, b in g.iter_rows()}


def _proportional(read: np.ndarray, spans: np.ndarray) -> bool:
    total_s, total_r = float(spans.sum()), float(read.sum())
    if total_s <= 0:
        return True
    fair = total_r * spans / total_s
    return bool(np.all(np.abs(read - fair) <= np.maximum(2.0, PROPORTIONAL_SLACK * fair)))


def _cut_short(sample) -> bool:
    how = sample.meta.how if isinstance(sample.meta.how, dict) else {}
    return bool(sample.meta.partial) or how.get("stopped_by") in ("timeout", "max-bytes", "partial")


def _cut_reason(sample) -> str:
    how = sample.meta.how if isinstance(sample.meta.how, dict) else {}
    return sample.meta.partial_reason or f"stopped by {how.get('stopped_by')}"


def _list(ps) -> str:
    return ", ".join(map(str, ps[:10])) + (f" and {len(ps) - 10} more" if len(ps) > 10 else "")


def _capped_per_partition(sample, sampled: np.ndarray) -> bool:
    """Did the sampler stop partitions at a fixed per-partition count (so counts are flat by design)?

    ``keyscope sample --per-partition N`` records N in ``meta.how``; a default
    ``--max-records`` sample is split in proportion to what each partition
    holds, so its counts do follow the load.
    """
    how = sample.meta.how or {}
    cap = how.get("per_partition")
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        return False
    return int(np.count_nonzero(sampled)) >= 2 and bool(np.any(sampled >= cap))


def _check_options(top: int, by: str, load: str, confidence: float) -> None:
    if by not in BY:
        raise UsageError(f"--by must be one of {', '.join(BY)}, got {by!r}")
    if load not in LOADS:
        raise UsageError(f"--load must be one of {', '.join(LOADS)}, got {load!r}")
    if top < 0:
        raise UsageError(f"--top must be 0 or more, got {top}")
    if not 0.5 <= confidence < 1:
        raise UsageError(f"confidence must be in [0.5, 1), got {confidence}")


@dataclass
class _Counts:
    """The (key, partition) table and its sums per partition: everything later steps read from the records."""

    kp: Any  # polars frame: key, partition, records, bytes, bytes_sq
    extremes: dict | None  # per partition offset/time extremes (None: read from the frame when needed)
    read: bool  # any record read (no rates otherwise)
    n_parts: int  # partitions of the topic (0 for an empty sample without metadata)
    P: int  # max(n_parts, 1): the length of every per-partition array
    part_idx: np.ndarray  # per kp row: its partition
    is_null: np.ndarray  # per kp row: a null key
    rec: np.ndarray  # per kp row: records
    byt: np.ndarray  # per kp row: bytes
    n_p: np.ndarray  # per partition: sampled records
    b_p: np.ndarray  # bytes
    s2b_p: np.ndarray  # sum of squared record sizes
    null_n_p: np.ndarray  # null-key records
    null_b_p: np.ndarray  # null-key bytes
    keys_p: np.ndarray  # distinct non-null keys
    n_total: float


def _count(sample, compiled: bool | None) -> _Counts:
    """One pass over the records: the (key, partition) table, then per-partition sums at its size."""
    n_parts = max(int(sample.partition_count), 1 if len(sample) else 0)
    infos = sample.meta.partitions
    timed = bool(infos) and all(
        i.first_timestamp_ms is not None and i.last_timestamp_ms is not None for i in infos.values() if i.records
    )
    # Only the columns this needs: the compiled scan takes key sizes from the keys, and
    # offsets/times only when the metadata lacks them (the fields are never read).
    if compiled is None:
        compiled = len(sample) >= COMPILED_MIN_ROWS
    kp = None
    src = sample.key_file() if compiled and len(sample) else None
    if src is not None:  # keys still only in the file: group its dictionary pages (keyscope.io.parquet)
        from .io.parquet import dictionary_keys

        # the partitions in memory (checked in range by read_sample), else read with the keys' pages
        part = sample.frame("partition")["partition"] if sample.loaded("partition") else None
        kp = dictionary_keys(src[0], src[1], max(n_parts, 1), src[2], parts=part)
        extremes = None  # partition_rates reads offsets and times only if the metadata lacks them
    if kp is None:
        df = sample.frame(
            "partition", "key", "value_size", *(() if compiled and len(sample) else ("key_size",)),
            *(() if timed else ("offset", "timestamp")),
        )  # fmt: skip
        kp, extremes = scan_records(df, max(n_parts, 1), compiled=compiled, extremes=not timed)
    part_idx = kp["partition"].to_numpy().astype(np.int64)
    is_null = kp["key"].is_null().to_numpy()
    rec = kp["records"].to_numpy().astype(np.float64)
    byt = kp["bytes"].to_numpy().astype(np.float64)
    bsq = kp["bytes_sq"].to_numpy().astype(np.float64)
    P = max(n_parts, 1)

    def per_part(values, mask=None):
        v = values if mask is None else np.where(mask, values, 0.0)
        return np.bincount(part_idx, weights=v, minlength=P)[:P] if part_idx.size else np.zeros(P)

    n_p = per_part(rec)
    return _Counts(
        kp=kp,
        extremes=extremes,
        read=len(sample) > 0,
        n_parts=n_parts,
        P=P,
        part_idx=part_idx,
        is_null=is_null,
        rec=rec,
        byt=byt,
        n_p=n_p,
        b_p=per_part(byt),
        s2b_p=per_part(bsq),
        null_n_p=per_part(rec, is_null),
        null_b_p=per_part(byt, is_null),
        keys_p=np.bincount(part_idx[~is_null], minlength=P)[:P] if part_idx.size else np.zeros(P, dtype=np.int64),
        n_total=float(n_p.sum()),
    )


@dataclass
class LoadBasis:
    """What counts as each partition's load, and the evidence behind it: chosen here, used by every later step.

    ``basis`` is the rule of :func:`partition_weights` (sample counts, counts
    scaled to the watermarks, or rates); ``by`` picks records or bytes.  The
    ``y``/``s2`` arrays are the sampled evidence (for intervals), ``load_p`` the
    load itself.
    """

    basis: str  # sample | watermarks | rate
    by: str  # records | bytes
    notes: list[str]  # the weighting's notes (watermarks basis only)
    rates: dict  # per partition: partition_rates()
    rate_vals: np.ndarray  # per partition: records/s (0 where unknown)
    rate_known: bool  # every partition has a rate (or nothing to have one for)
    capped: bool  # the sample looks capped per partition
    l_rec: np.ndarray  # per partition: records on this basis
    l_bytes: np.ndarray  # bytes on this basis
    load_p: np.ndarray  # the load: l_rec or l_bytes
    y_p: np.ndarray  # sampled evidence per partition (records or bytes)
    s2_p: np.ndarray  # its variance term (records, or the sum of squared sizes)
    y_null: np.ndarray  # the null-key part of y_p
    y_kp: np.ndarray  # per (key, partition) row: its evidence
    wy_p: np.ndarray  # y_p weighted
    ws2_p: np.ndarray  # s2_p weighted twice: Var(load_p) ~ w_p^2 n_p
    total_load: float
    a_p: np.ndarray  # per partition: share of the load
    pi_kp: np.ndarray  # per (key, partition) row: its share within its partition
    share_kp: np.ndarray  # per (key, partition) row: its share of the topic


def _load_basis(sample, c: _Counts, load: str, by: str) -> LoadBasis:
    """The one place the load basis (sample counts vs watermarks vs rates) and records vs bytes are chosen."""
    P, n_p = c.P, c.n_p
    rates = partition_rates(sample, c.extremes) if c.read else {}
    rate_arr = np.array([(rates.get(p) or {}).get("rate_per_s") for p in range(P)], dtype=object)
    rate_known = all(
        rate_arr[p] is not None or (n_p[p] == 0 and (rates.get(p) or {}).get("retained") == 0) for p in range(P)
    )
    capped = _capped_per_partition(sample, n_p)
    weights = partition_weights(sample, load, counts=n_p, rates=rates) if c.n_parts > 1 or load != "auto" else \
        Weights("sample", np.ones(P), [None] * P)
    basis = weights.basis
    rate_vals = np.array([float(r) if r is not None else 0.0 for r in rate_arr]) if P else np.zeros(0)
    wt = weights.w[:P] if weights.w.size >= P else np.ones(P)
    l_rec, l_bytes = n_p * wt, c.b_p * wt
    if basis == "rate":
        l_rec = rate_vals
    if by == "records":
        load_p, y_p, s2_p, y_null, y_kp = l_rec, n_p, n_p, c.null_n_p, c.rec
        # weighted evidence: each record of p stands for w_p, so Var(load_p) ~ w_p^2 n_p
        wy_p, ws2_p = n_p * wt, n_p * wt * wt
    else:
        load_p, y_p, s2_p, y_null, y_kp = l_bytes, c.b_p, c.s2b_p, c.null_b_p, c.byt
        wy_p, ws2_p = c.b_p * wt, c.s2b_p * wt * wt
    total_load = float(load_p.sum())
    a_p = load_p / total_load if total_load > 0 else np.zeros(P)
    part_idx = c.part_idx
    # within-partition share of each (key, partition) row, and its share of the topic
    pi_kp = np.divide(y_kp, y_p[part_idx], out=np.zeros_like(y_kp), where=y_p[part_idx] > 0) if P else y_kp
    share_kp = a_p[part_idx] * pi_kp if part_idx.size else pi_kp
    return LoadBasis(
        basis=basis,
        by=by,
        notes=list(weights.notes) if basis == "watermarks" else [],
        rates=rates,
        rate_vals=rate_vals,
        rate_known=rate_known,
        capped=capped,
        l_rec=l_rec,
        l_bytes=l_bytes,
        load_p=load_p,
        y_p=y_p,
        s2_p=s2_p,
        y_null=y_null,
        y_kp=y_kp,
        wy_p=wy_p,
        ws2_p=ws2_p,
        total_load=total_load,
        a_p=a_p,
        pi_kp=pi_kp,
        share_kp=share_kp,
    )


def _skew(c: _Counts, lb: LoadBasis, confidence: float):
    """The skew figures, the hottest partition, and the per-partition share intervals."""
    n_parts, load_p, a_p, total_load = c.n_parts, lb.load_p, lb.a_p, lb.total_load
    z = z_value(confidence)
    ratio = skew_ratio(load_p.tolist()) if n_parts else 0.0
    hottest = int(np.argmax(load_p)) if n_parts and total_load > 0 else None
    share_lo = share_hi = None
    interval = None
    if n_parts and total_load > 0:
        y_total, s2_total = float(lb.y_p.sum()), float(lb.s2_p.sum())
        wy_total, ws2_total = float(lb.wy_p.sum()), float(lb.ws2_p.sum())

        def part_interval(zz):
            if lb.basis != "sample":  # re-weighted: the linearised ratio interval over the weights
                return normal_interval(a_p, ratio_share_se(lb.wy_p, lb.ws2_p, wy_total, ws2_total), z=zz)
            if lb.by == "records":
                return wilson_interval(c.n_p, c.n_total, z=zz)
            return normal_interval(a_p, ratio_share_se(lb.y_p, lb.s2_p, y_total, s2_total), z=zz)

        share_lo, share_hi = part_interval(z)
        lo, hi = max_share_interval(a_p, part_interval, confidence)
        denom = clamp_min(total_load / n_parts)
        # the largest share is at least 1/n, so the ratio is at least 1 (as whatif bounds it):
        # a near-even or tiny sample can give a lower share bound under 1/n, which no topic has
        interval = [max(lo * total_load / denom, 1.0), max(hi * total_load / denom, 1.0)]
    chi = chi_square_uniform(c.n_p) if lb.basis == "sample" and n_parts else None
    skew = {
        "ratio": ratio,
        "interval": interval,
        "by": lb.by,
        "records_ratio": skew_ratio(lb.l_rec.tolist()) if n_parts else 0.0,
        "bytes_ratio": skew_ratio(lb.l_bytes.tolist()) if n_parts else 0.0,
        "rate_ratio": skew_ratio(lb.rate_vals.tolist()) if (lb.rate_known and n_parts) else None,
        "hottest_partition": hottest,
        "hottest_share": float(a_p[hottest]) if hottest is not None else None,
        "chi_square": chi,
        "cv": coefficient_of_variation(load_p) if n_parts else 0.0,
        "gini": gini(load_p) if n_parts else 0.0,
        "definition": "max over partitions / clamp_min(mean over partitions, 0.001)",
    }
    return skew, hottest, share_lo, share_hi


def _partition_rows(c: _Counts, lb: LoadBasis, share_lo, share_hi) -> list[dict]:
    partitions = []
    for p in range(c.n_parts):
        r = lb.rates.get(p) or {}
        partitions.append(
            {
                "partition": p,
                "records": int(c.n_p[p]),
                "bytes": int(c.b_p[p]),
                "null_key_records": int(c.null_n_p[p]),
                "distinct_keys": int(c.keys_p[p]),
                "load": float(lb.load_p[p]),
                "share": float(lb.a_p[p]),
                "share_interval": [float(share_lo[p]), float(share_hi[p])] if share_lo is not None else None,
                "rate_per_s": r.get("rate_per_s"),
                "low": r.get("low"),
                "high": r.get("high"),
                "retained": r.get("retained"),
                "first_offset": r.get("first_offset"),
                "last_offset": r.get("last_offset"),
            }
        )
    return partitions


def _key_tables(c: _Counts, lb: LoadBasis):
    """(keyed rows with their topic share ``share`` and in-partition share ``pi``, per-key totals)."""
    import polars as pl

    keyed = c.kp.filter(pl.col("key").is_not_null()).with_columns(
        pl.Series("share", lb.share_kp[~c.is_null] if c.part_idx.size else np.zeros(0)),
        pl.Series("pi", lb.pi_kp[~c.is_null] if c.part_idx.size else np.zeros(0)),
    ).sort("partition", maintain_order=True)  # fixed summation order: same floats on any path
    keys = keyed.group_by("key").agg(
        pl.col("share").sum(),
        pl.col("records").sum(),
        pl.col("bytes").sum(),
        pl.col("bytes_sq").sum(),
        pl.len().alias("n_partitions"),
    )
    return keyed, keys


def _hottest(keyed, lb: LoadBasis, hottest: int | None, mean_load: float, excess: float):
    """Who explains the hottest partition's excess: null keys, or the fewest keys that cover it."""
    import polars as pl

    y_null, y_p, load_p, P = lb.y_null, lb.y_p, lb.load_p, lb.y_p.size
    null_share_hot = (y_null[hottest] / y_p[hottest]) if hottest is not None and y_p[hottest] > 0 else 0.0
    null_load = np.divide(y_null, y_p, out=np.zeros(P), where=y_p > 0) * load_p
    e_null = float(null_load[hottest] - null_load.mean()) if hottest is not None else 0.0
    e_keyed = excess - e_null
    cover, cover_keys = None, []
    if hottest is not None and excess > 0:
        on_hot = keyed.filter(pl.col("partition") == hottest).sort(["pi", "key"], descending=[True, False])
        cum = np.cumsum(on_hot["pi"].to_numpy()) * load_p[hottest]
        idx = int(np.searchsorted(cum, excess - 1e-9 * max(excess, 1.0)))
        cover = idx + 1 if idx < cum.size else None
        if cover is not None and cover <= HOT_KEY_MAX:
            from .model.keys import key_display

            head = on_hot.head(cover)
            shown, enc = key_display(head["key"])
            cover_keys = [
                {"key": k if e == "utf8" else f"0x{k}", "share_on_hottest": float(sh), "of_partition": float(pi)}
                for k, e, sh, pi in zip(shown.to_list(), enc.to_list(), head["share"].to_list(), head["pi"].to_list())
            ]
    info = {
        "partition": hottest,
        "load": float(load_p[hottest]) if hottest is not None else 0.0,
        "mean_load": mean_load,
        "excess": excess,
        "excess_from_null_keys": e_null,
        "excess_from_keyed": e_keyed,
        "null_key_share_of_partition": float(null_share_hot),
        "keys_to_explain_excess": cover,
    }
    return info, float(null_load.sum()), cover_keys


def _baseline(keys, lb: LoadBasis, n_parts: int, mean_load: float, null_total: float, ratio: float, seed: int, reps: int) -> dict:
    """The skew perfect hashing of these key weights would give (the floor and the random placements)."""
    total_load = lb.total_load
    key_weights = keys["share"].to_numpy() * total_load if keys.height else np.zeros(0)
    sims = random_hashing_skews(key_weights, max(n_parts, 1), spread=null_total, reps=reps, seed=seed)
    heaviest = float(key_weights.max()) if key_weights.size else 0.0
    floor = max(heaviest, mean_load) / clamp_min(mean_load) if total_load > 0 else 0.0
    return {
        "floor_ratio": floor,
        "random_hashing_median": float(np.median(sims)) if total_load > 0 else 0.0,
        "random_hashing_p95": float(np.quantile(sims, 0.95)) if total_load > 0 else 0.0,
        "beyond_random_hashing": bool(total_load > 0 and ratio > float(np.quantile(sims, 0.95))),
        "heaviest_key_share": heaviest / total_load if total_load > 0 else 0.0,
    }


def _sample_warnings(c: _Counts, meta, interval, confidence: float, detection: dict) -> list[str]:
    warnings = []
    n_total, n_parts = c.n_total, c.n_parts
    if n_total == 0:
        warnings.append("the sample is empty: nothing to analyze")
    elif n_total < MIN_RECORDS_PER_PARTITION * max(n_parts, 1):
        warnings.append(
            f"sample too small: {int(n_total):,} records over {n_parts} partition(s) "
            f"(fewer than {MIN_RECORDS_PER_PARTITION} per partition); the numbers are rough"
        )
    if interval and interval[0] > 0 and interval[1] / interval[0] > WIDE_INTERVAL:
        warnings.append(
            f"the skew ratio is uncertain: {interval[0]:.2f} to {interval[1]:.2f} at {confidence:.0%}; "
            "sample more records to narrow it"
        )
    if n_total and int(c.null_n_p.sum()) == n_total:
        warnings.append("every record has a null key: placement is sticky/random, no key explains the load")
    if n_parts == 1:
        warnings.append("one partition: a skew ratio of 1 is all it can have")
    if meta.partial:
        warnings.append(f"the sample is partial ({meta.partial_reason or 'stopped early'}): it may miss records")
    if detection["verdict"] not in ("mixed", "unknown", "no-keys", "ambiguous", "key-independent") and (
        (detection["chance_match_probability"] or 0) > 1e-3
    ):
        warnings.append(
            f"only {detection['distinct_keys']} distinct key(s): the partitioner match could be chance"
        )
    return warnings


def analyze(
    sample,
    top: int = 10,
    by: str = "records",
    load: str = "auto",
    confidence: float = CONFIDENCE,
    seed: int = 0,
    reps: int = 1000,
    compiled: bool | None = None,
) -> Analysis:
    """Analyze a :class:`keyscope.sample.Sample`.  Deterministic for a given ``seed``.

    The steps, each a function below: count the records per (key, partition),
    choose the load basis (:func:`_load_basis`, the one place), the skew and its
    interval, the partitions, the hot keys, who explains the hottest partition,
    the perfect-hashing baseline and cause, the partitioner, the warnings.
    """
    import polars as pl

    _check_options(top, by, load, confidence)
    meta = sample.meta
    c = _count(sample, compiled)
    n_parts = c.n_parts
    lb = _load_basis(sample, c, load, by)
    skew, hottest, share_lo, share_hi = _skew(c, lb, confidence)
    partitions = _partition_rows(c, lb, share_lo, share_hi)
    keyed, keys = _key_tables(c, lb)
    mean_load = lb.total_load / n_parts if n_parts else 0.0
    excess = float(lb.load_p[hottest] - mean_load) if hottest is not None else 0.0
    hot_keys = _hot_keys(keys, keyed, HotKeyOptions(top, by, lb.basis, confidence), lb, c.n_total, hottest, excess)
    hottest_info, null_total, cover_keys = _hottest(keyed, lb, hottest, mean_load, excess)
    baseline = _baseline(keys, lb, n_parts, mean_load, null_total, skew["ratio"], seed, reps)
    baseline.update(
        _cause(skew["ratio"], n_parts, lb.total_load, excess, hottest_info["excess_from_null_keys"],
               hottest_info["excess_from_keyed"], hottest_info["keys_to_explain_excess"], baseline, cover_keys,
               hottest, float(lb.a_p[hottest]) if hottest is not None else 0.0)  # fmt: skip
    )
    kp_keyed = c.kp.filter(pl.col("key").is_not_null()).select("key", "partition", "records")
    detection = detect_on_sample(kp_keyed, n_parts, sample,
                                 null_keys={p: int(v) for p, v in enumerate(c.null_n_p) if v})
    detection["null_key_records"] = int(c.null_n_p.sum())
    warnings = lb.notes + _sample_warnings(c, meta, skew["interval"], confidence, detection)

    null_total_records = int(c.null_n_p.sum())
    sample_info = {
        "records": int(c.n_total),
        "bytes": int(c.b_p.sum()),
        "keyed_records": int(c.n_total) - null_total_records,
        "null_key_records": null_total_records,
        "distinct_keys": int(keys.height),
        "partitions_sampled": int(np.count_nonzero(c.n_p)),
        "source": meta.source,
        "sampled_at": meta.sampled_at or None,
        "partial": bool(meta.partial),
        "capped_per_partition": bool(lb.capped),
    }
    return Analysis(
        topic=meta.topic,
        partition_count=n_parts,
        by=by,
        load_basis=lb.basis,
        confidence=confidence,
        sample=sample_info,
        skew=skew,
        partitions=partitions,
        hottest=hottest_info,
        hot_keys=hot_keys,
        baseline=baseline,
        partitioner=detection,
        warnings=warnings,
    )


@dataclass
class HotKeyOptions:
    """How the hot-key table is chosen and its intervals computed."""

    top: int  # keys to list (0: none)
    by: str  # records | bytes
    basis: str  # the load basis (sample: intervals from counts; else over the partitions' weights)
    confidence: float


SHARE_RANK_DIGITS = 12  # significant digits of a share that rank hot keys (see _hot_keys)


def _hot_keys(keys, keyed, opts: HotKeyOptions, lb: LoadBasis, n_total: float, hottest: int | None, excess: float):
    """The top keys by topic share, each with its interval and whether it alone explains the hottest excess."""
    import polars as pl

    from .model.keys import key_display

    top, by, basis = opts.top, opts.by, opts.basis
    y_p, s2_p, a_p, load_p = lb.y_p, lb.s2_p, lb.a_p, lb.load_p
    if top == 0 or keys.height == 0:
        return []
    # Ranked by share to 12 significant digits, then records, then key: a share is a_p * pi, so two
    # keys of one record each in partitions read alike differ in the last bit ((86/235)*(1/86) is not
    # 1/235), and an exact sort put every key of one partition after every tie of the others (a CI
    # failure: which partition the null keys land on decided which binary keys made the top 50).
    rank = pl.col("share").round_sig_figs(SHARE_RANK_DIGITS)
    if keys.height > 4 * top:  # only candidates at or above the top-th share get sorted
        shares = keys.select(rank).to_series().to_numpy()
        keys = keys.filter(rank >= np.partition(shares, shares.size - top)[shares.size - top])
    best = keys.sort([rank, pl.col("records"), pl.col("key")], descending=[True, True, False]).head(top)
    rows = keyed.join(best.select("key"), on="key", how="semi")
    z = z_value(opts.confidence)
    y_total, s2_total = float(y_p.sum()), float(s2_p.sum())
    shown, enc = key_display(best["key"])
    out = []
    for i, r in enumerate(best.iter_rows(named=True)):  # top K keys only
        mine = rows.filter(pl.col("key") == r["key"]).sort("pi", descending=True)
        parts = mine["partition"].to_list()
        main = int(parts[0])
        pis = mine["pi"].to_numpy()
        if basis == "sample" and by == "records":
            lo, hi = wilson_interval(r["records"], n_total, z=z)
        elif basis == "sample":
            se = ratio_share_se(r["bytes"], r["bytes_sq"], y_total, s2_total)
            lo, hi = normal_interval(r["share"], se, z=z)
        else:
            idx = mine["partition"].to_numpy().astype(np.int64)
            ys = mine["records" if by == "records" else "bytes"].to_numpy().astype(np.float64)
            if by == "records":
                wl, wh = wilson_interval(ys, y_p[idx], z=z)
                lo, hi = float(np.sum(a_p[idx] * wl)), float(np.sum(a_p[idx] * wh))
            else:
                s2 = mine["bytes_sq"].to_numpy()
                var = np.sum(
                    (a_p[idx] * np.array([ratio_share_se(y, q, y_p[j], s2_p[j]) for y, q, j in zip(ys, s2, idx)])) ** 2
                )
                lo, hi = normal_interval(r["share"], math.sqrt(var), z=z)
        contribution = float(pis[0] * load_p[main]) if main == hottest else 0.0
        out.append(
            {
                "rank": i + 1,
                "key": shown[i],
                "key_encoding": enc[i],
                "records": int(r["records"]),
                "bytes": int(r["bytes"]),
                "share": float(r["share"]),
                "share_interval": [float(min(lo, r["share"])), float(max(hi, r["share"]))],
                "partition": main,
                "partitions": [int(p) for p in sorted(parts)],
                "share_of_partition": float(pis[0]),
                "explains_excess": bool(main == hottest and excess > 0 and contribution >= excess * (1 - 1e-9)),
            }
        )
    return out


def _cause(ratio, n_parts, total, excess, e_null, e_keyed, cover, baseline, cover_keys, hottest, hot_share) -> dict:
    """hot key, unlucky hashing of many keys, or null-key/sticky traffic."""
    if total <= 0:
        return {"cause": "no-data", "explanation": "no load in the sample"}
    if n_parts == 1:
        return {"cause": "single-partition", "explanation": "one partition carries everything by definition"}
    if ratio < BALANCED_BELOW:
        return {
            "cause": "balanced",
            "explanation": f"the hottest partition is within {100 * (ratio - 1):.0f}% of the mean",
        }
    if e_null > 0 and e_null >= e_keyed:
        return {
            "cause": "null-key-sticky",
            "explanation": (
                f"null-key records make {100 * e_null / excess:.0f}% of partition {hottest}'s excess: "
                "producers place them sticky/random, not by key"
            ),
        }
    if cover is not None and cover <= HOT_KEY_MAX:
        names = ", ".join(repr(k["key"]) for k in cover_keys)
        share = sum(k["share_on_hottest"] for k in cover_keys)
        of_part = sum(k["of_partition"] for k in cover_keys)
        verb = "alone explains" if cover == 1 else "together explain"
        return {
            "cause": "hot-key",
            "explanation": (
                f"{names} {verb} partition {hottest}'s excess ({100 * hot_share:.1f}% of the load "
                f"against an even {100 / n_parts:.1f}%): {'it carries' if cover == 1 else 'they carry'} "
                f"{100 * of_part:.1f}% of partition {hottest}'s load, {100 * share:.1f}% of all load"
            ),
        }
    beyond = baseline["beyond_random_hashing"]
    how = (
        "worse than perfect hashing gives in 95% of placements of these keys: suspect the partitioner or a key pattern"
        if beyond
        else f"typical for these key weights (perfect hashing: median {baseline['random_hashing_median']:.2f})"
    )
    many = f"{cover}" if cover is not None else "many"
    return {
        "cause": "unlucky-hashing",
        "explanation": f"no single key: it takes {many} keys to explain partition {hottest}'s excess; {how}",
    }
