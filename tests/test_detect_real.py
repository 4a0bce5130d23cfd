"""Mixed-producer detection on topics real producers wrote to real Kafka.

Each situation once reported wrong: a switch hidden by empty keys, two
batching producers at once called a switch, a pipeline that hashed null keys
as empty ones, and what-ifs predicted with the abandoned partitioner.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from keyscope.advice import Constraints, recommend
from keyscope.analysis import analyze
from keyscope.partitioners import partition_for
from keyscope.whatif.engine import WhatIf

from .conftest import create_topic
from .peers import producers as P
from .test_analysis_schema import validate

N = P.PARTITIONS


def zipf_keys(seed: int, records: int, n_keys: int = 400, empties: int = 0, nulls: int = 0) -> list[bytes | None]:
    rng = np.random.default_rng(seed)
    w = 1 / np.arange(1, n_keys + 1) ** 1.05
    keys: list[bytes | None] = [f"cust-{i}".encode() for i in rng.choice(n_keys, size=records, p=w / w.sum())]
    for j in range(empties):
        keys.insert(int(rng.integers(0, len(keys))), b"")
    for j in range(nulls):
        keys.insert(int(rng.integers(0, len(keys))), None)
    return keys


def test_switch_with_empty_keys_is_found_and_whatif_uses_the_new_partitioner(broker, topic_name):
    """kafka-python (murmur2) then confluent-kafka's default (consistent_random), a few dozen empty keys in each.

    Before: records consistent does not hash (the empty key) counted as
    unexplained in the two-rule check, so the switch was not found.
    """
    create_topic(broker.bootstrap_server, topic_name, N)
    old, new = zipf_keys(1, 1500, empties=30), zipf_keys(2, 1500, empties=30)
    P.produce_kafka_python(broker.bootstrap_server, topic_name, old)
    P.produce_librdkafka(broker.bootstrap_server, topic_name, new, "consistent_random", pause_s=0)
    df = P.read_back(broker.bootstrap_server, topic_name, len(old) + len(new))
    sample = P.as_sample(df, topic_name)
    d = analyze(sample, reps=50).to_dict()
    validate(d)
    det = d["partitioner"]
    assert det["verdict"] == "mixed", det["explanation"]
    mixed = det["mixed"]
    assert mixed["likelier"] == "two-producers"
    assert (mixed["switched_from"], mixed["switched_to"]) == ("murmur2", "consistent"), mixed["explanation"]
    assert mixed["interleaved_chance"] < 1e-3
    # murmur2 wrote half the records, as many as consistent: what-ifs follow the new one
    w = WhatIf(sample)
    assert w.today_partitioner == "consistent"
    assert any("switched from murmur2 to consistent" in n for n in w.notes)
    adv = recommend(sample, Constraints())
    assert adv.today_partitioner == "consistent"
    assert all(r.scenario.partitioner == "consistent" for r in adv.ranked if r.scenario and r.scenario.key_fields)


def _two_producers(bootstrap, topic, at_once: bool, rounds: int = 20, per_round: int = 100):
    """murmur2_random and consistent_random producers, each a batching librdkafka client.

    ``at_once``: both write every round (a barrier keeps them in step, each
    round a flush, so batches of ~17 records per partition interleave);
    otherwise the first writes all its rounds, then the second.
    """
    from confluent_kafka import Producer

    a, b = zipf_keys(3, rounds * per_round), zipf_keys(4, rounds * per_round)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(keys, partitioner, offset):
        try:
            producer = Producer({"bootstrap.servers": bootstrap, "partitioner": partitioner, "linger.ms": 5})
            for r in range(rounds):
                for i in range(r * per_round, (r + 1) * per_round):
                    producer.produce(topic, key=keys[i], value=str(offset + i).encode())
                assert producer.flush(30) == 0
                if at_once:
                    barrier.wait(timeout=60)
        except BaseException as e:  # noqa: BLE001 - reported in the main thread
            errors.append(e)
            barrier.abort()

    if at_once:
        threads = [threading.Thread(target=run, args=(a, "murmur2_random", 0)),
                   threading.Thread(target=run, args=(b, "consistent_random", len(a)))]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        run(a, "murmur2_random", 0)
        run(b, "consistent_random", len(a))
    assert not errors, errors
    return len(a) + len(b)


@pytest.mark.parametrize("at_once", [True, False], ids=["at-the-same-time", "one-after-the-other"])
def test_two_batching_producers_at_once_are_not_a_switch(broker, topic_name, at_once):
    """Interleaving is per batch: two producers at once leave runs of a batch each, which is no switch."""
    create_topic(broker.bootstrap_server, topic_name, N)
    total = _two_producers(broker.bootstrap_server, topic_name, at_once)
    df = P.read_back(broker.bootstrap_server, topic_name, total)
    d = analyze(P.as_sample(df, topic_name), reps=50).to_dict()
    validate(d)
    det = d["partitioner"]
    assert det["verdict"] == "mixed", det["explanation"]
    mixed = det["mixed"]
    assert mixed["likelier"] == "two-producers"
    assert sorted(mixed["partitioners"]) == ["consistent", "murmur2"]
    if at_once:
        assert mixed["switched_from"] is None, mixed["explanation"]
        assert mixed["interleaved_chance"] > 1e-3
        assert mixed["batch_size_estimate"] >= 5  # runs of a batch, not of a record
        assert "at the same time" in mixed["explanation"]
    else:
        assert (mixed["switched_from"], mixed["switched_to"]) == ("murmur2", "consistent"), mixed["explanation"]
        assert mixed["interleaved_chance"] < 1e-3


def test_kcat_pipeline_keeps_null_keys_apart(broker, topic_name):
    """`kcat -f '%K:%k\\n' | keyscope partition --stdin-format kcat --summary`: counts equal the topic's.

    With `-f '%k\\n'` a null key prints as an empty line and is hashed as b"":
    its partition's count grows by every null-key record.
    """
    kcat = P.ensure_kcat()
    create_topic(broker.bootstrap_server, topic_name, N)
    keys = zipf_keys(5, 1200, empties=25, nulls=200)
    P.produce_kafka_python(broker.bootstrap_server, topic_name, keys)
    df = P.read_back(broker.bootstrap_server, topic_name, len(keys))
    keyed = df.filter(df["key"].is_not_null())
    truth = [int((keyed["partition"] == p).sum()) for p in range(N)]
    # kafka-python's rule holds for every keyed record, so the real counts are the predicted ones
    assert truth == np.bincount([partition_for(k, N) for k in keys if k is not None], minlength=N).tolist()

    def pipeline(fmt: str, *extra: str) -> dict:
        out = subprocess.run([kcat, "-C", "-b", broker.bootstrap_server, "-t", topic_name, "-e", "-q", "-f", fmt],
                             capture_output=True, timeout=120, check=True).stdout  # fmt: skip
        r = subprocess.run([sys.executable, "-m", "keyscope", "partition", "-p", str(N), "--summary",
                            "--partitioner", "java", "--format", "json", *extra],
                           input=out, capture_output=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)["by_partitioner"]["murmur2"]

    kept = pipeline("%K:%k\n", "--stdin-format", "kcat")
    assert kept["records_per_partition"] == truth
    assert kept["unhashed"] == 200
    lost = pipeline("%k\n")
    empty_p = partition_for(b"", N)
    assert lost["records_per_partition"][empty_p] == truth[empty_p] + 200  # the defect, shown
