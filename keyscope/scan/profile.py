"""A profile: everything ``keyscope scan`` learnt from every record of a range, in O(Σn) memory.

Exact parts (they add across tasks): per-partition counts, bytes and time
range; per-partitioner agreement (records whose partition is the rule's);
for each key expression and counter rule, records and bytes per
``operand % n`` for every n in 1..N, which are the exact loads of an
n-partition topic.  Sketched parts (Apache DataSketches, serialised bytes):
frequent items of each key expression (error at most ``epsilon * W``,
epsilon = 3.5 / 2^lg_max_k), HLL of distinct keys, KLL of record sizes.
Per-field distributions of the top keys (``Expression.tracked``): for the keys
each task tracked (its hottest, from the chunk they first were hot in), exact
records per captured field value, capped; records a key had before it was
tracked, or beyond the cap, are the "cut" (counted, values unknown).

A task's result is itself a Profile holding one task id; :func:`merge` adds
profiles and refuses one task id twice, so a retried task cannot be counted
twice.  Sketches merge in task-id order, whatever order results arrive in.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

VERSION = 1
KIND = "keyscope-profile"
LG_MAX_K = 12  # frequent items: exact below 0.75 * 4096 distinct keys, else error <= W * 3.5 / 4096
HLL_LG_K = 14  # relative error ~ 1.04 / sqrt(2^14) = 0.8%
KLL_K = 200  # normalised rank error ~ 1.3%

KEEP_TRACKED_KEYS = 64  # per expression in a written profile: the sketch's top keys that were tracked
KEEP_VALUES = 256  # per tracked key and field in a written profile; the rest is counted in "other"

__all__ = ["Profile", "Expression", "PartitionStats", "Tracked", "merge", "trim_tracked", "read_profile", "write_profile", "is_profile",
           "load_offset", "VERSION"]


def load_offset(n: int) -> int:
    """Where the counters of n partitions start in a flat array holding n = 1, 2, ... in turn."""
    return n * (n - 1) // 2


@dataclass
class PartitionStats:
    records: int = 0
    bytes: int = 0  # key + value bytes
    key_bytes: int = 0
    value_bytes: int = 0
    null_keys: int = 0
    empty_keys: int = 0
    min_timestamp: int | None = None  # ms since 1970; None when no record had one
    max_timestamp: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None

    def add(self, o: "PartitionStats") -> None:
        for f in ("records", "bytes", "key_bytes", "value_bytes", "null_keys", "empty_keys"):
            setattr(self, f, getattr(self, f) + getattr(o, f))
        for f, pick in (("min_timestamp", min), ("max_timestamp", max), ("first_offset", min), ("last_offset", max)):
            a, b = getattr(self, f), getattr(o, f)
            setattr(self, f, b if a is None else a if b is None else pick(a, b))


@dataclass
class Tracked:
    """One tracked key: ``records`` counted while tracked, and per captured field the records per
    value (None: the field was missing) plus ``other`` (values beyond the cap).  Sums add across tasks."""

    records: int = 0
    fields: dict[str, tuple[dict, int]] = field(default_factory=dict)  # field -> ({value: records}, other)

    def add(self, o: "Tracked") -> None:
        self.records += o.records
        for f, (vals, other) in o.fields.items():
            mine, mo = self.fields.get(f, ({}, 0))
            mine = dict(mine)
            for v, n in vals.items():
                mine[v] = mine.get(v, 0) + n
            self.fields[f] = (mine, mo + other)


@dataclass
class Expression:
    """Counters and sketches of one key expression (``key`` or ``key+FIELD...``)."""

    fields: tuple[str, ...]
    separator: str
    records: int = 0
    bytes: int = 0
    null_keys: int = 0
    # rule -> flat int64 arrays over n = 1..N (see load_offset): records and bytes per operand % n
    load_records: dict[str, np.ndarray] = field(default_factory=dict)
    load_bytes: dict[str, np.ndarray] = field(default_factory=dict)
    unhashed: dict[str, list[int]] = field(default_factory=dict)  # rule -> [records, bytes] the rule does not hash
    frequent: bytes = b""  # frequent_strings_sketch, keys as latin-1 text
    distinct: bytes = b""  # hll_sketch (updatable)
    tracked: dict[bytes, Tracked] = field(default_factory=dict)  # top keys' per-field distributions


@dataclass
class Profile:
    topic: str
    partition_count: int
    partitions_max: int  # counters cover n = 1..max(partitions_max, partition_count)
    counter_rules: tuple[str, ...]
    isolation: str = "read_committed"
    tasks_planned: int = 0
    tasks_done: set[int] = field(default_factory=set)
    range: dict = field(default_factory=dict)  # what --from/--to asked, per partition [start, stop)
    partitions: dict[int, PartitionStats] = field(default_factory=dict)
    agreement: dict[str, list[int]] = field(default_factory=dict)  # rule -> [records on the rule's partition, hashed]
    expressions: dict[str, Expression] = field(default_factory=dict)
    sizes: bytes = b""  # kll_ints_sketch of key + value bytes per record
    lg_max_k: int = LG_MAX_K
    notes: list[str] = field(default_factory=list)
    version: int = VERSION

    @property
    def n_max(self) -> int:
        return max(self.partitions_max, self.partition_count)

    @property
    def complete(self) -> bool:
        return len(self.tasks_done) == self.tasks_planned

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions.values())

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.partitions.values())

    def loads(self, expr: str, rule: str, n: int, unit: str = "records") -> list[int]:
        """Exact records (or bytes) per partition of an n-partition topic under ``rule``."""
        e = self.expressions[expr]
        arr = (e.load_records if unit == "records" else e.load_bytes)[rule]
        if not 1 <= n <= self.n_max:
            raise ValueError(f"the profile holds counters for 1..{self.n_max} partitions, not {n}")
        o = load_offset(n)
        return [int(x) for x in arr[o : o + n]]

    def frequent_sketch(self, expr: str = "key"):
        import datasketches as ds

        return ds.frequent_strings_sketch.deserialize(self.expressions[expr].frequent)

    def distinct_sketch(self, expr: str = "key"):
        import datasketches as ds

        return ds.hll_sketch.deserialize(self.expressions[expr].distinct)

    def sizes_sketch(self):
        import datasketches as ds

        return ds.kll_ints_sketch.deserialize(self.sizes)

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict:
        b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
        return {
            "kind": KIND,
            "version": self.version,
            "topic": self.topic,
            "partition_count": self.partition_count,
            "partitions_max": self.partitions_max,
            "counter_rules": list(self.counter_rules),
            "isolation": self.isolation,
            "tasks": {"planned": self.tasks_planned, "done": sorted(self.tasks_done)},
            "range": self.range,
            "partitions": {str(p): vars(s).copy() for p, s in sorted(self.partitions.items())},
            "agreement": {r: list(v) for r, v in self.agreement.items()},
            "expressions": {
                name: {
                    "fields": list(e.fields),
                    "separator": e.separator,
                    "records": e.records,
                    "bytes": e.bytes,
                    "null_keys": e.null_keys,
                    "load_records": {r: a.tolist() for r, a in e.load_records.items()},
                    "load_bytes": {r: a.tolist() for r, a in e.load_bytes.items()},
                    "unhashed": {r: list(v) for r, v in e.unhashed.items()},
                    "frequent": b64(e.frequent),
                    "distinct": b64(e.distinct),
                    "tracked": [
                        {"key": k.decode("latin-1"), "records": t.records,
                         "fields": {f: {"values": sorted([[v, n] for v, n in vals.items()],
                                                         key=lambda x: (-x[1], x[0] is not None, x[0] or "")),
                                        "other": other}
                                    for f, (vals, other) in sorted(t.fields.items())}}
                        for k, t in sorted(e.tracked.items())
                    ],
                }
                for name, e in self.expressions.items()
            },
            "sizes": b64(self.sizes),
            "lg_max_k": self.lg_max_k,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        unb = lambda s: base64.b64decode(s.encode("ascii"), validate=True)  # noqa: E731
        exprs = {}
        for name, e in d["expressions"].items():
            exprs[name] = Expression(
                tuple(e["fields"]), e["separator"], int(e["records"]), int(e["bytes"]), int(e["null_keys"]),
                {r: np.asarray(a, np.int64) for r, a in e["load_records"].items()},
                {r: np.asarray(a, np.int64) for r, a in e["load_bytes"].items()},
                {r: [int(x) for x in v] for r, v in e["unhashed"].items()},
                unb(e["frequent"]), unb(e["distinct"]),
                {t["key"].encode("latin-1"): Tracked(int(t["records"]), {
                    f: ({v: int(n) for v, n in d["values"]}, int(d["other"])) for f, d in t["fields"].items()})
                 for t in e.get("tracked", [])},  # profiles written before per-field distributions have none
            )
        return cls(
            topic=d["topic"], partition_count=int(d["partition_count"]), partitions_max=int(d["partitions_max"]),
            counter_rules=tuple(d["counter_rules"]), isolation=d["isolation"],
            tasks_planned=int(d["tasks"]["planned"]), tasks_done=set(int(t) for t in d["tasks"]["done"]),
            range=d["range"], partitions={int(p): PartitionStats(**s) for p, s in d["partitions"].items()},
            agreement={r: [int(x) for x in v] for r, v in d["agreement"].items()}, expressions=exprs,
            sizes=unb(d["sizes"]), lg_max_k=int(d["lg_max_k"]), notes=list(d["notes"]), version=int(d["version"]),
        )


def merge(profiles) -> Profile:
    """Add profiles of disjoint task sets (associative and commutative: sketches merge in task-id order).

    Raises ValueError when two hold the same task (a retried task reported twice) or they
    describe different scans.
    """
    import datasketches as ds

    items = sorted(profiles, key=lambda p: min(p.tasks_done) if p.tasks_done else -1)
    if not items:
        raise ValueError("nothing to merge")
    first = items[0]
    out = Profile(first.topic, first.partition_count, first.partitions_max, first.counter_rules, first.isolation,
                  first.tasks_planned, set(), dict(first.range), lg_max_k=first.lg_max_k)
    notes: list[str] = []
    freq: dict[str, object] = {}
    hll: dict[str, object] = {}
    kll = None
    for p in items:
        same = (p.topic, p.partition_count, p.partitions_max, p.counter_rules, p.isolation, p.lg_max_k, p.version)
        if same != (first.topic, first.partition_count, first.partitions_max, first.counter_rules, first.isolation,
                    first.lg_max_k, first.version) or set(p.expressions) != set(first.expressions):
            raise ValueError("these profiles describe different scans (topic, counters or key expressions differ)")
        twice = out.tasks_done & p.tasks_done
        if twice:
            raise ValueError(f"task(s) {sorted(twice)[:5]} counted twice")
        out.tasks_done |= p.tasks_done
        out.tasks_planned = max(out.tasks_planned, p.tasks_planned)
        for part, s in p.partitions.items():
            out.partitions.setdefault(part, PartitionStats()).add(s)
        for r, (m, h) in p.agreement.items():
            a = out.agreement.setdefault(r, [0, 0])
            a[0] += m
            a[1] += h
        for name, e in p.expressions.items():
            o = out.expressions.get(name)
            if o is None:
                o = out.expressions[name] = Expression(e.fields, e.separator)
            o.records += e.records
            o.bytes += e.bytes
            o.null_keys += e.null_keys
            for r, a in e.load_records.items():
                o.load_records[r] = o.load_records[r] + a if r in o.load_records else a.copy()
            for r, a in e.load_bytes.items():
                o.load_bytes[r] = o.load_bytes[r] + a if r in o.load_bytes else a.copy()
            for r, (n, b) in e.unhashed.items():
                u = o.unhashed.setdefault(r, [0, 0])
                u[0] += n
                u[1] += b
            for k, t in e.tracked.items():  # sums: the same whatever the order
                o.tracked.setdefault(k, Tracked()).add(t)
            if e.frequent:
                s = ds.frequent_strings_sketch.deserialize(e.frequent)
                if name in freq:
                    freq[name].merge(s)
                else:
                    freq[name] = s
            if e.distinct:
                if name not in hll:
                    hll[name] = ds.hll_union(HLL_LG_K)
                hll[name].update(ds.hll_sketch.deserialize(e.distinct))
        if p.sizes:
            k = ds.kll_ints_sketch.deserialize(p.sizes)
            if kll is None:
                kll = k
            else:
                kll.merge(k)
        notes += [n for n in p.notes if n not in notes]
    for name, o in out.expressions.items():
        o.frequent = freq[name].serialize() if name in freq else b""
        o.distinct = hll[name].get_result(ds.tgt_hll_type.HLL_8).serialize_updatable() if name in hll else b""
    out.sizes = kll.serialize() if kll is not None else b""
    out.notes = notes
    return out


def trim_tracked(p: Profile, keys: int = KEEP_TRACKED_KEYS, values: int = KEEP_VALUES) -> None:
    """Keep the tracked keys among the sketch's top ``keys`` of each expression, and per field the
    ``values`` most frequent values (the rest added to ``other``).  Done once, on the merged profile:
    merging stays associative because task results are never trimmed."""
    import datasketches as ds

    for name, e in p.expressions.items():
        if not e.tracked or not e.frequent:
            continue
        fs = p.frequent_sketch(name)
        items = fs.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES, 0) if not fs.is_empty() else []
        items.sort(key=lambda t: (-t[1], t[0]))
        keep = [i[0].encode("latin-1") for i in items if i[0].encode("latin-1") in e.tracked][:keys]
        out = {}
        for k in keep:
            t = e.tracked[k]
            fields = {}
            for f, (vals, other) in t.fields.items():
                ranked = sorted(vals.items(), key=lambda x: (-x[1], x[0] is not None, x[0] or ""))
                fields[f] = (dict(ranked[:values]), other + sum(n for _, n in ranked[values:]))
            out[k] = Tracked(t.records, fields)
        e.tracked = out


def is_profile(path) -> bool:
    """True when ``path`` is a file whose first bytes open a profile (no full read)."""
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or device: opening it could block
            return False
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and f'"kind": "{KIND}"'.encode() in head


def write_profile(profile: Profile, path) -> None:
    """Write atomically (a temporary file renamed over ``path``): never a half-written profile."""
    path = Path(path)
    text = json.dumps(profile.to_dict(), allow_nan=False, separators=(",", ":"))
    text = '{"kind": "%s", ' % KIND + text[len('{"kind":"%s",' % KIND):]
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent or "."))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_profile(path) -> Profile:
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the profile: {e}") from None
    if not isinstance(d, dict) or d.get("kind") != KIND:
        raise InputError(f"{path}: not a keyscope profile (no \"kind\": \"{KIND}\")")
    if d.get("version") != VERSION:
        raise InputError(f"{path}: profile version {d.get('version')!r}; this keyscope reads version {VERSION}")
    try:
        return Profile.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{path}: damaged profile ({type(e).__name__}: {e})") from None
