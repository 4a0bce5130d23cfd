"""read_committed: the batches of aborted transactions hidden from the decoder, as the Java consumer drops them."""

from __future__ import annotations


import numpy as np

from .decoder import _scan_batches
from . import wire
from .wire import CONTROL, HEADER_BYTES, TRANSACTIONAL


def _skip_aborted(records: bytes, aborted, part) -> bytes:
    """Hide the batches of aborted transactions from the decoder, as a read_committed consumer does.

    The rule of Kafka's Java consumer: a producer enters the aborted set when
    a batch reaches the first offset of one of its aborted transactions (the
    Fetch response lists them), leaves it at its ABORT marker, and its
    transactional batches in between are dropped.  A dropped batch gets the
    control bit, so the decoder skips it and still moves past its offsets.

    A broker that lists no aborted transactions (Tansu 0.6) leaves aborted
    records in; an ABORT marker after kept records of the same producer shows
    it, and the partition gets a note saying so.
    """
    buf = np.frombuffer(records, np.uint8)
    if not (_scan_batches(buf)[1] & TRANSACTIONAL):
        return records
    pending = sorted(aborted, key=lambda a: a[1])
    i = 0
    active: set[int] = set()
    out: bytearray | None = None
    p, end = 0, len(records)
    while p + HEADER_BYTES <= end:
        bend = wire.batch_end(records, p)
        if bend > end or wire.read(records, p, "magic") != 2:
            break
        attrs = wire.read(records, p, "attributes")
        base = wire.read(records, p, "base_offset", signed=True)
        last = base + wire.read(records, p, "last_offset_delta")
        pid = wire.read(records, p, "producer_id", signed=True)
        if pid >= 0 and attrs & TRANSACTIONAL:
            while i < len(pending) and pending[i][1] <= last:
                active.add(pending[i][0])
                i += 1
            if attrs & CONTROL:
                marker = _control_type(records, p, bend)
                if marker == 0 and pid in active:  # ABORT, listed
                    active.discard(pid)
                elif marker == 0 and pid in part.txn_open and last >= part.next:
                    part.notes.append(
                        f"the broker did not list the aborted transaction of producer {pid} ending at offset "
                        f"{last:,}: its records are in the sample"
                    )
                if marker in (0, 1):
                    part.txn_open.discard(pid)
            elif pid in active:
                out = out if out is not None else bytearray(records)
                out[p + wire.ATTRIBUTES_LOW] |= CONTROL  # skipped by the decoder, offsets still advance
            elif last >= part.next:
                part.txn_open.add(pid)
        p = bend
    return bytes(out) if out is not None else records


def _control_type(records: bytes, p: int, bend: int) -> int | None:
    """The type of a control batch's first record: 0 ABORT, 1 COMMIT; None when unreadable."""
    q = p + HEADER_BYTES
    vals = []
    for _ in range(4):  # record length, (attributes byte), timestamp delta, offset delta, key length
        if q >= bend:
            return None
        if len(vals) == 1:
            q += 1  # attributes
        v, shift = 0, 0
        while q < bend:
            b = records[q]
            q += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        vals.append((v >> 1) ^ -(v & 1))
    if vals[3] < 4 or q + 4 > bend:
        return None
    return int.from_bytes(records[q + 2 : q + 4], "big", signed=True)

