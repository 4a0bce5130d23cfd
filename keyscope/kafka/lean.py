"""A small blocking Kafka client for the scan: Metadata, ListOffsets and Fetch on keyscope's own sockets.

Why: a scan needs four requests, and kafka-python cost it more than all of its counting at a million
records: its import (~0.2 s CPU: the admin client, the network layer and 109 protocol schemas built at
import), a consumer's bootstrap and IO thread, in the scanning process and in every worker.  This client
imports nothing of kafka-python unless SASL is used (its mechanisms authenticate), and runs no thread, so
``--workers N`` can fork its workers from the scanning process.

Read-only by construction: it sends ApiVersions, SaslHandshake/SaslAuthenticate, Metadata (never
creating a topic), ListOffsets and Fetch (no session, no group, no commit), nothing else.  Connecting,
TLS and SASL are the probe's own steps (:mod:`keyscope.kafka.probe`), so a failure is named the same way.

Only non-flexible request versions are sent (Metadata 4-8, ListOffsets 1-5, Fetch 4-11), which every
Kafka since 1.0 and Tansu answer; the framing is Kafka's request header v1 and response header v0.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from ..errors import KafkaError
from .connection import Connection
from .probe import _Reader as _Buf, _string as _str

API_FETCH, API_LIST_OFFSETS, API_METADATA = 1, 2, 3
EARLIEST, LATEST = -2, -1  # ListOffsets timestamps
_CLIENT = b"keyscope"
_HEADER = struct.Struct(">hhih")


class LinkError(Exception):
    """The connection to a broker failed (closed, timed out): the link is dropped, the caller retries."""


class Link:
    """One authenticated connection to one broker; requests are answered in the order they were sent."""

    def __init__(self, sock, server: str, versions: dict[int, tuple[int, int]], correlation: int = 100):
        self.sock, self.server, self.versions = sock, server, versions
        self.correlation = correlation
        self.pending: list[int] = []  # correlation ids sent, not yet read
        self.broken = False

    def version(self, api: int, want: tuple[int, ...]) -> int:
        lo, hi = self.versions.get(api, (0, -1))
        for v in want:
            if lo <= v <= hi:
                return v
        raise KafkaError(f"{self.server} offers no version of API {api} keyscope speaks ({lo}..{hi})")

    def send(self, api: int, version: int, body: bytes, timeout_s: float) -> int:
        self.correlation += 1
        frame = _HEADER.pack(api, version, self.correlation, len(_CLIENT)) + _CLIENT + body
        try:
            self.sock.settimeout(timeout_s)
            self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        except OSError as e:
            self.broken = True
            raise LinkError(f"{self.server}: {e.strerror or e or type(e).__name__}") from None
        self.pending.append(self.correlation)
        return self.correlation

    def receive(self, correlation: int, timeout_s: float) -> memoryview:
        """The answer to ``correlation`` (answers to requests sent before it are read and dropped)."""
        while True:
            if not self.pending or self.broken:
                raise LinkError(f"{self.server}: no request {correlation} outstanding")
            head = self._read(4, timeout_s)
            (size,) = struct.unpack(">i", head)
            if size < 4 or size > 1 << 30:
                self.broken = True
                raise LinkError(f"{self.server}: bad frame size {size}")
            data = self._read(size, timeout_s)
            (corr,) = struct.unpack_from(">i", data, 0)
            expected = self.pending.pop(0)
            if corr != expected:
                self.broken = True
                raise LinkError(f"{self.server}: answer {corr} out of order (expected {expected})")
            if corr == correlation:
                return data[4:]

    def call(self, api: int, version: int, body: bytes, timeout_s: float) -> memoryview:
        return self.receive(self.send(api, version, body, timeout_s), timeout_s)

    def _read(self, n: int, timeout_s: float) -> memoryview:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        deadline = time.monotonic() + timeout_s
        try:
            while got < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout()
                self.sock.settimeout(left)
                k = self.sock.recv_into(view[got:], n - got)
                if not k:
                    raise EOFError()
                got += k
        except (OSError, EOFError) as e:
            self.broken = True
            what = "timed out" if isinstance(e, socket.timeout) else "closed the connection"
            raise LinkError(f"{self.server} {what}") from None
        return view

    def close(self) -> None:
        self.broken = True
        try:
            self.sock.close()
        except OSError:
            pass


def connect(host: str, port: int, conn: Connection, cfg: dict, timeout_s: float) -> Link:
    """TCP, TLS, ApiVersions and SASL as the probe does them; a probe exception (Definitive, Transient) on failure."""
    from . import probe

    server = f"{host}:{port}"
    deadline = time.monotonic() + timeout_s
    res = probe.ProbeResult(server)
    try:
        sock = socket.create_connection((host, port), timeout=max(0.01, timeout_s))
    except socket.gaierror as e:
        raise probe.Definitive(f"cannot resolve host {host!r}: {e.strerror or e}") from None
    except socket.timeout:
        raise probe.Transient(f"TCP connect to {server} timed out") from None
    except OSError as e:
        raise probe.Transient(f"TCP connect to {server}: {e.strerror or e}") from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = conn.protocol in ("SSL", "SASL_SSL")
        if tls:
            sock = probe._tls(sock, host, server, cfg["ssl_context"], deadline, conn, res)
        wire = probe._Wire(sock, server, deadline)
        versions = probe._api_versions(wire, server, tls, conn)
        if conn.protocol.startswith("SASL_"):
            probe._sasl(wire, host, server, conn, cfg, versions, res)
    except BaseException:
        try:
            sock.close()
        except OSError:
            pass
        raise
    return Link(sock, server, versions, wire.correlation)


@dataclass
class TopicMeta:
    error: int
    partitions: dict[int, int] = field(default_factory=dict)  # partition -> leader node id (-1: none)


class Client:
    """Metadata and links to the brokers of one cluster.  Thread-safe: tasks in threads share one client and
    each takes links of its own (:meth:`take`, :meth:`give`), so no two threads use one socket."""

    def __init__(self, conn: Connection, timeout_s: float = 30.0):
        from .auth import client_config
        from .probe import _servers

        self.conn, self.timeout_s = conn, timeout_s
        self.cfg = client_config(conn)
        self._lock = threading.Lock()
        self._idle: dict[int, list[Link]] = {}
        self.brokers: dict[int, tuple[str, int]] = {}
        self.topics: dict[str, TopicMeta] = {}
        self._boot = self._bootstrap(_servers(conn.bootstrap_servers), timeout_s)

    def _bootstrap(self, servers, timeout_s: float) -> Link:
        """The first server that answers (transient failures retried until the deadline, as the probe does)."""
        from . import probe

        deadline = time.monotonic() + max(1.0, timeout_s)
        first_definitive: Exception | None = None
        last = "no answer"
        attempt = 0
        while True:
            definitive_all = True
            for host, port in servers:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    link = connect(host, port, self.conn, self.cfg, left)
                    self.conn.log(f"{host}:{port}: connected (keyscope's scan client)")
                    return link
                except probe.Definitive as e:
                    first_definitive = first_definitive or e
                except probe.Transient as e:
                    definitive_all = False
                    last = str(e)
            if first_definitive is not None and definitive_all:
                raise KafkaError(str(first_definitive))
            attempt += 1
            pause = min(1.0, 0.1 * 2 ** attempt)
            if time.monotonic() + pause >= deadline:
                if first_definitive is not None:
                    raise KafkaError(str(first_definitive))
                raise KafkaError(f"cannot reach a Kafka broker at {self.conn.bootstrap_servers} within "
                                 f"{timeout_s:g}s ({last}): check the address and port, and --command-config for TLS/SASL")
            time.sleep(pause)

    # ---------------------------------------------------------------- metadata

    def metadata(self, topics: list[str] | None) -> dict[str, TopicMeta]:
        """Metadata of ``topics`` (None: every topic), never creating one; brokers and leaders are kept."""
        with self._lock:
            link = self._boot
            if link.broken:
                from .probe import _servers

                link = self._boot = self._bootstrap(_servers(self.conn.bootstrap_servers), self.timeout_s)
            v = link.version(API_METADATA, (8, 7, 6, 5, 4))
            body = struct.pack(">i", -1) if topics is None else (
                struct.pack(">i", len(topics)) + b"".join(_str(t) for t in topics))
            body += b"\x00"  # allow_auto_topic_creation = false: read-only
            if v >= 8:
                body += b"\x00\x00"
            try:
                r = _Buf(link.call(API_METADATA, v, body, self.timeout_s))
            except LinkError as e:
                raise KafkaError(f"metadata request failed: {e}") from None
            r.int32()  # throttle
            brokers = {}
            for _ in range(r.int32()):
                node, host, port = r.int32(), r.string(), r.int32()
                r.string()  # rack
                brokers[node] = (host or "", port)
            r.string()  # cluster id
            r.int32()  # controller
            out = {}
            for _ in range(r.int32()):
                err, name = r.int16(), r.string() or ""
                r.int8()  # internal
                meta = TopicMeta(err)
                for _ in range(max(0, r.int32())):
                    _perr, p, leader = r.int16(), r.int32(), r.int32()
                    if v >= 7:
                        r.int32()  # leader epoch
                    for _ in range(2 + (v >= 5)):  # replicas, isr, offline replicas
                        k = max(0, r.int32())
                        r.i += 4 * k
                    meta.partitions[p] = leader
                if v >= 8:
                    r.int32()
                out[name] = meta
            self.brokers.update(brokers)
            self.topics.update(out)
            return out

    def leader(self, topic: str, partition: int) -> int | None:
        meta = self.topics.get(topic)
        node = meta.partitions.get(partition, -1) if meta else -1
        return None if node < 0 or node not in self.brokers else node

    # ---------------------------------------------------------------- links

    def take(self, node: int) -> Link:
        with self._lock:
            idle = self._idle.get(node)
            while idle:
                link = idle.pop()
                if not link.broken and not link.pending:
                    return link
                link.close()
            host, port = self.brokers[node]
        from . import probe

        try:
            return connect(host, port, self.conn, self.cfg, self.timeout_s)
        except (probe.Definitive, probe.Transient) as e:
            raise LinkError(str(e)) from None

    def give(self, node: int, link: Link) -> None:
        if link.broken or link.pending:
            link.close()
            return
        with self._lock:
            self._idle.setdefault(node, []).append(link)

    def close(self) -> None:
        with self._lock:
            for links in self._idle.values():
                for link in links:
                    link.close()
            self._idle.clear()
            self._boot.close()

    # ---------------------------------------------------------------- offsets

    def list_offsets(self, topic: str, partitions: list[int], timestamp: int,
                     isolation_level: int = 0) -> dict[int, tuple[int, int]]:
        """{partition: (offset, timestamp)} from each partition's leader (ListOffsets with ``timestamp``,
        or EARLIEST / LATEST).  A KafkaError names a partition error.

        A leader not yet elected or just moved (a topic created a moment ago: CI saw NotLeaderForPartition
        on a new topic's partition 2) is asked again after a metadata refresh, for up to the request
        timeout (at most 10 s), as kafka-python's consumer does."""
        deadline = time.monotonic() + min(10.0, self.timeout_s)
        while True:
            try:
                return self._list_offsets(topic, partitions, timestamp, isolation_level)
            except _LeaderNotReady:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)
                self.metadata([topic])

    def _list_offsets(self, topic: str, partitions: list[int], timestamp: int,
                      isolation_level: int) -> dict[int, tuple[int, int]]:
        by_node: dict[int, list[int]] = {}
        for p in partitions:
            node = self.leader(topic, p)
            if node is None:
                self.metadata([topic])
                node = self.leader(topic, p)
            if node is None:
                raise _LeaderNotReady(f"partition {p} of {topic!r} has no leader")
            by_node.setdefault(node, []).append(p)
        out: dict[int, tuple[int, int]] = {}
        for node, ps in by_node.items():
            link = self.take(node)
            try:
                v = link.version(API_LIST_OFFSETS, (5, 4, 3, 2, 1))
                body = struct.pack(">i", -1)
                if v >= 2:
                    body += struct.pack(">b", isolation_level)
                body += struct.pack(">i", 1) + _str(topic) + struct.pack(">i", len(ps))
                for p in ps:
                    body += struct.pack(">i", p) + (struct.pack(">i", -1) if v >= 4 else b"") + struct.pack(">q", timestamp)
                r = _Buf(link.call(API_LIST_OFFSETS, v, body, self.timeout_s))
            except LinkError as e:
                link.close()
                raise KafkaError(f"cannot read offsets of {topic!r}: {e}") from None
            self.give(node, link)
            if v >= 2:
                r.int32()
            for _ in range(r.int32()):
                r.string()
                for _ in range(r.int32()):
                    p, err, ts, off = r.int32(), r.int16(), r.int64(), r.int64()
                    if v >= 4:
                        r.int32()
                    if err:
                        kind = _LeaderNotReady if err in _LEADER_NOT_READY else KafkaError
                        raise kind(f"cannot read offsets of {topic!r} partition {p}: {_error(err)}")
                    out[p] = (off, ts)
        return out


class _LeaderNotReady(KafkaError):
    """A partition error that a metadata refresh and a second ask mend (Client.list_offsets retries it)."""


# UNKNOWN_TOPIC_OR_PARTITION (metadata not yet everywhere), LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER,
# FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH
_LEADER_NOT_READY = {3, 5, 6, 74, 75}


def _error(code: int) -> str:
    from .client import error_name

    return error_name(code)


def fetch_body(version: int, topic: str, offsets: dict[int, tuple[int, int]], max_bytes: int, max_wait_ms: int,
               isolation_level: int) -> bytes:
    """A Fetch request body (no session: each request stands alone) for ``{partition: (offset, max bytes)}``."""
    body = struct.pack(">iiii", -1, max_wait_ms, 1, max_bytes) + struct.pack(">b", isolation_level)
    if version >= 7:
        body += struct.pack(">ii", 0, -1)
    body += struct.pack(">i", 1) + _str(topic) + struct.pack(">i", len(offsets))
    for p, (off, pmax) in offsets.items():
        body += struct.pack(">i", p)
        if version >= 9:
            body += struct.pack(">i", -1)
        body += struct.pack(">q", off)
        if version >= 5:
            body += struct.pack(">q", -1)
        body += struct.pack(">i", pmax)
    if version >= 7:
        body += struct.pack(">i", 0)  # forgotten topics
    if version >= 11:
        body += _str("")  # rack
    return body


def parse_fetch(version: int, data, views: bool = False) -> list:
    """[FetchedPartition] of a Fetch response (records as raw RecordBatch bytes).

    ``views``: each partition's records as a memoryview into ``data`` instead of a copy (the sampler:
    one copy less of every byte fetched, and half the memory of an answer while it is parsed)."""
    from .client import FetchedPartition

    r = _Buf(data)

    def records():
        if not views:
            return r.bytes_() or b""
        n = r.int32()
        if n < 0:
            return b""
        v = memoryview(r.d)[r.i:r.i + n]
        r.i += n
        return v

    r.int32()  # throttle
    if version >= 7:
        err = r.int16()
        r.int32()
        if err:
            raise KafkaError(f"fetch refused: {_error(err)}")
    out = []
    for _ in range(r.int32()):
        r.string()
        for _ in range(r.int32()):
            p, err, hw = r.int32(), r.int16(), r.int64()
            lso = r.int64()
            lso_start = r.int64() if version >= 5 else -1
            aborted = []
            for _ in range(max(0, r.int32())):
                aborted.append((r.int64(), r.int64()))
            if version >= 11:
                r.int32()  # preferred read replica
            out.append(FetchedPartition(partition=p, error_code=err, high_watermark=hw, log_start_offset=lso_start,
                                        records=records(), last_stable_offset=lso, aborted=tuple(aborted)))
    return out


class _Answers:
    """The fetcher's answers in the order the fetches were sent (what RawFetcher.answers.get gives)."""

    def __init__(self, fetcher: "Fetcher"):
        self.f = fetcher

    def get(self, timeout: float = 60.0):
        return self.f._next(timeout)


class Fetcher:
    """Fetches of one topic on links of its own (the interface of :class:`keyscope.kafka.client.RawFetcher`:
    ``leader``, ``refresh_metadata``, ``send``, ``answers.get``), answered in order.  A fetch is written to
    the socket at once and its answer read when asked for, so the broker prepares it while the caller counts."""

    def __init__(self, client: Client, topic: str):
        self.client, self.topic = client, topic
        self.links: dict[int, Link] = {}
        self.sent: list[tuple[object, int, Link | None, int, int, Exception | None]] = []
        self.answers = _Answers(self)
        if topic not in client.topics:
            client.metadata([topic])

    def leader(self, partition: int) -> int | None:
        return self.client.leader(self.topic, partition)

    def refresh_metadata(self) -> None:
        try:
            self.client.metadata([self.topic])
        except KafkaError:  # the next fetch tells
            pass

    def send(self, tag, node_id, offsets: dict[int, tuple[int, int]], max_bytes: int, max_wait_ms: int = 100,
             isolation_level: int = 0) -> None:
        try:
            link = self.links.get(node_id)
            if link is None or link.broken:
                link = self.links[node_id] = self.client.take(node_id)
            v = link.version(API_FETCH, (11, 10, 9, 8, 7, 6, 5, 4))
            corr = link.send(API_FETCH, v, fetch_body(v, self.topic, offsets, int(max_bytes), int(max_wait_ms),
                                                      int(isolation_level)), self.client.timeout_s)
            self.sent.append((tag, node_id, link, corr, v, None))
        except (LinkError, KafkaError, KeyError) as e:
            self.sent.append((tag, node_id, None, 0, 0, e))

    def _next(self, timeout: float):
        import queue

        if not self.sent:
            raise queue.Empty
        tag, node, link, corr, v, exc = self.sent.pop(0)
        if exc is not None:
            return tag, None, exc
        assert link is not None
        try:
            return tag, parse_fetch(v, link.receive(corr, max(timeout, self.client.timeout_s))), None
        except (LinkError, KafkaError, struct.error, IndexError) as e:
            link.close()
            return tag, None, e

    def close(self) -> None:
        for node, link in self.links.items():
            if link.pending:
                link.close()
            else:
                self.client.give(node, link)
        self.links.clear()


# -------------------------------------------------------------------- what the scan asks before it reads


def topic_partitions(client: Client, topic: str, timeout_s: float = 10.0) -> list[int]:
    """The topic's partition ids; a KafkaError naming near matches when it does not exist."""
    deadline = time.monotonic() + timeout_s
    while True:
        meta = client.metadata([topic]).get(topic)
        err = meta.error if meta else 3
        if err == 0 and meta and meta.partitions:
            return sorted(meta.partitions)
        if err == 29:  # TOPIC_AUTHORIZATION_FAILED: Kafka says so whether or not the topic exists
            raise KafkaError(f"not authorized to describe topic {topic!r} (TOPIC_AUTHORIZATION_FAILED), or it does "
                             "not exist: the principal needs DESCRIBE and READ ACLs on it")
        if err == 3 or time.monotonic() > deadline:  # UNKNOWN_TOPIC_OR_PARTITION; others (LEADER_NOT_AVAILABLE) pass
            break
        time.sleep(0.1)
    if err not in (0, 3):
        raise KafkaError(f"cannot read metadata for topic {topic!r}: {_error(err)}")
    import difflib

    from .client import known_hint

    topics = sorted(t for t, m in client.metadata(None).items() if m.error == 0)
    near = difflib.get_close_matches(topic, topics, n=3)
    hint = f"; did you mean {', '.join(near)}?" if near else known_hint("topics", topics)
    raise KafkaError(f"topic {topic!r} does not exist{hint}")


def watermarks(client: Client, topic: str, partitions: list[int]) -> dict:
    """True low/high watermarks per partition, as :func:`keyscope.kafka.client.watermarks` gives them: the
    high corrected from a fetch response (ListOffsets can under-report it on the embedded broker), and the
    last stable offset that response states."""
    from .client import Watermarks

    lows = client.list_offsets(topic, partitions, EARLIEST)
    highs = client.list_offsets(topic, partitions, LATEST)
    probe = {p: highs[p][0] - 1 for p in partitions if highs[p][0] > lows[p][0]}
    seen: dict[int, tuple[int, int]] = {}
    if probe:
        f = Fetcher(client, topic)
        by_node: dict = {}
        for p, off in probe.items():
            by_node.setdefault(f.leader(p), {})[p] = (off, 1)  # 1 byte: brokers still send one batch
        by_node.pop(None, None)
        try:
            for tag, (node, offsets) in enumerate(by_node.items()):
                # max_wait_ms=0 would be ideal, but Tansu then answers with no partitions at all.
                f.send(tag, node, offsets, max_bytes=1 << 20, max_wait_ms=50)
            for _ in by_node:
                _tag, parts, exc = f.answers.get(timeout=client.timeout_s)
                if exc is not None:
                    raise KafkaError(f"fetch from {topic!r} failed: {exc}")
                for fp in parts:
                    if fp.high_watermark >= 0:
                        seen[fp.partition] = (fp.high_watermark, fp.last_stable_offset)
        finally:
            f.close()
    out = {}
    for p in partitions:
        low, high_lo = lows[p][0], highs[p][0]
        hw, lso = seen.get(p, (high_lo, None))
        high = max(high_lo, hw)
        if p not in probe:
            lso = high  # an empty partition has no open transaction
        elif lso is not None and not low <= lso <= high:
            lso = None  # a broker that does not track it
        out[p] = Watermarks(low=low, high=high, list_offsets_high=high_lo, last_stable=lso)
    return out


def offsets_for_time(client: Client, topic: str, partitions: list[int], ts_ms: int) -> dict[int, int | None]:
    """First offset at or after ``ts_ms`` per partition; None where no record is that recent (Kafka answers
    offset -1, Tansu offset 0 with timestamp -1)."""
    found = client.list_offsets(topic, partitions, int(ts_ms))
    return {p: (off if off >= 0 and ts >= 0 else None) for p, (off, ts) in found.items()}
