"""The compiled RecordBatch v2 decoder against batches built by kafka-python's own writer.

No broker here: these pin the decoder's exactness (every codec, headers,
null/empty keys, offset windows, budgets, truncated trailing batches) and its
safety on damaged bytes, where a bug would crash the process rather than fail.
"""

from __future__ import annotations

import datetime
import gzip
import json
import zlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatchBuilder

from keyscope.errors import KafkaError
from keyscope.sampling import FieldSpec, _decode_chunk, _FieldPlan, _inflate

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "snappy-xerial": 2, "lz4": 3, "zstd": 4}


def _compress(name: str, data: bytes) -> bytes:
    if name == "gzip":
        return gzip.compress(data)
    if name == "snappy":
        return pa.compress(data, codec="snappy", asbytes=True)
    if name == "snappy-xerial":  # the Java client's framing: magic, version, compat, then [len][block]...
        out = b"\x82SNAPPY\x00" + (1).to_bytes(4, "big") + (1).to_bytes(4, "big")
        for i in range(0, len(data), 100):  # several blocks
            block = pa.compress(data[i : i + 100], codec="snappy", asbytes=True)
            out += len(block).to_bytes(4, "big") + block
        return out
    return pa.compress(data, codec=name, asbytes=True)  # lz4 (frame), zstd


def build_batch(base: int, records: list[dict], codec: str = "none", log_append_ts: int | None = None) -> bytes:
    """One RecordBatch v2; ``records`` carry key, value, headers, ts and an optional offset gap."""
    b = DefaultRecordBatchBuilder(
        magic=2, compression_type=0, is_transactional=False, producer_id=-1, producer_epoch=-1, base_sequence=-1,
        batch_size=1 << 30,
    )
    for r in records:
        b.append(r["delta"], r["ts"], r["key"], r["value"], r["headers"])
    raw = bytearray(b.build())
    raw[0:8] = base.to_bytes(8, "big", signed=True)
    if log_append_ts is not None:
        raw[22] |= 0x08
        raw[35:43] = log_append_ts.to_bytes(8, "big", signed=True)
    if codec == "none":
        return bytes(raw)
    body = _compress(codec, bytes(raw[61:]))
    head = bytearray(raw[:61])
    head[8:12] = (49 + len(body)).to_bytes(4, "big")
    head[22] |= CODECS[codec]
    return bytes(head) + body


def _ms(t: datetime.datetime) -> int:
    """Exact epoch milliseconds (float seconds * 1000 can round down)."""
    return (t - EPOCH) // datetime.timedelta(milliseconds=1)


EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def decode_all(buf: bytes, lo=0, hi=1 << 62, budget=1 << 62, fields=()):
    plan = _FieldPlan(list(fields))
    table, n, nxt, stopped = _decode_chunk(0, buf, lo, hi, budget, plan)
    rows = table.to_pylist() if table is not None else []
    return rows, n, nxt, stopped


def expected(batches, lo=0, hi=1 << 62, budget=1 << 62):
    out = []
    for base, recs, log_ts in batches:
        for r in recs:
            off = base + r["delta"]
            if off < lo:
                continue
            if off >= hi or len(out) >= budget:
                return out
            out.append((off, r, log_ts))
    return out


keys = st.one_of(st.none(), st.binary(max_size=40))
values = st.one_of(st.none(), st.binary(max_size=60), st.builds(lambda t: json.dumps({"t": t}).encode(), st.text(max_size=8)))
headers = st.lists(
    st.tuples(st.sampled_from(["h", "trace", "h2", "é"]), st.one_of(st.none(), st.binary(max_size=10))), max_size=4
)
record = st.fixed_dictionaries({"key": keys, "value": values, "headers": headers, "gap": st.integers(0, 2)})


@st.composite
def batch_lists(draw):
    batches, base = [], draw(st.integers(0, 10_000))
    for _ in range(draw(st.integers(1, 4))):
        recs = draw(st.lists(record, min_size=1, max_size=12))
        delta, ts0 = 0, draw(st.integers(0, 1 << 41))
        for i, r in enumerate(recs):
            r["delta"] = delta
            r["ts"] = ts0 + i * draw(st.integers(0, 3))
            delta += 1 + r["gap"]  # compaction leaves gaps in offsets
        log_ts = draw(st.one_of(st.none(), st.integers(0, 1 << 41)))
        batches.append((base, recs, log_ts))
        base += delta
    return batches


def _header_field(r, name: str):
    found = [v for k, v in r["headers"] if k == name]
    if not found or found[-1] is None:
        return None
    try:
        return found[-1].decode("utf-8")
    except UnicodeDecodeError:
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_lists(), st.sampled_from(list(CODECS)), st.data())
def test_decoder_matches_what_was_written(batches, codec, data):
    buf = b"".join(build_batch(b, recs, codec, log_ts) for b, recs, log_ts in batches)
    first = batches[0][0]
    last = batches[-1][0] + batches[-1][1][-1]["delta"]
    lo = data.draw(st.integers(first - 1, last + 1))
    hi = data.draw(st.integers(lo, last + 2))
    budget = data.draw(st.integers(0, 60))
    fields = [FieldSpec("trace", "header:trace"), FieldSpec("e", "header:é"), FieldSpec("t", "$.t")]
    rows, n, nxt, stopped = decode_all(buf, lo, hi, budget, fields)
    want = expected(batches, lo, hi, budget)
    assert n == len(want) == len(rows)
    for row, (off, r, log_ts) in zip(rows, want):
        assert row["offset"] == off
        assert row["key"] == r["key"]
        assert row["key_size"] == (None if r["key"] is None else len(r["key"]))
        assert row["value_size"] == (0 if r["value"] is None else len(r["value"]))
        ts_ms = log_ts if log_ts is not None else r["ts"]
        assert _ms(row["timestamp"]) == ts_ms
        assert row["trace"] == _header_field(r, "trace")
        assert row["e"] == _header_field(r, "é")
        try:
            t = json.loads(r["value"])["t"] if r["value"] is not None else None
        except (ValueError, UnicodeDecodeError, TypeError):
            t = None
        assert row["t"] == t
    took_everything = len(want) == len(expected(batches, lo))
    if not took_everything:
        assert stopped
        assert nxt == expected(batches, lo)[len(want)][0]  # the first offset not taken
    elif not stopped:
        assert nxt == max(lo, last + 1)


def test_agrees_with_kafka_pythons_reader_on_gzip():
    recs = [{"delta": i, "ts": 1_700_000_000_000 + i, "key": b"k%d" % (i % 7) if i % 5 else None,
             "value": b"v" * i, "headers": [("h", b"x")]} for i in range(300)]
    b = DefaultRecordBatchBuilder(magic=2, compression_type=1, is_transactional=False, producer_id=-1,
                                  producer_epoch=-1, base_sequence=-1, batch_size=1 << 30)
    for r in recs:
        b.append(r["delta"], r["ts"], r["key"], r["value"], r["headers"])
    buf = bytes(b.build())
    theirs = [(r.offset, r.timestamp, r.key, len(r.value or b"")) for r in MemoryRecords(buf).next_batch()]
    rows, n, _, _ = decode_all(buf)
    mine = [(r["offset"], _ms(r["timestamp"]), r["key"], r["value_size"]) for r in rows]
    assert n == 300 and mine == theirs


def test_truncated_trailing_batch_is_left_for_the_next_fetch():
    a = build_batch(0, [{"delta": i, "ts": 5, "key": b"a", "value": b"x", "headers": []} for i in range(3)])
    b = build_batch(3, [{"delta": i, "ts": 5, "key": b"b", "value": b"x", "headers": []} for i in range(3)])
    for cut in (1, 30, len(b) - 1):
        rows, n, nxt, stopped = decode_all(a + b[:cut])
        assert n == 3 and nxt == 3 and not stopped
    rows, n, nxt, stopped = decode_all(b[:20])  # not one complete batch: ask again, bigger
    assert n == 0 and nxt is None


def test_control_batches_are_skipped_but_advance_the_offset():
    ctrl = bytearray(build_batch(0, [{"delta": 0, "ts": 1, "key": b"\x00\x00\x00\x00", "value": b"", "headers": []}]))
    ctrl[22] |= 0x20
    data = build_batch(1, [{"delta": 0, "ts": 1, "key": b"real", "value": b"", "headers": []}])
    rows, n, nxt, _ = decode_all(bytes(ctrl) + data)
    assert [r["key"] for r in rows] == [b"real"] and rows[0]["offset"] == 1 and nxt == 2


def test_legacy_message_format_is_refused_clearly():
    buf = bytearray(build_batch(0, [{"delta": 0, "ts": 1, "key": b"k", "value": b"v", "headers": []}]))
    buf[16] = 1
    with pytest.raises(KafkaError, match="pre-0.11 message format"):
        decode_all(bytes(buf))


def test_undecompressable_batch_names_codec_and_offset():
    buf = bytearray(build_batch(40, [{"delta": 0, "ts": 1, "key": b"k", "value": b"v", "headers": []}], "zstd"))
    buf[61:65] = b"\xff" * 4  # the zstd frame magic
    with pytest.raises(KafkaError, match="cannot decompress the zstd batch at offset 40"):
        decode_all(bytes(buf))


def test_inflate_gzip_concatenated_members_and_zlib():
    assert _inflate(1, gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"
    assert _inflate(1, zlib.compress(b"xyz")) == b"xyz"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch_lists(), st.sampled_from(["none", "gzip", "lz4"]), st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6))
def test_damaged_bytes_never_crash(batches, codec, flips):
    """Bytes flipped anywhere: a clean KafkaError or a result that obeys the window, never a crash."""
    buf = bytearray(b"".join(build_batch(b, recs, codec, log_ts) for b, recs, log_ts in batches))
    assume(len(buf) > 0)
    for pos, val in flips:
        buf[pos % len(buf)] = val
    fields = [FieldSpec("h", "header:h"), FieldSpec("t", "$.t")]
    try:
        rows, n, nxt, stopped = decode_all(bytes(buf), 0, 1 << 62, 1000, fields)
    except KafkaError:
        return
    assert n == len(rows) <= sum(len(r) for _, r, _ in batches) + 1000
    for r in rows:
        assert r["key"] is None or len(r["key"]) == r["key_size"]


def test_random_bytes_never_crash():
    rng = np.random.default_rng(7)
    for size in (0, 1, 60, 61, 62, 200, 5000):
        for _ in range(50):
            buf = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
            try:
                decode_all(buf, fields=[FieldSpec("h", "header:h")])
            except KafkaError:
                pass


def test_decode_args_layout_is_checked_at_load(monkeypatch):
    """A DecodeArgs that does not match the IR's argument struct fails at load, naming both, never a crash."""
    import ctypes

    from keyscope import _native
    from keyscope.sampling import decoder

    decoder._check_decode_args()  # the real one matches

    class Short(ctypes.Structure):
        _fields_ = [(n, ctypes.c_int32 if n == "end" else ctypes.c_void_p) for n, _ in decoder.DECODE_ARGS]

    monkeypatch.setattr(decoder, "DecodeArgs", Short)
    with pytest.raises(_native.SignatureError, match="does not match DecodeArgs"):
        decoder._check_decode_args()
