"""Unit tables: the sample grouped by (partition, key, fields), two engines; composite keys from dictionaries."""

from __future__ import annotations

from typing import Sequence

import numpy as np

MAX_CELLS = 1 << 22  # per key: partitions x field-value combinations the compiled group-by may hold
DENSE_CELLS = 1 << 22  # (keys + 1) x cells up to this: a dense table, no sort by key


CODE = "_code:"  # a coded unit table's column of a field's dictionary codes (the null code is the last)


def group_by_codes(
    df, field_sets: list[tuple[str, ...]], partitions: int, coded: bool = False, keep_codes: Sequence[str] = (),
    encoded=None,
):
    """(key index, per field set (partition, key, fields) -> n, b, kid, per-record key ids); None if too wide.

    With ``coded``, the field sets' tables hold each field's dictionary codes
    (``CODE + field``) and the key id instead of the key and field values, and
    the dictionaries (column -> values, null last) come fourth in the tuple:
    gathering key bytes to the 3.6M (partition, key, user_id) units of a 10M
    sample took ~0.7 s, and only the hot keys' units ever need them.  Fifth,
    the per-record codes (int32, -1 null) of the fields in ``keep_codes``:
    salting a composite key finds its records' sub-keys from them.

    Why: Polars grouping 10M records on (partition, key, field), even on column
    hashes, was most of ``recommend``'s time.  Here each column is dictionary
    encoded once (keyscope._keytable.encode: exact, bytes compared, no hash
    guesswork), the records are ordered by key id once, and each table is one
    compiled pass over small integer cells.  The per-record key ids are kept
    for the salting candidates (their hot keys' records).  The plain
    (partition, key) table is the first of the returned tables.

    ``encoded``: the columns already encoded, ``(codes, values, size, part)`` as
    :func:`keyscope.io.parquet.dictionary_codes` reads them from a sample file's
    dictionary pages (plus the partition column); ``df`` is then not read.
    """
    import polars as pl
    from concurrent.futures import ThreadPoolExecutor

    from .._keytable import encode
    from .kernels import dense_cells, group_cells, make_cells, sort_by_key  # LLVM IR: only the coded path loads it

    S = max(int(partitions), 1)
    cols = list(dict.fromkeys(["key", *(f for fs in field_sets for f in fs)]))
    if encoded is not None:
        e_codes, e_values, size, part = encoded
        part = np.asarray(part, np.int32)
        n_rows = part.shape[0]
        # each field's codes as read, not copied into one 2-D array (make_cells takes one array per field)
        codes = [np.ascontiguousarray(e_codes.pop(c), np.int32) for c in cols[1:]]
        if any(c.shape[0] != n_rows for c in codes):
            raise ValueError("every column's codes must have one code per record")
        kid = e_codes["key"]
        dicts = {c: pl.concat([e_values[c], pl.Series([None], dtype=e_values[c].dtype)]) for c in cols}
        widths = {c: len(e_values[c]) + 1 for c in cols}
        K = len(e_values["key"])
    else:
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
    if encoded is None:
        kid, key_firsts = enc["key"]
        K = len(key_firsts)
        part = np.asarray(df["partition"].to_numpy(), np.int32)  # no copy: partitions are Int32 already
        size = (  # int32: a record's key + value fit a Kafka batch, whose length is an int32 (sums are int64)
            df.select(
                (pl.col("key_size").fill_null(0).cast(pl.Int64) + pl.col("value_size").fill_null(0)).cast(pl.Int32)
            )
            .to_series()
            .to_numpy()
        )
        dicts = {c: pl.concat([df[c].gather(enc[c][1]), pl.Series([None], dtype=df[c].dtype)]) for c in cols}
        del enc
    fields = cols[1:]
    dense = [(K + 1) * w <= DENSE_CELLS for w in cells_w]
    # the wide sets' cells first, so the sort by key reads them as one view (cells[wide] copied n x sets int32)
    # a dense set of no fields (the plain table) has its partition as its cell: no row of cells for it
    # (40 MB and a pass at 10M records)
    order = sorted((r for r in range(len(sets)) if sets[r] or not dense[r]), key=lambda r: dense[r])
    row_of = {r: i for i, r in enumerate(order)}
    members = np.full((len(order), max(1, max(len(fs) for fs in sets))), -1, np.int64)
    for r in order:
        members[row_of[r], : len(sets[r])] = [fields.index(f) for f in sets[r]]
    wide = sum(1 for d in dense if not d)
    # the wide sets' cells and the dense sets' apart: the wide ones are dropped once sorted by key, before
    # the group pass (4 bytes a record per wide set off the pass's peak, ~40 MB at recommend's 10M)
    w_arr = np.array([widths[f] for f in fields] or [1], np.int64)
    wide_cells = make_cells(part, S, codes, w_arr, members[:wide])
    cells = make_cells(part, S, codes, w_arr, members[wide:])
    # views, no copy: ``codes`` then stays alive (4 bytes a record per field) only while one is kept
    record_codes = {f: codes[fields.index(f)] for f in dict.fromkeys(keep_codes) if f in fields}
    del codes  # the fields' codes are in the cells now
    if wide:  # one counting sort by key for every wide set
        start, s_cells, s_size = sort_by_key(kid, K, wide_cells, size)
    del wide_cells

    def one(r):
        if dense[r]:
            return dense_cells(kid, K, cells[row_of[r] - wide] if r in row_of else part, cells_w[r], size)
        return group_cells(start, s_cells[row_of[r]], cells_w[r], s_size)

    # the dense sets first, then their cells (4 bytes a record per dense set) are dropped before the wide
    # sets' tables (the largest outputs: 3.6M key+user_id units, ~115 MB) are grown: the group pass's
    # peak held both
    wide_rs = [r for r in range(len(sets)) if not dense[r]]
    dense_rs = [r for r in range(len(sets)) if dense[r]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(dense_rs, pool.map(one, dense_rs)))
        cells = np.zeros((0, 0), np.int32)
        done.update(zip(wide_rs, pool.map(one, wide_rs)))
    grouped = [(sets[r], done.pop(r)) for r in range(len(sets))]
    s_cells = np.zeros((0, 0), np.int32)
    s_size = np.zeros(0, np.int32)
    tables = []
    while grouped:  # each set's arrays freed once its frame is made
        fs, (gk, gc, gn, gb) = grouped.pop(0)
        as_codes = coded and bool(fs)
        # in place on the (non-negative) cells, each digit written straight to int32: no unit-long int64
        # temporaries beside the outputs (the frames' step was the group pass's other peak)
        p32 = np.empty(len(gc), np.int32)
        np.remainder(gc, S, out=p32, casting="unsafe")
        cols_out = {"partition": p32}
        if not as_codes:
            cols_out["key"] = dicts["key"].gather(gk)
        rest = np.floor_divide(gc, S, out=gc)
        for f in reversed(fs):
            code = np.empty(len(rest), np.int32)
            np.remainder(rest, widths[f], out=code, casting="unsafe")
            np.floor_divide(rest, widths[f], out=rest)
            cols_out[CODE + f if as_codes else f] = code if as_codes else dicts[f].gather(code.astype(np.int64))
        names = [CODE + f for f in fs] if as_codes else ["key", *fs]
        frame = pl.DataFrame(cols_out).select("partition", *names)
        # the ids as the UInt32 the column is (non-negative: a view, no unit-long int64 copy); K is the null key
        kid_col = pl.Series("kid", np.asarray(gk, np.int32).view(np.uint32))
        frame = frame.with_columns(
            pl.Series("n", gn), pl.Series("b", gb), pl.when(kid_col < K).then(kid_col).alias("kid")
        )
        tables.append(frame)
    key_index = pl.DataFrame({"key": dicts["key"].head(K)}).with_row_index("kid")
    if coded:
        return key_index, tables, kid, dicts, record_codes
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
    if not fields:
        return key.alias("ckey")
    return compose_codes(key, _row_codes(key), [(f, _row_codes(f)) for f in fields], sep)


def compose_codes(key_dict, kid: np.ndarray, fields: Sequence, sep: str, prepared=None):
    """Composite keys from dictionaries: row i is ``key_dict[kid[i]] (+ sep + dict[code[i]])`` per field.

    ``fields``: (dictionary, codes) pairs; a code -1 is a null field (no
    separator either), a ``kid`` -1 a null key (a null composite key).  Why:
    the composite key of a unit is built from the few distinct keys and field
    values, not from key bytes gathered to every unit row first.
    ``prepared``: :func:`_prepare` of the same dictionaries and separator, made
    once by a caller composing many slices (:class:`CodedKeys`).
    """
    from .kernels import concat_parts

    key_p, sep_p, field_ps = prepared or _prepare(key_dict, [d for d, _ in fields], sep)
    kid = np.asarray(kid, np.int64)
    keyed = kid >= 0
    n = len(kid)
    parts = [(key_p[0], key_p[1], kid, key_p[2])]  # (offsets, bytes, codes, lengths): concat_parts' order
    for (_, code), (d_off, d_data, d_len) in zip(fields, field_ps):
        code = np.where(keyed, np.asarray(code, np.int64), -1)
        parts += [(sep_p[0], sep_p[1], np.where(code >= 0, 0, -1), sep_p[2]), (d_off, d_data, code, d_len)]
    off, data = concat_parts(parts, n)
    return _series("ckey", off, data, None if keyed.all() else keyed)


# CodedKeys.hash: from this many units the rows are split over HASH_THREADS threads (the compiled pass lets
# go of the GIL); key+user_id's 3.6M units of a 10M recommend: see hash_coded in keyscope._kernels
HASH_THREADS_MIN_ROWS = 1 << 16
HASH_THREADS = 2


def _prepare(key_dict, field_dicts: Sequence, sep: str):
    """(key, separator, [field...]) dictionaries as (offsets, bytes, entry lengths) for :func:`concat_parts`.

    Why once: CodedKeys.hash composes 28 slices of recommend's 3.6M key+user_id units, and each
    converted the 100k-key dictionary and took its lengths again (~0.15 s CPU at 10M records).
    """
    def one(d):
        off, data = _parts(d)
        return off, data, _lengths(off)

    return one(key_dict), one(_binary(sep.encode())), [one(d) for d in field_dicts]


def _lengths(off: np.ndarray) -> np.ndarray:
    """Each entry's length, and a last 0: what a code -1 (indexing it) adds."""
    return np.append(np.diff(off), np.int64(0))


class CodedKeys:
    """Producer keys ``key (+ sep + field)...`` named by dictionary codes, never composed as a whole column.

    Row i is what :func:`compose_codes` would build from the same arguments.
    Why: recommend's key+user_id set is 3.6M units at 10M records; composing
    them all as bytes and converting that for Polars was the run's peak
    (~300 MB above the unit tables, docs/benchmarks.md whatif6), though the
    keys are only hashed.  :meth:`hash` composes each in a scratch buffer
    and hashes it there (``keyscope._kernels.hash_coded``); :meth:`compose`
    builds a slice as a column where one is wanted.
    """

    def __init__(self, key_dict, kid: np.ndarray, fields: Sequence, sep: str):
        self.key_dict, self.kid, self.fields, self.sep = key_dict, kid, list(fields), sep
        self._prepared = None
        # (offsets, padded bytes) of the key's and the fields' dictionaries, for hash
        self._padded: list[tuple[np.ndarray, np.ndarray]] | None = None

    def __len__(self) -> int:
        return len(self.kid)

    def compose(self, lo: int = 0, hi: int | None = None):
        """Rows ``lo:hi`` as a Binary Series (``compose_codes`` on the slice)."""
        hi = len(self) if hi is None else hi
        if self._prepared is None:
            self._prepared = _prepare(self.key_dict, [d for d, _ in self.fields], self.sep)
        return compose_codes(self.key_dict, self.kid[lo:hi], [(d, c[lo:hi]) for d, c in self.fields], self.sep,
                             self._prepared)

    def hash(self, partitioner) -> tuple[np.ndarray, np.ndarray]:
        """(operand int64, valid bool) per row: ``hash_column`` of the composed column, null as 0 and not valid.

        Composed and hashed in one compiled pass per thread (``_kernels.hash_coded``), no key written out.
        """
        from .. import _kernels
        from ..partitioners import _FAMILY_KERNEL, Partitioner, get_partitioner

        p = partitioner if isinstance(partitioner, Partitioner) else get_partitioner(partitioner)
        n = len(self)
        if p.key_independent:  # every operand null, whatever the key
            return np.zeros(n, np.int64), np.zeros(n, np.bool_)
        if self._padded is None:
            self._padded = [(off, _kernels.padded(data)) for off, data in
                            (_parts(d) for d in [self.key_dict, *(d for d, _ in self.fields)])]
        (k_off, k_data), *f_dicts = self._padded
        kid = np.asarray(self.kid, np.int64)
        fields = [(off, data, codes) for (off, data), (_, codes) in zip(f_dicts, self.fields)]
        kernel, step = _FAMILY_KERNEL[p.family]
        op = _kernels.hash_coded(kernel, (k_off, k_data), kid, fields, self.sep.encode(),
                                 threads=HASH_THREADS if n >= HASH_THREADS_MIN_ROWS else 1)
        if step == "mask":
            op &= 0x7FFFFFFF
        elif step == "abs":  # |int32|, int32 min staying 2**31, as hash_column
            neg = op >= 1 << 31
            op[neg] = (1 << 32) - op[neg]
        valid = kid >= 0
        if p.null_key_hashed:
            op[~valid] = p.operand(None)
            valid[:] = True
        elif not p.empty_key_hashed:  # an empty composite key: the rule does not hash it
            length = np.diff(k_off)[np.maximum(kid, 0)]
            for off, _, codes in fields:
                length += np.where(codes >= 0, len(self.sep.encode()) + np.diff(off)[np.maximum(codes, 0)], 0)
            valid &= length > 0
        op[~valid] = 0
        return op, valid


def concat_binary(columns: Sequence):
    """Element-wise concatenation of Binary Series (null if any part is null)."""
    from .kernels import concat_parts

    n = len(columns[0])
    codes = [_row_codes(c) for c in columns]
    valid = np.logical_and.reduce([c >= 0 for c in codes])
    parts = [(*_parts(c), np.where(valid, code, -1)) for c, code in zip(columns, codes)]
    off, data = concat_parts(parts, n)
    return _series("key", off, data, None if valid.all() else valid)


def _binary(value: bytes):
    import polars as pl

    return pl.Series([value], dtype=pl.Binary)


def _row_codes(series) -> np.ndarray:
    """Each row as its own dictionary entry: 0..n-1, -1 where null."""
    codes = np.arange(len(series), dtype=np.int64)
    if series.null_count():
        codes[series.is_null().to_numpy()] = -1
    return codes


def _parts(series) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64, bytes uint8) of a Binary/String Series in the LargeBinary layout (a null row empty)."""
    from ..io.arrow_c import binary_parts

    return binary_parts(series)


def _series(name: str, off: np.ndarray, data: np.ndarray, valid):
    """A Polars Binary Series over LargeBinary buffers (``valid``: a bool a row, or None), handed over through
    the Arrow C data interface (:class:`keyscope.io.parquet.Binary`; no pyarrow)."""
    import polars as pl

    from ..io.parquet import Binary

    v = None if valid is None else np.asarray(valid, np.bool_)
    return pl.Series(name, Binary(np.ascontiguousarray(off, np.int64), data, v), dtype=pl.Binary).alias(name)
