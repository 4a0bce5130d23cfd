"""WhatIf: evaluates scenarios on one sample, caching unit tables and hashes between them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from ..errors import InputError, UsageError
from ..model.assignors import ASSIGNORS, ConsumerLoad, consumer_load
from ..model.limits import MAX_PARTITIONS, check_count
from ..partitioners import KEYED, get_partitioner, hash_column
from ..stats import clamp_min, max_share_interval, normal_interval, ratio_share_se, skew_ratio, wilson_interval
from .murmur import murmur3_binary, murmur3_int64
from .result import CONFIDENCE, Result, expected_keys_moved
from .spec import MAX_GROUP_FIELDS, Salt, Scenario
from .tables import CODE, CodedKeys, compose_keys, concat_binary, group_by_codes, group_by_hashes
from . import kernels

POOL_KEYS = 16  # hottest keys whose records are kept at hand for salting
# From this many records the unit tables come from integer codes (compiled, .tables.group_by_codes and
# keyscope._keytable) rather than Polars group_bys.  Was 2M while the kernels were numba (~0.7 s to
# import and load); as LLVM IR they load in ~0.04 s, and warm the coded path measured faster from
# 200k records up (CPU s, Polars -> coded: whatif 0.09 -> 0.07 at 200k, 0.39 -> 0.27 at 1M;
# recommend 0.28 -> 0.19 at 200k, 1.04 -> 0.56 at 1M).  Assumes _keytable is LLVM IR too (issue 13).
COMPILED_MIN_ROWS = 200_000
_RESIDUES = 840  # lcm(2..8): offset-salt hashes are binned mod this once, for every D dividing it


@dataclass
class _Rows:
    """One row per distinct (today partition, producer key) unit."""

    src: np.ndarray  # today's partition: int64, or int32 when n, b are integers (a unit table's columns)
    kid: np.ndarray  # original key id (-1: null key): int64, or int32 likewise
    keys: object  # polars Binary Series or CodedKeys: the producer key (null: not hashed); None when ``parts`` holds them
    n: np.ndarray  # sampled records: float64 (salted cells) or int64 (a unit table's)
    b: np.ndarray  # sampled bytes, likewise
    splittable: bool  # may one original key land on several partitions?
    salted: list[tuple[bytes, float]] = field(default_factory=list)
    parts: list[tuple] = field(default_factory=list)  # salted: (tag, cold keys), (tag, sub-keys, row -> sub-key)


@dataclass
class SaltHashes:
    """The hot keys' salt data hashed: one entry per record (by offset) or per (partition, hot key, value)."""

    src: np.ndarray  # int64 today's partition
    hid: np.ndarray  # int64 index in the hot keys
    mm: np.ndarray  # uint32 mmh3 of the salt data (by offset, binned: the hash mod 840)
    n: np.ndarray  # float64 records
    b: np.ndarray  # float64 bytes
    hot_kid: np.ndarray  # int64 per hot key, its original key id (-1: none)


@dataclass
class ColdRows:
    """The units of the keys not salted, with their producer keys."""

    keys: object  # polars Binary Series
    src: np.ndarray
    kid: np.ndarray
    n: np.ndarray
    b: np.ndarray


class RecordSizes:
    """Each record's key + value bytes, for the hot keys' records: read at their rows from the sample file, or kept.

    Why: the sizes are summed into every unit table by the group pass, and then only the hot keys'
    records' are needed (salting); keeping all of them was 4 bytes a record (40 MB at 10M) under every
    later peak.  Kept (``kept``) only when the file has no ``key_size`` column (a key's size is then its
    length, which only the dictionary read knows).
    """

    def __init__(self, size: np.ndarray, key_file, n_rows: int):
        self.file, self.n_rows = key_file, n_rows
        self.kept = size if key_file is None or "key_size" not in key_file[2] else None

    def at(self, rows: np.ndarray) -> np.ndarray | None:
        """int64 sizes at ``rows`` (ascending), or None (the caller reads the columns)."""
        if self.kept is not None:
            return self.kept[rows].astype(np.int64)
        from ..io.parquet import sizes_at_rows

        path, check, _ = self.file
        return sizes_at_rows(path, check, rows, self.n_rows)


class WhatIf:
    """Evaluates scenarios on one sample; caches unit tables and hashes between them."""

    def __init__(
        self,
        sample,
        partitioner: str | None = None,
        consumers: Sequence[int] | None = None,
        group_fields: Sequence[str] = (),
        record_fields: Sequence[str] = (),
    ):
        """``group_fields``: fields whose unit tables to build up front (one pass for all);
        ``record_fields``: of those, the ones composite keys to be salted use (their
        per-record codes are kept, 4 bytes a record each)."""
        self.sample = sample
        if len(sample) == 0:
            raise InputError("the sample has no records: nothing to predict")
        self.today_partitions = sample.partition_count
        self.fields = sample.field_names
        self._cache: dict = {}
        from ..analysis import partition_weights

        fair = partition_weights(sample)  # the rule analyze uses: re-weight an unfair sample, or refuse
        self.weights, self.notes, self.load_basis = fair.w.astype(np.float64), list(fair.notes), fair.basis
        self.scaled = fair.scaled
        self.load_unit = {
            "sample": "sampled records",
            "watermarks": "records, scaled to the topic by each partition's sampled share",
            "rate": "records/s, each partition's rate (offsets advanced per second)",
        }[fair.basis]
        firsts = [(f,) for f in dict.fromkeys(group_fields[:MAX_GROUP_FIELDS])]
        for fs in firsts:
            self.check_field(fs[0])
        coded = None
        self._dicts: dict | None = None  # column -> distinct values (null last) of the coded unit tables
        if firsts and len(sample) >= COMPILED_MIN_ROWS:
            # large samples: every table (plain included) from integer codes, compiled; the field
            # tables keep their codes (their values are gathered only where needed: _values)
            names = [f for fs in firsts for f in fs]
            encoded = self._file_codes(["key", *dict.fromkeys(names)])
            sizes = encoded[2] if encoded is not None else None
            coded = group_by_codes(
                None if encoded is not None else self._records(*names), firsts, self.today_partitions, coded=True,
                keep_codes=record_fields, encoded=encoded,
            )
            del encoded
            if coded is not None and sizes is not None:  # too wide for the coded tables: read as columns below
                # each record's key + value bytes, for the hot keys' records (_hot_frame)
                self._cache["record-size"] = RecordSizes(sizes, sample.key_file(), len(sample))
            del sizes
        if coded is not None:
            key_index, tables, self._cache["record-kid"], self._dicts, self._cache["record-codes"] = coded
            for fs, table in zip([(), *firsts], tables):
                self._cache[("units", fs)] = table
        else:
            # tables per field first, when composite keys will need them, all in one query: the
            # plain table then derives from the smallest instead of another pass over the records
            hashed = group_by_hashes(self._records(*(f for fs in firsts for f in fs)), firsts) if firsts else None
            for fs, table in zip(firsts, hashed or []):
                self._cache[("units", fs)] = table
            for fs in firsts:
                self.units(fs)  # any the hashes could not group
        plain = self.units(())
        if plain["key"].null_count() == plain.height:
            raise InputError("every sampled record has a null key: key strategies and partition counts cannot move them")
        if coded is not None:
            self._key_index = key_index  # the tables' kid column is already this index
        else:
            self._key_index = plain.select("key").drop_nulls().unique().with_row_index("kid")
        for k, table in list(self._cache.items()):  # tables built before the key ids existed
            if k[0] == "units" and "kid" not in table.columns:
                self._cache[k] = table.join(self._key_index, on="key", how="left", maintain_order="left")
        self.consumers = sorted(set(consumers or (self.today_partitions, 2 * self.today_partitions)))
        for c in self.consumers:
            check_count(c, "consumer count", limit=2 * MAX_PARTITIONS)
        if partitioner is None:
            self.switched_from = None
            self.today_partitioner, self.today_match = self.detect_partitioner()
            if self.today_match < 0.99 and not self.switched_from:
                self.notes.append(
                    f"today's placement matches no known partitioner (best: {self.today_partitioner},"
                    f" {self.today_match:.1%} of keyed records); predictions assume {self.today_partitioner}"
                    " (set it with --today-partitioner)"
                )
        else:
            self.today_partitioner = get_partitioner(partitioner).name
            self.today_match = self._match_share(self.today_partitioner)
        self.today = self._today()

    # ---- unit tables -------------------------------------------------------

    def units(self, fields: tuple[str, ...]):
        """(partition, key, fields) -> records, bytes, kid; from the finest table already built."""
        return self._values(self._table(fields))

    def key_units(self, fields: tuple[str, ...], key: bytes):
        """``units(fields)`` of one key: only its rows' values are gathered."""
        import polars as pl

        kid = self._key_index.filter(pl.col("key") == key)["kid"]
        return self._values(self._table(fields).filter(pl.col("kid").is_in(kid.implode())))

    def _values(self, table):
        """A unit table with its key and field values: a coded table's gathered from the dictionaries."""

        if "key" in table.columns:
            return table
        fields = [c[len(CODE) :] for c in table.columns if c.startswith(CODE)]
        d = self._dicts
        kid = table["kid"].fill_null(self._key_index.height)
        return table.select(
            "partition",
            d["key"].gather(kid).alias("key"),
            *(d[f].gather(table[CODE + f]).alias(f) for f in fields),
            "n",
            "b",
            "kid",
        )

    def _table(self, fields: tuple[str, ...]):
        """``units``, but a coded table as it is (key ids and field codes, no values)."""
        import polars as pl

        fields = tuple(sorted(set(fields)))
        key = ("units", fields)
        if key in self._cache:
            return self._cache[key]
        for f in fields:
            self.check_field(f)
        finer = [k for k in self._cache if k[0] == "units" and set(fields) <= set(k[1])]
        if finer:
            src = self._cache[min(finer, key=lambda k: self._cache[k].height)]
            if "key" in src.columns:
                g = src.group_by(["partition", "key", *fields]).agg(pl.col("n").sum(), pl.col("b").sum())
            else:
                g = src.group_by(["partition", "kid", *(CODE + f for f in fields)]).agg(
                    pl.col("n").sum(), pl.col("b").sum()
                )
        elif not fields and len(self.sample) >= COMPILED_MIN_ROWS:
            # analyze's compiled one-pass (key, partition) scan: ~2x Polars' group_by here
            from .._keytable import scan

            kp, _ = scan(self.sample.frame("partition", "key", "value_size"), self.today_partitions, extremes=False)
            g = kp.select("partition", "key", pl.col("records").alias("n"), pl.col("bytes").alias("b"))
        else:
            g = None
            if fields and len(self.sample) >= COMPILED_MIN_ROWS and "_key_index" in self.__dict__:
                # the compiled unit tables recommend builds (1.75 s -> ~0.3 s at 10M); their key
                # ids are their own, so the table joins this WhatIf's key index below
                coded = group_by_codes(self._records(*fields), [fields], self.today_partitions)
                if coded is not None:
                    g = coded[1][1].drop("kid")
                    if "record-kid" not in self._cache:  # for the salting candidates, in this WhatIf's key ids
                        self._cache["record-kid"] = self._translate_kid(coded[0], coded[2])
            if g is None:
                g = group_by_hashes(self._records(*fields), [fields]) if fields else None
                if g is not None:
                    g = g[0]
            if g is None:
                size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
                g = self._records(*fields).group_by(["partition", "key", *fields]).agg(
                    pl.len().cast(pl.Int64).alias("n"), size.sum().alias("b")
                )
        if "_key_index" in self.__dict__ and "kid" not in g.columns:
            g = g.join(self._key_index, on="key", how="left", maintain_order="left")
        self._cache[key] = g
        return g

    def _file_codes(self, cols: list[str]):
        """The records' codes of ``cols`` (key first), sizes and partitions read from the sample file's dictionary
        pages (:func:`keyscope.io.parquet.dictionary_codes`), or None: the keys are not only in the file (a
        frame, or read already) or not dictionary pages; the caller then encodes the columns.

        Why: reading key and fields as columns (binary views) and encoding every row was most of a
        cold 10M-record whatif/recommend and most of its memory (docs/benchmarks.md, whatif5).
        """
        import polars as pl

        kf = self.sample.key_file()
        if kf is None:
            return None
        from ..io.parquet import dictionary_codes
        from .kernels import map_codes

        from ..io import prefetch

        path, check, names = kf
        got = prefetch.take_codes(path, cols, len(self.sample))  # read on a thread by the CLI, if it started one
        if got is not None:
            check()  # the file the sample opened (the thread's read was of the file as it is now)
        else:
            got = dictionary_codes(path, check, cols, names, len(self.sample), map_codes)
        if got is None:
            return None
        codes, values, size = got
        for c in cols[1:]:  # fields are text in a Sample (from_frame casts them)
            values[c] = values[c].cast(pl.String)
        part = self.sample.frame("partition")["partition"].to_numpy()
        return codes, values, size, part

    def _translate_kid(self, key_index, record_kid: np.ndarray) -> np.ndarray:
        """Per-record key ids of another key index (``kid, key``) as ids of this WhatIf's (null keys stay -1)."""
        import polars as pl

        mine = key_index.join(self._key_index, on="key", how="left", maintain_order="left", suffix="_mine")
        to = np.append(mine.sort("kid")["kid_mine"].cast(pl.Int64).to_numpy(), np.int64(-1))
        return to[record_kid].astype(np.int32)

    def _records(self, *also: str):
        """The records' partition, key and sizes, plus ``also`` (in the sample's column order).

        Why: the sample's other columns stay unread (docs/benchmarks.md: reading every
        column was 2.9-4.2 s of a 10M-record whatif).
        """
        want = {"partition", "key", "key_size", "value_size", *also}
        return self.sample.frame(*(c for c in self.sample.columns if c in want))

    def check_field(self, name: str) -> None:
        if name not in self.fields:
            have = ", ".join(self.fields) or "none"
            raise UsageError(
                f"unknown field {name!r}; fields in this sample: {have} (capture more with keyscope sample --field)"
            )

    def _kid(self, units, narrow: bool = False) -> np.ndarray:
        """Each unit's key id, -1 for a null key: int64, or int32 with ``narrow`` (scenario_pass reads either)."""
        import polars as pl

        if "kid" not in units.columns:
            units = units.join(self._key_index, on="key", how="left", maintain_order="left")
        if narrow:
            return units["kid"].cast(pl.Int32).fill_null(-1).to_numpy()
        return units["kid"].fill_null(-1).to_numpy().astype(np.int64)

    def _composite(self, fields: tuple[str, ...], sep: str):
        """Units over ``fields`` with the producer key ``ckey`` (cached)."""
        sep = sep if fields else ""
        key = ("composite", fields, sep)
        if key not in self._cache:
            u = self._table(fields)
            if "key" in u.columns:
                ckey = compose_keys(u["key"], [u[f] for f in fields], sep)
            else:  # from the dictionaries: each unit's key + sep + field bytes, no value gathered first
                ckey = self._coded_keys(u, fields, sep, self._kid(u)).compose()
            u = u.with_columns(ckey.alias("ckey"))
            self._cache[key] = u
        return self._cache[key]

    def _coded_keys(self, u, fields: tuple[str, ...], sep: str, kid: np.ndarray) -> CodedKeys:
        """The producer keys of a coded unit table ``u`` over ``fields``, as codes (:class:`CodedKeys`)."""
        d = self._dicts
        codes = []
        for f in fields:
            c = u[CODE + f].to_numpy()
            # the last code is null; int32 as the table holds them (int64 was 29 MB more at recommend's peak)
            codes.append((d[f], np.where(c == len(d[f]) - 1, np.int32(-1), c)))
        return CodedKeys(d["key"], kid, codes, sep)

    def _hash(self, tag, keys, partitioner: str) -> tuple[np.ndarray, np.ndarray]:
        """(operand, valid) per row, cached by ``tag``; ``keys`` a Binary Series or :class:`CodedKeys`."""
        key = ("hash", tag, partitioner)
        if key not in self._cache:
            if isinstance(keys, CodedKeys):  # composed and hashed a chunk at a time
                self._cache[key] = keys.hash(partitioner)
            else:
                h = hash_column(keys, partitioner)
                valid = h.is_not_null().to_numpy()
                self._cache[key] = (h.fill_null(0).to_numpy().astype(np.int64), valid)
        return self._cache[key]

    # ---- today -------------------------------------------------------------

    def _match_share(self, partitioner: str) -> float:
        u = self._composite((), "")
        op, valid = self._hash(_rows_tag((), "", None), u["ckey"], partitioner)
        src = u["partition"].to_numpy().astype(np.int64)
        n = u["n"].to_numpy().astype(np.float64)
        keyed = n[valid].sum()
        if keyed == 0:
            return 0.0
        hit = valid & (op % self.today_partitions == src)
        return float(n[hit].sum() / keyed)

    def detect_partitioner(self) -> tuple[str, float]:
        """The partitioner producers use *now*, and the share of keyed records it explains.

        analyze's detection decides (after a detected switch: the new rule, not
        the abandoned one, even if it wrote fewer of the sampled records); when
        it names none, the rule that explains the most records.
        """
        from ..analysis import detect_on_sample
        from ..detect import current_partitioner

        import polars as pl

        u = self.units(())
        kp = u.filter(pl.col("key").is_not_null()).group_by("key", "partition").agg(pl.col("n").sum().alias("records"))
        # the null keys from the table, not the records: the key column stays in the file
        nulls = u.filter(pl.col("key").is_null()).group_by("partition").agg(pl.col("n").sum())
        null_keys = {int(p): int(v) for p, v in nulls.iter_rows() if v}
        det = detect_on_sample(kp, self.today_partitions, self.sample, null_keys=null_keys)
        now = current_partitioner(det)
        if now is not None:
            old = (det.get("mixed") or {}).get("switched_from")
            if old:
                self.switched_from = old
                self.notes.append(f"producers switched from {old} to {now}: predictions use {now}, the current one")
            return now, self._match_share(now)
        scores = {name: self._match_share(name) for name in KEYED}
        best = max(scores, key=lambda k: (scores[k], k == "murmur2"))
        return best, scores[best]

    def _today(self) -> Result:
        u = self.units(())
        S = self.today_partitions
        src = u["partition"].to_numpy().astype(np.int64)
        n = u["n"].to_numpy().astype(np.float64)
        b = u["b"].to_numpy().astype(np.float64)
        counts = np.bincount(src, weights=n, minlength=S)
        nbytes = np.bincount(src, weights=b, minlength=S)
        w = self.weights
        records = counts * w
        lo, hi = self._interval(np.diag(counts).reshape(-1), S, np.zeros(S))  # today: null keys observed in place
        keyed = u["key"].is_not_null().to_numpy()
        res = Result(
            name="today",
            scenario=None,
            partitions=S,
            records=records,
            bytes=nbytes * w,
            skew=skew_ratio(records),
            skew_low=lo,
            skew_high=hi,
            bytes_skew=skew_ratio(nbytes * w),
            unkeyed_records=float((n[~keyed] * w[src[~keyed]]).sum()),
            keys_total=self._key_index.height,
        )
        res.consumer_loads = self._consumers(records)
        return res

    # ---- scenarios ---------------------------------------------------------

    def check(self, scenario: Scenario) -> None:
        for f in scenario.fields_needed():
            self.check_field(f)

    def evaluate(self, scenario: Scenario) -> Result:
        self.check(scenario)
        rows = self._rows(scenario)
        return self._result(scenario, rows)

    def evaluate_all(self, scenarios: Iterable[Scenario]) -> list[Result]:
        scenarios = list(scenarios)
        for s in scenarios:
            self.check(s)
        # the widest key sets first, so narrower tables derive from them
        for ks in sorted({s.key_fields for s in scenarios}, key=len, reverse=True):
            if ks:
                self._table(ks)
        last = {(s.key_fields, s.separator): i for i, s in enumerate(scenarios) if s.key_fields}
        first_salted = next((i for i, s in enumerate(scenarios) if _reads_hot_records_by_id(s)), None)
        if first_salted:  # scenarios before it: its hot records' columns are read meanwhile
            self._read_hot_records_ahead(scenarios[first_salted])
        out = []
        for i, s in enumerate(scenarios):
            out.append(self.evaluate(s))
            if last.get((s.key_fields, s.separator)) == i:
                self._forget_keys(s.key_fields, s.separator)
        return out

    def _forget_keys(self, key_fields: tuple[str, ...], sep: str) -> None:
        """Drop a composite key set's producer keys, rows and hashes once no scenario left needs them.

        Why: recommend's key+user_id set held ~200 MB of them (3.6M units at 10M records) through
        every salting candidate after it, at the peak of the run.  Anything asking again rebuilds
        them, with the same values (the unit tables stay).
        """
        rows_tag = _rows_tag(key_fields, sep, None)
        for k in [k for k in self._cache if isinstance(k, tuple) and (
                k in (("composite", key_fields, sep), ("plain-rows", key_fields, sep))
                or (k[0] == "hash" and k[1] == rows_tag))]:  # fmt: skip
            del self._cache[k]

    def hot_keys(self, key_fields: tuple[str, ...], sep: str, salt: Salt):
        """The (composite) keys to salt, hottest first: a Polars frame ``ckey, share``."""
        import polars as pl

        key = ("hot", key_fields, sep, salt.top, salt.share)
        if key in self._cache:
            return self._cache[key]
        u = self._composite(key_fields, sep)
        # int64 counts times float64 weights: the same doubles as converting the counts first, without
        # two unit-long copies (the partition gathers its weights as the int32 it is)
        wn = u["n"].to_numpy() * self.weights[u["partition"].to_numpy()]
        ids = self._composite_ids(key_fields, sep, u)
        if ids is None:
            weighted = pl.DataFrame({"ckey": u["ckey"], "w": wn})
            per = weighted.drop_nulls("ckey").group_by("ckey").agg(pl.col("w").sum())
        else:  # grouped on integer ids, the composite keys gathered for the candidates only (below)
            per = self._weights_by_ids(u, ids, wn)
        total = float(per["w"].sum())
        per = per.with_columns((pl.col("w") / clamp_min(total)).alias("share"))
        # only the candidates are sorted (by weight, then key: a total order, so the same
        # rows as sorting all): sorting every (composite) key took ~1.1 s at 10M records
        if salt.top is not None:
            if per.height > salt.top:
                w = per["w"].to_numpy()
                per = per.filter(pl.col("w") >= float(np.partition(w, w.size - salt.top)[w.size - salt.top]))
        else:
            per = per.filter(pl.col("share") >= salt.share)
        if ids is not None:
            per = per.with_columns(u["ckey"].gather(per["row"]).alias("ckey"))
        per = per.sort(["w", "ckey"], descending=[True, False])
        hot = per.head(salt.top) if salt.top is not None else per
        hot = hot.select("ckey", "share")
        self._cache[key] = hot
        return hot

    def _weights_by_ids(self, u, ids: list[str], wn: np.ndarray):
        """Per composite key named by ``ids`` (non-null key ids): ``w`` its summed weights, ``row`` its first unit.

        In numpy, on one int64 id per unit (key id x the field's width + its code): a Polars
        ``group_by`` of the 566k (key, region) units of a 10M-record sample held ~100 MB more
        (its hash tables; the peak of ``whatif --key-by key,region --salt-hot``).  The sums are
        in unit order; with whole-number weights (an unweighted sample) exactly Polars' sums.
        """
        import polars as pl

        kid = self._kid(u)
        gid, width = kid, 1
        if len(ids) > 1:  # (kid, code): the null code is the dictionary's last, so codes are in [0, width)
            f = ids[1][len(CODE):]
            width = len(self._dicts[f])
            gid = kid * width + u[ids[1]].to_numpy().astype(np.int64)
        rows = np.flatnonzero(kid >= 0)
        gid = gid[rows]
        G = self._key_index.height * width
        if G <= 4 * len(gid) + (1 << 16):  # dense: a slot per possible id
            slot, n_slots = gid, G
        else:
            _, slot = np.unique(gid, return_inverse=True)
            slot, n_slots = slot.reshape(-1), int(slot.max()) + 1 if slot.size else 0
        w = np.bincount(slot, weights=wn[rows], minlength=n_slots)
        first = np.full(n_slots, -1, np.int64)
        first[slot[::-1]] = rows[::-1]  # the last write wins: each slot's first unit
        have = np.flatnonzero(first >= 0)
        return pl.DataFrame({"w": w[have], "row": first[have]})

    def _composite_ids(self, key_fields: tuple[str, ...], sep: str, u) -> list[str] | None:
        """Columns of ``u`` whose values name its composite key one-to-one, or None (group on the bytes).

        Plain keys: the key id.  ``key + sep + field`` from a coded table: the
        (key id, field code) pair, when no key holds the separator's first byte
        -- then the first such byte of a composite key ends its key, and the
        rest is the field (or nothing: a null field), so distinct pairs give
        distinct bytes.  Two fields can collide (a null first or second field
        give the same bytes), and so can keys holding the separator: bytes then.
        """
        if not key_fields:
            return ["kid"] if "kid" in u.columns else None
        if "key" in u.columns or len(key_fields) != 1 or not sep:
            return None
        tag = ("sep-free keys", sep)
        if tag not in self._cache:
            self._cache[tag] = not self._dicts["key"].bin.contains(sep.encode()[:1]).any()
        return ["kid", CODE + key_fields[0]] if self._cache[tag] else None

    def _rows(self, sc: Scenario) -> _Rows:
        if sc.salt is None:
            key = ("plain-rows", sc.key_fields, sc.separator if sc.key_fields else "")
            if key not in self._cache:
                comp = ("composite", sc.key_fields, sc.separator if sc.key_fields else "")
                u = self._table(sc.key_fields) if sc.key_fields and comp not in self._cache else None
                if u is not None and "key" not in u.columns:  # coded: the producer keys never built whole
                    kid = self._kid(u, narrow=True)
                    keys = self._coded_keys(u, sc.key_fields, sc.separator, kid)
                else:
                    u = self._composite(sc.key_fields, sc.separator)
                    kid, keys = self._kid(u, narrow=True), u["ckey"]
                # the table's own columns (int32 partitions, Int64 counts: views, no copies), as
                # scenario_pass reads them: int64/float64 copies were ~115 MB at 3.6M units
                self._cache[key] = _Rows(
                    src=u["partition"].to_numpy(),
                    kid=kid,
                    keys=keys,
                    n=u["n"].to_numpy(),
                    b=u["b"].to_numpy(),
                    splittable=bool(sc.key_fields),
                )
            return self._cache[key]
        key = ("salted-rows", sc.key_fields, sc.separator, sc.salt)
        if key not in self._cache:
            self._cache[key] = self._rows_salted(sc)
        return self._cache[key]

    def _hot_records(self, key_fields: tuple[str, ...], sep: str, hot_keys):
        """The records of the hot (composite) keys only, with ``hid`` = index in ``hot_keys``."""
        import polars as pl

        tag = ("hot-records", key_fields, sep, tuple(hot_keys.to_list()))
        if tag not in self._cache and not key_fields and "record-kid" in self._cache:
            self._cache[tag] = self._hot_records_by_id(hot_keys)
        have = self._cache.get("record-codes") or {}
        if tag not in self._cache and key_fields and all(f in have for f in key_fields):
            if "key" not in self._composite(key_fields, sep).columns:
                self._cache[tag] = self._hot_records_by_codes(key_fields, sep, hot_keys)
        if tag not in self._cache:
            u = self._composite(key_fields, sep)
            hot_units = u.filter(pl.col("ckey").is_in(hot_keys.implode()))
            size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
            if "record-kid" in self._cache:
                # the original keys' rows by key id, then only their columns gathered: the pool of
                # the 16 hottest keys (most of a Zipf sample's records) was gathered, filtered on key
                # bytes, composed and joined, ~2 s of a 10M-record whatif --key-by --salt-hot here
                kids = hot_units["kid"].drop_nulls().unique().cast(pl.Int64).to_numpy()
                rows = self._rows_of_kids(kids)[0]
                recs = self._records("offset", *key_fields).select(pl.all().gather(rows))
            else:
                originals = hot_units["key"].unique()
                pool_keys, pool = self._hot_pool(key_fields)
                source = pool if originals.is_in(pool_keys.implode()).all() else self._records("offset", *key_fields)
                recs = source.filter(pl.col("key").is_in(originals.implode()))
            recs = recs.select(pl.exclude("key_size", "value_size", "timestamp"), size.alias("size"))
            recs = recs.with_columns(compose_keys(recs["key"], [recs[f] for f in key_fields], sep).alias("ckey"))
            hot_ids = pl.DataFrame({"ckey": hot_keys}).with_row_index("hid")
            recs = recs.join(hot_ids, on="ckey", how="inner")
            hot_kid = (
                hot_ids.join(
                    recs.select("ckey", "key").unique("ckey").join(self._key_index, on="key", how="left"),
                    on="ckey",
                    how="left",
                )
                .sort("hid")["kid"]
                .fill_null(-1)
                .cast(pl.Int64)
                .to_numpy()
            )
            self._cache[tag] = (recs, hot_kid)
        return self._cache[tag]

    def _read_hot_records_ahead(self, sc: Scenario) -> None:
        """Start reading the offsets and sizes of ``sc``'s hot records (a plain key salted by offset) on a thread.

        Why: that read (pyarrow decoding two or three columns of every row group, ~0.2-0.3 s of a
        10M-record recommend) waited on the main thread after the composite-key candidates, which
        leave the second core mostly idle; :meth:`_hot_frame` takes the result for the same rows.
        """
        import threading

        from ..io.parquet import offsets_and_sizes_at_rows

        src = self._hot_read_source()
        if "record-kid" not in self._cache or src is None:
            return
        sizes, path, check = src
        hot_keys = self.hot_keys((), "", sc.salt)["ckey"]
        found = self._rows_of_keys(hot_keys)
        job: dict = {"rows": found[0]}

        def read() -> None:
            try:
                # one row group at a time (this thread is the read-ahead): ~30 MB less beside the
                # composite keys' hashes than with a read ahead of its own
                job["got"] = offsets_and_sizes_at_rows(path, check, found[0], len(self.sample),
                                                       sizes=sizes.kept is None, ahead=0)  # fmt: skip
            except BaseException as e:  # noqa: BLE001 - raised where it is taken, as the read would have
                job["error"] = e

        # (its imports are done: io.parquet above, pyarrow.parquet and concurrent.futures by the group pass)
        job["thread"] = threading.Thread(target=read, name="keyscope-hot-read", daemon=True)
        self._cache[("rows-of-keys", tuple(hot_keys.to_list()))] = found
        self._cache["hot-read"] = job
        job["thread"].start()

    def _hot_read_source(self):
        """(record sizes, path, identity check) when the hot records' offsets and sizes can be read at their rows
        from the sample file (the sizes kept or readable, an offset column), else None: the one test of
        :meth:`_hot_frame` and its read-ahead, so that the two never disagree on which read is made."""
        sizes, kf = self._cache.get("record-size"), self.sample.key_file()
        if sizes is None or kf is None or "offset" not in kf[2]:
            return None
        return sizes, kf[0], kf[1]

    def _take_hot_read(self, rows: np.ndarray):
        """The read-ahead's (offsets, sizes) when it was made for these ``rows``, else None (read them now)."""
        job = self._cache.get("hot-read")
        if job is None or not np.array_equal(job["rows"], rows):
            return None
        del self._cache["hot-read"]
        job["thread"].join()
        if "error" in job:
            raise job["error"]
        return job["got"]

    def _hot_records_by_id(self, hot_keys):
        """``_hot_records`` for plain keys from the per-record key ids: integer gathers, no key bytes.

        Why: filtering 10M records on key bytes (``is_in``) and joining them back
        cost ~0.5 s per recommend here; a key-id lookup table costs a few
        tens of ms.  Hot keys are keys of the sample, so each has an id.
        """
        import polars as pl

        found = self._cache.pop(("rows-of-keys", tuple(hot_keys.to_list())), None)
        rows, hid, hot_kid = found if found is not None else self._rows_of_keys(hot_keys)
        recs = self._hot_frame(rows, hid)
        if recs is None:
            df = self.sample.frame("partition", "offset", "key_size", "value_size")
            size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
            recs = df.select("partition", "offset", "key_size", "value_size")[rows].select(
                "partition", "offset", size.alias("size"), pl.Series("hid", hid, dtype=pl.UInt32)
            )
        return recs, hot_kid

    def _match_units(self, rows: np.ndarray, unit_code: np.ndarray, hid: np.ndarray, key_fields: tuple[str, ...]):
        """(the ``rows`` whose (key id, field codes) is a hot unit's ``unit_code``, each one's ``hid``).

        A function of its own so that its per-record temporaries (five int64 arrays of the hot keys'
        records) are freed before the records' frame is built: they were the peak of a 10M-record
        ``whatif --key-by key,region --salt-hot 1:8``.
        """
        d, have = self._dicts, self._cache["record-codes"]
        rec_code = self._cache["record-kid"][rows].astype(np.int64)
        for f in key_fields:  # in place, the codes gathered as the int32 they are (exact integer arithmetic)
            c = have[f][rows]
            rec_code *= len(d[f])
            rec_code += np.where(c < 0, len(d[f]) - 1, c)
            del c
        order = np.argsort(unit_code, kind="stable")
        sorted_code = unit_code[order]
        at = np.searchsorted(sorted_code, rec_code)
        np.minimum(at, max(len(sorted_code) - 1, 0), out=at)
        match = sorted_code[at] == rec_code if len(sorted_code) else np.zeros(len(rows), np.bool_)
        del rec_code
        return rows[match], hid[order[at[match]]]

    def _hot_frame(self, rows: np.ndarray, hid: np.ndarray):
        """``partition, offset, size, hid`` of the records at ``rows`` (ascending), or None (read the columns).

        From the sizes kept by the dictionary-page read, or read, and the offsets at those rows only
        (:func:`keyscope.io.parquet.offsets_and_sizes_at_rows`): the whole offset, key_size and value_size
        columns were ~200 MB at the peak of a cold 10M-record recommend.
        """
        import polars as pl

        src = self._hot_read_source()
        if src is None:
            return None
        from ..io.parquet import offsets_and_sizes_at_rows

        sizes, path, check = src
        # one pass for both when the sizes are read too (two passes were ~0.35 s of a 10M recommend)
        ahead = self._take_hot_read(rows)
        off, size = ahead if ahead is not None else offsets_and_sizes_at_rows(path, check, rows, len(self.sample),
                                                                             sizes=sizes.kept is None)  # fmt: skip
        if off is None:
            return None
        if sizes.kept is not None:
            size = sizes.at(rows)
        if size is None:
            return None
        part = self.sample.frame("partition")["partition"]
        return pl.DataFrame({
            "partition": part.gather(rows),
            "offset": pl.Series(off, dtype=pl.Int64),
            "size": pl.Series(size, dtype=pl.Int64),
            "hid": pl.Series(np.asarray(hid), dtype=pl.UInt32),
        })

    def _hot_records_by_codes(self, key_fields: tuple[str, ...], sep: str, hot_keys):
        """``_hot_records`` for composite keys from the per-record key ids and field codes.

        Each hot composite key is one or more (key id, field codes) units of the
        coded table; a record belongs to it when its own ids match one of them.
        Why: gathering the hot keys' records' key and field bytes, composing
        them and joining on the result cost ~0.6 s CPU of a 10M-record
        ``whatif --key-by key,region --salt-hot 1:8`` here.
        """
        import polars as pl

        d = self._dicts
        u = self._composite(key_fields, sep)
        hot = u.filter(pl.col("ckey").is_in(hot_keys.implode())).join(
            pl.DataFrame({"ckey": hot_keys}).with_row_index("hid"), on="ckey", how="inner"
        )
        kid = self._kid(hot)
        unit_code = kid.copy()
        for f in key_fields:  # mixed radix over (key id, field codes); the null code is each dictionary's last
            unit_code = unit_code * len(d[f]) + hot[CODE + f].to_numpy().astype(np.int64)
        hid = hot["hid"].to_numpy().astype(np.int64)
        hot_kid = np.full(len(hot_keys), -1, np.int64)
        hot_kid[hid[::-1]] = kid[::-1]  # the first unit's key, as the bytes path's unique("ckey") keeps
        rows = self._rows_of_kids(np.unique(kid[kid >= 0]))[0]
        rows, rec_hid = self._match_units(rows, unit_code, hid, key_fields)
        recs = self._hot_frame(rows, rec_hid)
        if recs is None:
            df = self.sample.frame("partition", "offset", "key_size", "value_size")
            size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
            recs = df[rows].select(
                "partition", "offset", size.alias("size"), pl.Series("hid", rec_hid, dtype=pl.UInt32)
            )
        return recs, hot_kid

    def _rows_of_keys(self, keys) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(record rows of ``keys`` in order, each row's index in ``keys``, each key's id) from the per-record key ids.

        ``keys`` are plain keys of the sample, so each has an id.
        """
        import polars as pl

        kid = (
            pl.DataFrame({"key": keys}).join(self._key_index, on="key", how="left", maintain_order="left")["kid"]
            .cast(pl.Int64)
            .to_numpy()
        )
        return self._rows_of_kids(kid)

    def _rows_of_kids(self, kid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``_rows_of_keys`` from the keys' ids."""
        lut = np.full(self._key_index.height, -1, np.int64)
        lut[kid] = np.arange(len(kid))
        rows, idx = kernels.pick_rows(self._cache["record-kid"], lut)
        return rows, idx, kid

    def _hot_pool(self, key_fields: tuple[str, ...] = ()):
        """Records of the hottest plain keys, found once: every salting candidate draws from them.

        Their rows are found on the key column alone; each key-field set then
        gathers just its columns (the sample's other fields stay unread).
        """
        import polars as pl

        if "hot-pool" not in self._cache:
            top = self.hot_keys((), "", Salt(top=POOL_KEYS))["ckey"]
            if "record-kid" in self._cache:  # integer lookups: is_in on 10M key bytes took ~1-3 s here
                rows = self._rows_of_keys(top)[0]
            else:
                rows = self.sample.frame("key").select(pl.arg_where(pl.col("key").is_in(top.implode()))).to_series()
            self._cache["hot-pool"] = (top, rows)
        top, rows = self._cache["hot-pool"]
        tag = ("hot-pool-records", key_fields)
        if tag not in self._cache:
            self._cache[tag] = self._records("offset", *key_fields).select(pl.all().gather(rows))
        return top, self._cache[tag]

    def _salt_hashes(self, sc: Scenario, hot_keys) -> SaltHashes:
        """The hot keys' salt data hashed (:class:`SaltHashes`), cached across D.

        By offset the hash is per record; by a field, per distinct (partition,
        hot key, field value), weighted by its records.
        """
        import polars as pl

        salt = sc.salt
        binned = salt.by == "offset" and _RESIDUES % salt.buckets == 0
        tag = ("salt-hashes", sc.key_fields, sc.separator, tuple(hot_keys.to_list()), salt.by, salt.seed, binned or salt.buckets)
        if tag not in self._cache:
            if salt.by == "offset":
                recs, hot_kid = self._hot_records(sc.key_fields, sc.separator, hot_keys)
                mm = murmur3_int64(recs["offset"].to_numpy(), salt.seed)
                if binned:
                    # per record once: bin by the hash mod 840, which every D in 2..8 divides,
                    # so each D is then arithmetic on these few bins.  The code built in place in
                    # one int64 array (the same integers): the expression's int64 temporaries were
                    # ~50 MB of the hot key's 1.35M records at a 10M-record recommend's peak
                    H = len(hot_keys)
                    code = recs["partition"].to_numpy().astype(np.int64)
                    code *= H
                    code += recs["hid"].to_numpy()
                    code *= _RESIDUES
                    np.remainder(mm, np.uint32(_RESIDUES), out=mm)
                    code += mm
                    del mm
                    cnt = np.bincount(code, minlength=self.today_partitions * H * _RESIDUES)
                    nz = np.flatnonzero(cnt)
                    byt = np.bincount(code, weights=recs["size"].to_numpy(), minlength=len(cnt))[nz]
                    del code
                    c_src, rest = np.divmod(nz, H * _RESIDUES)
                    c_hid, res = np.divmod(rest, _RESIDUES)
                    out = SaltHashes(c_src, c_hid, res.astype(np.uint32), cnt[nz].astype(np.float64), byt, hot_kid)
                else:
                    src = recs["partition"].to_numpy().astype(np.int64)
                    hid = recs["hid"].to_numpy().astype(np.int64)
                    size = recs["size"].to_numpy().astype(np.float64)
                    out = SaltHashes(src, hid, mm, np.ones(len(src)), size, hot_kid)
                self._cache[tag] = out
                return out
            else:  # from the (partition, key, fields) table, not the records
                u = self._table(tuple(dict.fromkeys(sc.key_fields + (salt.by,))))
                kids = self._composite(sc.key_fields, sc.separator).filter(
                    pl.col("ckey").is_in(hot_keys.implode())
                )["kid"].drop_nulls().unique()
                sub = self._values(u.filter(pl.col("kid").is_in(kids.implode())))  # the hot keys' units only
                sub = sub.with_columns(
                    compose_keys(sub["key"], [sub[f] for f in sc.key_fields], sc.separator).alias("ckey")
                ).join(pl.DataFrame({"ckey": hot_keys}).with_row_index("hid"), on="ckey", how="inner")
                hot_kid = np.full(len(hot_keys), -1, dtype=np.int64)
                hot_kid[sub["hid"].to_numpy().astype(np.int64)] = sub["kid"].fill_null(-1).to_numpy()
                g = sub.group_by(["partition", "hid", salt.by]).agg(pl.col("n").sum(), pl.col("b").sum())
                mm = murmur3_binary(g[salt.by], salt.seed)
            self._cache[tag] = SaltHashes(
                g["partition"].to_numpy().astype(np.int64),
                g["hid"].to_numpy().astype(np.int64),
                mm,
                g["n"].to_numpy().astype(np.float64),
                g["b"].to_numpy().astype(np.float64),
                hot_kid,
            )
        return self._cache[tag]

    def _rows_salted(self, sc: Scenario) -> _Rows:
        """Cold keys as they are; hot keys' records binned into (partition, hot key, salt) cells."""
        import polars as pl

        salt = sc.salt
        hot = self.hot_keys(sc.key_fields, sc.separator, salt)
        hot_keys = hot["ckey"]
        H, D, S = len(hot_keys), salt.buckets, self.today_partitions
        sh = self._salt_hashes(sc, hot_keys)
        cell = (sh.src * H + sh.hid) * D + (sh.mm % np.uint32(D)).astype(np.int64)
        n = np.bincount(cell, weights=sh.n, minlength=S * H * D)
        b = np.bincount(cell, weights=sh.b, minlength=S * H * D)
        nz = np.flatnonzero(n)
        c_src, rest = np.divmod(nz, H * D)
        c_hid, c_salt = np.divmod(rest, D)
        sub_tag = ("subkeys", tuple(hot_keys.to_list()), D)
        if sub_tag not in self._cache:
            self._cache[sub_tag] = concat_binary(
                [
                    hot_keys.gather(np.repeat(np.arange(H), D)),
                    pl.Series([f"#{j}" for j in range(D)] * H, dtype=pl.String).cast(pl.Binary),
                ]
            )
        subkeys = self._cache[sub_tag]  # index hid * D + salt
        cold_tag = ("cold-rows", sc.key_fields, sc.separator, tuple(hot_keys.to_list()))
        if cold_tag not in self._cache:
            u = self._composite(sc.key_fields, sc.separator)
            cold = u.filter(~pl.col("ckey").is_in(hot_keys.implode()).fill_null(False))
            self._cache[cold_tag] = ColdRows(
                cold["ckey"],
                cold["partition"].to_numpy().astype(np.int64),
                self._kid(cold),
                cold["n"].to_numpy().astype(np.float64),
                cold["b"].to_numpy().astype(np.float64),
            )
        cold = self._cache[cold_tag]
        return _Rows(
            src=np.concatenate([cold.src, c_src]),
            kid=np.concatenate([cold.kid, sh.hot_kid[c_hid]]),
            keys=None,
            parts=[(cold_tag, cold.keys), (sub_tag, subkeys, c_hid * D + c_salt)],
            n=np.concatenate([cold.n, n[nz]]),
            b=np.concatenate([cold.b, b[nz]]),
            splittable=True,
            salted=list(zip(hot["ckey"].to_list(), hot["share"].to_list())),
        )

    def _result(self, sc: Scenario, rows: _Rows) -> Result:
        S, N, w = self.today_partitions, sc.partitions, self.weights
        if rows.keys is not None:
            op, valid = self._hash(_rows_tag(sc.key_fields, sc.separator, None), rows.keys, sc.partitioner)
        else:  # salted: cold keys and sub-keys hashed apart (each once), rows gathered from them
            (cold_tag, cold_keys), (sub_tag, subkeys, pick) = rows.parts
            op_c, valid_c = self._hash(cold_tag, cold_keys, sc.partitioner)
            op_s, valid_s = self._hash(sub_tag, subkeys, sc.partitioner)
            op = np.concatenate([op_c, op_s[pick]])
            valid = np.concatenate([valid_c, valid_s[pick]])
        K = self._key_index.height
        f = kernels.scenario_pass(rows.src, op, valid, rows.n, rows.b, rows.kid, self.weights, S, N, K, rows.splittable)
        unkeyed = float((f.unkeyed_n * w).sum())
        records = w @ f.cells_n.reshape(S, N) + unkeyed / N  # the producer places null keys at random: even in expectation
        by = w @ f.cells_b.reshape(S, N) + float((f.unkeyed_b * w).sum()) / N
        lo, hi = self._interval(f.cells_n, N, f.unkeyed_n)
        expected = None
        if not sc.key_fields and sc.salt is None and self.today_match >= 0.99:
            expected = expected_keys_moved(S, N, sc.partitioner == self.today_partitioner)
        res = Result(
            name=sc.label,
            scenario=sc,
            partitions=N,
            records=records,
            bytes=by,
            skew=skew_ratio(records),
            skew_low=lo,
            skew_high=hi,
            bytes_skew=skew_ratio(by),
            unkeyed_records=unkeyed,
            keys_total=f.keys_present,
            keys_moved=f.keys_moved,
            traffic_moved_share=f.moved_weighted / clamp_min(f.keyed_weighted),
            expected_keys_moved_share=expected,
            keys_split=f.keys_split,
            order_lost_traffic_share=f.lost_weighted / clamp_min(f.keyed_weighted),
            salted_keys=rows.salted,
        )
        res.consumer_loads = self._consumers(records)
        return res

    def _interval(self, counts: np.ndarray, N: int, unk_n: np.ndarray) -> tuple[float, float]:
        """95% interval of the skew ratio, the way ``keyscope analyze`` computes it.

        skew = N x (largest partition share), so the interval is N x the
        interval of the largest share (:func:`keyscope.stats.max_share_interval`):
        Wilson per partition when every record weighs 1, else a linearised
        ratio interval over the per-partition weights.  ``counts`` are the
        sampled records per (today partition, scenario partition) cell.
        """
        S, w = self.today_partitions, self.weights
        M = counts.reshape(S, N)
        spread = unk_n / N  # null keys, spread evenly by the producer
        y = w @ M + float(w @ unk_n) / N
        total = float(y.sum())
        if total <= 0:
            return 0.0, 0.0
        shares = y / total
        if not self.scaled and not unk_n.any():
            k, n = M.sum(axis=0), float(M.sum())

            def part(z):
                return wilson_interval(k, n, z=z)
        else:
            s2 = (w * w) @ M + float((w * w) @ spread) / N

            def part(z):
                return normal_interval(shares, ratio_share_se(y, s2, total, float(s2.sum())), z=z)

        lo, hi = max_share_interval(shares, part, CONFIDENCE)
        scale = total / clamp_min(total / N)
        # the largest share is at least 1/N, so the ratio is at least 1: near-even loads
        # can give a lower share bound under 1/N, which no topic can have
        return max(float(lo * scale), 1.0), max(float(hi * scale), 1.0)

    def _consumers(self, records: np.ndarray) -> list[ConsumerLoad]:
        return [consumer_load(records, c, a) for c in self.consumers for a in ASSIGNORS]




def _reads_hot_records_by_id(sc: Scenario) -> bool:
    """Does ``sc`` read its hot records' offsets by key id (a plain key salted by offset)?"""
    return sc.salt is not None and sc.salt.by == "offset" and not sc.key_fields


def _rows_tag(key_fields, sep, salt):
    return ("rows", key_fields, sep if key_fields else "", salt)

