"""The Sample's Parquet round trip and its bad-file errors."""

from __future__ import annotations

import polars as pl
import pytest

from keyscope.errors import InputError
from keyscope.sample import PartitionInfo, Sample, read_sample


def test_round_trip_keeps_frame_and_metadata(tmp_path):
    df = pl.DataFrame(
        {"partition": [0, 2, 2], "offset": [5, 7, 8], "key": [b"a", None, b"\xff\x00"], "tenant": ["t1", None, "t2"]}
    )
    s = Sample.from_frame(df, topic="crm-events", partition_count=3, source="synthetic")
    s.meta.partitions[2] = PartitionInfo(partition=2, low=0, high=9, first=7, last=8, records=2)
    s.meta.partial = True
    path = s.write(tmp_path / "s.parquet")
    back = read_sample(path)
    assert back.meta == s.meta
    assert back.df.equals(s.df)
    assert back.df["key_size"].to_list() == [1, None, 2]
    assert back.field_names == ["tenant"]
    assert back.partition_count == 3


@pytest.mark.parametrize("content", [b"", b"PAR1garbage", b"not parquet at all"])
def test_corrupt_files_give_one_line_errors(tmp_path, content):
    p = tmp_path / "bad.parquet"
    p.write_bytes(content)
    with pytest.raises(InputError) as e:
        read_sample(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_truncated_file(tmp_path):
    df = pl.DataFrame({"partition": list(range(1000)), "key": [b"k%d" % i for i in range(1000)]})
    p = Sample.from_frame(df).write(tmp_path / "s.parquet")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable Parquet file"):
        read_sample(p)


def test_missing_required_columns(tmp_path):
    p = tmp_path / "nokey.parquet"
    pl.DataFrame({"partition": [0, 1]}).write_parquet(p)
    with pytest.raises(InputError, match="missing required column.*key"):
        read_sample(p)
