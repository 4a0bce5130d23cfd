"""Reading a live topic into a :class:`~keyscope.sample.Sample`, bounded and read-only.

Why not a kafka-python consumer loop: it builds a Python object per record
and reaches about half of kcat's speed.  Here Fetch requests go out on the
read-only consumer's own connections (:class:`keyscope.kafka.client.RawFetcher`)
and the RecordBatch v2 bytes are decoded by a compiled kernel straight into
column buffers (keys copied; JSON ``--field`` paths read in the same pass,
values copied only for the few a field hands to Polars).
Compressed batches are inflated with the codecs pyarrow ships (gzip, snappy,
lz4, zstd), so no codec package is needed.

What is read: per partition, a contiguous offset range ``[start, stop)``,
``stop`` being the high watermark when sampling began (the last stable offset
under ``read_committed``, the default), so a busy topic cannot keep the
sampler running and an idle or empty partition costs nothing.  Aborted
transactions are dropped as a read_committed consumer drops them.  Bounds
(``per_partition``, ``max_records``, ``max_bytes``, ``timeout_s``) stop it
early, whichever comes first.  ``max_records`` is split across partitions in
proportion to what each holds in its range, and partitions are read paced
(see :func:`.fetch._run`), so the sample's partition mix follows the topic's even
when a bound or Ctrl-C cuts it short.

Ctrl-C or a lost broker does not lose what was read: :func:`sample_topic`
returns it with ``meta.partial`` set, and the caller writes it.

One idea per module: options (what to read, defaults, bounds), plan (records per
partition), fetch (the paced fetch loop, sample_topic), transactions (aborted
batches), wire (the RecordBatch v2 layout by name), decoder (the LLVM IR and its
loader), jsonfields (the one-pass field rules and their pure-Python reference),
codecs, chunk (one fetched chunk -> Arrow), assemble (tables -> Sample), sink (records -> the
Parquet file in row groups while reading: ``keyscope sample``), memory (that process's allocators).
"""

from .chunk import _Chunk, _Columns, _decode, _decode_chunk, _FieldPlan
from .codecs import _inflate
from .decoder import _ST_LEN, DECODE_ARGS, DecodeArgs, _build_ir, _kernels
from .fetch import sample_topic
from .options import (
    DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, DEFAULT_TIMEOUT_S, FETCH_MAX_BYTES, PACE_RATIO, PACE_STEP,
    PARTITION_FETCH_BYTES, FieldSpec, Phase, Progress, SampleSpec, parse_field, parse_partitions, parse_size,
    parse_time,
)
from .plan import plan_budgets
from .sink import ROW_GROUP_RECORDS, SampleFile, StreamedSample, sample_to_file
from .transactions import _skip_aborted

__all__ = [
    "FieldSpec",
    "SampleSpec",
    "Progress",
    "sample_topic",
    "sample_to_file",
    "SampleFile",
    "StreamedSample",
    "ROW_GROUP_RECORDS",
    "parse_field",
    "parse_time",
    "parse_partitions",
    "parse_size",
    "plan_budgets",
]


# Re-exported for keyscope.scan, keyscope.exporter and the decoder's tests (one decoder for all readers).
_PRIVATE = (_Chunk, _Columns, _decode, _decode_chunk, _FieldPlan, _inflate, _ST_LEN, DECODE_ARGS, DecodeArgs,
            _build_ir, _kernels, _skip_aborted, DEFAULT_MAX_BYTES, DEFAULT_MAX_RECORDS, DEFAULT_TIMEOUT_S,
            FETCH_MAX_BYTES, PACE_RATIO, PACE_STEP, PARTITION_FETCH_BYTES, Phase)
