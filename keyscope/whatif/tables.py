"""Unit tables: the sample grouped by (partition, key, fields), two engines; composite keys via pyarrow."""

from __future__ import annotations

from typing import Sequence

import numpy as np

MAX_CELLS = 1 << 22  # per key: partitions x field-value combinations the compiled group-by may hold
DENSE_CELLS = 1 << 22  # (keys + 1) x cells up to this: a dense table, no sort by key


def group_by_codes(df, field_sets: list[tuple[str, ...]], partitions: int):
    """(key index, per field set (partition, key, fields) -> n, b, kid, per-record key ids); None if too wide.

    Why: Polars grouping 10M records on (partition, key, field), even on column
    hashes, was most of ``recommend``'s time.  Here each column is dictionary
    encoded once (keyscope._keytable.encode: exact, bytes compared, no hash
    guesswork), the records are ordered by key id once, and each table is one
    compiled pass over small integer cells.  The per-record key ids are kept
    for the salting candidates (their hot keys' records).  The plain
    (partition, key) table is the first of the returned tables.
    """
    import polars as pl
    from concurrent.futures import ThreadPoolExecutor

    from .._keytable import encode
    from .kernels import dense_cells, group_cells, make_cells, sort_by_key  # LLVM IR: only the coded path loads it

    S = max(int(partitions), 1)
    cols = list(dict.fromkeys(["key", *(f for fs in field_sets for f in fs)]))
    codes = np.empty((len(cols) - 1, df.height), np.int32)  # the fields' codes, one row each

    outs = [None, *codes]  # the key's codes are returned, each field's written into its row of ``codes``
    with ThreadPoolExecutor(max_workers=2) as pool:
        enc = dict(zip(cols, pool.map(lambda c, out: encode(df[c], out=out), cols, outs)))
    del outs
    widths = {c: len(enc[c][1]) + 1 for c in cols}  # + the null code
    sets = [(), *field_sets]
    cells_w = []
    for fs in sets:
        w = S
        for f in fs:
            w *= widths[f]
        if w > MAX_CELLS:
            return None
        cells_w.append(w)
    kid, key_firsts = enc["key"]
    K = len(key_firsts)
    part = np.asarray(df["partition"].to_numpy(), np.int32)  # no copy: partitions are Int32 already
    size = (  # int32: a record's key + value fit a Kafka batch, whose length is an int32 (sums are int64)
        df.select((pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0)).cast(pl.Int32))
        .to_series()
        .to_numpy()
    )
    dicts = {c: pl.concat([df[c].gather(enc[c][1]), pl.Series([None], dtype=df[c].dtype)]) for c in cols}
    fields = cols[1:]
    dense = [(K + 1) * w <= DENSE_CELLS for w in cells_w]
    # the wide sets' cells first, so the sort by key reads them as one view (cells[wide] copied n x sets int32)
    order = sorted(range(len(sets)), key=lambda r: dense[r])
    row_of = {r: i for i, r in enumerate(order)}
    members = np.full((len(sets), max(1, max(len(fs) for fs in sets))), -1, np.int64)
    for r in order:
        members[row_of[r], : len(sets[r])] = [fields.index(f) for f in sets[r]]
    cells = make_cells(part, S, codes, np.array([widths[f] for f in fields] or [1], np.int64), members)
    del codes, enc  # the fields' codes are in the cells now
    wide = sum(1 for d in dense if not d)
    if wide:  # one counting sort by key for every wide set
        start, s_cells, s_size = sort_by_key(kid, K, cells[:wide], size)

    def one(r):
        if dense[r]:
            return dense_cells(kid, K, cells[row_of[r]], cells_w[r], size)
        return group_cells(start, s_cells[row_of[r]], cells_w[r], s_size)

    with ThreadPoolExecutor(max_workers=2) as pool:
        grouped = list(zip(sets, pool.map(one, range(len(sets)))))
    tables = []
    for fs, (gk, gc, gn, gb) in grouped:
        cols_out = {"partition": (gc % S).astype(np.int32), "key": dicts["key"].gather(gk)}
        rest = gc // S
        for f in reversed(fs):
            rest, code = np.divmod(rest, widths[f])
            cols_out[f] = dicts[f].gather(code)
        frame = pl.DataFrame(cols_out).select("partition", "key", *fs)
        kid_col = pl.Series("kid", gk, dtype=pl.Int64)
        frame = frame.with_columns(
            pl.Series("n", gn), pl.Series("b", gb), pl.when(kid_col < K).then(kid_col).cast(pl.UInt32).alias("kid")
        )
        tables.append(frame)
    key_index = pl.DataFrame({"key": dicts["key"].head(K)}).with_row_index("kid")
    return key_index, tables, kid


def group_by_hashes(df, field_sets: list[tuple[str, ...]]):
    """Per field set, (partition, key, fields) -> n, b, grouped on 64-bit hashes; None on a collision.

    Why: grouping 10M records on Binary/String columns row-encodes every value
    (~0.9 s for key+user_id here); on the columns' integer hashes it is about
    half that, and all sets run in one Polars query (the key's hash and
    distinct values shared).  Exact, not probabilistic: the hash must be
    one-to-one on each column's distinct values (null included), checked on
    those few values, which are then joined back.  Else the caller groups on
    the values themselves.
    """
    import polars as pl

    cols = list(dict.fromkeys(["key", *(f for fs in field_sets for f in fs)]))
    hashed = {c: f"_h_{c}" for c in cols}
    size = pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0).cast(pl.Int64)
    lf = df.lazy()
    plans = [lf.select(pl.col(c).unique()).with_columns(pl.col(c).hash().alias(hashed[c])) for c in cols]
    for fs in field_sets:
        plans.append(
            lf.group_by(["partition", *(pl.col(c).hash().alias(hashed[c]) for c in ("key", *fs))]).agg(
                pl.len().cast(pl.Int64).alias("n"), size.sum().alias("b")
            )
        )
    out = pl.collect_all(plans)
    dicts = dict(zip(cols, out[: len(cols)]))
    for c, d in dicts.items():
        if d[hashed[c]].n_unique() != d.height:
            return None  # two distinct values share a hash: group on the values
    tables = []
    for fs, g in zip(field_sets, out[len(cols) :]):
        for c in ("key", *fs):
            g = g.join(dicts[c], on=hashed[c], how="left", nulls_equal=True)
        tables.append(g.select("partition", "key", *fs, "n", "b"))
    return tables



def compose_keys(key, fields: Sequence, sep: str):
    """``key + sep + f1 + sep + f2``, skipping null fields; a null key stays null."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    if not fields:
        return key.alias("ckey")
    # The key is never null going in: pyarrow 26 drops rows whose inputs are all
    # null under null_handling="skip" (the output gets shorter).  Null keys are
    # masked back afterwards.
    arrays = [_large_binary(key.fill_null(b""))] + [_large_binary(f.cast(pl.Binary)) for f in fields]
    joined = pc.binary_join_element_wise(*arrays, pa.scalar(sep.encode(), pa.large_binary()), null_handling="skip")
    out = pl.Series("ckey", joined, dtype=pl.Binary)
    if len(out) != len(key):  # pragma: no cover - guards the workaround above
        raise RuntimeError("composite key column lost rows")
    if key.null_count():
        out = pl.select(pl.when(key.is_not_null()).then(out)).to_series().alias("ckey")
    return out


def concat_binary(columns: Sequence):
    """Element-wise concatenation of Binary Series (null if any part is null)."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc

    arrays = [_large_binary(c) for c in columns]
    joined = pc.binary_join_element_wise(*arrays, pa.scalar(b"", pa.large_binary()))
    return pl.Series("key", joined, dtype=pl.Binary)


def _large_binary(series):
    import pyarrow as pa

    arr = series.to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return arr.cast(pa.large_binary())
