"""`keyscope sample` reads with keyscope's own Kafka client unless SASL is configured (keyscope/sampling/leanio.py).

On a real broker over TCP: a cold ``keyscope sample`` imports neither kafka-python nor pandas (each
cost a cold 5M-record sample 0.3-0.4 s, docs/benchmarks.md "sample5"), and the two clients read the same
records into the same file.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from confluent_kafka import Producer

from keyscope.kafka.connection import resolve
from keyscope.sampling import SampleSpec, leanio, parse_field, sample_to_file
from keyscope.sampling.fetch import _kafka_io

from .conftest import create_topic

pytestmark = pytest.mark.tansu


def _fill(bootstrap: str, topic: str, n: int) -> None:
    create_topic(bootstrap, topic, 3)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"})
    for i in range(n):
        key = None if i % 97 == 0 else (b"" if i % 89 == 0 else b"user-%d" % (i % 211))
        while True:
            try:
                p.produce(topic, key=key, value=json.dumps({"tenant": f"t{i % 5}", "i": i}).encode())
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0


# Runs `keyscope sample` as the console script does and says which heavy packages it imported.
_PROBE = """
import sys
from keyscope.cli import cli
try:
    cli.main(sys.argv[1:], prog_name="keyscope")
except SystemExit as e:
    code = e.code
print(repr(code), "kafka" in sys.modules, "pandas" in sys.modules, file=sys.stderr)
"""


def test_a_plaintext_sample_imports_neither_kafka_python_nor_pandas(broker, topic_name, tmp_path):
    _fill(broker.bootstrap_server, topic_name, 5000)
    out = tmp_path / "s.parquet"
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, "sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out),
         "--from", "earliest", "--max-records", "5000", "--field", "tenant=$.tenant", "-q", "--timeout", "30"],
        capture_output=True, text=True, timeout=120,
    )
    last = r.stderr.strip().splitlines()[-1]
    assert last == "0 False False", r.stderr
    assert pq.read_metadata(out).num_rows == 5000


def test_the_client_is_chosen_by_the_security_protocol():
    from keyscope.kafka import client

    assert _kafka_io(resolve("127.0.0.1:9092")) is leanio
    assert _kafka_io(resolve("127.0.0.1:9092", overrides=["security.protocol=SSL"])) is leanio
    sasl = resolve("127.0.0.1:9092", overrides=["security.protocol=SASL_PLAINTEXT", "sasl.mechanism=PLAIN",
                                                "sasl.username=u", "sasl.password=p"])
    assert _kafka_io(sasl) is client
    # the lean client sends client id "keyscope": a configured one goes through kafka-python, which sends it
    assert _kafka_io(resolve("127.0.0.1:9092", overrides=["client.id=oncall"])) is client
    assert _kafka_io(resolve("127.0.0.1:9092", overrides=["client.id=keyscope"])) is leanio


def test_both_clients_read_the_same_file(broker, topic_name, tmp_path, monkeypatch):
    _fill(broker.bootstrap_server, topic_name, 6000)
    spec = dict(topic=topic_name, start="earliest", max_records=6000, timeout_s=30,
                fields=[parse_field("tenant=$.tenant")])
    lean_path, kp_path = tmp_path / "lean.parquet", tmp_path / "kafka-python.parquet"
    a = sample_to_file(resolve(broker.bootstrap_server), SampleSpec(**spec), lean_path)
    monkeypatch.setattr(leanio, "use_lean", lambda conn: False)
    b = sample_to_file(resolve(broker.bootstrap_server), SampleSpec(**spec), kp_path)
    assert len(a) == len(b) == 6000
    ta, tb = pq.read_table(lean_path), pq.read_table(kp_path)
    key = ["partition", "offset"]
    assert ta.sort_by([(k, "ascending") for k in key]).equals(tb.sort_by([(k, "ascending") for k in key]))
    sa, sb = a.summary(), b.summary()
    assert sa == sb
