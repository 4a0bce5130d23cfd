"""The compiled passes of what-if: one scenario's figures, and the integer group-by of the unit tables.

Each has a Python caller in :mod:`.engine` or :mod:`.tables` that names what it returns.
"""

from __future__ import annotations

import numpy as np
from dataclasses import dataclass

from numba import njit


@dataclass
class PassFigures:
    """What :func:`scenario_pass` counts, in sampled (unweighted) records unless named weighted."""

    cells_n: np.ndarray  # records per (today partition, scenario partition) cell, S x N flattened
    cells_b: np.ndarray  # bytes per cell
    unkeyed_n: np.ndarray  # null-key records per today partition (the producer spreads them)
    unkeyed_b: np.ndarray
    keys_present: int  # distinct keys hashed
    keys_moved: int  # keys whose partition changes
    keys_split: int  # keys landing on more than one partition
    keyed_weighted: float  # keyed records, weighted
    moved_weighted: float  # keyed records that change partition, weighted
    lost_weighted: float  # records of split keys (their order across partitions is lost), weighted


def scenario_pass(src, op, valid, n, b, kid, w, S, N, K, track_split) -> PassFigures:
    """Every figure a scenario reports, in one compiled pass over its unit rows."""
    cn, cb, un, ub, present, moved, split, keyed, moved_w, lost = _scenario_pass(
        src, op, valid, n, b, kid, w, S, N, K, track_split
    )
    return PassFigures(cn, cb, un, ub, int(present), int(moved), int(split), float(keyed), float(moved_w), float(lost))

@njit(cache=True, nogil=True)
def _scenario_pass(src, op, valid, n, b, kid, w, S, N, K, track_split):  # pragma: no cover - compiled
    """One pass over the unit rows of a scenario: every figure it reports.

    Why compiled: composite keys make millions of rows, and a dozen numpy
    passes over them (modulo, cells, moved flags, per-key partition sets)
    cost several times this single loop.  ``kid`` is >= 0 for every hashed row.
    """
    cells_n = np.zeros(S * N)
    cells_b = np.zeros(S * N)
    unk_n = np.zeros(S)
    unk_b = np.zeros(S)
    present = np.zeros(K, np.bool_)
    moved_k = np.zeros(K, np.bool_)
    first_p = np.full(K, -1, np.int64)
    split_k = np.zeros(K, np.bool_)
    keyed_w = 0.0
    moved_w = 0.0
    for i in range(src.shape[0]):
        s = src[i]
        if not valid[i]:
            unk_n[s] += n[i]
            unk_b[s] += b[i]
            continue
        p = op[i] % N
        c = s * N + p
        cells_n[c] += n[i]
        cells_b[c] += b[i]
        wn = n[i] * w[s]
        keyed_w += wn
        k = kid[i]
        present[k] = True
        if p != s:
            moved_w += wn
            moved_k[k] = True
        if track_split:
            fp = first_p[k]
            if fp < 0:
                first_p[k] = p
            elif fp != p:
                split_k[k] = True
    lost = 0.0
    if track_split:
        for i in range(src.shape[0]):
            if valid[i] and split_k[kid[i]]:
                lost += n[i] * w[src[i]]
    return cells_n, cells_b, unk_n, unk_b, present.sum(), moved_k.sum(), split_k.sum(), keyed_w, moved_w, lost



@njit(cache=True, nogil=True)
def pick_rows(kid, lut):  # pragma: no cover - compiled
    """Rows whose key id maps to a hot key (``lut[kid] >= 0``; null keys, -1, never do) and that hot key's index."""
    rows = np.empty(kid.shape[0], np.int64)
    hid = np.empty(kid.shape[0], np.int64)
    m = 0
    for i in range(kid.shape[0]):
        k = kid[i]
        if k >= 0:
            h = lut[k]
            if h >= 0:
                rows[m] = i
                hid[m] = h
                m += 1
    return rows[:m].copy(), hid[:m].copy()


@njit(cache=True, nogil=True)
def make_cells(part, S, codes, widths, members):  # pragma: no cover - compiled
    """Per field set (a row of ``members``: field indexes, -1 padded), partition + S x the fields' codes in mixed radix; null = the last code."""
    m, n = members.shape[0], part.shape[0]
    cells = np.empty((m, n), np.int32)
    for r in range(m):
        for i in range(n):
            combo = 0
            for j in range(members.shape[1]):
                f = members[r, j]
                if f < 0:
                    break
                c = codes[f, i]
                combo = combo * widths[f] + (c if c >= 0 else widths[f] - 1)
            cells[r, i] = part[i] + S * combo
    return cells


@njit(cache=True, nogil=True)
def sort_by_key(kid, K, cells, size):  # pragma: no cover - compiled
    """Cells and sizes reordered by key id (a stable counting sort; null keys, -1, last) and each key's start.

    Scattered, not gathered: records are read in order and written to one
    cursor per key, which stays cheap for hot keys; the group-by then reads
    each key's records contiguously.
    """
    n = kid.shape[0]
    start = np.zeros(K + 2, np.int64)
    for i in range(n):
        k = kid[i]
        start[(k if k >= 0 else K) + 1] += 1
    for k in range(K + 1):
        start[k + 1] += start[k]
    pos = start[:-1].copy()
    m = cells.shape[0]
    s_cells = np.empty((m, n), cells.dtype)
    s_size = np.empty(n, size.dtype)
    for i in range(n):
        k = kid[i]
        k = k if k >= 0 else K
        j = pos[k]
        pos[k] = j + 1
        s_size[j] = size[i]
        for f in range(m):
            s_cells[f, j] = cells[f, i]
    return start, s_cells, s_size


@njit(cache=True, nogil=True)
def dense_cells(kid, K, cell, W, size):  # pragma: no cover - compiled
    """``group_cells`` when (keys + 1) x cells is small: one in-order pass into a dense table, no sort."""
    cnt = np.zeros((K + 1) * W, np.int64)
    byt = np.zeros((K + 1) * W, np.int64)
    for i in range(kid.shape[0]):
        k = kid[i]
        j = (k if k >= 0 else K) * W + cell[i]
        cnt[j] += 1
        byt[j] += size[i]
    nz = np.flatnonzero(cnt)
    return nz // W, nz % W, cnt[nz], byt[nz]


@njit(cache=True, nogil=True)
def group_cells(start, cell, W, size):  # pragma: no cover - compiled
    """Per key id (K = null), the distinct cells in [0, W) with their records and bytes.

    Rows arrive grouped by key, so a key's cells fit a small dense scratch
    array (reset through the list of touched cells): no hash table at all.
    """
    K1 = start.shape[0] - 1
    scr_n = np.zeros(W, np.int64)
    scr_b = np.zeros(W, np.int64)
    touched = np.empty(W, np.int64)
    cap = max(1024, cell.shape[0] // 8)
    ok = np.empty(cap, np.int64)
    oc = np.empty(cap, np.int64)
    on = np.empty(cap, np.int64)
    ob = np.empty(cap, np.int64)
    ng = 0
    for k in range(K1):
        nt = 0
        for j in range(start[k], start[k + 1]):
            c = cell[j]
            if scr_n[c] == 0:
                touched[nt] = c
                nt += 1
            scr_n[c] += 1
            scr_b[c] += size[j]
        if ng + nt > cap:
            cap = max(2 * cap, ng + nt)
            ok2, oc2, on2, ob2 = np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64), np.empty(cap, np.int64)
            ok2[:ng], oc2[:ng], on2[:ng], ob2[:ng] = ok[:ng], oc[:ng], on[:ng], ob[:ng]
            ok, oc, on, ob = ok2, oc2, on2, ob2
        for t in range(nt):
            c = touched[t]
            ok[ng] = k
            oc[ng] = c
            on[ng] = scr_n[c]
            ob[ng] = scr_b[c]
            ng += 1
            scr_n[c] = 0
            scr_b[c] = 0
    return ok[:ng], oc[:ng], on[:ng], ob[:ng]

