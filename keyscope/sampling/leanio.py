"""The sampler's Kafka I/O on keyscope's own client (:mod:`keyscope.kafka.lean`) when no SASL is configured.

Why: with kafka-python, a cold 5M-record ``keyscope sample`` spent ~0.4 s before its first fetch (the
import, the probe then the consumer's own bootstrap, a metadata round trip per question) and its IO
thread took every answer through kafka-python's protocol classes.  The lean client connects once (the
probe's own steps: TCP, TLS, ApiVersions) and imports nothing of kafka-python; SASL stays on
kafka-python (its mechanisms authenticate, and its errors are the ones the SASL tests name), and so does
a configured ``client.id`` (the lean client sends its own).

The interface is what :mod:`.fetch` uses of :mod:`keyscope.kafka.client` (``open_consumer``,
``topic_partitions``, ``watermarks``, ``offsets_for_time``, ``RawFetcher``, ``throttled``), so the
fetch loop is the same code on both clients.  Fetches are answered as a RawFetcher answers them: a
thread per broker writes each request at once and reads the answers in order (the socket reads release
the GIL), so the broker's next answer arrives while the sampler decodes the last.
"""

from __future__ import annotations

import collections
import queue
import struct
import threading

from ..errors import KafkaError
from ..kafka import lean

REQUEST_TIMEOUT_S = 30.0  # a broker silent this long on one request is lost (the fetch loop retries)
REFRESH_TIMEOUT_S = 2.0  # a metadata refresh after an error: the fetch loop retries, it must not wait long


def use_lean(conn) -> bool:
    """The lean client, unless SASL is configured (kafka-python's mechanisms authenticate) or a
    ``client.id`` other than keyscope's (the lean client always sends ``keyscope``; quotas and broker
    logs go by the client id, so a configured one must reach the broker)."""
    if conn.protocol.upper().startswith("SASL_"):
        return False
    return conn.kwargs.get("client_id", "keyscope") == "keyscope"


class _Client(lean.Client):
    """A lean client that also closes the fetchers' links (the sampler closes only its consumer)."""

    def __init__(self, conn, timeout_s: float):
        super().__init__(conn, timeout_s=timeout_s)
        self.fetchers: list[RawFetcher] = []

    def close(self) -> None:
        for f in self.fetchers:
            f.close()
        super().close()


def open_consumer(conn, timeout_s: float = 10.0):
    """Connect (bounded by ``timeout_s``, at least a second, as :func:`keyscope.kafka.client.open_consumer`).

    The probe first, as there: it names what a bare connection cannot (a SASL listener spoken to in
    plaintext closes the connection at the first Metadata request; a missing client certificate
    shows only after the TLS handshake), for ~5 ms of one more connection on loopback."""
    import time

    from ..kafka.auth import client_config
    from ..kafka.probe import probe

    deadline = time.monotonic() + max(1.0, timeout_s)
    conn.log(f"connecting to {conn.bootstrap_servers} with security.protocol={conn.protocol}, timeout {timeout_s:g}s "
             "(keyscope's own client)")
    probe(conn, client_config(conn), deadline, timeout_s)
    client = _Client(conn, timeout_s=max(1.0, deadline - time.monotonic()))
    client.timeout_s = max(1.0, min(timeout_s, REQUEST_TIMEOUT_S))  # per request from now on; connecting had it all
    conn.log("client connected")
    return client


def topic_partitions(client, topic: str) -> list[int]:
    return lean.topic_partitions(client, topic)


def watermarks(client, topic: str, partitions: list[int], timeout_s: float = 10.0) -> dict:
    return lean.watermarks(client, topic, partitions)


def offsets_for_time(client, topic: str, partitions: list[int], ts_ms: int, timeout_s: float = 10.0) -> dict:
    return lean.offsets_for_time(client, topic, partitions, ts_ms)


def throttled(exc: BaseException) -> bool:
    """Never: a broker throttling this client delays its answers (KIP-219), it refuses nothing."""
    return False


class RawFetcher:
    """Fetches of one topic, answered on :attr:`answers` as ``(tag, [FetchedPartition], None)`` or
    ``(tag, None, exception)`` (the interface of :class:`keyscope.kafka.client.RawFetcher`)."""

    def __init__(self, client: _Client, topic: str):
        self.client, self.topic = client, topic
        self.answers: queue.Queue = queue.Queue()
        self._nodes: dict[int, _NodeLink] = {}
        self.timeout_s = client.timeout_s
        if topic not in client.topics:
            client.metadata([topic])
        if hasattr(client, "fetchers"):
            client.fetchers.append(self)

    def leader(self, partition: int) -> int | None:
        return self.client.leader(self.topic, partition)

    def refresh_metadata(self) -> None:
        c = self.client
        saved, c.timeout_s = c.timeout_s, min(c.timeout_s, REFRESH_TIMEOUT_S)
        try:
            c.metadata([self.topic])
        except KafkaError:  # the next fetch tells
            pass
        finally:
            c.timeout_s = saved

    def send(self, tag, node_id, offsets: dict[int, tuple[int, int]], max_bytes: int, max_wait_ms: int = 100,
             isolation_level: int = 0) -> None:
        w = self._nodes.get(node_id)
        if w is None or w.closed:
            w = self._nodes[node_id] = _NodeLink(self, node_id)
        w.put((tag, dict(offsets), int(max_bytes), int(max_wait_ms), int(isolation_level)))

    def close(self) -> None:
        for w in self._nodes.values():
            w.stop()
        self._nodes.clear()


class _NodeLink:
    """One broker's link and the thread that owns it: sends what is queued, then reads the oldest answer."""

    def __init__(self, fetcher: RawFetcher, node: int):
        self.f, self.node = fetcher, node
        self.cv = threading.Condition()
        self.todo: collections.deque = collections.deque()
        self.closed = False
        self.thread = threading.Thread(target=self._loop, name=f"keyscope-fetch-{node}", daemon=True)
        self.thread.start()

    def put(self, item) -> None:
        with self.cv:
            self.todo.append(item)
            self.cv.notify()

    def stop(self) -> None:
        with self.cv:
            self.closed = True
            self.todo.clear()
            self.cv.notify()

    def _loop(self) -> None:
        f = self.f
        answers, timeout = f.answers, f.timeout_s
        link: lean.Link | None = None
        sent: collections.deque = collections.deque()  # (tag, correlation, version, link), in the order sent
        try:
            while True:
                with self.cv:
                    while not self.todo and not sent and not self.closed:
                        self.cv.wait()
                    if self.closed:
                        return
                    todo = list(self.todo)
                    self.todo.clear()
                for tag, offsets, max_bytes, max_wait_ms, isolation in todo:
                    try:
                        if link is None or link.broken:
                            link = f.client.take(self.node)
                        v = link.version(lean.API_FETCH, (11, 10, 9, 8, 7, 6, 5, 4))
                        body = lean.fetch_body(v, f.topic, offsets, max_bytes, max_wait_ms, isolation)
                        sent.append((tag, link.send(lean.API_FETCH, v, body, timeout), v, link))
                    except (lean.LinkError, KafkaError, KeyError) as e:
                        answers.put((tag, None, e))
                if not sent:
                    continue
                tag, corr, v, on = sent.popleft()
                try:
                    answers.put((tag, lean.parse_fetch(v, on.receive(corr, timeout), views=True), None))
                except (lean.LinkError, KafkaError, struct.error, IndexError) as e:
                    on.close()
                    if link is on:
                        link = None
                    answers.put((tag, None, e))
                    while sent:  # what else was sent on that link is lost with it
                        answers.put((sent.popleft()[0], None, e))
        finally:
            if link is not None:
                link.close()
