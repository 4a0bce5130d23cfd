"""A real Kafka with SASL, TLS and ACLs, for tests/test_security.py (certificates made here, per run).

One node, listeners: PLAINTEXT (admin, ANONYMOUS is a super user), SASL (SASL_PLAINTEXT: PLAIN,
SCRAM-SHA-512, OAUTHBEARER with Kafka's unsecured validator), SSL (client certificate required)
and SASLSSL (SASL_SSL: PLAIN, SCRAM-SHA-512).  StandardAuthorizer: ``alice`` may read topics and
groups named ``ok-*`` and nothing else.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "store-pass"
USERS = {"admin": "admin-secret", "alice": "alice-secret"}
CLIENT_CN = "keyscope-client"


@dataclass
class Certs:
    dir: Path
    ca_pem: Path  # CA certificate (PEM truststore)
    ca_p12: Path  # CA certificate in a PKCS12 truststore (password PASSWORD)
    broker_p12: Path  # broker key + chain (PKCS12, password PASSWORD)
    client_pem: Path  # client key (unencrypted PKCS8) + certificate in one PEM file
    client_cert: Path
    client_key: Path
    client_p12: Path  # client key + chain (PKCS12, password PASSWORD)
    other_ca_pem: Path  # a CA that signed nothing the broker shows


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str):
    from cryptography.x509.oid import NameOID
    from cryptography import x509

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject_key, cn, issuer_key=None, issuer_cn=None, ca=False, san=True):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = _dt.datetime.now(_dt.timezone.utc)
    b = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer_cn or cn))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(hours=1))
        .not_valid_after(now + _dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if san:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key or subject_key, hashes.SHA256())


def make_certs(d: Path) -> Certs:
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.serialization import pkcs12

    d.mkdir(parents=True, exist_ok=True)
    pem = ser.Encoding.PEM
    ca_key = _key()
    ca = _cert(ca_key, "keyscope-test-ca", ca=True, san=False)
    broker_key = _key()
    broker = _cert(broker_key, "localhost", ca_key, "keyscope-test-ca")
    client_key = _key()
    client = _cert(client_key, CLIENT_CN, ca_key, "keyscope-test-ca", san=False)
    other_key = _key()
    other = _cert(other_key, "some-other-ca", ca=True, san=False)
    enc = ser.BestAvailableEncryption(PASSWORD.encode())
    c = Certs(d, d / "ca.pem", d / "ca.p12", d / "broker.p12", d / "client.pem", d / "client.crt",
              d / "client.key", d / "client.p12", d / "other-ca.pem")
    c.ca_pem.write_bytes(ca.public_bytes(pem))
    c.other_ca_pem.write_bytes(other.public_bytes(pem))
    c.ca_p12.write_bytes(pkcs12.serialize_java_truststore([pkcs12.PKCS12Certificate(ca, b"ca")], enc))
    c.broker_p12.write_bytes(pkcs12.serialize_key_and_certificates(b"broker", broker_key, broker, [ca], enc))
    c.client_p12.write_bytes(pkcs12.serialize_key_and_certificates(b"client", client_key, client, [ca], enc))
    key_pem = client_key.private_bytes(pem, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    c.client_key.write_bytes(key_pem)
    c.client_cert.write_bytes(client.public_bytes(pem))
    c.client_pem.write_bytes(key_pem + client.public_bytes(pem))
    return c


def server_properties(certs: Certs) -> dict[str, str]:
    plain = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        'username="admin" password="admin-secret" '
        + " ".join(f'user_{u}="{p}"' for u, p in USERS.items()) + ";"
    )
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    oauth = 'org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required unsecuredLoginStringClaim_sub="admin";'
    props = {
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:ANONYMOUS;User:admin;User:CN={CLIENT_CN}",
        "allow.everyone.if.no.acl.found": "false",
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(certs.broker_p12),
        "ssl.keystore.password": PASSWORD,
        "ssl.key.password": PASSWORD,
        "listener.name.ssl.ssl.client.auth": "required",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(certs.ca_pem),
        "listener.name.sasl.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512,OAUTHBEARER",
        "listener.name.saslssl.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
        "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512,OAUTHBEARER",
    }
    for listener in ("sasl", "saslssl"):
        props[f"listener.name.{listener}.plain.sasl.jaas.config"] = plain
        props[f"listener.name.{listener}.scram-sha-512.sasl.jaas.config"] = scram
    props["listener.name.sasl.oauthbearer.sasl.jaas.config"] = oauth
    return props


LISTENERS = {"SASL": "SASL_PLAINTEXT", "SSL": "SSL", "SASLSSL": "SASL_SSL"}


def add_scram_users(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, UserScramCredentialUpsertion, ScramCredentialInfo, ScramMechanism

    admin = AdminClient({"bootstrap.servers": bootstrap})
    ups = [
        UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), p.encode())
        for u, p in USERS.items()
    ]
    for f in admin.alter_user_scram_credentials(ups).values():
        f.result(timeout=30)


def allow_alice(bootstrap: str, prefix: str = "ok-") -> None:
    """alice may describe/read topics and groups starting with ``prefix``; nothing else."""
    from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                       ResourcePatternType, ResourceType)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    acls = [
        AclBinding(rt, prefix, ResourcePatternType.PREFIXED, "User:alice", "*", op, AclPermissionType.ALLOW)
        for rt in (ResourceType.TOPIC, ResourceType.GROUP)
        for op in (AclOperation.READ, AclOperation.DESCRIBE)
    ]
    for f in admin.create_acls(acls).values():
        f.result(timeout=30)
