"""Samples other tools made: kcat -J, CSV, JSON lines; read through keyscope.sample.read_sample."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest

from keyscope.kafka.connection import resolve
from keyscope.errors import InputError
from keyscope.sample import read_sample
from keyscope.sampling import SampleSpec, sample_topic

from .conftest import create_topic, missing_peer

# Real `kcat -C -J -e` output (kcat 1.7.1, librdkafka 2.16): kcat writes key bytes raw, so the
# fourth key holds a byte (0xff) that is not UTF-8, and escapes NUL as \u0000.
KCAT = (
    b'{"topic":"kj","partition":0,"offset":0,"tstype":"create","ts":1795891733260,"broker":111,'
    b'"headers":["h1","v1","h2",null],"key":"abc","payload":"{\\"a\\":1}"}\n'
    b'{"topic":"kj","partition":0,"offset":1,"tstype":"create","ts":1795891733260,"broker":111,"key":null,"payload":"x"}\n'
    b'{"topic":"kj","partition":1,"offset":0,"tstype":"create","ts":1795891733261,"broker":111,"key":"","payload":null}\n'
    b'{"topic":"kj","partition":1,"offset":1,"tstype":"create","ts":1795891733262,"broker":111,"key":"\xff\\u0000bin","payload":"\xfe"}\n'
    b'{"topic":"kj","partition":1,"offset":2,"tstype":"create","ts":1795891733263,"broker":111,"key":"\xc3\xa9\\"q","payload":""}\n'
)


def test_kcat_json_with_raw_bytes(tmp_path):
    p = tmp_path / "capture.json"
    p.write_bytes(KCAT)
    s = read_sample(p)
    assert s.meta.source == "kcat-json" and s.meta.topic == "kj" and s.meta.partition_count == 2
    assert s.meta.how["partition_count_inferred"] is True
    assert s.df["key"].to_list() == [b"abc", None, b"", b"\xff\x00bin", "é\"q".encode()]
    assert s.df["partition"].to_list() == [0, 0, 1, 1, 1] and s.df["offset"].to_list() == [0, 1, 0, 1, 2]
    assert s.df["value_size"].to_list() == [7, 1, 0, 1, 0]
    assert s.df["key_size"].to_list() == [3, None, 0, 5, 4]
    assert s.df["timestamp"].dt.epoch("ms").to_list() == [1795891733260, 1795891733260, 1795891733261, 1795891733262, 1795891733263]
    assert s.field_names == []  # kcat's bookkeeping (broker, tstype, headers) is not a field
    assert {p: (i.first, i.last, i.records) for p, i in s.meta.partitions.items()} == {0: (0, 1, 2), 1: (0, 2, 3)}


def test_kcat_json_that_is_valid_utf8_takes_the_columnar_path(tmp_path):
    p = tmp_path / "capture.json"
    p.write_bytes(b"".join(line for line in KCAT.splitlines(keepends=True) if b"\xff" not in line))
    s = read_sample(p)
    assert s.meta.source == "kcat-json" and len(s) == 4
    assert s.df["key"].to_list() == [b"abc", None, b"", "é\"q".encode()]


def _kcat_env(tmp_path: Path):
    """kcat with the librdkafka from the confluent-kafka wheel (Debian's cannot talk to Tansu; BROKER.md)."""
    import confluent_kafka

    libs = Path(confluent_kafka.__file__).parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if shutil.which("kcat") is None or not found:
        missing_peer("kcat is not installed here (apt-get install kcat); the captured output above still runs")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "librdkafka.so.1").symlink_to(found[0])
    return dict(os.environ, LD_LIBRARY_PATH=str(tmp_path / "lib"))


def test_live_kcat_capture_equals_keyscope_sample(broker, topic_name, tmp_path):
    from confluent_kafka import Producer

    env = _kcat_env(tmp_path)
    create_topic(broker.bootstrap_server, topic_name, 3)
    prod = Producer({"bootstrap.servers": broker.bootstrap_server, "linger.ms": 10})
    for i in range(2000):
        key = None if i % 10 == 0 else bytes([i % 256, 0xFF, i % 7]) if i % 10 == 1 else b"k-%d" % (i % 37)
        prod.produce(topic_name, key=key, value=b'{"n":%d}' % i)
    assert prod.flush(30) == 0
    capture = tmp_path / "kcat.json"
    with open(capture, "wb") as f:
        subprocess.run(["kcat", "-C", "-b", broker.bootstrap_server, "-t", topic_name, "-e", "-q", "-J"],
                       stdout=f, env=env, check=True, timeout=60)
    theirs = read_sample(capture)
    ours = sample_topic(resolve(broker.bootstrap_server), SampleSpec(topic=topic_name, start="earliest", timeout_s=30))
    cols = ["partition", "offset", "key", "key_size", "value_size"]
    assert theirs.df.sort("partition", "offset").select(cols).equals(ours.df.select(cols))
    assert theirs.meta.topic == topic_name


def test_csv_null_and_empty_keys_and_fields(tmp_path):
    p = tmp_path / "keys.csv"
    p.write_text('partition,key,tenant\n0,a,t1\n1,,t2\n1,"",\n2,"b,c",t1\n0,a,t3\n')
    s = read_sample(p)
    assert s.meta.source == "csv" and s.meta.topic == "keys"
    assert s.df["key"].to_list() == [b"a", None, b"", b"b,c", b"a"]
    assert s.df["tenant"].to_list() == ["t1", "t2", None, "t1", "t3"]
    assert s.df["offset"].to_list() == [0, 0, 1, 0, 1]  # by row order within each partition
    assert s.field_names == ["tenant"] and s.partition_count == 3


def test_tsv_with_offsets_iso_timestamps_and_values(tmp_path):
    p = tmp_path / "keys.tsv"
    p.write_text("partition\tkey\toffset\ttimestamp\tvalue\n"
                 "3\tk1\t10\t2026-11-28T10:00:00Z\thello\n"
                 "3\tk2\t11\t1795891733260\t\n")
    s = read_sample(p)
    assert s.df["offset"].to_list() == [10, 11] and s.df["value_size"].to_list() == [5, 0]
    assert s.df["timestamp"].dt.epoch("ms").to_list() == [1795860000000, 1795891733260]
    assert s.partition_count == 4 and s.field_names == []


def test_generic_jsonl_detected_by_content(tmp_path):
    p = tmp_path / "dump.txt"  # the extension says nothing; the content does
    p.write_text('{"partition": 1, "key": "x", "region": "eu", "n": 3}\n\n{"partition": 0, "key": 42, "region": null}\n')
    s = read_sample(p)
    assert s.meta.source == "jsonl"
    assert s.df["key"].to_list() == [b"x", b"42"] and s.df["region"].to_list() == ["eu", None]
    assert s.df["n"].to_list() == ["3", None]


def test_foreign_sample_round_trips_through_parquet(tmp_path):
    p = tmp_path / "keys.csv"
    p.write_text("partition,key,tenant\n" + "".join(f"{i % 4},k{i % 9},t{i % 3}\n" for i in range(200)))
    s = read_sample(p)
    back = read_sample(s.write(tmp_path / "s.parquet"))
    assert back.df.equals(s.df) and back.meta == s.meta


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("a.csv", "key,tenant\nx,1\n", "missing required column(s) partition"),
        ("a.csv", "partition,tenant\n0,1\n", "missing required column(s) key"),
        ("a.csv", "partition,key\n0,a\nzero,b\n", "record 2: partition must be a non-negative integer, got 'zero'"),
        ("a.csv", "partition,key\n0,a\n-1,b\n", "record 2: partition must be a non-negative integer"),
        ("a.csv", "partition,key\n0,a\n,b\n", "record 2: partition must be a non-negative integer"),
        ("a.csv", "partition,key,offset\n0,a,1\n0,b,two\n", "record 2: offset must be a integer, got 'two'"),
        ("a.csv", 'partition,key\n0,"unterminated\n', "not readable as CSV"),
        ("a.jsonl", '{"partition":0,"key":"a"}\n{"partition":1,"ke', "line 2 is not valid JSON (the file looks truncated)"),
        ("a.jsonl", '{"partition":0,"key":"a"}\n[1,2]\n', "line 2 is not a JSON object"),
        ("a.jsonl", '{"partition":0,"key":"a"}\nnot json\n{"partition":0,"key":"b"}\n', "line 2 is not valid JSON:"),
        ("a.json", '{"topic":"a","partition":0,"key":"x"}\n{"topic":"b","partition":0,"key":"y"}\n',
         "holds records of 2 topics (a, b)"),
        ("a.jsonl", '{"partition":0,"key":"a","timestamp":"noon"}\n', "timestamp must be epoch milliseconds or ISO-8601"),
        ("a.csv", "", "the file is empty"),
    ],
)
def test_bad_foreign_files_one_line_naming_the_file(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(InputError) as e:
        read_sample(p)
    text = str(e.value)
    assert text.startswith(f"{p}: ") and message in text and "\n" not in text


def test_unrecognised_and_directory(tmp_path):
    p = tmp_path / "notes"
    p.write_text("some notes\nabout the incident\n")
    with pytest.raises(InputError, match="not a sample keyscope can read"):
        read_sample(p)
    with pytest.raises(InputError, match="is a directory"):
        read_sample(tmp_path)


def test_parquet_from_another_tool_without_keyscope_metadata(tmp_path):
    p = tmp_path / "other.parquet"
    pl.DataFrame({"partition": [0, 1, 1], "key": ["a", None, "b"]}).write_parquet(p)
    s = read_sample(p)
    assert s.df["key"].to_list() == [b"a", None, b"b"] and s.partition_count == 2
