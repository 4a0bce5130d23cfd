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
from ..errors import KafkaError

__all__ = ["open_consumer", "topic_partitions", "watermarks", "Watermarks", "list_topics"]


@dataclass(frozen=True)
class Watermarks:
    low: int
    high: int
    list_offsets_high: int  # what ListOffsets said, kept to show when it was wrong
    last_stable: int | None = None  # last stable offset (end for read_committed) from a fetch response; None if unknown


def open_consumer(conn: Connection, timeout_s: float = 10.0, **extra):
    """A read-only kafka-python consumer; fails within ``timeout_s`` when the cluster is unreachable.

    A probe (keyscope.kafka.probe) connects first, bounded by the same deadline, so
    that a wrong protocol, certificate, mechanism or password is named at once
    instead of being retried until the timeout.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError as _KE
    from kafka.errors import KafkaTimeoutError

    from .auth import client_config
    from .probe import probe

    # At least a second to connect, as before the probe: a tiny --timeout still gets a connection and an empty sample.
    deadline = time.monotonic() + max(1.0, timeout_s)
    cfg = client_config(conn)
    conn.log(f"connecting to {conn.bootstrap_servers} with security.protocol={conn.protocol}"
             + (f", sasl.mechanism={conn.mechanism}" if conn.protocol.startswith("SASL_") else "")
             + f", timeout {timeout_s:g}s")
    found = probe(conn, cfg, deadline, timeout_s)
    ms = max(1000, int((deadline - time.monotonic()) * 1000))
    config = dict(
        bootstrap_servers=conn.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        allow_auto_create_topics=False,
        auto_offset_reset="earliest",
        bootstrap_timeout_ms=ms,
        request_timeout_ms=max(ms, 5000),
        # kafka-python refuses a request timeout at or above the idle limit (540 s by default),
        # which made any --timeout over 9 minutes an error before connecting.
        connections_max_idle_ms=max(540_000, max(ms, 5000) + 60_000),
        client_id="keyscope",
    )
    config.update(cfg)
    config.update(extra)
    try:
        consumer = KafkaConsumer(**config)
    except KafkaTimeoutError:
        advertised = ", ".join(f"{h}:{p}" for _n, h, p in found.brokers)
        raise KafkaError(
            f"{found.server} answered, but the client could not bootstrap within {timeout_s:g}s"
            + (f"; the brokers it advertises ({advertised}) may be unreachable from here: check advertised.listeners"
               if advertised else "")
        ) from None
    except (_KE, OSError, ValueError, TypeError) as e:
        raise KafkaError(f"cannot connect to {conn.bootstrap_servers}: {_one_line(e)}") from None
    conn.log("client connected")
    return consumer


def client_config(conn: Connection) -> dict:
    """kafka-python settings for any client of ``conn`` (the admin client too)."""
    from .auth import client_config as _cfg

    return _cfg(conn)


def _tolerant_admin(**config):
    """kafka-python's admin client, made to survive brokers that answer authorized_operations = -1.

    kafka-python 3.0.12 turns DescribeGroups' authorized_operations into
    ACLOperation enums and raises on -1 (Tansu sends it; Kafka does when the
    operations were not asked for).  We never need the operations.
    """
    from kafka import KafkaAdminClient

    class TolerantAdmin(KafkaAdminClient):
        def _process_acl_operations(self, obj):
            try:
                return super()._process_acl_operations(obj)
            except ValueError:
                obj["authorized_operations"] = None
                return obj

    return TolerantAdmin(**config)


def open_admin(conn: Connection, timeout_s: float = 10.0):
    """A read-only admin client (OffsetFetch, DescribeGroups, ListGroups; never JoinGroup or OffsetCommit)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError as _KE

    ms = max(1000, int(timeout_s * 1000))
    config = dict(
        bootstrap_servers=conn.bootstrap_servers,
        client_id="keyscope",
        bootstrap_timeout_ms=ms,
        request_timeout_ms=max(ms, 5000),
    )
    config.update({k: v for k, v in client_config(conn).items() if k in KafkaAdminClient.DEFAULT_CONFIG})
    try:
        return _tolerant_admin(**config)
    except (_KE, OSError, ValueError, TypeError) as e:
        raise KafkaError(f"cannot open an admin connection to {conn.bootstrap_servers}: {_one_line(e)}") from None


def end_offsets(consumer, parts: dict[str, list[int]], timeout_s: float) -> dict[tuple[str, int], int]:
    """Log-end offsets of many topics in one request, keyed by (topic, partition)."""
    from kafka import TopicPartition

    tps = [TopicPartition(t, p) for t, ps in parts.items() for p in ps]
    try:
        ends = consumer.end_offsets(tps, timeout_ms=int(timeout_s * 1000)) if tps else {}
    except Exception as e:
        raise KafkaError(f"cannot read end offsets for the cluster-wide scan: {_one_line(e)}") from None
    return {(tp.topic, tp.partition): off for tp, off in ends.items()}


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
        denied = _topic_error(consumer, topic)
        if denied == 29:  # TOPIC_AUTHORIZATION_FAILED: Kafka says so whether or not the topic exists
            raise KafkaError(
                f"not authorized to describe topic {topic!r} (TOPIC_AUTHORIZATION_FAILED), or it does not exist: "
                "the principal needs DESCRIBE and READ ACLs on it"
            )
        topics = list_topics(consumer)
        import difflib

        near = difflib.get_close_matches(topic, topics, n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else known_hint("topics", topics)
        raise KafkaError(f"topic {topic!r} does not exist{hint}")
    return sorted(parts)


def _topic_error(consumer, topic: str, timeout_s: float = 5.0) -> int | None:
    """The error code a Metadata request naming ``topic`` gets (None when it cannot be asked).

    Why: a request for all topics silently leaves out the ones the principal
    may not describe, so "does not exist" would be a wrong answer under ACLs.
    """
    try:
        from kafka.protocol.metadata import MetadataRequest

        manager = consumer._client._manager
        req = MetadataRequest(
            topics=[MetadataRequest.MetadataRequestTopic(name=topic)],
            allow_auto_topic_creation=False,
            include_cluster_authorized_operations=False,
            include_topic_authorized_operations=False,
        )

        async def ask():
            return await manager.wait_for(manager.send(req), int(timeout_s * 1000))

        resp = consumer._client._net.run(ask)
        for t in resp.topics:
            if getattr(t, "name", None) == topic:
                return t.error_code
    except Exception:  # only a better message is at stake
        return None
    return None


def known_hint(kind: str, names, show: int = 5) -> str:
    """What the cluster does have, for an error about a name it lacks: the names when few, else a count."""
    names = sorted(names)
    if not names:
        return ""
    if len(names) <= show:
        return f"; {kind} on this cluster: {', '.join(names)}"
    return f" ({len(names)} {kind} on this cluster)"


def watermarks(consumer, topic: str, partitions: list[int], timeout_s: float = 10.0) -> dict[int, Watermarks]:
    """True low/high watermarks per partition (high corrected from fetch responses).

    The correcting fetch goes through :class:`RawFetcher` and reads only the
    response header, so it works on topics compressed with codecs kafka-python
    cannot decode here (lz4, zstd, snappy need extra packages).
    """
    from kafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in partitions]
    try:
        lows = consumer.beginning_offsets(tps, timeout_ms=int(timeout_s * 1000))
        highs = consumer.end_offsets(tps, timeout_ms=int(timeout_s * 1000))
    except Exception as e:
        raise KafkaError(f"cannot read offsets of {topic!r}: {_one_line(e)}") from None
    # ListOffsets errs low, never high: a partition it calls empty is empty.
    probe = {tp.partition: highs[tp] - 1 for tp in tps if highs[tp] > lows[tp]}
    seen = _fetch_high_watermarks(consumer, topic, probe, timeout_s) if probe else {}
    out = {}
    for tp in tps:
        hw, lso = seen.get(tp.partition, (highs[tp], None))
        high = max(highs[tp], hw)
        if tp.partition not in probe:
            lso = high  # an empty partition has no open transaction
        elif lso is not None and not lows[tp] <= lso <= high:
            lso = None  # a broker that does not track it
        out[tp.partition] = Watermarks(low=lows[tp], high=high, list_offsets_high=highs[tp], last_stable=lso)
    return out


def _fetch_high_watermarks(consumer, topic: str, at: dict[int, int], timeout_s: float) -> dict[int, tuple[int, int]]:
    """(high watermark, last stable offset) per partition as a fetch response states them (best effort within ``timeout_s``)."""
    import queue

    fetcher = RawFetcher(consumer, topic)
    by_node: dict = {}
    for p, off in at.items():
        by_node.setdefault(fetcher.leader(p), {})[p] = (off, 1)  # 1 byte: brokers still send one batch
    by_node.pop(None, None)
    for tag, (node, offsets) in enumerate(by_node.items()):
        # max_wait_ms=0 would be ideal, but Tansu then answers with no partitions at all.
        fetcher.send(tag, node, offsets, max_bytes=1 << 20, max_wait_ms=50)
    seen: dict[int, tuple[int, int]] = {}
    deadline = time.monotonic() + timeout_s
    pending = len(by_node)
    while pending and time.monotonic() < deadline:
        try:
            _tag, parts, exc = fetcher.answers.get(timeout=max(0.01, min(0.2, deadline - time.monotonic())))
        except queue.Empty:
            continue
        pending -= 1
        if exc is not None:
            raise KafkaError(f"fetch from {topic!r} failed: {_one_line(exc)}")
        for fp in parts:
            if fp.high_watermark >= 0:
                seen[fp.partition] = (fp.high_watermark, fp.last_stable_offset)
    return seen


def _one_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def offsets_for_time(consumer, topic: str, partitions: list[int], ts_ms: int, timeout_s: float = 10.0) -> dict[int, int | None]:
    """First offset at or after ``ts_ms`` per partition; None where no record is that recent.

    Brokers answer from the time they *received* each batch when that is how
    the topic stores time (and Tansu always does; shared/BROKER.md).  When no
    record is that recent, Kafka answers offset -1; Tansu answers offset 0 with
    timestamp -1, so a negative timestamp also means "none".
    """
    from kafka import TopicPartition

    tps = {TopicPartition(topic, p): int(ts_ms) for p in partitions}
    try:
        found = consumer.offsets_for_times(tps, timeout_ms=int(timeout_s * 1000))
    except Exception as e:
        raise KafkaError(f"cannot look up offsets by time in {topic!r}: {_one_line(e)}") from None
    return {
        tp.partition: (o.offset if o is not None and o.offset >= 0 and o.timestamp >= 0 else None)
        for tp, o in found.items()
    }


@dataclass(frozen=True)
class FetchedPartition:
    partition: int
    error_code: int
    high_watermark: int
    log_start_offset: int
    records: bytes  # raw RecordBatch bytes, possibly ending in a truncated batch
    last_stable_offset: int = -1
    aborted: tuple[tuple[int, int], ...] = ()  # (producer id, first offset) of aborted transactions (read_committed)


class RawFetcher:
    """Fetch requests sent on a read-only consumer's own connections, answered with raw bytes.

    Why: kafka-python turns every record into a Python object, which caps a
    consumer loop at about half of kcat's speed; :mod:`keyscope.sampling`
    decodes record batches itself, into columns.  Requests run on the
    consumer's IO thread and answers land on :attr:`answers`, so decoding on
    the caller's thread overlaps the next fetch.  Only Fetch is sent: no
    group, no commit, no topic creation.
    """

    def __init__(self, consumer, topic: str):
        import queue

        try:
            client = consumer._client
            self._manager = client._manager
            self._net = client._net
        except AttributeError:  # pragma: no cover - guarded by the kafka-python>=3,<4 pin
            raise KafkaError("this kafka-python version does not expose its network client; keyscope needs kafka-python 3.x") from None
        self._cluster = self._manager.cluster
        # A consumer that never subscribes tracks no topic: its metadata refreshes would ask for
        # none and drop every leader, so a moved leader would never be found (seen on real Kafka).
        self._cluster.add_topic(topic)
        self.topic = topic
        self.answers: "queue.Queue" = queue.Queue()

    def leader(self, partition: int):
        """Node id leading ``partition`` per the consumer's metadata, or None."""
        from kafka import TopicPartition

        node = self._cluster.leader_for_partition(TopicPartition(self.topic, partition))
        return None if node is None or node == -1 else node

    def refresh_metadata(self) -> None:
        self._cluster.request_update()

    def send(self, tag, node_id, offsets: dict[int, tuple[int, int]], max_bytes: int, max_wait_ms: int = 100,
             isolation_level: int = 0) -> None:
        """Fetch ``{partition: (offset, partition_max_bytes)}`` from ``node_id``, in that order.

        ``isolation_level`` 1 (read_committed) makes the broker stop at the
        last stable offset and list the aborted transactions in the range.

        Puts ``(tag, [FetchedPartition...], None)`` or ``(tag, None, exception)`` on :attr:`answers`.
        """
        from kafka.protocol.consumer import FetchRequest

        FT = FetchRequest.FetchTopic
        req = FetchRequest(
            max_wait_ms=max_wait_ms,
            min_bytes=1,
            max_bytes=int(max_bytes),
            isolation_level=int(isolation_level),
            session_id=0,
            session_epoch=-1,  # no incremental fetch session: each request stands alone
            topics=[
                FT(
                    topic=self.topic,
                    partitions=[
                        FT.FetchPartition(
                            partition=p,
                            current_leader_epoch=-1,
                            fetch_offset=int(off),
                            last_fetched_epoch=-1,
                            log_start_offset=-1,
                            partition_max_bytes=int(pmax),
                        )
                        for p, (off, pmax) in offsets.items()
                    ],
                )
            ],
            forgotten_topics_data=[],
            rack_id="",
            min_version=4,
            max_version=12,
        )
        answers = self.answers

        def ok(resp):
            try:
                out = [
                    FetchedPartition(
                        partition=pd.partition_index,
                        error_code=pd.error_code,
                        high_watermark=pd.high_watermark,
                        log_start_offset=getattr(pd, "log_start_offset", -1),
                        records=pd.records or b"",
                        last_stable_offset=getattr(pd, "last_stable_offset", -1),
                        aborted=tuple((a.producer_id, a.first_offset) for a in (pd.aborted_transactions or ())),
                    )
                    for td in resp.responses
                    for pd in td.partitions
                ]
            except Exception as e:  # a response we cannot read is a failed fetch
                answers.put((tag, None, e))
            else:
                answers.put((tag, out, None))

        def failed(exc):
            answers.put((tag, None, exc))

        manager = self._manager

        async def _send():
            try:
                f = manager.send(req, node_id=node_id)
            except Exception as e:
                failed(e)
                return
            f.add_callback(ok)
            f.add_errback(failed)

        try:
            self._net.call_soon_threadsafe(_send)
        except Exception as e:  # the IO loop died with the connection
            failed(e)


def throttled(exc: BaseException) -> bool:
    """kafka-python refuses sends on a connection the broker throttled (quota) until the throttle time passes.

    That is the broker answering, not a broker lost: callers must not count it
    as an outage (found on real Kafka with a consumer_byte_rate quota).
    """
    from kafka.errors import NodeNotReadyError

    return isinstance(exc, NodeNotReadyError) and "throttle" in str(exc)


def preload() -> None:
    """Import kafka-python now: a process pool's fork server does it once (~0.3-0.5 s), not every worker."""
    import kafka  # noqa: F401


def error_name(code: int) -> str:
    """Kafka's name for a protocol error code (for one-line messages)."""
    import kafka.errors as Errors

    try:
        name = Errors.for_code(code).__name__
    except Exception:
        return f"error {code}"
    return name + _AUTH_HINTS.get(code, "")


_AUTH_HINTS = {
    29: " (not authorized: the principal needs READ and DESCRIBE ACLs on the topic)",
    30: " (not authorized: the principal needs DESCRIBE ACLs on the group)",
    31: " (not authorized on the cluster)",
}
