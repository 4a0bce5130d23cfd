"""A realistic CRM event stream with one hot tenant, for the demo and the shipped samples.

The stream mirrors the incident keyscope was built for: topic ``crm-events``
with 3 partitions, producers keyed by ``tenant_id`` with the Java/kafka-python
murmur2 partitioner, and one tenant (``stark-industries``, which murmur2 sends
to partition 2) large enough that consumer group ``crm-events-sse`` lags on
partition 2 only.  Generation is columnar (numpy + Polars); only producing to
Kafka is per record, as a producer is.
"""

from __future__ import annotations

from dataclasses import dataclass

HOT_TENANT = "stark-industries"
EVENT_TYPES = ("contact.updated", "contact.created", "email.opened", "deal.stage_changed", "note.added")
TOPIC = "crm-events"
GROUP = "crm-events-sse"


@dataclass(frozen=True)
class StreamSpec:
    records: int = 60_000
    tenants: int = 400
    hot_share: float = 0.55  # share of all events from the hot tenant
    zipf_s: float = 1.1  # the tail's skew
    contacts_per_tenant: int = 5_000
    seed: int = 7


def crm_events(spec: StreamSpec = StreamSpec()):
    """A Polars frame ``key, tenant_id, event_type, contact_id, value`` (value = JSON bytes)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(spec.seed)
    n = spec.records
    ranks = np.arange(1, spec.tenants + 1, dtype=np.float64)
    tail_p = ranks ** -spec.zipf_s
    tail_p /= tail_p.sum()
    hot = rng.random(n) < spec.hot_share
    tail_idx = rng.choice(spec.tenants, size=n, p=tail_p)
    tenant_ids = pl.Series("tenant_idx", np.where(hot, -1, tail_idx))
    contacts = rng.integers(0, spec.contacts_per_tenant, size=n)
    events = rng.choice(len(EVENT_TYPES), size=n, p=[0.4, 0.1, 0.3, 0.1, 0.1])
    df = pl.DataFrame({"t": tenant_ids, "c": contacts, "e": events}).select(
        pl.when(pl.col("t") < 0)
        .then(pl.lit(HOT_TENANT))
        .otherwise(pl.format("tenant-{}", pl.col("t").cast(pl.String).str.pad_start(4, "0")))
        .alias("tenant_id"),
        pl.col("e").replace_strict(dict(enumerate(EVENT_TYPES)), return_dtype=pl.String).alias("event_type"),
        pl.format("c-{}", pl.col("c")).alias("contact_id"),
    )
    value = pl.concat_str(
        pl.lit('{"tenant_id":"'),
        pl.col("tenant_id"),
        pl.lit('","event_type":"'),
        pl.col("event_type"),
        pl.lit('","contact_id":"'),
        pl.col("contact_id"),
        pl.lit('"}'),
    )
    return df.with_columns(pl.col("tenant_id").cast(pl.Binary).alias("key"), value.cast(pl.Binary).alias("value"))


def produce(bootstrap: str, topic: str, frame, progress=None, **producer_config) -> int:
    """Send every row (key, value) with kafka-python's default (murmur2) partitioner."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=256 * 1024, **producer_config)
    sent = 0
    try:
        keys = frame["key"].to_list()
        values = frame["value"].to_list()
        for k, v in zip(keys, values):
            producer.send(topic, key=k, value=v)
            sent += 1
            if progress and sent % 20_000 == 0:
                progress(sent)
        producer.flush(60)
    finally:
        producer.close(timeout=10)
    return sent


def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="keyscope-demo")
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def commit_group_lag(bootstrap: str, topic: str, group: str, lag_fraction: dict[int, float]) -> dict[int, int]:
    """Commit offsets for ``group`` so partition p lags by ``lag_fraction[p]`` of its records.

    Commits as a non-member (assign + commit), as a stalled consumer leaves
    things; returns the committed offsets.
    """
    from . import client as kafka_io
    from .connection import resolve

    probe = kafka_io.open_consumer(resolve(bootstrap))
    try:
        parts = kafka_io.topic_partitions(probe, topic)
        wm = kafka_io.watermarks(probe, topic, parts)
    finally:
        probe.close()
    offsets = {p: wm[p].high - int(round(wm[p].high * lag_fraction.get(p, 0.0))) for p in parts}
    commit_offsets(bootstrap, topic, group, offsets)
    return offsets


def commit_offsets(bootstrap: str, topic: str, group: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` (partition -> offset) for ``group`` as a non-member: assign() + commit, no join.

    Only for keyscope's own demo broker and the tests: keyscope never commits on a user's cluster.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        tps = {p: TopicPartition(topic, p) for p in offsets}
        consumer.assign(list(tps.values()))
        consumer.commit({tps[p]: OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    finally:
        consumer.close(autocommit=False)
