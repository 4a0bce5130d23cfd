"""``keyscope scan --spark`` through the TLS and SASL listeners of a real Apache Kafka node (tests/secured).

The connection (``--command-config`` client.properties) reaches Spark's Kafka source as Java client
properties: ``kafka.security.protocol``, PEM trust and client key inline, ``kafka.sasl.jaas.config``
with the mechanism's login module.  Every case of tests/test_security.py (PEM, PKCS12 and librdkafka-style
TLS with a client certificate, SASL PLAIN/SCRAM/OAUTHBEARER, SASL_SSL) must give the profile
``--workers 1`` gives, counter for counter; a wrong password is one line, exit 4, nothing written, and no
secret reaches the terminal.  One Spark session (``local[2]``) for the module: the CLI finds it active.
"""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from keyscope.scan import read_profile

from .conftest import create_topic
from .test_scan_spark import _exact, spark  # noqa: F401  (spark: the module's session)
from .test_security import CASES, PASSWORD, one_line_error, render_case, ks, secure  # noqa: F401  (secure: fixture)

RECORDS = 6_000


@pytest.fixture(scope="module")
def topic(secure):  # noqa: F811
    """ok-*: alice may read it.  A Zipf-ish tail of keys, null and empty keys, 4 partitions."""
    from confluent_kafka import Producer

    name = f"ok-spark-{uuid.uuid4().hex[:8]}"
    create_topic(secure.plain, name, 4)
    p = Producer({"bootstrap.servers": secure.plain, "linger.ms": 20})
    for i in range(RECORDS):
        key = None if i % 97 == 0 else b"" if i % 101 == 0 else b"hot" if i % 7 == 0 else b"k%d" % (i * i % 1_500)
        p.produce(name, key=key, value=b"v" * (i % 40))
    assert p.flush(60) == 0
    return name


def _secrets_absent(text: str) -> None:
    for s in ("alice-secret", "admin-secret", PASSWORD, "PRIVATE KEY"):
        assert s not in text, s


@pytest.mark.parametrize("case", list(CASES))
def test_spark_through_tls_and_sasl_gives_the_profile_of_workers_1(spark, secure, topic, case, tmp_path):  # noqa: F811
    bootstrap, config = render_case(secure, case)
    profiles = {}
    for engine in (["--workers", "1"], ["--spark", "local[2]"]):
        out = tmp_path / f"{engine[0][2:]}.json"
        r = ks("scan", "-b", bootstrap, "--command-config", config, "-t", topic, "-o", out, "-q", "--tasks", 6,
               "--key-by", "key", *engine)
        assert r.exit_code == 0, r.stderr[-3000:]
        _secrets_absent(r.stderr + r.stdout)
        profiles[engine[0]] = read_profile(out)
    base, viaspark = profiles["--workers"], profiles["--spark"]
    assert base.records == RECORDS and base.complete and viaspark.complete
    assert viaspark.tasks_planned >= 6  # Spark's own split, the 4 partitions into more tasks
    assert _exact(viaspark) == _exact(base)
    assert viaspark.loads("key", "murmur2", 12) == base.loads("key", "murmur2", 12)
    assert not spark.sparkContext._jsc.sc().isStopped()  # the CLI used the module's session and left it running


def test_spark_with_a_wrong_password_is_one_line_exit_4(spark, secure, topic, tmp_path):  # noqa: F811
    bootstrap, config = render_case(secure, "sasl-scram-sha-512", password="wrong-pass-123")
    out = tmp_path / "p.json"
    r = ks("scan", "-b", bootstrap, "--command-config", config, "-t", topic, "-o", out, "-q", "--spark", "local[2]")
    one_line_error(r, 4, "authentication failed")
    assert "wrong-pass-123" not in r.stderr + r.stdout
    assert not out.exists()


def test_spark_reader_refused_by_the_broker_fails_in_one_masked_line(spark, secure, topic, monkeypatch):  # noqa: F811
    """The broker refusing Spark's own reader (the driver's check passed, the executors' login fails, as a
    credential rotated between the two would): SparkError, exit 4, one line, the password masked."""
    from keyscope.kafka.connection import resolve
    from keyscope.scan import ScanRequest
    from keyscope.scan import spark as spark_engine

    _, good = render_case(secure, "sasl-plain")
    _, bad = render_case(secure, "sasl-plain", password="wrong-pass-456")
    good_conn, bad_conn = resolve(secure.sasl, good), resolve(secure.sasl, bad)
    real = spark_engine._kafka_options  # the ranges through the good login, Spark's reader through the bad one
    monkeypatch.setattr(spark_engine, "_kafka_options", lambda conn, isolation: real(bad_conn, isolation))
    with pytest.raises(spark_engine.SparkError) as e:
        spark_engine.run_spark(good_conn, ScanRequest(topic), spark)
    msg = str(e.value)
    assert e.value.exit_code == 4 and "\n" not in msg and msg.startswith("the Spark job failed")
    assert "SaslAuthenticationException" in msg and "Invalid username or password" in msg, msg  # the Kafka cause
    assert "wrong-pass-456" not in msg and "alice-secret" not in msg, msg


@pytest.mark.parametrize("props, says", [
    ("security.protocol=SASL_SSL\nsasl.mechanism=AWS_MSK_IAM\n"
     "sasl.jaas.config=software.amazon.msk.auth.iam.IAMLoginModule required;\n", "AWS_MSK_IAM"),
    ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=GSSAPI\nsasl.kerberos.service.name=kafka\n", "GSSAPI"),
    ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n"
     "sasl.oauthbearer.token.endpoint.url=https://idp.example/token\nsasl.jaas.config=org.apache.kafka.common."
     'security.oauthbearer.OAuthBearerLoginModule required clientId="c" clientSecret="s3cr3t";\n',
     "sasl.oauthbearer.token.endpoint.url"),
])
def test_spark_with_settings_it_cannot_map_is_one_line_exit_2_before_any_broker(props, says, tmp_path):
    cfg = tmp_path / "client.properties"
    cfg.write_text(props)
    r = subprocess.run([sys.executable, "-m", "keyscope", "scan", "-b", "127.0.0.1:1", "--command-config", str(cfg),
                        "-t", "x", "-o", str(tmp_path / "p.json"), "--spark", "local[1]", "-q"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "--workers" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert "s3cr3t" not in r.stderr
    assert not (tmp_path / "p.json").exists()


def test_spark_options_carry_the_connection_and_no_file_path(secure):  # noqa: F811
    """What Spark is handed for mutual TLS over PKCS12 and SASL_SSL: PEM inline (the executors need none of
    the driver's files), the endpoint check kept, SCRAM's login module with the password quoted for JAAS."""
    from keyscope.kafka.connection import resolve
    from keyscope.scan.spark import _kafka_options

    _, config = render_case(secure, "ssl-pkcs12")
    o = _kafka_options(resolve(secure.ssl, config), "read_committed")
    assert o["kafka.security.protocol"] == "SSL" and o["kafka.ssl.endpoint.identification.algorithm"] == "https"
    assert o["kafka.ssl.truststore.type"] == o["kafka.ssl.keystore.type"] == "PEM"
    assert o["kafka.ssl.truststore.certificates"].count("BEGIN CERTIFICATE") == 1
    assert o["kafka.ssl.keystore.key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert str(secure.certs.dir) not in "".join(o.values())
    _, config = render_case(secure, "sasl-ssl-scram", password='pa\\"ss\\\\word')  # JAAS-escaped in the file
    o = _kafka_options(resolve(secure.sasl_ssl, config), "read_committed")
    assert o["kafka.security.protocol"] == "SASL_SSL" and o["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert "kafka.ssl.keystore.key" not in o
    assert o["kafka.sasl.jaas.config"] == ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                                           'username="alice" password="pa\\"ss\\\\word";')


def test_spark_with_the_endpoint_check_turned_off(spark, secure, topic, tmp_path):  # noqa: F811
    """``ssl.endpoint.identification.algorithm=`` (empty: no host name check) reaches Java's client as the
    empty value it takes for off (Java's own default is https, as keyscope's), and the scan reads."""
    from keyscope.kafka.connection import resolve
    from keyscope.scan.spark import _kafka_options

    config = secure.props("security.protocol=SSL\n" + secure.ssl_lines().replace("algorithm=https", "algorithm="))
    assert _kafka_options(resolve(secure.ssl, config), "read_committed")[
        "kafka.ssl.endpoint.identification.algorithm"] == ""
    out = tmp_path / "p.json"
    r = ks("scan", "-b", secure.ssl, "--command-config", config, "-t", topic, "-o", out, "-q", "--spark", "local[2]")
    assert r.exit_code == 0, r.stderr[-3000:]
    assert read_profile(out).records == RECORDS
