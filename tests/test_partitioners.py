"""The partitioners reproduce the real clients' hashes bit for bit."""

from __future__ import annotations

import zlib

import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.partitioner.default import murmur2 as kafka_python_murmur2

from keyscope import partitioners as P
from keyscope.errors import UsageError


def signed(u: int) -> int:
    return u - (1 << 32) if u & 0x80000000 else u


# Kafka's UtilsTest.testMurmur2 (Java, signed int results).
KAFKA_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


@pytest.mark.parametrize("key,expected", KAFKA_VECTORS)
def test_murmur2_kafka_vectors_single(key, expected):
    assert signed(P.murmur2(key)) == expected


def test_murmur2_kafka_vectors_column_kernel():
    # Repeat the vectors past SMALL_COLUMN so the compiled kernel, not the
    # pure-Python path, produces the hashes.
    reps = P.SMALL_COLUMN // len(KAFKA_VECTORS) + 1
    keys = [k for k, _ in KAFKA_VECTORS] * reps
    got = P.hash_column(keys, "murmur2").to_list()
    assert got == [e & 0x7FFFFFFF for _, e in KAFKA_VECTORS] * reps


def test_known_crc32_and_fnv1a_values():
    assert P.crc32(b"123456789") == 0xCBF43926  # the CRC-32 check value
    assert P.fnv1a32(b"") == 0x811C9DC5
    assert P.fnv1a32(b"a") == 0xE40C292C  # published FNV-1a test vector
    assert P.fnv1a32(b"foobar") == 0xBF9CF968


binary_keys = st.lists(st.binary(min_size=0, max_size=256), min_size=1, max_size=60)
text_keys = st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=80), min_size=1, max_size=60)


def _column(keys, min_rows=P.SMALL_COLUMN):
    """Tile keys so the column kernel runs; returns (keys list, Series)."""
    tiled = (keys * (min_rows // len(keys) + 1))[: max(min_rows, len(keys))]
    return tiled, pl.Series("key", tiled, dtype=pl.Binary)


@settings(max_examples=60, deadline=None)
@given(binary_keys)
def test_column_murmur2_equals_kafka_python(keys):
    tiled, s = _column(keys)
    assert P.hash_column(s, "murmur2").to_list() == [kafka_python_murmur2(k) & 0x7FFFFFFF for k in tiled]


@settings(max_examples=60, deadline=None)
@given(binary_keys)
def test_column_crc32_equals_zlib(keys):
    tiled, s = _column(keys)
    assert P.hash_column(s, "consistent").to_list() == [zlib.crc32(k) if k else None for k in tiled]


@settings(max_examples=60, deadline=None)
@given(binary_keys)
def test_column_fnv1a_equals_reference(keys):
    tiled, s = _column(keys)
    assert P.hash_column(s, "fnv1a").to_list() == [abs(signed(P.fnv1a32(k))) for k in tiled]


@settings(max_examples=40, deadline=None)
@given(text_keys)
def test_string_columns_hash_their_utf8_bytes(keys):
    tiled = (keys * (P.SMALL_COLUMN // len(keys) + 1))[: P.SMALL_COLUMN]
    s = pl.Series("key", tiled, dtype=pl.String)
    assert P.hash_column(s, "murmur2").to_list() == [
        kafka_python_murmur2(k.encode()) & 0x7FFFFFFF for k in tiled
    ]


@settings(max_examples=40, deadline=None)
@given(binary_keys)
def test_small_and_large_paths_agree(keys):
    small = P.hash_column(keys, "fnv1a").to_list()
    tiled, s = _column(keys)
    assert P.hash_column(s, "fnv1a").to_list()[: len(keys)] == small


def test_arrow_inputs_of_every_layout_and_sliced():
    keys = [f"key-{i}".encode() * (i % 7) for i in range(5000)] + [None]
    expected = [None if k is None else P.murmur2(k) & 0x7FFFFFFF for k in keys]
    for typ in (pa.binary(), pa.large_binary(), pa.binary_view()):
        arr = pa.array(keys, type=typ)
        assert P.hash_column(arr, "murmur2").to_list() == expected
        assert P.hash_column(arr.slice(1000), "murmur2").to_list() == expected[1000:]
    chunked = pa.chunked_array([pa.array(keys[:2500]), pa.array(keys[2500:])])
    assert P.hash_column(chunked, "murmur2").to_list() == expected


def test_null_keys_are_not_hashed_and_empty_key_is():
    keys = [None, b"", b"x"] * 1000  # past SMALL_COLUMN too
    for name in ("murmur2", "fnv1a"):
        h = P.hash_column(keys, name).to_list()
        assert h[0] is None and h[1] is not None and h[2] is not None
        assert P.hash_column(keys[:3], name).to_list() == h[:3]
    # librdkafka consistent_random sends the empty key to a random partition.
    h = P.hash_column(keys, "consistent").to_list()
    assert h[:3] == [None, None, zlib.crc32(b"x")]


def test_partition_is_operand_mod_n():
    keys = [f"tenant-{i}".encode() for i in range(3000)]
    for name in ("murmur2", "consistent", "fnv1a"):
        ops = P.hash_column(keys, name)
        for n in (1, 3, 6, 7):
            got = P.partition_column(keys, n, name).to_list()
            assert got == (ops % n).to_list()
            assert got[:5] == [P.partition_for(k, n, name) for k in keys[:5]]


def test_fnv1a_int32_min_edge():
    # abs(int32) of 0x80000000 is 2**31, which must not wrap to a negative.
    p = P.get_partitioner("fnv1a")
    assert P._operand_from_raw("fnv1a", 0x80000000) == 2**31
    assert p.partition(b"anything", 1) == 0


@pytest.mark.parametrize(
    "alias,name",
    [("java", "murmur2"), ("kafka-python", "murmur2"), ("librdkafka", "consistent"),
     ("confluent", "consistent"), ("sarama", "fnv1a"), ("MURMUR2", "murmur2")],
)
def test_aliases(alias, name):
    assert P.get_partitioner(alias).name == name


def test_bad_names_and_counts():
    with pytest.raises(UsageError, match="unknown partitioner"):
        P.get_partitioner("rendezvous")
    with pytest.raises(UsageError, match="positive integer"):
        P.partition_column([b"a"], 0)
    with pytest.raises(UsageError):
        P.partition_for(b"a", -3)


def test_partition_frame_orders_rows_by_key_then_partitioner():
    df = P.partition_frame([b"a", b"b"], 3, "all")
    k = len(P.KEYED)
    assert df["key"].to_list() == [b"a"] * k + [b"b"] * k
    assert df["partitioner"].to_list() == list(P.KEYED) * 2
