"""analyze's Polars-free read path equals the Polars one.

``read_sample(path, columns=())`` takes the record count and the partition range
from the Parquet footer's statistics instead of reading the partition column
with Polars, and :mod:`keyscope.io.prefetch` sums the key table on a thread while
the CLI imports the rest.  Checked here against ``read_sample(path,
columns=("partition",))`` (the reader before) on the edge cases: null keys and
value sizes, an empty sample, one partition, many row groups, partitions never
sampled, null partitions, no statistics (foreign writers), bad partition numbers,
the shipped samples (older keyscope versions), and a file changed under the thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from keyscope import analysis
from keyscope.analysis import analyze
from keyscope.errors import InputError
from keyscope.io import parquet as kpq
from keyscope.io import prefetch
from keyscope.sample import META_KEY, Sample, read_sample

from .test_analysis_scan import tricky_frame

SAMPLES = sorted((Path(__file__).resolve().parent.parent / "samples").glob("*.parquet"))


def write(df: pl.DataFrame, path, partitions: int = 5, row_group_size: int = 7_000, times: bool = False,
          **kw) -> None:  # fmt: skip
    """A keyscope sample file as its writer lays it out (statistics on the partition column), small row groups.

    ``times``: each partition's first/last timestamps in the metadata, as ``keyscope sample`` records them.
    """
    s = Sample.from_frame(df, partition_count=partitions)
    if times:
        for i, info in s.meta.partitions.items():
            info.first_timestamp_ms, info.last_timestamp_ms = 1_700_000_000_000, 1_700_000_000_000 + 1_000 * (i + 1)
    table = s.df.to_arrow().replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    from keyscope.io.sample_format import parquet_options

    opts = {**parquet_options(s.field_names), **kw}
    pq.write_table(table, path, row_group_size=row_group_size, **opts)


def plain(d: dict) -> dict:
    d["sample"].pop("sampled_at", None)
    return d


def same_sample(path) -> Sample:
    """The footer reader's sample, checked against the Polars reader's on everything analyze reads."""
    new, old = read_sample(path, columns=()), read_sample(path, columns=("partition",))
    assert len(new) == len(old)
    assert new.partition_count == old.partition_count
    assert plain_meta(new) == plain_meta(old)
    assert new.columns == old.columns
    assert new.key_file() is not None
    return new


def plain_meta(s: Sample) -> dict:
    d = s.meta.to_dict()
    d.pop("sampled_at")
    return d


def analyses_agree(path, **kw) -> None:
    for compiled in (True, False, None):
        want = plain(analyze(read_sample(path, columns=("partition",)), compiled=compiled, **kw).to_dict())
        got = plain(analyze(same_sample(path), compiled=compiled, **kw).to_dict())
        assert got == want


def test_footer_read_reads_no_partition_column_and_equals_the_polars_reader(tmp_path):
    df = tricky_frame(40_000, seed=5)
    path = tmp_path / "s.parquet"
    write(df, path, times=True)
    assert pq.ParquetFile(path).metadata.num_row_groups > 3
    s = same_sample(path)
    assert not s.loaded("partition") and s._df.width == 0
    a = analyze(s, compiled=True)
    assert not s.loaded("partition") and not s.loaded("key")  # both came from the pages, with the key table
    assert plain(a.to_dict()) == plain(analyze(read_sample(path, columns=("partition",)), compiled=True).to_dict())
    # any column asked for later brings the partitions with it: the same frame as reading them all
    assert s.frame("offset", "partition").equals(read_sample(path).frame("offset", "partition"))
    assert s.df.equals(read_sample(path).df)


def test_null_keys_one_partition_many_row_groups_and_partitions_never_sampled(tmp_path):
    rng = np.random.default_rng(3)
    n = 30_000
    keys = [None if i % 7 == 0 else f"k{i % 500}".encode() for i in rng.integers(0, 10_000, n)]
    vs = pl.Series([None if i % 5 == 0 else int(i) for i in rng.integers(0, 900, n)], dtype=pl.Int32)
    one = pl.DataFrame({"key": pl.Series(keys, dtype=pl.Binary), "partition": np.zeros(n, np.int32),
                        "value_size": vs.fill_null(0)})  # fmt: skip
    path = tmp_path / "one.parquet"
    write(one, path, partitions=1, row_group_size=1_000)
    analyses_agree(path)
    # partition 7 of 12 only: the count from the metadata, the hottest from the pages
    seven = one.with_columns(pl.lit(7, pl.Int32).alias("partition"))
    write(seven, path, partitions=12, row_group_size=2_500)
    assert read_sample(path, columns=()).partition_count == 12
    analyses_agree(path)
    analyses_agree(path, by="bytes")


def test_empty_sample_and_files_without_statistics_fall_back_to_the_column(tmp_path):
    path = tmp_path / "e.parquet"
    write(tricky_frame(0), path)
    s = read_sample(path, columns=())
    assert len(s) == 0 and s.loaded("partition")  # nothing in the footer to go by: read as before
    analyses_agree(path)
    write(tricky_frame(20_000, seed=2), path, write_statistics=False)
    s = read_sample(path, columns=())
    assert s.loaded("partition")
    analyses_agree(path)


def test_null_partitions_are_read_as_before(tmp_path):
    """The footer counts nulls: such a file takes the Polars path (whatever that makes of it)."""
    df = tricky_frame(10_000, seed=9)
    s = Sample.from_frame(df, partition_count=5)
    t = s.df.to_arrow()
    part = pa.array([None if i % 100 == 0 else v for i, v in enumerate(t.column("partition").to_pylist())], pa.int32())
    t = t.set_column(0, "partition", part).replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    path = tmp_path / "n.parquet"
    pq.write_table(t, path, row_group_size=3_000)
    new = read_sample(path, columns=())
    assert new.loaded("partition")
    assert new.frame("partition").equals(read_sample(path, columns=("partition",)).frame("partition"))


@pytest.mark.parametrize("bad, message", [(-1, "negative partition numbers"), (100_000, "beyond keyscope's limit")])
def test_bad_partition_numbers_get_the_same_one_line_error(tmp_path, bad, message):
    df = tricky_frame(5_000, seed=1)
    s = Sample.from_frame(df, partition_count=5)
    t = s.df.to_arrow()
    part = np.asarray(t.column("partition").to_numpy()).copy()
    part[17] = bad
    t = t.set_column(0, "partition", pa.array(part, pa.int32()))
    t = t.replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    path = tmp_path / "b.parquet"
    pq.write_table(t, path, row_group_size=1_000)
    errors = []
    for cols in ((), ("partition",)):
        with pytest.raises(InputError, match=message) as e:
            read_sample(path, columns=cols)
        errors.append(str(e.value))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_shipped_samples_written_by_older_keyscope_versions(path):
    analyses_agree(path)
    analyses_agree(path, by="bytes", load="sample")


def test_prefetched_sums_equal_the_main_threads_and_are_refused_for_another_file_or_count(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "MIN_ROWS", 0)
    df = tricky_frame(30_000, seed=12)
    path = tmp_path / "s.parquet"
    write(df, path)
    names = set(pq.ParquetFile(path).schema_arrow.names)
    ref = kpq.dictionary_sums(path, lambda: None, 5, names)
    prefetch.start(path)
    got = prefetch.take(path, 5)
    assert got is not None
    for a, b in zip(got, ref):
        assert (a.to_pylist() == b.to_pylist()) if isinstance(a, kpq.Binary) else np.array_equal(a, b)
    assert prefetch.take(path, 5) is None  # taken once
    prefetch.start(path)
    assert prefetch.take(path, 6) is None  # made for another partition count: recomputed
    prefetch.start(path)
    prefetch._jobs[str(path)].thread.join()
    write(tricky_frame(30_000, seed=13), path)  # replaced after the thread read it
    assert prefetch.take(path, 5) is None
    # through analyze: a prefetch of the file before it changed is never used
    prefetch.start(path)
    prefetch._jobs[str(path)].thread.join()
    write(df, path)
    want = plain(analyze(read_sample(path, columns=("partition",)), compiled=True).to_dict())
    assert plain(analyze(read_sample(path, columns=()), compiled=True).to_dict()) == want


def test_prefetch_only_where_the_key_table_is_read_from_the_pages():
    assert prefetch.MIN_ROWS >= analysis.COMPILED_MIN_ROWS


def test_analyze_cli_with_the_prefetch_thread_prints_what_the_polars_reader_gives(tmp_path):
    """A fresh process (the thread runs, the footer reader is used) against the reader before, in-process."""
    df = tricky_frame(600_000, seed=21, n_keys=4_000)
    path = tmp_path / "s.parquet"
    write(df, path, row_group_size=150_000)
    code = ("import sys, json\nfrom keyscope.cli import main\nfrom keyscope.io import prefetch\n"
            "prefetch.MIN_ROWS = 0\ntook = []\norig = prefetch.take\n"
            "prefetch.take = lambda p, P: took.append(orig(p, P)) or took[-1]\n"
            "try:\n    main(['analyze', sys.argv[1], '--format', 'json'])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(json.dumps([t is not None for t in took]))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    *doc, used = out.stdout.strip().splitlines()
    assert json.loads(used) == [True]  # the thread's sums were the ones used
    got = json.loads("\n".join(doc))
    want = json.loads(json.dumps(analyze(read_sample(path, columns=("partition",))).to_dict()))
    for d in (got, want):
        d["sample"].pop("sampled_at", None)
        d.pop("keyscope_version", None)
    assert {k: got[k] for k in want} == want


def test_a_stopped_prefetch_ends_between_row_groups_and_is_not_used(tmp_path, monkeypatch):
    """The atexit hook's path: a command ending early sets the event; the thread stops at the next read."""
    monkeypatch.setattr(prefetch, "MIN_ROWS", 0)
    path = tmp_path / "s.parquet"
    write(tricky_frame(20_000, seed=14), path, row_group_size=1_000)
    job = prefetch._Job(str(path))
    job.stop.set()
    job.thread.start()
    job.thread.join(timeout=60)
    assert not job.thread.is_alive() and job.result is None
    prefetch._jobs[str(path)] = job
    assert prefetch.take(path, 5) is None  # then the main thread sums the file itself
    want = plain(analyze(read_sample(path, columns=("partition",)), compiled=True).to_dict())
    assert plain(analyze(read_sample(path, columns=()), compiled=True).to_dict()) == want


def test_a_column_whose_cast_may_fail_is_read_with_the_partitions_as_before(tmp_path):
    """A foreign-typed base column (offset as text) is checked when the sample is opened, on either path."""
    s = Sample.from_frame(tricky_frame(5_000, seed=15), partition_count=5)
    t = s.df.to_arrow()
    t = t.set_column(t.schema.get_field_index("offset"), "offset", pa.array([str(i) for i in range(t.num_rows)]))
    t = t.replace_schema_metadata({META_KEY.encode(): s.meta.to_json().encode()})
    path = tmp_path / "r.parquet"
    pq.write_table(t, path, row_group_size=1_000)
    new, old = read_sample(path, columns=()), read_sample(path, columns=("partition",))
    assert new.loaded("partition") and new.frame("offset").equals(old.frame("offset"))
    t = t.set_column(t.schema.get_field_index("offset"), "offset", pa.array(["x"] * t.num_rows))
    pq.write_table(t, path, row_group_size=1_000)
    messages = []
    for cols in ((), ("partition",)):
        with pytest.raises(InputError) as e:
            read_sample(path, columns=cols)
        messages.append(str(e.value))
    assert messages[0] == messages[1]
