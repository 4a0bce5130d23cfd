"""io.parquet's one checked open (dictionary_codes, int64_at_rows, sizes_at_rows share it)."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keyscope.errors import InputError
from keyscope.io.parquet import _open_checked, int64_at_rows, sizes_at_rows


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "s.parquet"
    pq.write_table(pa.table({"offset": pa.array([5, 6, 7], pa.int64()), "key_size": pa.array([1, 2, 3], pa.int32()),
                             "value_size": pa.array([10, None, 30], pa.int32())}), p)
    return p


def test_opens_a_file_of_the_given_length(path):
    assert _open_checked(path, 3).metadata.num_rows == 3


def test_a_file_of_another_length_is_an_input_error(path):
    with pytest.raises(InputError, match="columns of different lengths"):
        _open_checked(path, 4)
    for read in (lambda: int64_at_rows(path, lambda: None, "offset", np.array([0]), 4),
                 lambda: sizes_at_rows(path, lambda: None, np.array([0]), 4)):
        with pytest.raises(InputError, match="columns of different lengths"):
            read()


def test_not_parquet_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="not a readable Parquet file") as e:
        _open_checked(bad, 1)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_unsuitable_is_none_before_the_length_check(path):
    assert _open_checked(path, 99, lambda f: False) is None
    assert int64_at_rows(path, lambda: None, "key_size", np.array([0]), 3) is None  # int32, not int64


def test_the_readers_still_read(path):
    assert int64_at_rows(path, lambda: None, "offset", np.array([0, 2]), 3).tolist() == [5, 7]
    assert sizes_at_rows(path, lambda: None, np.array([1, 2]), 3).tolist() == [2, 33]
