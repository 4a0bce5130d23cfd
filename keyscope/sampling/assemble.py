"""The fetched tables and the run's state -> a Sample with its metadata."""

from __future__ import annotations

import time


from .fetch import _read_to
from .options import PACE_RATIO, PACE_STEP


def _span(tables) -> dict | None:
    """One partition's first/last offset, records, and the timestamps (ms) at those offsets.

    From its own tables (numpy over the offset column), not a group_by over the whole frame: that
    sort_by + group_by over every record was ~0.1 s per million records."""
    import numpy as np

    from .sink import int64_values

    offs = np.concatenate([int64_values(t.column("offset")) for t in tables]) if tables else np.empty(0, np.int64)
    if not offs.size:
        return None
    i, j = int(offs.argmin()), int(offs.argmax())

    def ts(k: int):
        for t in tables:  # the row k of the concatenation
            if k < t.num_rows:
                v = t.column("timestamp")[k]
                return None if not v.is_valid else v.value
            k -= t.num_rows
        return None

    return {"first": int(offs[i]), "last": int(offs[j]), "records": int(offs.size), "t0": ts(i), "t1": ts(j)}


def _build_sample(spec, conn, all_parts, parts, plan, state, sampled_at, t0, max_records, max_bytes, timeout_s):
    from ..sample import PartitionInfo, SampleMeta

    infos: dict[int, PartitionInfo] = {}
    sink = next((x.sink for x in parts.values() if x.sink is not None), None)
    written = sink.finish() if sink is not None else None  # the last row group written: counts complete
    if written is not None:
        seen = {p: {"first": r.first, "last": r.last, "records": r.records, "t0": r.t0, "t1": r.t1}
                for p, r in written.parts.items() if r.records}
    else:
        seen = {p: _span(parts[p].tables) for p in parts if parts[p].tables}
    for p in sorted(parts):
        x = parts[p]
        r = seen.get(p)
        infos[p] = PartitionInfo(
            partition=p, low=x.low, high=x.high,
            first=None if r is None else int(r["first"]), last=None if r is None else int(r["last"]),
            records=0 if r is None else int(r["records"]),
            first_timestamp_ms=None if r is None or r["t0"] is None else int(r["t0"]),
            last_timestamp_ms=None if r is None or r["t1"] is None else int(r["t1"]),
            last_stable=x.last_stable, budget=x.budget, read_to=_read_to(x),
        )
    if written is not None:  # the records are in the file (no Polars: its import is 0.18 s of a cold sample)
        df = None
        misses = dict(written.field_nulls)
        for x in parts.values():
            x.held.clear()
    else:
        df, misses = _frame(parts, plan)
    how = {
        "mode": spec.start,
        "from_time": spec.from_time_text,
        "from_time_ms": spec.from_time_ms,
        "partitions": sorted(parts) if spec.partitions is not None else "all",
        "per_partition": spec.per_partition,
        "max_records": max_records,
        "max_bytes": max_bytes,
        "timeout_s": timeout_s,
        "stopped_by": "partial" if state.partial_reason else state.stopped_by,
        "elapsed_s": round(time.monotonic() - t0, 3),
        "bytes_fetched": state.bytes,
        "fetch_requests": state.requests,
        "isolation": spec.isolation,
        "pace": {"ratio": PACE_RATIO, "step": PACE_STEP},
        "ranges": {str(p): [parts[p].start, parts[p].stop] for p in sorted(parts)},
        "list_offsets_high": {str(p): parts[p].list_offsets_high for p in sorted(parts)},
        "connection": conn.describe(),
    }
    notes = []
    under = [x for _, x in sorted(parts.items()) if x.list_offsets_high < x.high]
    if under:  # Tansu, when producers batch (shared/BROKER.md); never seen on Apache Kafka
        notes.append(
            f"end offsets come from fetch responses: ListOffsets under-reported partition"
            f"{'s' if len(under) > 1 else ''} {', '.join(str(x.partition) for x in under)} "
            f"by up to {max(x.high - x.list_offsets_high for x in under):,}"
        )
    notes += [f"partition {p}: {n}" for p in sorted(parts) for n in parts[p].notes]
    if notes:
        how["notes"] = notes
    meta = SampleMeta(
        topic=spec.topic,
        partition_count=len(all_parts),
        partitions=infos,
        source="kafka",
        how=how,
        fields={f.name: f.path for f in plan.fields},
        field_misses=misses,
        sampled_at=sampled_at,
        partial=state.partial_reason is not None,
        partial_reason=state.partial_reason,
    )
    if written is not None:
        from .sink import StreamedSample

        return StreamedSample(meta, written, sink.path)
    if written is not None:
        from .sink import StreamedSample

        return StreamedSample(meta, written, sink.path)
    from ..sample import Sample, base_schema

    return Sample(df.select(list(base_schema()) + [f.name for f in plan.fields]), meta)


def _frame(parts, plan):
    """The kept tables as one Polars frame (and the fields' misses); the tables are dropped."""
    import polars as pl
    import pyarrow as pa

    from ..sample import base_schema

    tables = [t for p in sorted(parts) for t in parts[p].tables]
    if tables:
        df = pl.from_arrow(pa.concat_tables(tables))
    else:
        schema = dict(base_schema())
        schema.update({f.name: pl.String for f in plan.fields})
        df = pl.DataFrame(schema=schema)
    df = df.with_columns([pl.col(f.name).cast(pl.String) for f in plan.fields])
    df = df.with_columns(pl.col("key").cast(pl.Binary))
    # The frame holds its own copy (from_arrow rechunks): drop the fetched tables before the caller
    # writes the file, so the write's peak does not hold the records twice over.
    tables.clear()
    for x in parts.values():
        x.tables.clear()
        x.held.clear()
    return df, {f.name: int(df[f.name].null_count()) for f in plan.fields}

