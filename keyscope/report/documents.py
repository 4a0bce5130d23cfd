"""Every command's JSON document, one dataclass each, serialised here.

A command's result crosses from the library to its renderer as one of these;
``to_dict()`` is the ``--format json`` document, and each class names its JSON
Schema (docs/schemas), whose top-level properties equal the serialised fields
(tests/test_documents.py).  The library's own results (``analysis.Analysis``,
``whatif.result.Result``, ``advice.Advice``, ``lag.GroupLag``, ``sample.Sample``)
serialise their parts; these add what the command knows (the file, the
--fail-on-skew verdict).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # no import cost on quick commands
    from ..advice import Advice
    from ..analysis import Analysis
    from ..grid import WhatIfRun
    from ..lag import GroupLag, Trend
    from ..sample import Sample


@dataclass
class AnalyzeDocument:
    """``keyscope analyze``: the analysis, and the --fail-on-skew verdict when one was asked for."""

    SCHEMA: ClassVar[str] = "analyze.schema.json"
    analysis: "Analysis"
    fail_on_skew: float | None = None

    @property
    def exceeded(self) -> bool:
        return self.fail_on_skew is not None and self.analysis.skew_ratio > self.fail_on_skew

    def to_dict(self) -> dict[str, Any]:
        doc = self.analysis.to_dict()
        if self.fail_on_skew is not None:
            doc["fail_on_skew"] = {"threshold": self.fail_on_skew, "exceeded": self.exceeded}
        return doc


@dataclass
class WhatIfDocument:
    """``keyscope whatif``: today and every scenario (a :class:`keyscope.grid.WhatIfRun`)."""

    SCHEMA: ClassVar[str] = "whatif.schema.json"
    run: "WhatIfRun"

    def to_dict(self) -> dict[str, Any]:
        r = self.run
        w = r.whatif
        s = w.sample
        doc: dict[str, Any] = {
            "sample": {
                "path": r.path,
                "topic": s.meta.topic,
                "records": len(s),
                "partitions": w.today_partitions,
                "load_unit": w.load_unit,
                "today_partitioner": {"name": w.today_partitioner, "match_share": w.today_match},
                "notes": list(w.notes) + r.notes,
            },
            "today": w.today.to_dict(),
            "scenarios": [x.to_dict() for x in r.results],
        }
        if r.fail_on_skew is not None:
            doc["fail_on_skew"] = {
                "threshold": r.fail_on_skew,
                "applies_to": "best scenario (lowest predicted skew)",
                "best_scenario": r.best.name,
                "best_skew": r.best.skew,
                "exceeded": r.exceeded,
            }
        return doc


@dataclass
class RecommendDocument:
    """``keyscope recommend``: the advice (``top`` ranked alternatives) and the sample it came from."""

    SCHEMA: ClassVar[str] = "recommend.schema.json"
    advice: "Advice"
    path: str
    topic: str
    records: int
    top: int = 8

    def to_dict(self) -> dict[str, Any]:
        doc = self.advice.to_dict(top=self.top)
        doc["sample"] = {"path": self.path, "topic": self.topic, "records": self.records}
        return doc


@dataclass
class SampleDocument:
    """``keyscope sample`` (``output``: the file written) and ``keyscope info`` (``file``: the file read)."""

    SCHEMA: ClassVar[str] = "sample.schema.json"
    sample: "Sample"
    output: str | None = None
    file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        s = self.sample
        where = {"output": self.output} if self.file is None else {"file": self.file}
        return {**where, "summary": s.summary(), "meta": s.meta_dict()}


@dataclass
class LagDocument:
    """``keyscope lag``: one reading, with the trend since the last under --watch."""

    SCHEMA: ClassVar[str] = "lag.schema.json"
    reading: "GroupLag"
    trend: "dict[tuple[str, int], Trend] | None" = None

    def to_dict(self) -> dict[str, Any]:
        from ..lag import to_dict

        return to_dict(self.reading, self.trend)


DOCUMENTS = (AnalyzeDocument, WhatIfDocument, RecommendDocument, SampleDocument, LagDocument)
