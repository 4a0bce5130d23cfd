"""Reproduce the shipped samples: real records on the embedded broker, sampled by keyscope.

    python samples/generate.py            # rewrites samples/*.parquet

Needs the test extras (confluent-kafka writes the second partitioner of the
mixed topic): pip install -e '.[test]'.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

from keyscope.kafka import demo
from keyscope import sampling
from keyscope.kafka.broker import EmbeddedBroker
from keyscope.kafka.connection import resolve

HERE = Path(__file__).resolve().parent
FIELDS = ["tenant_id=$.tenant_id", "contact_id=$.contact_id", "event_type=$.event_type"]


def _sample(bs: str, topic: str, out: Path, fields=FIELDS) -> None:
    spec = sampling.SampleSpec(
        topic=topic, start="earliest", max_records=1_000_000, timeout_s=60,
        fields=[sampling.parse_field(f) for f in fields],
    ).validate()
    s = sampling.sample_topic(resolve(bs), spec)
    s.write(out)
    print(f"{out.name}: {len(s):,} records, {s.partition_count} partitions", file=sys.stderr)


def hot_tenant(bs: str) -> None:
    """The demo's stream: crm-events, 3 partitions, stark-industries ~55% of events (murmur2)."""
    demo.create_topic(bs, "crm-events", 3)
    demo.produce(bs, "crm-events", demo.crm_events(demo.StreamSpec(records=30_000)))
    _sample(bs, "crm-events", HERE / "crm-events-hot-tenant.parquet")


def balanced(bs: str) -> None:
    """Well balanced: 20,000 users, uniform traffic, 6 partitions, murmur2."""
    rng = np.random.default_rng(11)
    n = 30_000
    users = pl.Series(rng.integers(0, 20_000, n))
    frame = pl.DataFrame({"u": users}).select(
        pl.format("user-{}", pl.col("u")).cast(pl.Binary).alias("key"),
        pl.concat_str(pl.lit('{"user_id":"user-'), pl.col("u").cast(pl.String), pl.lit('"}'))
        .cast(pl.Binary).alias("value"),
    )
    demo.create_topic(bs, "web-events", 6)
    demo.produce(bs, "web-events", frame)
    _sample(bs, "web-events", HERE / "web-events-balanced.parquet", fields=["user_id=$.user_id"])


def mixed(bs: str) -> None:
    """One topic, two producers: kafka-python (murmur2) and confluent-kafka's default (CRC32)."""
    from confluent_kafka import Producer

    frame = demo.crm_events(demo.StreamSpec(records=20_000, hot_share=0.2, seed=3))
    demo.create_topic(bs, "orders", 4)
    half = frame.height // 2
    demo.produce(bs, "orders", frame.head(half))
    p = Producer({"bootstrap.servers": bs, "linger.ms": 20})
    for k, v in zip(frame["key"].tail(frame.height - half).to_list(), frame["value"].tail(frame.height - half).to_list()):
        p.produce("orders", key=k, value=v)
        p.poll(0)
    p.flush(60)
    _sample(bs, "orders", HERE / "orders-mixed-partitioners.parquet")


def main() -> None:
    with EmbeddedBroker() as b:
        hot_tenant(b.bootstrap_server)
        balanced(b.bootstrap_server)
        mixed(b.bootstrap_server)


if __name__ == "__main__":
    main()
