"""All Kafka access in one place (kafka-python), read-only by construction.

Consumers here never join a group, never commit and never create topics:
``group_id=None``, ``enable_auto_commit=False``, ``allow_auto_create_topics=False``,
partitions taken with ``assign()``.

Watermarks: ListOffsets(latest) can under-report the high watermark (the
embedded broker answers with the last batch's base offset + 1 when producers
batch; see shared/BROKER.md).  The high watermark carried in *fetch*
responses is right, so :func:`watermarks` fetches once per partition and keeps
the larger of the two.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .connection import Connection
from .errors import KafkaError

__all__ = ["open_consumer", "topic_partitions", "watermarks", "Watermarks", "list_topics"]


@dataclass(frozen=True)
class Watermarks:
    low: int
    high: int
    list_offsets_high: int  # what ListOffsets said, kept to show when it was wrong


def open_consumer(conn: Connection, timeout_s: float = 10.0, **extra):
    """A read-only kafka-python consumer; fails within ``timeout_s`` when the cluster is unreachable."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError as _KE
    from kafka.errors import KafkaTimeoutError

    ms = max(1000, int(timeout_s * 1000))
    config = dict(
        bootstrap_servers=conn.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        auto_offset_reset="earliest",
        bootstrap_timeout_ms=ms,
        request_timeout_ms=max(ms, 5000),
        client_id="keyscope",
    )
    config.update(conn.kwargs)
    config.update(extra)
    try:
        return KafkaConsumer(**config)
    except KafkaTimeoutError:
        raise KafkaError(
            f"cannot reach a Kafka broker at {conn.bootstrap_servers} within {timeout_s:g}s: "
            "check the address and port, and --command-config for TLS/SASL"
        ) from None
    except (_KE, OSError, ValueError, TypeError) as e:
        raise KafkaError(f"cannot connect to {conn.bootstrap_servers}: {_one_line(e)}") from None


def list_topics(consumer) -> list[str]:
    try:
        return sorted(consumer.topics())
    except Exception as e:  # kafka-python raises a zoo of errors on a lost broker
        raise KafkaError(f"cannot list topics: {_one_line(e)}") from None


def topic_partitions(consumer, topic: str) -> list[int]:
    """The topic's partition ids; a KafkaError naming near matches when it does not exist."""
    try:
        parts = consumer.partitions_for_topic(topic)
    except Exception as e:
        raise KafkaError(f"cannot read metadata for topic {topic!r}: {_one_line(e)}") from None
    if not parts:
        topics = list_topics(consumer)
        import difflib

        near = difflib.get_close_matches(topic, topics, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else f" ({len(topics)} topics on this cluster)"
        raise KafkaError(f"topic {topic!r} does not exist{hint}")
    return sorted(parts)


def watermarks(consumer, topic: str, partitions: list[int], timeout_s: float = 10.0) -> dict[int, Watermarks]:
    """True low/high watermarks per partition (high corrected from fetch responses).

    Leaves the consumer assigned to these partitions at unspecified positions.
    """
    from kafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in partitions]
    try:
        lows = consumer.beginning_offsets(tps, timeout_ms=int(timeout_s * 1000))
        highs = consumer.end_offsets(tps, timeout_ms=int(timeout_s * 1000))
    except Exception as e:
        raise KafkaError(f"cannot read offsets of {topic!r}: {_one_line(e)}") from None
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, max(highs[tp] - 1, lows[tp]))
    seen: dict = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(tps) and time.monotonic() < deadline:
        try:
            consumer.poll(timeout_ms=200, max_records=1, update_offsets=False)
        except TypeError:  # older signature without update_offsets
            consumer.poll(timeout_ms=200, max_records=1)
        except Exception as e:
            raise KafkaError(f"fetch from {topic!r} failed: {_one_line(e)}") from None
        for tp in tps:
            hw = consumer.highwater(tp)
            if hw is not None:
                seen[tp] = hw
    out = {}
    for tp in tps:
        high = max(highs[tp], seen.get(tp, highs[tp]))
        out[tp.partition] = Watermarks(low=lows[tp], high=high, list_offsets_high=highs[tp])
    return out


def _one_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
