"""`keyscope sample` writes row groups while it reads (keyscope/sampling/sink.py).

The streamed file must hold what the one-shot file holds (rows, schema, metadata),
be exactly what pyarrow's one-shot writer makes of its rows, and never leave a
half-written file at the output path: on a real broker over TCP.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from keyscope.errors import KafkaError
from keyscope.io.sample_format import parquet_options
from keyscope.kafka.connection import resolve
from keyscope.sample import META_KEY, SampleMeta, read_sample
from keyscope.sampling import SampleFile, SampleSpec, parse_field, sample_to_file, sample_topic

from .conftest import create_topic

pytestmark = pytest.mark.tansu

# What differs between two reads of the same records: when, how long, how many requests.
TIMING = ("elapsed_s", "fetch_requests", "bytes_fetched")


def _fill(bootstrap: str, topic: str, n: int, partitions: int = 3) -> None:
    create_topic(bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"})
    for i in range(n):
        key = None if i % 97 == 0 else (b"" if i % 89 == 0 else b"user-%d" % (i % 211))
        value = json.dumps({"tenant": f"t{i % 5}", "i": i}).encode() if i % 13 else b"not json %d" % i
        while True:
            try:
                p.produce(topic, key=key, value=value, headers=[("trace", b"tr-%d" % i)] if i % 3 == 0 else None)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


def _spec(topic: str, **kw) -> SampleSpec:
    kw.setdefault("timeout_s", 30)
    return SampleSpec(topic=topic, start="earliest", fields=[parse_field("tenant=$.tenant"),
                                                             parse_field("trace=header:trace")], **kw)


def _meta(m: SampleMeta) -> dict:
    d = m.to_dict()
    d.pop("sampled_at")
    for k in TIMING:
        d["how"].pop(k)
    return d


def _temps(d) -> list[str]:
    return sorted(x for x in os.listdir(d) if x.endswith(".tmp"))


def test_streamed_file_equals_the_one_shot_file(broker, topic_name, tmp_path):
    _fill(broker.bootstrap_server, topic_name, 6000)
    conn = resolve(broker.bootstrap_server)
    one = sample_topic(conn, _spec(topic_name))
    one_path = one.write(tmp_path / "one.parquet")
    s = sample_to_file(conn, _spec(topic_name), tmp_path / "streamed.parquet", row_group_records=500)
    path = tmp_path / "streamed.parquet"

    a, b = read_sample(one_path), read_sample(path)
    order = ["partition", "offset"]
    assert b.df.sort(order).equals(a.df.sort(order)) and len(b) == 6000
    assert _meta(b.meta) == _meta(a.meta) == _meta(s.meta)
    assert b.meta.partitions == a.meta.partitions  # first/last/records/timestamps/read_to per partition
    assert pq.read_schema(path) == pq.read_schema(one_path)  # the same Arrow schema, both with the metadata
    assert pq.read_schema(path).metadata[META_KEY.encode()] == s.meta.to_json().encode()
    assert pq.ParquetFile(path).metadata.num_row_groups == 12 and pq.ParquetFile(path).metadata.num_rows == 6000
    # What `keyscope sample` reports from the writer's counts is what `info` reads from the file.
    assert s.summary() == b.summary() == a.summary()
    assert len(s) == 6000 and s.field_names == ["tenant", "trace"] and s.partition_count == 3
    assert _temps(tmp_path) == []


def test_streamed_file_is_what_pyarrow_writes_of_its_rows(broker, topic_name, tmp_path):
    """Byte for byte: the footer written again at the end is the one pq.write_table writes."""
    _fill(broker.bootstrap_server, topic_name, 3000)
    path = tmp_path / "s.parquet"
    s = sample_to_file(resolve(broker.bootstrap_server), _spec(topic_name), path, row_group_records=700)
    table = pq.read_table(path)
    assert table.schema.metadata[META_KEY.encode()] == s.meta.to_json().encode()
    ref = tmp_path / "ref.parquet"
    pq.write_table(table, ref, row_group_size=700, **parquet_options(["tenant", "trace"]))
    assert path.read_bytes() == ref.read_bytes()


def test_an_error_mid_sample_leaves_nothing_at_the_output_path(broker, topic_name, tmp_path):
    _fill(broker.bootstrap_server, topic_name, 20_000)
    path = tmp_path / "s.parquet"
    path.write_bytes(b"the previous sample")
    seen = []

    def progress(p):
        seen.append(p.records)
        if p.records >= 2000:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        sample_to_file(resolve(broker.bootstrap_server), _spec(topic_name), path, progress=progress,
                       row_group_records=500)
    assert max(seen) >= 2000  # it failed mid-sample, after row groups were written
    assert path.read_bytes() == b"the previous sample" and _temps(tmp_path) == []


def test_a_failure_before_any_record_leaves_no_file(broker, topic_name, tmp_path):
    path = tmp_path / "s.parquet"
    with pytest.raises(KafkaError):
        sample_to_file(resolve(broker.bootstrap_server), _spec(topic_name, timeout_s=5), path)
    assert not path.exists() and os.listdir(tmp_path) == []


def test_ctrl_c_mid_sample_publishes_a_whole_partial_file(broker, topic_name, tmp_path):
    _fill(broker.bootstrap_server, topic_name, 20_000)
    path = tmp_path / "s.parquet"

    def progress(p):
        if p.records >= 3000:
            raise KeyboardInterrupt

    s = sample_to_file(resolve(broker.bootstrap_server), _spec(topic_name), path, progress=progress,
                       row_group_records=500)
    back = read_sample(path)
    assert s.meta.partial and back.meta.partial and back.meta.partial_reason == "interrupted (Ctrl-C)"
    assert 3000 <= len(back) < 20_000 and len(back) == len(s)
    assert sum(i.records for i in back.meta.partitions.values()) == len(back)
    for p, info in back.meta.partitions.items():  # each partition a contiguous run from its start
        offs = back.df.filter(back.df["partition"] == p)["offset"].sort().to_list()
        assert offs == list(range(info.first, info.last + 1)) if offs else info.records == 0
    assert s.summary() == back.summary() and _temps(tmp_path) == []


def test_killed_mid_sample_leaves_nothing_at_the_output_path(broker, topic_name, tmp_path):
    """SIGKILL while row groups are being written: the output name never holds a half file."""
    _fill(broker.bootstrap_server, topic_name, 300_000, partitions=2)
    out = tmp_path / "s.parquet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyscope", "sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out),
         "--from", "earliest", "--max-records", "300000", "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if any(os.path.getsize(tmp_path / t) > 1024 for t in _temps(tmp_path) if (tmp_path / t).exists()):
            break
        time.sleep(0.002)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if killed:
        assert not out.exists()
    else:  # it finished first (a fast machine): then the file is whole
        assert len(read_sample(out)) == 300_000


def test_empty_and_odd_splits_without_a_broker(tmp_path):
    """Row groups of exactly N rows whatever the tables' sizes; zero records give a valid empty file."""
    meta = SampleMeta(topic="t")
    empty = SampleFile(tmp_path / "e.parquet", ["f"])
    empty.publish(meta)
    assert read_sample(tmp_path / "e.parquet").df.height == 0
    assert pq.read_schema(tmp_path / "e.parquet").names[-1] == "f"

    f = SampleFile(tmp_path / "s.parquet", [], row_group_records=7)
    n = 0
    for size in (1, 3, 10, 7, 2, 0, 30):
        t = pa.table({
            "partition": pa.array([size % 3] * size, pa.int32()), "offset": pa.array(range(n, n + size), pa.int64()),
            "timestamp": pa.array([1_700_000_000_000 + i for i in range(size)], pa.timestamp("ms", tz="UTC")),
            "key": pa.array([b"k%d" % (i % 4) if i % 5 else None for i in range(size)], pa.binary()),
            "key_size": pa.array([2 if i % 5 else None for i in range(size)], pa.int32()),
            "value_size": pa.array([i for i in range(size)], pa.int32()),
        })
        f.add(size % 3, t)
        n += size
    f.publish(meta)
    md = pq.ParquetFile(tmp_path / "s.parquet").metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [7] * 7 + [4]
    assert f.stats.records == n == 53 and f.stats.distinct_keys == 4
    back = read_sample(tmp_path / "s.parquet")
    assert back.df["offset"].to_list() == list(range(53))
    assert f.stats.null_keys == back.df["key"].null_count()
