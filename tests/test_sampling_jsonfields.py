"""The one-pass JSON field extractor against what Polars' ``json_path_match`` returns.

Three parties must agree: Polars (the semantics `sample --field` has always had), the
pure-Python reference :func:`keyscope.sampling.jsonfields.extract` (which may answer
"fallback": then Polars decides), and the compiled kernel inside the decoder (checked
through ``_decode_chunk``, so headers, batches and the fallback plumbing are in the loop).
"""

from __future__ import annotations

import itertools
import json

import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatchBuilder

from keyscope.sampling import FieldSpec, _decode_chunk, _FieldPlan
from keyscope.sampling.jsonfields import FALLBACK, MAX_DEPTH, NULL, OK, extract, simple_path

PATHS = ["$.a", "$.b", "$.a.b", "$.a.c", "$.c.a.b", "$.b.b"]


def polars_says(values: list[bytes | None], path: str) -> list[str | None]:
    """The current semantics: UTF-8-valid values through json_path_match; anything else null."""
    text = []
    for v in values:
        try:
            text.append(None if v is None else v.decode("utf-8"))
        except UnicodeDecodeError:
            text.append(None)
    return pl.Series(text, dtype=pl.String).str.json_path_match(path).to_list()


def resolved(values, paths):
    """The reference's answers, fallbacks handed to Polars as the sampler does."""
    out = {p: [] for p in paths}
    keys = [simple_path(p) for p in paths]
    for v in values:
        for p, (status, text) in zip(paths, extract(v, keys)):
            if status == FALLBACK:
                out[p].append(polars_says([v], p)[0])
            else:
                assert status in (OK, NULL)
                out[p].append(None if status == NULL else text.decode("utf-8"))
    return out


def decoded(values, paths, headers=()):
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for i, v in enumerate(values):
        b.append(i, 1000 + i, b"k", v, list(headers))
    fields = [FieldSpec(f"f{i}", p) for i, p in enumerate(paths)] + [FieldSpec("h", "header:h")]
    table, n, _, _ = _decode_chunk(0, bytes(b.build()), 0, 1 << 62, 1 << 62, _FieldPlan(fields))
    assert n == len(values)
    return {p: table.column(f"f{i}").to_pylist() for i, p in enumerate(paths)}


def check(values, paths=PATHS):
    want = {p: polars_says(values, p) for p in paths}
    assert resolved(values, paths) == want
    assert decoded(values, paths) == want


# ---------------------------------------------------------------- named cases

CASES = [
    b'{"a":1}', b'{"a":1', b'{"a":-0}', b'{"a":-0.0}', b'{"a":1.50}', b'{"a":1.0}', b'{"a":1e3}', b'{"a":0.00001}',
    b'{"a":0.001}', b'{"a":0.01}', b'{"a":0.1}', b'{"a":-1.25}', b'{"a":123456789012345678}',
    b'{"a":1234567890123456789}', b'{"a":123456789012345678901}', b'{"a":1e400}', b'{"b":1e400,"a":1}',
    b'{"a":"x\\ny"}', b'{"a":"\\u00e9"}', b'{"\\u0061":1}', b'{"a":"\\"q\\\\"}', b'{"a":"\\ud800"}',
    b'{"a":{"b": 1}}', b'{"a":{"b":"s","c":[1, {"x":2}]}}', b'[{"a":1}]', b'{"a":1,"a":2}', b'{"a":{"b":1},"a":{"c":2}}',
    b'{"a":true}', b'{"a":false}', b'{"a":null}', b'{"a":nul}', b'{"a":tru}', b' \t\n{"a" : "s" }\r\n ', b'{"a":1} x',
    b'{"a":1}{}', b'{"b":{"a":1}}', b'{"a":[1, 2]}', b'{"a":[{"b":1}]}', b'{"a":"x"}', b'{"a":01}', b'{"a":1.}',
    b'{"a":.5}', b'{"a":-}', b'{"a":+1}', b'{"a":"\x01"}', b'{"a":"caf\xc3\xa9"}', b'{"a":"\xff"}', b'{"a":"x",}',
    b'{,}', b'{}', b'[]', b'', b' ', b'"a"', b'1', b'null', b'{"a":1,"b":2,"c":{"a":{"b":"deep"}}}',
    b'{"c":{"a":{"b":{"z":1}}}}', b'{"c":{"a":[1]}}', b'{"a":"' + b"x" * 300 + b'"}', b'\xef\xbb\xbf{"a":1}',
    b'{"a":1 , "b" : [ ] , "c" : { } }', b'{"a"1}', b'{"a":1 "b":2}', b'{a:1}', b"{'a':1}", b'{"a":NaN}',
    b'{"a":Infinity}', b'{"a":[1,]}', b'{"a":"\t"}', b'{"b":"\\/"}', b'{"a":12345678.12345}',
    b'{"a":1234567890123456.5}', b'{"a":0}', b'{"a":-7}', b'{"a":0.5e1}',
    b'{"x":' + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b',"a":1}',
    b'{"x":' + b"[" * (MAX_DEPTH - 2) + b"]" * (MAX_DEPTH - 2) + b',"a":1}',
    b'{"x":' + b"[" * 200 + b"]" * 200 + b',"a":1}', None,
]


def test_named_cases_agree_with_polars():
    check(CASES)


def test_simple_paths_only():
    assert simple_path("$.a.b_2") == (b"a", b"b_2")
    for p in ("$", "$.a[0]", '$["a b"]', "$..a", "$.*", "$.a.", "$.0", "a.b", "$.a-b"):
        assert simple_path(p) is None


def test_fast_path_covers_the_common_values():
    """Strings, integers, short decimals and booleans never go to Polars (that is the speed)."""
    keys = [simple_path("$.a")]
    for v in (b'{"a":"r3","user":"u1"}', b'{"v":1,"a":-42}', b'{"a":1.25}', b'{"a":true}', b'{"a":null}',
              b'{"z":{"q":[1,2,{"w":"x"}]},"a":"caf\xc3\xa9"}'):
        assert extract(v, keys)[0][0] != FALLBACK, v


def test_paths_the_kernel_does_not_take_still_work():
    values = [b'{"items":[{"id":7}],"a b":"s"}', b'{"items":[]}', b"nope"]
    paths = ["$.items[0].id", '$["a b"]', "$.a"]
    assert decoded(values, paths) == {p: polars_says(values, p) for p in paths}


def test_json_fields_beside_header_fields():
    values = [b'{"a":"x"}', b'{"a":{"b":1}}', b"bad"]
    assert decoded(values, ["$.a"], headers=[("h", b"hv")]) == {"$.a": polars_says(values, "$.a")}


# ---------------------------------------------------------------- exhaustive over a small alphabet


def test_every_short_document_over_a_json_alphabet():
    """Every string of up to 5 tokens from a JSON-ish alphabet: valid, invalid and in between."""
    tokens = [b"{", b"}", b"[", b"]", b'"a"', b'"b"', b":", b",", b"1", b"-0", b"2.5", b'"s"', b"null", b"true", b" "]
    values = [b"".join(t) for k in range(1, 6) for t in itertools.product(tokens, repeat=k)]
    values = [v for v in values if v.startswith((b"{", b" {"))]  # roots that can hold a path (others are tested above)
    check(values, ["$.a", "$.a.b", "$.b"])


# ---------------------------------------------------------------- property: random documents

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=False, allow_infinity=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(lambda d: json.loads(str(d))),
    st.text(alphabet=st.sampled_from("ab \"\\/é\u2028\x00\t💡"), max_size=6),
)
docs = st.recursive(
    scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "c", "é", ""]), kids, max_size=4)),
    max_leaves=12,
)


@st.composite
def encoded(draw):
    d = draw(st.dictionaries(st.sampled_from(["a", "b", "c"]), docs, max_size=4))
    text = json.dumps(d, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 0, 2])),
                      separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])))
    raw = bytearray(text.encode("utf-8"))
    for _ in range(draw(st.integers(0, 2))):  # damage: a byte changed, dropped or inserted
        if not raw:
            break
        i, how = draw(st.integers(0, len(raw) - 1)), draw(st.sampled_from(["set", "drop", "insert"]))
        b = draw(st.sampled_from(b'{}[]",:\\ 0e.-x\xff'))
        if how == "set":
            raw[i] = b
        elif how == "drop":
            del raw[i]
        else:
            raw.insert(i, b)
    return bytes(raw)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(encoded(), min_size=1, max_size=20))
@example([b'{"a":{"b":"x"},"c":{"a":{"b":2}}}'])
def test_random_documents_agree_with_polars(values):
    check(values)


@pytest.mark.parametrize("n_fields", [1, 3, 65])
def test_many_fields_on_one_path(n_fields):
    """More fields than the kernel tracks: the rest go to Polars, all agree."""
    values = [b'{"a":{"b":1,"c":"x"}}', b'{"a":2}', b"[]"]
    paths = [PATHS[i % len(PATHS)] for i in range(n_fields)]
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for i, v in enumerate(values):
        b.append(i, 1000 + i, b"k", v, [])
    fields = [FieldSpec(f"f{i}", p) for i, p in enumerate(paths)]
    table, _, _, _ = _decode_chunk(0, bytes(b.build()), 0, 1 << 62, 1 << 62, _FieldPlan(fields))
    for i, p in enumerate(paths):
        assert table.column(f"f{i}").to_pylist() == polars_says(values, p)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(encoded(), min_size=1, max_size=20))
@example(CASES[:-1])
def test_kernel_statuses_are_the_references(values):
    """Not only the same answers: the kernel takes the fast path exactly where the reference does."""
    import numpy as np

    from keyscope.sampling import _ST_LEN, _Columns

    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for i, v in enumerate(values):
        b.append(i, 1000 + i, b"k", v, [])
    buf = np.frombuffer(bytes(b.build()), np.uint8)
    plan = _FieldPlan([FieldSpec(f"f{i}", p) for i, p in enumerate(PATHS)])
    cols = _Columns(len(values), buf.size, plan)
    st_ = np.zeros(_ST_LEN, np.int64)
    cols.decode(buf, st_, 0, 1 << 62, 1 << 62, plan)
    keys = [simple_path(p) for p in PATHS]
    for r, v in enumerate(values):
        for j, (status, text) in enumerate(extract(v, keys)):
            assert cols.hvalid[j, r] == status, (v, PATHS[j])
            if status == OK:
                a, e = cols.hoff[j, r], cols.hoff[j, r + 1]
                assert cols.hdata[j, a:e].tobytes() == text


def test_values_are_copied_only_for_polars():
    """Simple values are read where they lie; only the one with an escape is copied (for Polars)."""
    import numpy as np

    from keyscope.sampling import _ST_LEN, _Columns
    from keyscope.sampling.decoder import _VPOS

    def copied(values, paths):
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False, producer_id=-1,
                                      producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
        for i, v in enumerate(values):
            b.append(i, 1000 + i, b"k", v, [])
        buf = np.frombuffer(bytes(b.build()), np.uint8)
        plan = _FieldPlan([FieldSpec(f"f{i}", p) for i, p in enumerate(paths)])
        cols, st_ = _Columns(len(values), buf.size, plan), np.zeros(_ST_LEN, np.int64)
        cols.decode(buf, st_, 0, 1 << 62, 1 << 62, plan)
        return int(st_[_VPOS])

    plain = [b'{"region":"r3","user":"u1","v":7}'] * 10
    assert copied(plain, ["$.region", "$.user"]) == 0
    escaped = b'{"region":"r\\"3"}'
    assert copied(plain + [escaped], ["$.region"]) == len(escaped)
    assert copied(plain, ["$.region", "$.items[0]"]) == 10 * len(plain[0])  # a path only Polars takes
