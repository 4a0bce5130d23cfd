"""Connection settings: properties files, -X overrides, environment, secrets kept out of sight."""

from __future__ import annotations

import pytest

from keyscope.kafka.connection import read_properties, resolve
from keyscope.errors import UsageError


def test_properties_file_with_sasl_jaas_and_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("KEYSCOPE_BOOTSTRAP_SERVER", raising=False)
    f = tmp_path / "client.properties"
    f.write_text(
        "# comment\n"
        "bootstrap.servers=b1:9092,b2:9092\n"
        "security.protocol = sasl_ssl\n"
        "sasl.mechanism: SCRAM-SHA-512\n"
        'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n'
        '    username="svc" password="s3cr3t";\n'
        "ssl.truststore.location=/etc/ca.pem\n"
        "acks=all\n"
        "fetch.min.bytes=1\n"
    )
    conn = resolve(None, str(f), ["client.id=oncall"])
    assert conn.bootstrap_servers == "b1:9092,b2:9092"
    assert conn.kwargs["security_protocol"] == "SASL_SSL"
    assert conn.kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert conn.kwargs["sasl_plain_username"] == "svc"
    assert conn.kwargs["sasl_plain_password"] == "s3cr3t"
    assert conn.tls["ssl.truststore.location"] == "/etc/ca.pem"  # read by keyscope.kafka.tls (PEM or PKCS12)
    assert conn.kwargs["client_id"] == "oncall"
    assert conn.ignored == ["fetch.min.bytes"]  # acks is a known producer key: ignored quietly
    shown = repr(conn.describe())
    assert "s3cr3t" not in shown and "***" in shown


def test_flag_beats_file_and_env_is_the_fallback(tmp_path, monkeypatch):
    f = tmp_path / "c.properties"
    f.write_text("bootstrap.servers=fromfile:1\n")
    monkeypatch.setenv("KEYSCOPE_BOOTSTRAP_SERVER", "fromenv:2")
    assert resolve("flag:3", str(f)).bootstrap_servers == "flag:3"
    assert resolve(None, str(f)).bootstrap_servers == "fromfile:1"
    assert resolve(None, None).bootstrap_servers == "fromenv:2"


def test_errors_are_usage_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("KEYSCOPE_BOOTSTRAP_SERVER", raising=False)
    with pytest.raises(UsageError, match="no bootstrap server"):
        resolve(None, None)
    with pytest.raises(UsageError, match="key=value"):
        resolve("b:1", None, ["novalue"])
    with pytest.raises(UsageError, match="cannot read --command-config"):
        resolve("b:1", str(tmp_path / "missing.properties"))


def test_read_properties_colon_and_space_separators(tmp_path):
    f = tmp_path / "p"
    f.write_text("a=1\nb: 2\nc 3\n! bang comment\n")
    assert read_properties(f) == {"a": "1", "b": "2", "c": "3"}
