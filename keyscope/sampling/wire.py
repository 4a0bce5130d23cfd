"""The RecordBatch v2 wire layout, by name (https://kafka.apache.org/documentation/#recordbatch).

One table for the compiled decoder (decoder.py reads header fields as ``BATCH["attributes"]``)
and for the Python readers (transactions.py, chunk.py), instead of bare offsets 8, 12, 16, 21 ...
"""

from __future__ import annotations

# name -> (byte offset from the batch start, width in bytes); big-endian on the wire
BATCH = {
    "base_offset": (0, 8),  # int64
    "batch_length": (8, 4),  # int32: bytes after this field, so a batch spans [p, p + LENGTH_END + batch_length)
    "partition_leader_epoch": (12, 4),  # int32
    "magic": (16, 1),  # int8: 2 for RecordBatch v2 (0 and 1 are the pre-0.11 message sets)
    "crc": (17, 4),  # uint32 CRC-32C of attributes..end (not verified: TCP checksums the transfer)
    "attributes": (21, 2),  # int16: ATTR_* bits below
    "last_offset_delta": (23, 4),  # int32
    "base_timestamp": (27, 8),  # int64 ms (firstTimestamp)
    "max_timestamp": (35, 8),  # int64 ms
    "producer_id": (43, 8),  # int64
    "producer_epoch": (51, 2),  # int16
    "base_sequence": (53, 4),  # int32
    "records_count": (57, 4),  # int32; the records follow
}
HEADER_BYTES = 61  # up to and including records_count
LENGTH_END = BATCH["batch_length"][0] + BATCH["batch_length"][1]  # 12: where batch_length starts counting
MIN_BATCH_LENGTH = HEADER_BYTES - LENGTH_END  # 49: a batch with no records
ATTRIBUTES_LOW = BATCH["attributes"][0] + 1  # 22: the attribute byte holding the bits below

# attribute bits
CODEC_MASK = 0x07  # 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd
LOG_APPEND_TIME = 0x08  # timestamps are the broker's: every record has max_timestamp
TRANSACTIONAL = 0x10
CONTROL = 0x20  # a transaction marker, not records


def read(buf: bytes, p: int, name: str, signed: bool = False) -> int:
    """Header field ``name`` of the batch at ``buf[p]``."""
    off, width = BATCH[name]
    return int.from_bytes(buf[p + off : p + off + width], "big", signed=signed)


def batch_end(buf: bytes, p: int) -> int:
    """Where the batch starting at ``buf[p]`` ends (may lie past the buffer when the fetch cut it)."""
    return p + LENGTH_END + read(buf, p, "batch_length")
