"""docs/schemas/analyze.schema.json, and a validator for the subset of JSON Schema it uses.

jsonschema is not a dependency; the subset (type, enum, properties, required,
additionalProperties: false, items, minItems/maxItems, minimum/maximum) is small
enough to check here, and the validator itself is tested to reject bad documents.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "schemas" / "analyze.schema.json"
SUPPORTED = {
    "$schema", "$id", "title", "description", "type", "enum", "properties", "required",
    "additionalProperties", "items", "minItems", "maxItems", "minimum", "maximum",
}
TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def errors(doc, schema, path="$") -> list[str]:
    unknown = set(schema) - SUPPORTED
    if unknown:
        raise AssertionError(f"schema uses unsupported keywords at {path}: {sorted(unknown)}")
    out: list[str] = []
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(TYPES[t](doc) for t in types):
            return [f"{path}: {doc!r} is not {types}"]
    if "enum" in schema and doc not in schema["enum"]:
        out.append(f"{path}: {doc!r} not in {schema['enum']}")
    if TYPES["number"](doc):
        if "minimum" in schema and doc < schema["minimum"]:
            out.append(f"{path}: {doc} < {schema['minimum']}")
        if "maximum" in schema and doc > schema["maximum"]:
            out.append(f"{path}: {doc} > {schema['maximum']}")
    if isinstance(doc, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in doc:
                out.append(f"{path}: missing {name!r}")
        for name, value in doc.items():
            if name in props:
                out += errors(value, props[name], f"{path}.{name}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}: unexpected {name!r}")
    if isinstance(doc, list):
        if "minItems" in schema and len(doc) < schema["minItems"]:
            out.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(doc) > schema["maxItems"]:
            out.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(doc):
                out += errors(item, schema["items"], f"{path}[{i}]")
    return out


def validate(doc) -> None:
    problems = errors(doc, load_schema())
    assert not problems, "\n".join(problems[:20])


def test_schema_is_valid_json_with_the_documented_sections():
    s = load_schema()
    assert s["type"] == "object"
    for section in ("skew", "partitions", "hot_keys", "baseline", "partitioner", "warnings"):
        assert section in s["required"]


@pytest.mark.parametrize(
    "mutate,expect",
    [
        (lambda d: d.pop("skew"), "missing 'skew'"),
        (lambda d: d["skew"].update(ratio="high"), "$.skew.ratio"),
        (lambda d: d["skew"].update(hottest_share=1.5), "> 1"),
        (lambda d: d["baseline"].update(cause="gremlins"), "not in"),
        (lambda d: d.update(surprise=1), "unexpected 'surprise'"),
        (lambda d: d["hot_keys"][0].update(share_interval=[0.1]), "fewer than 2"),
        (lambda d: d["hot_keys"][0].update(records=True), "records"),
    ],
)
def test_validator_rejects_bad_documents(mutate, expect):
    import numpy as np

    from keyscope.analysis import analyze
    from keyscope.sample import Sample
    import polars as pl

    ids = np.arange(100) % 7
    s = Sample.from_frame(pl.DataFrame({"key": [b"k%d" % i for i in ids], "partition": (ids % 3).astype(np.int32)}))
    d = analyze(s, reps=20).to_dict()
    validate(d)
    mutate(d)
    problems = errors(d, load_schema())
    assert problems and any(expect in p for p in problems), problems
