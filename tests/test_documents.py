"""Each command document's serialised fields are exactly its JSON Schema's top-level properties.

Pure (shipped samples, a synthetic lag reading): a field added to a result
without its schema, or to the schema without the result, fails here before
the broker-backed schema tests run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from keyscope.report import documents

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "crm-events-hot-tenant.parquet"


def schema_properties(cls) -> set[str]:
    return set(json.loads((ROOT / "docs" / "schemas" / cls.SCHEMA).read_text())["properties"])


@pytest.fixture(scope="module")
def sample():
    from keyscope.sample import read_sample

    return read_sample(SAMPLE)


def test_every_document_names_an_existing_schema():
    assert len({c.SCHEMA for c in documents.DOCUMENTS}) == len(documents.DOCUMENTS)
    for cls in documents.DOCUMENTS:
        assert (ROOT / "docs" / "schemas" / cls.SCHEMA).is_file(), cls


def test_analyze_document_fields_equal_schema(sample):
    from keyscope.analysis import analyze

    doc = documents.AnalyzeDocument(analyze(sample, reps=20), fail_on_skew=2.0).to_dict()
    assert set(doc) == schema_properties(documents.AnalyzeDocument)
    assert "fail_on_skew" not in documents.AnalyzeDocument(analyze(sample, reps=20)).to_dict()


def test_whatif_document_fields_equal_schema():
    from keyscope.grid import Grid, run_whatif

    run = run_whatif(SAMPLE, Grid.parse(partitions=("3,6",)), fail_on_skew=1.0)
    doc = documents.WhatIfDocument(run).to_dict()
    assert set(doc) == schema_properties(documents.WhatIfDocument)
    assert len(doc["scenarios"]) == 2 and doc["fail_on_skew"]["exceeded"] == run.exceeded


def test_recommend_document_fields_equal_schema(sample):
    from keyscope.advice import Constraints, recommend

    advice = recommend(sample, Constraints(keep_order_by="none", max_partitions=6))
    doc = documents.RecommendDocument(advice, str(SAMPLE), sample.meta.topic, sample.df.height, top=3).to_dict()
    assert set(doc) == schema_properties(documents.RecommendDocument)


def test_sample_and_info_documents_together_equal_schema(sample):
    written = documents.SampleDocument(sample, output="x.parquet").to_dict()
    read = documents.SampleDocument(sample, file=str(SAMPLE)).to_dict()
    assert set(written) | set(read) == schema_properties(documents.SampleDocument)
    assert "file" not in written and "output" not in read


def test_lag_document_fields_equal_schema():
    from keyscope import lag as lagmod
    from keyscope.kafka.client import Watermarks

    marks = {p: Watermarks(low=0, high=h, list_offsets_high=h) for p, h in {0: 100, 1: 50}.items()}
    g = lagmod.GroupLag("g", [lagmod.summarize_topic("t", {0: 40, 1: 50}, marks)], 2, "Stable", None, 0.0, 0.0)
    assert set(documents.LagDocument(g).to_dict()) == schema_properties(documents.LagDocument)
