"""The scenarios ``keyscope whatif`` evaluates: every combination of the options given, run on a sample.

Kept apart from :mod:`keyscope.whatif` (which evaluates one scenario) so the
CLI only parses options: the grid, the notes and the --fail-on-skew verdict
are library decisions, tested without click.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

from .errors import UsageError
from .model.limits import check_count


def int_list(values: Sequence[Any], what: str) -> list[int]:
    """``("4,6", "12")`` -> ``[4, 6, 12]``, each a valid partition/consumer count, duplicates dropped."""
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                raise UsageError(f"{what}: empty item in {str(v)!r}; give numbers separated by commas, e.g. 4,6,12")
            try:
                n = int(part)
            except ValueError:
                raise UsageError(f"{what}: {part!r} is not a whole number") from None
            out.append(check_count(n, what))
    return list(dict.fromkeys(out))


def partitioner_list(values: Sequence[Any]) -> list[str]:
    """``("murmur2,consistent",)`` -> canonical partitioner names, duplicates dropped."""
    from .partitioners import get_partitioner

    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                out.append(get_partitioner(part).name)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class Grid:
    """The parsed what-if options; each list empty means "today's"."""

    counts: list[int]
    partitioners: list[str]
    keysets: list[tuple]
    salts: list
    consumers: list[int]
    separator: str = "|"

    @classmethod
    def parse(cls, partitions=(), partitioners=(), key_by=(), separator="|", salt_hot=(), salt_by="offset",
              salt_seed=0, consumers=()) -> "Grid":
        """From the options as typed; a one-line UsageError for anything malformed (before any work)."""
        from .whatif.spec import parse_key_by, parse_salt

        g = cls(
            counts=int_list(partitions, "--partitions"),
            partitioners=partitioner_list(partitioners),
            keysets=[parse_key_by(k) for k in key_by],
            salts=[parse_salt(s, by=salt_by, seed=salt_seed) for s in salt_hot],
            consumers=int_list(consumers, "--consumers"),
            separator=separator,
        )
        if not (g.counts or g.partitioners or g.keysets or g.salts or g.consumers):
            raise UsageError(
                "give at least one scenario: --partitions, --partitioner, --key-by, --salt-hot, or --consumers"
                " alone for today's layout (or let `keyscope recommend` generate them)"
            )
        if salt_by != "offset" and not g.salts:
            raise UsageError("--salt-by only applies with --salt-hot")
        return g

    @property
    def fields(self) -> list[str]:
        """The fields the scenarios key or salt by (their unit tables are built with the plain one, in one pass)."""
        return list(dict.fromkeys([f for ks in self.keysets for f in ks] + [s.by for s in self.salts if s.by != "offset"]))

    def scenarios(self, today_partitions: int, today_partitioner: str) -> list:
        """Every combination, in option order, without repeats; none for --consumers alone."""
        from .whatif.spec import Scenario

        if not (self.counts or self.partitioners or self.keysets or self.salts):
            return []  # --consumers alone: today's layout, consumer counts only
        out = [
            Scenario(n, p, key_fields=ks, separator=self.separator, salt=s)
            for n, p, ks, s in itertools.product(
                self.counts or [today_partitions], self.partitioners or [today_partitioner],
                self.keysets or [()], self.salts or [None],
            )
        ]
        return list(dict.fromkeys(out))


@dataclass
class WhatIfRun:
    """Today and every scenario's prediction, the best one, and the --fail-on-skew verdict."""

    whatif: Any  # whatif.engine.WhatIf
    path: str
    scenarios: list
    results: list
    best: Any  # whatif.result.Result with the lowest predicted skew (today's when no scenario)
    fail_on_skew: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def exceeded(self) -> bool:
        return self.fail_on_skew is not None and self.best.skew > self.fail_on_skew


def run_whatif(sample_path, grid: Grid, today_partitioner: str | None = None,
               fail_on_skew: float | None = None) -> WhatIfRun:
    """Read the sample, evaluate the grid against today's layout."""
    from .sample import read_sample
    from .whatif.engine import WhatIf

    sample = read_sample(sample_path, columns=("partition",))  # the keys stay in the file until needed (WhatIf)
    # the fields the scenarios key or salt by: their unit tables are built with the plain one in
    # one pass over the records (large samples: one dictionary encoding per column, no separate scan)
    fields = grid.fields
    salted_keys = [f for ks in grid.keysets for f in ks] if grid.salts else []  # composite keys to be salted
    w = WhatIf(sample, partitioner=today_partitioner, consumers=grid.consumers or None,
               group_fields=[f for f in dict.fromkeys(fields) if f in sample.field_names],
               record_fields=[f for f in dict.fromkeys(salted_keys) if f in sample.field_names])
    scenarios = grid.scenarios(w.today_partitions, w.today_partitioner)
    results = w.evaluate_all(scenarios) if scenarios else []
    notes = []
    fewer = sorted({sc.partitions for sc in scenarios if sc.partitions < w.today_partitions})
    if fewer:
        notes.append(
            f"Kafka cannot reduce a topic's partitions: {', '.join(map(str, fewer))} partition(s) mean a new topic"
            " and moving every consumer to it"
        )
    best = min(results or [w.today], key=lambda r: r.skew)
    return WhatIfRun(w, str(sample_path), scenarios, results, best, fail_on_skew, notes)
