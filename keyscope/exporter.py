"""``keyscope exporter``: a read-only tail reader publishing per-partition load and hot keys to Prometheus.

Why: the lag alert names a partition, never the key.  This reads the topics'
new records as they arrive (assign mode from the end: no group, no commit,
keyscope's own Fetch client and RecordBatch decoder, as ``keyscope sample``),
keeps a sliding window of ``buckets`` time buckets per partition (records,
bytes, a Space-Saving summary of keys, partitioner agreement, murmur2
predictions), and serves ``/metrics`` through prometheus-client and
``/healthz``.  Memory: partitions x buckets x ``capacity`` key counters, whatever
the key count.  Records are placed in buckets by when they were read.  Gaps in what
it saw are published: seconds without brokers, and records the log dropped before
they could be read.
"""

from __future__ import annotations

import hashlib
import http.server
import queue
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .prometheus.alert import prom_skew_ratio, stored_order
from .errors import UsageError
from .model.keys import key_display_one
from .sketch import SpaceSaving, merge

DEFAULT_WINDOW_S = 300.0
DEFAULT_TOP_K = 10
MAX_TOP_K = 100
BUCKETS = 10
KEY_LABEL_MAX = 120  # a key label longer than this is cut (…) so one key cannot blow up a series
PARTITION_FETCH_BYTES = 1 << 20
FETCH_MAX_BYTES = 16 << 20
RETRY_S = 0.5
# A fetch that left every partition at its high watermark with fewer records than this waits IDLE_FETCH_S
# before the next one to the same leader:
# at 20k records/s each answer held a few hundred records and the per-chunk work (Polars, three partitioners,
# murmur2 predictions) cost 2.1 CPU s per 100k records vs 0.2 at 120k/s (benchmarks/bench_exporter.py); a 5-minute
# window does not need sub-second freshness (1.0 CPU s per 100k at 20k/s with the pause).  Large answers and
# partitions still behind are followed at once, so high rates and backlogs are unaffected.
SMALL_FETCH_RECORDS = 20_000
IDLE_FETCH_S = 0.5

__all__ = ["ExporterSpec", "Exporter", "parse_listen", "parse_duration", "key_label", "run_exporter", "RULES"]


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9309")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_duration(text: str, option: str = "--window") -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    for u in ("ms", "s", "m", "h"):
        if t.endswith(u):
            num, mult = t[: -len(u)], units[u]
            break
    else:
        num, mult = t, 1
    try:
        v = float(num) * mult
    except ValueError:
        v = -1
    if not v > 0 or v != v or v == float("inf"):
        raise UsageError(f"{option} {text!r}: expected a positive duration such as 10s, 5m, 1h")
    return v


def key_label(key: bytes, hash_keys: bool) -> str:
    """The ``key`` label: text (or hex when not printable), cut at KEY_LABEL_MAX; with --hash-keys a stable hash."""
    if hash_keys:
        return "sha256:" + hashlib.sha256(bytes(key)).hexdigest()[:16]
    shown, enc = key_display_one(bytes(key))
    if enc == "hex":
        shown = "0x" + shown
    return shown if len(shown) <= KEY_LABEL_MAX else shown[: KEY_LABEL_MAX - 1] + "…"


@dataclass(frozen=True)
class ExporterSpec:
    topics: tuple[str, ...]
    listen: tuple[str, int] = ("127.0.0.1", 9309)
    window_s: float = DEFAULT_WINDOW_S
    top_k: int = DEFAULT_TOP_K
    hash_keys: bool = False
    capacity: int | None = None  # Space-Saving counters per partition and bucket (default 10 x top_k, >= 64)
    predict: tuple[int, ...] = ()  # candidate partition counts (default: n, 2n, 3n)
    groups: tuple[str, ...] = ()  # consumer groups whose lag is published too (keyscope.lag, read-only)
    lag_interval_s: float = 15.0
    timeout_s: float = 10.0  # to connect at start, and per request (fetch, lag reading) while serving

    def validate(self) -> "ExporterSpec":
        if not self.topics:
            raise UsageError("give at least one --topic")
        if not 1 <= self.top_k <= MAX_TOP_K:
            raise UsageError(f"--top-k must be between 1 and {MAX_TOP_K}")
        if not 0 < self.timeout_s < float("inf"):
            raise UsageError(f"--timeout must be a positive number of seconds, got {self.timeout_s:g}")
        if any(n < 1 or n > 100_000 for n in self.predict):
            raise UsageError("--predict-partitions must be between 1 and 100000")
        return self

    @property
    def sketch_capacity(self) -> int:
        return self.capacity or max(64, 10 * self.top_k)


class _Bucket:
    __slots__ = ("start", "records", "bytes", "keyed", "sketch", "agree", "predicted")

    def __init__(self, start: int, capacity: int):
        self.start = start
        self.records = 0
        self.bytes = 0
        self.keyed = 0
        self.sketch = SpaceSaving(capacity)
        self.agree: Counter = Counter()  # partitioner -> keyed records on the rule's partition
        self.predicted: dict[int, np.ndarray] = {}  # N -> records per partition under murmur2 % N


@dataclass
class _PartState:
    next: int
    fetch_bytes: int = PARTITION_FETCH_BYTES
    records_total: int = 0
    bytes_total: int = 0
    skipped: int = 0  # records jumped over when the log moved past us (retention, truncation): a data gap
    buckets: dict = field(default_factory=dict)  # bucket index -> _Bucket


@dataclass
class _TopicState:
    name: str
    partitions: dict  # partition -> _PartState
    predict: tuple[int, ...]
    fetcher: object = None


class Exporter:
    """The window state and the fetch loop; :meth:`collect` is a prometheus-client collector."""

    def __init__(self, conn, spec: ExporterSpec, clock=time.monotonic):
        self.conn = conn
        self.spec = spec.validate()
        self.clock = clock
        self.bucket_s = spec.window_s / BUCKETS
        self.topics: dict[str, _TopicState] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.fetch_errors: Counter = Counter()  # topic -> failed fetches (broker lost, partition errors)
        self.up = 0
        self.last_ok: float | None = None
        self.down_since: float | None = None  # when the brokers were lost (None while up)
        self.down_s = 0.0  # seconds without brokers, closed outages
        self.started = clock()
        self.consumer = None
        self.lags: dict = {}  # group -> keyscope.lag.GroupLag (the last good reading)
        self.lag_errors: Counter = Counter()
        self.lag_thread = None

    # ------------------------------------------------------------------ window

    def _bucket(self, part: _PartState, now: float) -> _Bucket:
        i = int(now // self.bucket_s)
        b = part.buckets.get(i)
        if b is None:
            b = part.buckets[i] = _Bucket(i, self.spec.sketch_capacity)
            for old in [j for j in part.buckets if j <= i - BUCKETS]:
                del part.buckets[old]
        return b

    def _live(self, part: _PartState, now: float) -> list[_Bucket]:
        i = int(now // self.bucket_s)
        return [b for j, b in part.buckets.items() if i - BUCKETS < j <= i]

    def observe(self, topic: str, partition: int, table, now: float | None = None) -> None:
        """Count one decoded chunk (pyarrow table with key, key_size, value_size) into the current bucket."""
        import polars as pl

        from .partitioners import PARTITIONERS, hash_column

        now = self.clock() if now is None else now
        t = self.topics[topic]
        n_parts = len(t.partitions)
        df = pl.from_arrow(table.select(["key", "key_size", "value_size"]))
        n = df.height
        nbytes = int(df["key_size"].fill_null(0).sum() + df["value_size"].sum())
        keyed = df["key"].drop_nulls()
        counts = keyed.value_counts(sort=True) if len(keyed) else None
        agree = {}
        predicted = {}
        if len(keyed):
            for name, p in PARTITIONERS.items():
                ops = hash_column(keyed, p)
                agree[name] = int(((ops % n_parts) == partition).sum())
            ops = hash_column(keyed, "murmur2").drop_nulls().to_numpy().astype(np.int64)
            for N in t.predict:
                predicted[N] = np.bincount(ops % N, minlength=N)
        with self.lock:
            part = t.partitions[partition]
            part.records_total += n
            part.bytes_total += nbytes
            b = self._bucket(part, now)
            b.records += n
            b.bytes += nbytes
            b.keyed += len(keyed)
            if counts is not None:
                b.sketch.update(zip(counts[:, 0].to_list(), counts[:, 1].to_list()))
            b.agree.update(agree)
            for N, arr in predicted.items():
                b.predicted[N] = b.predicted[N] + arr if N in b.predicted else arr

    # ------------------------------------------------------------------ metrics

    def snapshot(self, now: float | None = None) -> dict:
        """Everything /metrics publishes, as plain data (tests read it too)."""
        from .partitioners import PARTITIONERS

        now = self.clock() if now is None else now
        out = {}
        K = self.spec.top_k
        with self.lock:
            for name, t in self.topics.items():
                parts = {}
                summaries = []
                agree: Counter = Counter()
                keyed = 0
                predicted: dict[int, np.ndarray] = {}
                for p, ps in t.partitions.items():
                    live = self._live(ps, now)
                    m = merge(b.sketch for b in live)
                    parts[p] = dict(records_total=ps.records_total, bytes_total=ps.bytes_total,
                                    window_records=sum(b.records for b in live),
                                    window_bytes=sum(b.bytes for b in live), merged=m)
                    summaries.extend(b.sketch for b in live)
                    for b in live:
                        agree.update(b.agree)
                        keyed += b.keyed
                        for N, arr in b.predicted.items():
                            predicted[N] = predicted[N] + arr if N in predicted else arr.copy()
                topic_m = merge(summaries)
                out[name] = dict(partitions=parts, merged=topic_m, keyed=keyed,
                                 agreement={n: (agree[n] / keyed) for n in PARTITIONERS} if keyed else {},
                                 predicted={N: prom_skew_ratio(arr.astype(float).tolist()) for N, arr in predicted.items()},
                                 skew=prom_skew_ratio([float(parts[p]["window_records"]) for p in stored_order(parts)]))
        for name, d in out.items():
            total = d["merged"].total
            d["top"] = [(e.key, e.count / total) for e in d["merged"].top(K)] if total else []
            d["share_error"] = d["merged"].bound / total if total else 0.0
            pairs = []
            for p, pd in d["partitions"].items():
                w = pd["window_records"]
                for e in pd["merged"].top(K):
                    pairs.append((e.count, p, e.key, e.count / w if w else 0.0))
            pairs.sort(key=lambda x: (-x[0], x[1], repr(x[2])))
            d["partition_top"] = [(p, k, s) for _, p, k, s in pairs[:K]]
            candidates = {e.key for e in d["merged"].estimates} | {k for _, p, k, _ in pairs}
            d["truncated"] = max(0, len(candidates) - K)
        return out

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot()
        hk = self.spec.hash_keys
        rec = CounterMetricFamily("keyscope_partition_records", "Records read per partition since the exporter started.",
                                  labels=["topic", "partition"])
        byt = CounterMetricFamily("keyscope_partition_bytes", "Key + value bytes read per partition since start.",
                                  labels=["topic", "partition"])
        wrec = GaugeMetricFamily("keyscope_partition_window_records", "Records per partition in the sliding window.",
                                 labels=["topic", "partition"])
        share = GaugeMetricFamily("keyscope_hot_key_share",
                                  "A top key's share of its partition's records in the window (top K pairs per topic).",
                                  labels=["topic", "partition", "key"])
        tshare = GaugeMetricFamily("keyscope_hot_key_topic_share",
                                   "A top key's share of the topic's records in the window (top K per topic).",
                                   labels=["topic", "key"])
        err = GaugeMetricFamily("keyscope_hot_key_share_error",
                                "Bound on |published topic share - true share| (Space-Saving, merged over the window).",
                                labels=["topic"])
        trunc = GaugeMetricFamily("keyscope_hot_keys_truncated",
                                  "Candidate hot keys not published because of the top-K cap.", labels=["topic"])
        skew = GaugeMetricFamily("keyscope_skew_ratio",
                                 "max / clamp_min(avg, 0.001) of the partitions' records in the window.", labels=["topic"])
        agree = GaugeMetricFamily("keyscope_partitioner_agreement_ratio",
                                  "Share of keyed records in the window whose partition equals the rule's.",
                                  labels=["topic", "partitioner"])
        pred = GaugeMetricFamily("keyscope_predicted_skew",
                                 "Skew ratio of the window's keyed records under murmur2 % N partitions.",
                                 labels=["topic", "partitions"])
        for name, d in snap.items():
            for p in stored_order(d["partitions"]):
                pd = d["partitions"][p]
                rec.add_metric([name, str(p)], pd["records_total"])
                byt.add_metric([name, str(p)], pd["bytes_total"])
                wrec.add_metric([name, str(p)], pd["window_records"])
            for p, k, s in d["partition_top"]:
                share.add_metric([name, str(p), key_label(k, hk)], s)
            for k, s in d["top"]:
                tshare.add_metric([name, key_label(k, hk)], s)
            err.add_metric([name], d["share_error"])
            trunc.add_metric([name], d["truncated"])
            skew.add_metric([name], d["skew"])
            for pn, r in d["agreement"].items():
                agree.add_metric([name, pn], r)
            for N, r in sorted(d["predicted"].items()):
                pred.add_metric([name, str(N)], r)
        up = GaugeMetricFamily("keyscope_up", "1 while the last fetch reached the brokers, 0 while they are lost.")
        up.add_metric([], self.up)
        fe = CounterMetricFamily("keyscope_fetch_errors", "Fetches that failed (broker lost, partition errors).",
                                 labels=["topic"])
        for name in self.topics:
            fe.add_metric([name], self.fetch_errors[name])
        with self.lock:
            down = self.down_s + (self.clock() - self.down_since if self.down_since is not None else 0.0)
            skipped = [(name, p, ps.skipped) for name, t in self.topics.items() for p, ps in t.partitions.items()]
        gap = CounterMetricFamily("keyscope_broker_unreachable_seconds",
                                  "Seconds the exporter could not fetch (a gap in what it saw), ongoing outage included.")
        gap.add_metric([], down)
        skip = CounterMetricFamily("keyscope_partition_skipped_records",
                                   "Records never read because the log start moved past the exporter (retention, deleted records) while it could not read.",
                                   labels=["topic", "partition"])
        for name, p, n in sorted(skipped, key=lambda x: (x[0], str(x[1]))):
            skip.add_metric([name, str(p)], n)
        win = GaugeMetricFamily("keyscope_window_seconds", "The sliding window's length.")
        win.add_metric([], self.spec.window_s)
        yield from (rec, byt, wrec, share, tshare, err, trunc, skew, agree, pred, up, fe, gap, skip, win)
        if self.spec.groups:
            yield from self._lag_metrics()

    def _lag_metrics(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["consumergroup", "topic", "partition"]
        true = GaugeMetricFamily("keyscope_group_partition_lag",
                                 "True lag (end offset - committed) of partitions the group committed, where >= 0.", labels=labels)
        kx = GaugeMetricFamily("kafka_consumergroup_lag",
                               "Lag as kafka_exporter 1.7.0 reports it (ListOffsets end - committed; -1 never committed).",
                               labels=labels)
        skew = GaugeMetricFamily("keyscope_group_skew_ratio", "max / clamp_min(avg, 0.001) of the true lags.",
                                 labels=["consumergroup", "topic"])
        errs = CounterMetricFamily("keyscope_group_lag_errors", "Lag readings that failed.", labels=["consumergroup"])
        with self.lock:
            lags = dict(self.lags)
            errors = dict(self.lag_errors)
        for g, gl in sorted(lags.items()):
            for t in gl.topics:
                for p in sorted(t.partitions, key=lambda x: str(x.partition)):
                    kx.add_metric([g, t.topic, str(p.partition)], p.exporter_lag)
                    if p.in_ratio:
                        true.add_metric([g, t.topic, str(p.partition)], p.lag)
                if t.skew_ratio is not None:
                    skew.add_metric([g, t.topic], t.skew_ratio)
        for g in self.spec.groups:
            errs.add_metric([g], errors.get(g, 0))
        yield from (true, kx, skew, errs)

    def _lag_loop(self) -> None:
        """Read each group's lag every lag_interval_s with keyscope.lag's read-only reader; a failed reading drops
        the group's series (stale lag would mislead) and counts an error."""
        from .lag import LagReader

        readers: dict = {}
        while not self.stop_event.is_set():
            for g in self.spec.groups:
                try:
                    if g not in readers:
                        readers[g] = LagReader(self.conn, g, None, self.spec.timeout_s, scan_cluster=False)
                    reading = readers[g].read()
                    with self.lock:
                        self.lags[g] = reading
                except Exception:  # a lost broker or a group without offsets: retried next time
                    with self.lock:
                        self.lags.pop(g, None)
                        self.lag_errors[g] += 1
                    r = readers.pop(g, None)
                    if r is not None:
                        r.close()
            self.stop_event.wait(self.spec.lag_interval_s)
        for r in readers.values():
            r.close()

    # ------------------------------------------------------------------ fetch loop

    def start(self) -> None:
        """Connect, find the partitions and their ends (read from there on)."""
        from .kafka import client as kafka_io

        self.consumer = kafka_io.open_consumer(self.conn, timeout_s=self.spec.timeout_s)
        shared: queue.Queue = queue.Queue()
        self.answers = shared
        for name in self.spec.topics:
            parts = kafka_io.topic_partitions(self.consumer, name)
            marks = kafka_io.watermarks(self.consumer, name, parts)
            n = len(parts)
            predict = self.spec.predict or tuple(sorted({n, 2 * n, 3 * n}))
            t = _TopicState(name, {p: _PartState(next=marks[p].high) for p in parts}, predict)
            t.fetcher = kafka_io.RawFetcher(self.consumer, name)
            t.fetcher.answers = shared  # one queue for every topic: one loop waits on all
            self.topics[name] = t
        self.up = 1
        self.last_ok = self.clock()
        if self.spec.groups:
            self.lag_thread = threading.Thread(target=self._lag_loop, name="keyscope-exporter-lag", daemon=True)
            self.lag_thread.start()

    def run(self) -> None:
        """Fetch until :attr:`stop_event` is set: one request in flight per topic and leader."""
        from .sampling import _FieldPlan, _decode

        plan = _FieldPlan([])
        inflight: dict = {}  # tag -> (topic, node, [partitions])
        waiting: dict = {}  # (topic, node) -> when to ask again
        tags = iter(range(1 << 62))
        while not self.stop_event.is_set():
            now = self.clock()
            for name, t in self.topics.items():
                by_node: dict = {}
                for p in t.partitions:
                    by_node.setdefault(t.fetcher.leader(p), []).append(p)
                if None in by_node:
                    t.fetcher.refresh_metadata()
                    by_node.pop(None)
                busy = {(tp, nd) for tp, nd, _ in inflight.values()}
                for node, ps in by_node.items():
                    if (name, node) in busy or waiting.get((name, node), 0) > now:
                        continue
                    offsets = {p: (t.partitions[p].next, t.partitions[p].fetch_bytes) for p in ps}
                    tag = next(tags)
                    inflight[tag] = (name, node, ps)
                    t.fetcher.send(tag, node, offsets, max_bytes=FETCH_MAX_BYTES, max_wait_ms=200, isolation_level=0)
            try:
                tag, answer, exc = self.answers.get(timeout=0.1)
            except queue.Empty:
                continue
            req = inflight.pop(tag, None)
            if req is None:
                continue
            name, node, ps = req
            t = self.topics[name]
            if exc is not None:
                self.fetch_errors[name] += 1
                if self.up:
                    self.down_since = self.clock()
                self.up = 0
                t.fetcher.refresh_metadata()
                waiting[(name, node)] = self.clock() + RETRY_S
                continue
            if not self.up and self.down_since is not None:
                self.down_s += self.clock() - self.down_since
                self.down_since = None
            self.up = 1
            self.last_ok = self.clock()
            got, behind = 0, False
            for fp in answer:
                ps_ = t.partitions.get(fp.partition)
                if ps_ is None:
                    continue
                if fp.error_code == 1:  # OFFSET_OUT_OF_RANGE: retention, deleted records or truncation moved the log
                    self._realign(t, fp.partition, ps_)
                    continue
                if fp.error_code != 0:
                    self.fetch_errors[name] += 1
                    t.fetcher.refresh_metadata()
                    waiting[(name, node)] = self.clock() + RETRY_S
                    continue
                if not fp.records:
                    continue
                c = _decode(fp.partition, fp.records, ps_.next, 1 << 62, 1 << 30, plan)
                if c.next is None:  # one batch larger than we asked for
                    ps_.fetch_bytes = min(ps_.fetch_bytes * 4, 256 << 20)
                    continue
                if c.table is not None:
                    self.observe(name, fp.partition, c.table)
                    got += c.table.num_rows
                ps_.next = max(ps_.next, c.next)
                behind = behind or ps_.next < fp.high_watermark
            if got < SMALL_FETCH_RECORDS and not behind:
                waiting[(name, node)] = max(waiting.get((name, node), 0), self.clock() + IDLE_FETCH_S)

    def _realign(self, t: _TopicState, partition: int, ps_: _PartState) -> None:
        """Back into the log: to its start when it moved past us (the records in between are counted as
        skipped), to its end when it was truncated below us.  Kafka's error answer carries no offsets
        (-1), so they are asked for."""
        from .kafka import client as kafka_io

        try:
            w = kafka_io.watermarks(self.consumer, t.name, [partition], self.spec.timeout_s)[partition]
        except Exception:  # the broker went away again: retried on the next fetch
            self.fetch_errors[t.name] += 1
            return
        was = ps_.next
        if was < w.low:
            ps_.next = w.low
        elif was > w.high:
            ps_.next = w.high
        with self.lock:
            ps_.skipped += max(0, ps_.next - was)

    def close(self) -> None:
        self.stop_event.set()
        if self.lag_thread is not None:
            self.lag_thread.join(15)
        if self.consumer is not None:
            try:
                self.consumer.close()
            except Exception:  # a consumer whose broker died must not fail the shutdown
                pass

    def healthy(self) -> tuple[bool, str]:
        if self.up:
            return True, "ok"
        return False, "brokers unreachable: the last fetch failed"


RULES = """\
# keyscope exporter: hot-key alert (keyscope exporter --print-rules).
# The annotation names the key, its share of the topic and of its partition(s):
# it joins keyscope_hot_key_share (per partition) through a template query.
groups:
- name: keyscope-exporter
  rules:
  - alert: KeyscopeHotKey
    expr: keyscope_hot_key_topic_share > {threshold}
    for: {for_}
    labels:
      severity: warning
    annotations:
      summary: '{{{{ $labels.key }}}} is {{{{ $value | humanizePercentage }}}} of {{{{ $labels.topic }}}}'
      description: >-
        {{{{ $labels.key }}}} is {{{{ $value | humanizePercentage }}}} of {{{{ $labels.topic }}}}{{{{ range printf
        "keyscope_hot_key_share{{topic=%q,key=%q}}" $labels.topic $labels.key | query }}}},
        {{{{ .Value | humanizePercentage }}}} of partition {{{{ .Labels.partition }}}}{{{{ end }}}}
        (window {{{{ with query "keyscope_window_seconds" }}}}{{{{ . | first | value | humanizeDuration }}}}{{{{ end }}}},
        share error at most {{{{ with printf "keyscope_hot_key_share_error{{topic=%q}}" $labels.topic | query }}}}{{{{ . | first | value | humanizePercentage }}}}{{{{ end }}}}).
  - alert: KeyscopeExporterDown
    expr: keyscope_up == 0
    for: 1m
    annotations:
      summary: 'keyscope exporter {{{{ $labels.instance }}}} cannot reach the brokers'
"""


def rules_text(threshold: float = 0.3, for_: str = "5m") -> str:
    return RULES.format(threshold=f"{threshold:g}", for_=for_)


class _Handler(http.server.BaseHTTPRequestHandler):
    exporter: Exporter = None  # set on a subclass per server
    registry = None

    def do_GET(self):  # noqa: N802 - http.server's name
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, ctype, code = generate_latest(self.registry), CONTENT_TYPE_LATEST, 200
        elif path == "/healthz":
            ok, why = self.exporter.healthy()
            body, ctype, code = (why + "\n").encode(), "text/plain; charset=utf-8", 200 if ok else 503
        else:
            body, ctype, code = b"keyscope exporter: see /metrics and /healthz\n", "text/plain; charset=utf-8", 404
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # no access log on stderr
        pass


@dataclass(frozen=True)
class ExporterResult:
    url: str
    records: int  # records read in all
    stopped_by: str


def run_exporter(conn, spec: ExporterSpec, ready=None) -> ExporterResult:
    """Serve until SIGTERM or Ctrl-C; ``ready(url)`` is called once /metrics answers."""
    from prometheus_client import CollectorRegistry

    exp = Exporter(conn, spec)
    host, port = spec.listen
    registry = CollectorRegistry(auto_describe=False)
    handler = type("Handler", (_Handler,), {"exporter": exp, "registry": registry})
    try:
        server = http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise UsageError(f"--listen {host}:{port}: {e.strerror or e}") from None
    server.daemon_threads = True
    stopped = {"by": "SIGTERM"}
    old_term = old_int = None
    serving = False
    main = threading.current_thread() is threading.main_thread()

    def on_term(signum, frame):
        exp.stop_event.set()

    def on_int(signum, frame):
        # Ctrl-C while serving stops the loop like SIGTERM instead of raising KeyboardInterrupt anywhere in it:
        # an asynchronous exception inside queue.get's Condition.wait can leave the queue's lock held (CPython's
        # with-blocks are not safe against it), and the client's IO thread would block on put() for ever.  A
        # Ctrl-C'd exporter that did not exit in 30 s, seen once in the full suite under load, fits that.
        stopped["by"] = "Ctrl-C"
        exp.stop_event.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts the shutdown

    if main:
        old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        exp.start()
        registry.register(exp)
        th = threading.Thread(target=server.serve_forever, name="keyscope-exporter-http", daemon=True)
        th.start()
        serving = True
        url = f"http://{host}:{server.server_address[1]}/metrics"
        if main:  # Ctrl-C before this point (connecting) is an interruption: exit 130
            old_int = signal.signal(signal.SIGINT, on_int)
        if ready is not None:
            ready(url)
        try:
            exp.run()
        except KeyboardInterrupt:
            stopped["by"] = "Ctrl-C"
    finally:
        if serving:
            server.shutdown()
        server.server_close()
        exp.close()
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
        if old_int is not None:
            signal.signal(signal.SIGINT, old_int)
    total = sum(ps.records_total for t in exp.topics.values() for ps in t.partitions.values())
    return ExporterResult(url, total, stopped["by"])


