"""How a keyscope sample file is laid out in Parquet: its Arrow schema and its encodings.

One place for both writers (:meth:`keyscope.sample.Sample.write`, all at once, and
:class:`keyscope.sampling.sink.SampleFile`, row groups while sampling), so their files
differ only in how the rows are cut into row groups.
"""

from __future__ import annotations


def parquet_options(fields: list[str]) -> dict:
    """How every keyscope sample file is encoded (pq.write_table / ParquetWriter keywords).

    Measured on bench_cold's 5M records (load ~10, so roughly): pyarrow's defaults
    (dictionary on every column) took 0.79 s of CPU to write 22.5 MB; offsets and
    timestamps delta-encoded (they rise within a partition) and dictionaries only where
    values repeat took 0.53 s for 11.9 MB, and Polars read every column back in 0.09 s
    against 0.67 s.  Every Parquet reader decodes both (DELTA_BINARY_PACKED is Parquet 2).
    No min/max statistics for the keys and fields: comparing every value cost 0.29 s of
    the 1.0 s it took to write 5M records with two fields (no reader of a sample filters
    on a key range); the numeric columns keep theirs.
    """
    return {
        "compression": "zstd",
        "use_dictionary": ["partition", "key", "key_size", "value_size", *fields],
        "column_encoding": {"offset": "DELTA_BINARY_PACKED", "timestamp": "DELTA_BINARY_PACKED"},
        "write_statistics": ["partition", "offset", "timestamp", "key_size", "value_size"],
    }


def arrow_schema(fields: list[str]):
    """The sample file's Arrow schema: what ``Sample.df.to_arrow()`` gives (Polars' large types)."""
    import pyarrow as pa

    return pa.schema(
        [("partition", pa.int32()), ("offset", pa.int64()), ("timestamp", pa.timestamp("ms", tz="UTC")),
         ("key", pa.large_binary()), ("key_size", pa.int32()), ("value_size", pa.int32())]
        + [(f, pa.large_string()) for f in fields]
    )
