"""Secured clusters: SASL (PLAIN, SCRAM-SHA-512, OAUTHBEARER), TLS (PEM, PKCS12, mutual), SASL_SSL, ACLs.

One real Apache Kafka node of our own (tests/secured) with a listener per
protocol; keyscope is configured through ``--command-config client.properties``
exactly as Kafka's own tools take it.  Every failure must be named (one line,
the documented exit code) within ``--timeout``, and no secret may reach the
terminal.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from click.testing import CliRunner

from keyscope.cli import cli

from .conftest import create_topic
from .secured import LISTENERS, PASSWORD, add_scram_users, allow_alice, make_certs, server_properties

PLAIN_JAAS = 'org.apache.kafka.common.security.plain.PlainLoginModule required username="{u}" password="{p}";'
SCRAM_JAAS = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="{u}" password="{p}";'
OAUTH_JAAS = 'org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="{u}";'


class Secure:
    def __init__(self, cluster, certs, tmp: Path):
        self.cluster, self.certs, self.tmp = cluster, certs, tmp
        self.plain = cluster.bootstrap_server
        self.sasl = cluster.listener_bootstrap("SASL")
        self.ssl = cluster.listener_bootstrap("SSL")
        self.sasl_ssl = cluster.listener_bootstrap("SASLSSL")
        self.n = 0

    def props(self, text: str | bytes) -> str:
        self.n += 1
        p = self.tmp / f"client-{self.n}.properties"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(p)

    def ssl_lines(self, trust: str | None = None, client: bool = True) -> str:
        c = self.certs
        out = f"ssl.truststore.location={trust or c.ca_pem}\nssl.truststore.type=PEM\n"
        if client:
            out += f"ssl.keystore.location={c.client_pem}\nssl.keystore.type=PEM\n"
        return out + "ssl.endpoint.identification.algorithm=https\n"


@pytest.fixture(scope="module")
def secure(tmp_path_factory):
    from .kafka import KafkaCluster

    tmp = tmp_path_factory.mktemp("secured")
    certs = make_certs(tmp / "certs")
    with KafkaCluster(1, listeners=LISTENERS, properties=server_properties(certs)) as cluster:
        add_scram_users(cluster.bootstrap_server)
        allow_alice(cluster.bootstrap_server, "ok-")
        _seed(cluster.bootstrap_server)
        yield Secure(cluster, certs, tmp)


def _seed(bootstrap: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType)

    for name in ("ok-t", "secret-t", "ro-t"):
        create_topic(bootstrap, name, 3)
    p = Producer({"bootstrap.servers": bootstrap})
    for name in ("ok-t", "secret-t", "ro-t"):
        for i in range(300):
            p.produce(name, key=f"k{i % 20}".encode(), value=b"v")
    p.flush()
    import time

    from confluent_kafka import KafkaException

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ok-g", "enable.auto.commit": False})
    for attempt in range(100):  # a fresh broker answers COORDINATOR_LOAD_IN_PROGRESS for a while
        try:
            c.commit(offsets=[TopicPartition("ok-t", i, 10) for i in range(3)], asynchronous=False)
            break
        except KafkaException as e:
            if not e.args[0].retriable() or attempt == 99:
                raise
            time.sleep(0.2)
    c.close()
    # ro-t: alice may see it (DESCRIBE) but not read it (no READ)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    acl = AclBinding(ResourceType.TOPIC, "ro-t", ResourcePatternType.LITERAL, "User:alice", "*",
                     AclOperation.DESCRIBE, AclPermissionType.ALLOW)
    for f in admin.create_acls([acl]).values():
        f.result(timeout=30)


def ks(*args):
    """keyscope in-process; an uncaught exception (a traceback) fails the test."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def one_line_error(r, code: int, *needles: str) -> str:
    err = r.stderr.strip()
    assert r.exit_code == code, (r.exit_code, err, r.stdout)
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("keyscope: error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]
    return lines[0]


def sample_args(bootstrap, config, topic="ok-t", out=None, timeout=20):
    return ["sample", "-b", bootstrap, "--command-config", config, "-t", topic, "-o", out, "--force",
            "--timeout", timeout, "-q"]


# --------------------------------------------------------------------------- end to end

CASES = {
    "sasl-plain": ("sasl", "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\nsasl.jaas.config=" + PLAIN_JAAS),
    "sasl-scram-sha-512": ("sasl", "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\n"
                                   "sasl.jaas.config=" + SCRAM_JAAS),
    "sasl-oauthbearer-unsecured": ("sasl", "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n"
                                           "sasl.jaas.config=" + OAUTH_JAAS),
    "ssl-pem": ("ssl", "security.protocol=SSL\n{ssl}"),
    "ssl-pkcs12": ("ssl", "security.protocol=SSL\nssl.truststore.location={c.ca_p12}\nssl.truststore.type=PKCS12\n"
                          "ssl.truststore.password={pw}\nssl.keystore.location={c.client_p12}\n"
                          "ssl.keystore.type=PKCS12\nssl.keystore.password={pw}\nssl.key.password={pw}\n"),
    "ssl-librdkafka-keys": ("ssl", "security.protocol=ssl\nssl.ca.location={c.ca_pem}\n"
                                   "ssl.certificate.location={c.client_cert}\nssl.key.location={c.client_key}\n"),
    "sasl-ssl-scram": ("sasl_ssl", "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n"
                                   "sasl.jaas.config=" + SCRAM_JAAS + "\n{ssl_noclient}"),
    "sasl-ssl-plain-pkcs12-trust": ("sasl_ssl", "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n"
                                               "sasl.jaas.config=" + PLAIN_JAAS + "\nssl.truststore.location={c.ca_p12}\n"
                                               "ssl.truststore.type=PKCS12\nssl.truststore.password={pw}\n"),
}


def render_case(secure, name, user="alice", password="alice-secret"):
    listener, text = CASES[name]
    text = (text.replace("{u}", user).replace("{p}", password)
            .replace("{ssl}", secure.ssl_lines()).replace("{ssl_noclient}", secure.ssl_lines(client=False)))
    return getattr(secure, listener), secure.props(text.format(c=secure.certs, pw=PASSWORD))


@pytest.mark.parametrize("case", list(CASES))
def test_sample_and_lag_through_client_properties(secure, case, tmp_path):
    bootstrap, config = render_case(secure, case)
    out = tmp_path / "s.parquet"
    r = ks(*sample_args(bootstrap, config, out=out))
    assert r.exit_code == 0, r.stderr
    from keyscope.sample import read_sample

    s = read_sample(out)
    assert len(s) == 300 and s.meta.topic == "ok-t"
    assert "alice-secret" not in json.dumps(s.meta_dict())  # the sample's metadata keeps no secret
    r = ks("lag", "-b", bootstrap, "--command-config", config, "-g", "ok-g", "--format", "json", "--timeout", 20)
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    parts = doc["topics"][0]["partitions"]
    assert sum(p["lag"] for p in parts) == 300 - 30


def test_acl_denied_topic_is_one_line_exit_4(secure, tmp_path):
    _, config = render_case(secure, "sasl-scram-sha-512")
    r = ks(*sample_args(secure.sasl, config, topic="secret-t", out=tmp_path / "s.parquet"))
    one_line_error(r, 4, "not authorized", "secret-t", "TOPIC_AUTHORIZATION_FAILED")
    assert not (tmp_path / "s.parquet").exists()


def test_acl_read_denied_topic_is_one_line_exit_4(secure, tmp_path):
    _, config = render_case(secure, "sasl-plain")
    r = ks(*sample_args(secure.sasl, config, topic="ro-t", out=tmp_path / "s.parquet"))
    one_line_error(r, 4, "not authorized", "READ")


def test_lag_acl_denied_group_is_one_line_exit_4(secure):
    _, config = render_case(secure, "sasl-plain")
    r = ks("lag", "-b", secure.sasl, "--command-config", config, "-g", "secret-g", "--timeout", 10)
    one_line_error(r, 4, "GroupAuthorization")


# --------------------------------------------------------------------------- causes, named within --timeout


def test_tls_against_plaintext_listener_named(secure, tmp_path):
    config = secure.props("security.protocol=SSL\n" + secure.ssl_lines())
    r = ks(*sample_args(secure.plain, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 4, "does not speak TLS")


def test_lag_tls_against_plaintext_listener_named(secure):
    config = secure.props("security.protocol=SSL\n" + secure.ssl_lines())
    r = ks("lag", "-b", secure.plain, "--command-config", config, "-g", "ok-g", "--timeout", 8)
    one_line_error(r, 4, "does not speak TLS")


def test_plaintext_against_tls_listener_named(secure, tmp_path):
    config = secure.props("client.id=oncall\n")
    r = ks(*sample_args(secure.ssl, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 4, "answered with TLS", "security.protocol=SSL")


def test_sasl_against_non_sasl_listener_named(secure, tmp_path):
    _, config = render_case(secure, "sasl-plain")
    r = ks(*sample_args(secure.plain, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 4, "does not use SASL")


def test_plaintext_against_sasl_listener_named(secure, tmp_path):
    config = secure.props("client.id=oncall\n")
    r = ks(*sample_args(secure.sasl, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 4, "requires SASL")


@pytest.mark.parametrize("case", ["sasl-plain", "sasl-scram-sha-512", "sasl-ssl-scram"])
def test_wrong_password_is_authentication_failed(secure, case, tmp_path):
    bootstrap, config = render_case(secure, case, password="not-the-password")
    r = ks(*sample_args(bootstrap, config, out=tmp_path / "s.parquet", timeout=8))
    line = one_line_error(r, 4, "authentication failed", "alice")
    assert "not-the-password" not in r.stderr and "not-the-password" not in line


def test_mechanism_refused_names_what_the_listener_offers(secure, tmp_path):
    config = secure.props("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\nsasl.jaas.config="
                          + SCRAM_JAAS.format(u="alice", p="alice-secret"))
    r = ks(*sample_args(secure.sasl, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 4, "refuses SASL mechanism SCRAM-SHA-256", "PLAIN", "SCRAM-SHA-512")


def test_missing_truststore_file_named(secure, tmp_path):
    config = secure.props("security.protocol=SSL\n" + secure.ssl_lines(trust=str(tmp_path / "nope.pem")))
    r = ks(*sample_args(secure.ssl, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 2, "ssl.truststore.location", "nope.pem", "not found")


def test_untrusted_broker_certificate_named(secure, tmp_path):
    config = secure.props("security.protocol=SSL\n" + secure.ssl_lines(trust=str(secure.certs.other_ca_pem)))
    r = ks(*sample_args(secure.ssl, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 4, "TLS handshake", "failed", "not signed by a CA")


def test_missing_client_certificate_named(secure, tmp_path):
    config = secure.props("security.protocol=SSL\n" + secure.ssl_lines(client=False))
    r = ks(*sample_args(secure.ssl, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 4, "client certificate", "ssl.keystore.location")


@pytest.mark.parametrize("server", ["silent-socket", "tansu"])
def test_tls_against_silent_port_ends_within_timeout(tmp_path, secure, server, request):
    """A port that never answers a TLS ClientHello: a socket nobody accepts on, and Tansu's plaintext
    listener (it waits for the rest of a frame that size would announce).  It used to hang forever."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)  # never accepted: the kernel completes the TCP handshake, nobody answers
        address = f"127.0.0.1:{srv.getsockname()[1]}"
        if server == "tansu":
            address = request.getfixturevalue("tansu").bootstrap_server
        config = secure.props("security.protocol=SSL\n" + secure.ssl_lines())
        for cmd in (sample_args(address, config, out=tmp_path / "s.parquet", timeout=3),
                    ["lag", "-b", address, "--command-config", config, "-g", "g", "--timeout", "3"]):
            try:
                r = subprocess.run([sys.executable, "-m", "keyscope", *map(str, cmd)], capture_output=True,
                                   text=True, timeout=90)
            except subprocess.TimeoutExpired:
                pytest.fail(f"keyscope {cmd[0]} hung on a port that never answers TLS")
            assert r.returncode == 4, r.stderr
            assert "no answer" in r.stderr and "does not speak TLS" in r.stderr, r.stderr
            assert "Traceback" not in r.stderr


def test_connect_timeout_not_capped_at_30s(secure, monkeypatch, tmp_path):
    """The sampler hands its whole --timeout to connecting (it used to cap it at 30 s)."""
    from keyscope.kafka import client as kafka_io

    seen = []
    real = kafka_io.open_consumer

    def spy(conn, timeout_s=10.0, **kw):
        seen.append(timeout_s)
        return real(conn, timeout_s, **kw)

    monkeypatch.setattr(kafka_io, "open_consumer", spy)
    _, config = render_case(secure, "sasl-scram-sha-512")
    r = ks(*sample_args(secure.sasl, config, out=tmp_path / "s.parquet", timeout=45))
    assert r.exit_code == 0, r.stderr
    assert seen and seen[0] >= 44, seen


# --------------------------------------------------------------------------- --debug


@pytest.mark.parametrize("flag", ["--debug", "-v"])
def test_debug_shows_connection_steps_with_secrets_masked(secure, flag, tmp_path):
    config = secure.props("security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nsasl.jaas.config="
                          + PLAIN_JAAS.format(u="alice", p="alice-secret") + "\n" + secure.ssl_lines(client=False))
    r = ks(*sample_args(secure.sasl_ssl, config, out=tmp_path / "s.parquet"), flag)
    assert r.exit_code == 0, r.stderr
    err = r.stderr
    for step in ("TCP connected", "TLS ok", "SaslHandshake PLAIN", "SASL PLAIN authenticated as 'alice'",
                 "Metadata ok", "kafka-python:"):
        assert step in err, (step, err)
    assert "alice-secret" not in err and "***" in err
    assert base64.b64encode(b"\0alice\0alice-secret").decode() not in err
    r = ks("lag", "-b", secure.sasl_ssl, "--command-config", config, "-g", "ok-g", flag, "--timeout", 20)
    assert r.exit_code == 0 and "SASL PLAIN authenticated" in r.stderr and "alice-secret" not in r.stderr


def test_debug_names_the_failing_step(secure, tmp_path):
    bootstrap, config = render_case(secure, "sasl-scram-sha-512", password="wrong-one")
    r = ks(*sample_args(bootstrap, config, out=tmp_path / "s.parquet", timeout=8), "--debug")
    assert r.exit_code == 4
    assert "SaslAuthenticate SCRAM-SHA-512 as 'alice'" in r.stderr and "wrong-one" not in r.stderr


# --------------------------------------------------------------------------- OAUTHBEARER with a token endpoint


def _unsigned_jwt(sub: str) -> str:
    import time

    def b64(d):
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")

    now = int(time.time())
    return f"{b64({'alg': 'none'})}.{b64({'sub': sub, 'iat': now, 'exp': now + 600})}."


@pytest.fixture
def token_endpoint():
    """An OAuth 2 token endpoint (client credentials grant) handing out tokens Kafka's unsecured validator takes."""
    seen = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            seen.append((self.headers.get("Authorization"), body))
            ok = self.headers.get("Authorization") == "Basic " + base64.b64encode(b"keyscope-app:app-secret").decode()
            doc = {"access_token": _unsigned_jwt("alice"), "token_type": "Bearer", "expires_in": 600} if ok else {}
            data = json.dumps(doc).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/token", seen
    srv.shutdown()
    srv.server_close()


def _oauth_props(url, secret):
    return ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n"
            f"sasl.oauthbearer.token.endpoint.url={url}\n"
            "sasl.login.callback.handler.class=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler\n"
            "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
            f'clientId="keyscope-app" clientSecret="{secret}" scope="kafka";\n')


def test_oauthbearer_client_credentials_token_endpoint(secure, token_endpoint, tmp_path):
    url, seen = token_endpoint
    config = secure.props(_oauth_props(url, "app-secret"))
    r = ks(*sample_args(secure.sasl, config, out=tmp_path / "s.parquet"))
    assert r.exit_code == 0, r.stderr
    assert seen and "grant_type=client_credentials" in seen[0][1] and "scope=kafka" in seen[0][1]
    assert "ignoring" not in r.stderr  # sasl.login.callback.handler.class is understood


def test_oauthbearer_token_endpoint_refusal_named(secure, token_endpoint, tmp_path):
    url, _ = token_endpoint
    config = secure.props(_oauth_props(url, "wrong-secret"))
    r = ks(*sample_args(secure.sasl, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 4, "token endpoint", "HTTP 401")
    assert "wrong-secret" not in r.stderr


# --------------------------------------------------------------------------- AWS MSK IAM, JKS

MSK = ("security.protocol=SASL_SSL\nsasl.mechanism=AWS_MSK_IAM\n"
       'sasl.jaas.config=software.amazon.msk.auth.iam.IAMLoginModule required awsProfileName="oncall";\n'
       "sasl.client.callback.handler.class=software.amazon.msk.auth.iam.IAMClientCallbackHandler\n")


def test_msk_iam_configuration_parsed():
    from keyscope.kafka.connection import resolve

    f = Path(__file__).parent  # any readable dir for tmp: use -X overrides instead of a file
    assert f
    conn = resolve("b-1.msk:9098", None, [line for line in MSK.splitlines()])
    assert conn.protocol == "SASL_SSL" and conn.mechanism == "AWS_MSK_IAM"
    assert conn.sasl == {"awsProfileName": "oncall"}
    assert conn.ignored == [] and conn.ignored_lines == []


def test_msk_iam_without_botocore_is_a_clear_error(secure, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "botocore", None)  # as if the package were not installed
    config = secure.props(MSK + f"ssl.truststore.location={secure.certs.ca_pem}\n")
    r = ks(*sample_args(secure.sasl_ssl, config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 2, "AWS_MSK_IAM", "botocore", "pip install")


@pytest.mark.parametrize("text,needle", [
    ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=AWS_MSK_IAM\n", "needs security.protocol=SASL_SSL"),
    ("security.protocol=SASL_SSL\nsasl.mechanism=AWS_MSK_IAM\nsasl.jaas.config=software.amazon.msk.auth.iam."
     'IAMLoginModule required awsRoleArn="arn:aws:iam::1:role/x";\n', "awsRoleArn"),
])
def test_msk_iam_settings_refused_with_exit_2(secure, tmp_path, text, needle):
    r = ks(*sample_args(secure.plain, secure.props(text), out=tmp_path / "s.parquet", timeout=5))
    one_line_error(r, 2, needle)


def test_jks_truststore_refused_naming_keytool_then_converted_store_works(secure, tmp_path):
    import shlex

    jks = tmp_path / "trust.jks"
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", str(secure.certs.ca_pem),
                    "-keystore", str(jks), "-storetype", "JKS", "-storepass", PASSWORD],
                   check=True, capture_output=True)
    base = ("security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config="
            + SCRAM_JAAS.format(u="alice", p="alice-secret") + "\n")
    config = secure.props(base + f"ssl.truststore.location={jks}\nssl.truststore.type=JKS\n"
                                 f"ssl.truststore.password={PASSWORD}\n")
    r = ks(*sample_args(secure.sasl_ssl, config, out=tmp_path / "s.parquet", timeout=8))
    line = one_line_error(r, 2, "JKS", "keytool -importkeystore", "PKCS12")
    # Run the conversion the message names, then use its result as it says.
    cmd = line.split("'")[1]
    assert cmd.startswith("keytool -importkeystore")
    subprocess.run(shlex.split(cmd) + ["-srcstorepass", PASSWORD, "-deststorepass", PASSWORD, "-noprompt"],
                   check=True, capture_output=True, cwd=tmp_path)
    p12 = tmp_path / "trust.p12"
    assert p12.exists()
    config = secure.props(base + f"ssl.truststore.location={p12}\nssl.truststore.type=PKCS12\n"
                                 f"ssl.truststore.password={PASSWORD}\n")
    r = ks(*sample_args(secure.sasl_ssl, config, out=tmp_path / "s.parquet"))
    assert r.exit_code == 0, r.stderr


def test_pkcs12_wrong_password_named(secure, tmp_path):
    config = secure.props(f"security.protocol=SSL\nssl.truststore.location={secure.certs.ca_p12}\n"
                          "ssl.truststore.type=PKCS12\nssl.truststore.password=nope\n")
    r = ks(*sample_args(secure.ssl, config, out=tmp_path / "s.parquet", timeout=5))
    one_line_error(r, 2, "PKCS12", "ssl.truststore.password")


# --------------------------------------------------------------------------- client.properties (issue 12 section 2)


def test_line_without_equals_is_never_echoed(secure, tmp_path):
    config = secure.props("client.id=oncall\nhunter2-my-password\n")
    r = ks(*sample_args(secure.plain, config, out=tmp_path / "s.parquet"))
    assert r.exit_code == 0, r.stderr
    assert "hunter2" not in r.stderr and "hunter2" not in r.stdout
    assert "line(s) 2" in r.stderr


def test_unknown_line_with_space_is_never_echoed(secure, tmp_path):
    config = secure.props("client.id=oncall\nS3cr3t correct horse battery\nfetch.min.bytes=1\n")
    r = ks(*sample_args(secure.plain, config, out=tmp_path / "s.parquet"))
    assert r.exit_code == 0, r.stderr
    for word in ("S3cr3t", "horse", "battery"):
        assert word not in r.stderr
    assert "fetch.min.bytes" in r.stderr  # a real property name may be named, never its value
    assert "line(s) 2" in r.stderr


def test_x_override_without_equals_is_never_echoed(secure, tmp_path):
    r = ks("sample", "-b", secure.plain, "-X", "hunter2-pass", "-t", "ok-t", "-o", tmp_path / "s.parquet")
    one_line_error(r, 2, "key=value")
    assert "hunter2" not in r.stderr


@pytest.mark.parametrize("prop,value", [("security.protocol", "SASL_SSLL"), ("security.protocol", "TLS"),
                                        ("sasl.mechanism", "SCRAM-SHA-1")])
def test_unknown_protocol_or_mechanism_refused_exit_2(secure, tmp_path, prop, value):
    text = f"{prop}={value}\n"
    if prop == "sasl.mechanism":
        text = "security.protocol=SASL_PLAINTEXT\n" + text + "sasl.jaas.config=" + PLAIN_JAAS.format(u="a", p="b")
    r = ks(*sample_args(secure.plain, secure.props(text), out=tmp_path / "s.parquet", timeout=5))
    one_line_error(r, 2, prop, value)
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.parametrize("text,needle", [
    ("security.protocol=SASL_PLAINTEXT\n", "needs sasl.mechanism"),
    ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n"
     "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"alice\";\n",
     "needs a username and password"),
    ("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=OAUTHBEARER\n"
     "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;\n",
     "OAUTHBEARER needs"),
])
def test_incomplete_sasl_settings_refused_exit_2(secure, tmp_path, text, needle):
    r = ks(*sample_args(secure.sasl, secure.props(text), out=tmp_path / "s.parquet", timeout=5))
    one_line_error(r, 2, needle)


def test_non_utf8_properties_one_line_error(secure, tmp_path):
    config = secure.props(b"client.id=caf\xe9\nsasl.password=p\xe4ss\n")
    r = ks(*sample_args(secure.plain, config, out=tmp_path / "s.parquet", timeout=5))
    line = one_line_error(r, 2, "not UTF-8", "line 1")
    assert "p\xe4ss" not in line


def test_sasl_settings_with_plaintext_protocol_get_a_note(secure, tmp_path):
    config = secure.props("sasl.mechanism=PLAIN\nsasl.jaas.config=" + PLAIN_JAAS.format(u="alice", p="alice-secret"))
    r = ks(*sample_args(secure.plain, config, out=tmp_path / "s.parquet"))
    assert r.exit_code == 0, r.stderr
    assert "not used with security.protocol=PLAINTEXT" in r.stderr and "alice-secret" not in r.stderr


# --------------------------------------------------------------------------- host names, several bootstrap servers


def test_certificate_for_another_host_named_and_check_can_be_turned_off(secure, tmp_path):
    """127.1 reaches 127.0.0.1 but is not a name the broker's certificate holds."""
    port = secure.ssl.rsplit(":", 1)[1]
    config = secure.props("security.protocol=SSL\n" + secure.ssl_lines())
    r = ks(*sample_args(f"127.1:{port}", config, out=tmp_path / "s.parquet", timeout=8))
    one_line_error(r, 4, "does not name 127.1", "ssl.endpoint.identification.algorithm")
    config = secure.props("security.protocol=SSL\n" + secure.ssl_lines().replace("algorithm=https", "algorithm="))
    r = ks(*sample_args(f"127.1:{port}", config, out=tmp_path / "s.parquet"))
    assert r.exit_code == 0, r.stderr


def test_first_bootstrap_server_down_the_next_one_is_used(secure, tmp_path):
    _, config = render_case(secure, "sasl-scram-sha-512")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    r = ks(*sample_args(f"{dead},{secure.sasl}", config, out=tmp_path / "s.parquet"))
    assert r.exit_code == 0, r.stderr
