"""One SSLContext from the ``ssl.*`` properties, as Kafka's Java client reads them.

Why keyscope builds it instead of kafka-python: kafka-python reads PEM files
only, while Kafka users hold PKCS12 stores (and JKS, which Python cannot
read: refused with the keytool command that converts it).  Every problem
with a file is named here, before any connection, as a UsageError (exit 2).
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

from ..errors import UsageError

JKS_MAGIC = b"\xfe\xed\xfe\xed"
JCEKS_MAGIC = b"\xce\xce\xce\xce"


def _read(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{key} {path}: file not found") from None
    except IsADirectoryError:
        raise UsageError(f"{key} {path}: is a directory, not a file") from None
    except OSError as e:
        raise UsageError(f"{key} {path}: cannot read it ({e.strerror or e})") from None


def store_type(key: str, path: str, data: bytes, declared: str | None) -> str:
    """PEM or PKCS12, from the bytes (the declared type only breaks ties); JKS/JCEKS refused."""
    if data[:4] in (JKS_MAGIC, JCEKS_MAGIC):
        kind = "JKS" if data[:4] == JKS_MAGIC else "JCEKS"
        store = "truststore" if "truststore" in key else "keystore"
        raise UsageError(
            f"{key} {path} is a {kind} store, which keyscope cannot read: convert it with "
            f"'keytool -importkeystore -srckeystore {path} -srcstoretype {kind} -destkeystore {Path(path).stem}.p12 "
            f"-deststoretype PKCS12' and set ssl.{store}.location to the .p12 file and ssl.{store}.type=PKCS12"
        )
    if b"-----BEGIN" in data:
        return "PEM"
    if data[:1] == b"\x30":  # DER SEQUENCE: a PKCS12 file
        return "PKCS12"
    want = (declared or "").strip().upper()
    if want in ("JKS", "JCEKS"):
        raise UsageError(f"{key} {path}: ssl.*.type {want} is not supported: convert the store to PKCS12 with keytool")
    raise UsageError(f"{key} {path} is neither a PEM file nor a PKCS12 store")


def _pkcs12(key: str, path: str, data: bytes, password: str | None):
    try:
        from cryptography.hazmat.primitives.serialization import pkcs12
    except ImportError:  # pragma: no cover - a dependency
        raise UsageError(f"{key} {path}: reading PKCS12 stores needs the cryptography package") from None
    try:
        return pkcs12.load_pkcs12(data, password.encode() if password else None)
    except ValueError:
        what = "ssl.truststore.password" if "truststore" in key else "ssl.keystore.password"
        raise UsageError(f"{key} {path}: cannot open the PKCS12 store (wrong or missing {what}?)") from None


def _pem_certs(certs) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding

    return "".join(c.public_bytes(Encoding.PEM).decode() for c in certs)


def build_context(tls: dict[str, str]) -> ssl.SSLContext:
    """The client SSLContext for SSL and SASL_SSL: trust, client certificate, hostname check."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # Java's default is "https": the broker's certificate must name the host; empty turns that off.
    ctx.check_hostname = bool(tls.get("ssl.endpoint.identification.algorithm", "https").strip())
    _load_trust(ctx, tls)
    _load_identity(ctx, tls)
    return ctx


def _load_trust(ctx: ssl.SSLContext, tls: dict[str, str]) -> None:
    inline = tls.get("ssl.truststore.certificates")
    key = "ssl.truststore.location" if tls.get("ssl.truststore.location") else "ssl.ca.location"
    path = tls.get(key)
    if inline:
        try:
            ctx.load_verify_locations(cadata=inline.replace("\\n", "\n"))
        except ssl.SSLError as e:
            raise UsageError(f"ssl.truststore.certificates holds no usable PEM certificate ({e.reason or e})") from None
        return
    if not path:
        ctx.load_default_certs()
        return
    data = _read(key, path)
    kind = store_type(key, path, data, tls.get("ssl.truststore.type"))
    if kind == "PEM":
        try:
            ctx.load_verify_locations(cafile=path)
        except ssl.SSLError as e:
            raise UsageError(f"{key} {path} holds no usable PEM certificate ({e.reason or e})") from None
        return
    store = _pkcs12(key, path, data, tls.get("ssl.truststore.password"))
    certs = [c.certificate for c in store.additional_certs]
    if store.cert is not None:
        certs.insert(0, store.cert.certificate)
    if not certs:
        raise UsageError(f"{key} {path}: the PKCS12 store holds no certificate")
    ctx.load_verify_locations(cadata=_pem_certs(certs))


def _load_identity(ctx: ssl.SSLContext, tls: dict[str, str]) -> None:
    """The client certificate (mutual TLS), from a keystore or from PEM certificate and key files."""
    chain, key_pem = tls.get("ssl.keystore.certificate.chain"), tls.get("ssl.keystore.key")
    key_password = tls.get("ssl.key.password") or tls.get("ssl.keystore.password") or None
    if chain and key_pem:
        _load_pem_pair(ctx, "ssl.keystore.key",
                       (key_pem.replace("\\n", "\n") + "\n" + chain.replace("\\n", "\n")).encode(), key_password)
        return
    key = "ssl.keystore.location" if tls.get("ssl.keystore.location") else "ssl.certificate.location"
    path = tls.get(key)
    if not path:
        return
    data = _read(key, path)
    kind = store_type(key, path, data, tls.get("ssl.keystore.type"))
    if kind == "PEM":
        keyfile = tls.get("ssl.key.location")
        if keyfile:
            _read("ssl.key.location", keyfile)
        try:
            ctx.load_cert_chain(certfile=path, keyfile=keyfile or None, password=key_password)
        except ssl.SSLError as e:
            raise UsageError(
                f"{key} {path}: cannot load the client certificate and key ({e.reason or e}); "
                "PEM keystores hold the private key and the certificate, or give ssl.key.location"
            ) from None
        return
    from cryptography.hazmat.primitives import serialization as ser

    store = _pkcs12(key, path, data, tls.get("ssl.keystore.password"))
    if store.key is None or store.cert is None:
        raise UsageError(f"{key} {path}: the PKCS12 keystore holds no private key with its certificate")
    pem = store.key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    pem += _pem_certs([store.cert.certificate] + [c.certificate for c in store.additional_certs]).encode()
    _load_pem_pair(ctx, key, pem, None)


def _load_pem_pair(ctx: ssl.SSLContext, key: str, pem: bytes, password: str | None) -> None:
    """load_cert_chain reads files only: a private temporary file, removed at once."""
    fd, tmp = tempfile.mkstemp(prefix="keyscope-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.close(fd)
        fd = -1
        ctx.load_cert_chain(certfile=tmp, password=password)
    except ssl.SSLError as e:
        raise UsageError(f"{key}: cannot load the client certificate and key ({e.reason or e})") from None
    finally:
        if fd >= 0:
            os.close(fd)
        os.unlink(tmp)


def pem_material(tls: dict[str, str]) -> tuple[str | None, str | None, str | None]:
    """(trusted certificates, client certificate chain, client private key) as PEM text, from the same
    ``ssl.*`` properties :func:`build_context` reads, for a client that takes PEM inline (Spark's
    executors, which do not see the driver's files).  The key comes out unencrypted PKCS#8, the one form
    Java's PEM keystore reads without a password; None where the properties give nothing (Java's defaults)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization as ser

    trust: str | None = None
    inline = tls.get("ssl.truststore.certificates")
    tkey = "ssl.truststore.location" if tls.get("ssl.truststore.location") else "ssl.ca.location"
    if inline:
        trust = inline.replace("\\n", "\n")
    elif tls.get(tkey):
        path = tls[tkey]
        data = _read(tkey, path)
        if store_type(tkey, path, data, tls.get("ssl.truststore.type")) == "PEM":
            try:
                trust = _pem_certs(x509.load_pem_x509_certificates(data))
            except ValueError:
                raise UsageError(f"{tkey} {path} holds no usable PEM certificate") from None
        else:
            store = _pkcs12(tkey, path, data, tls.get("ssl.truststore.password"))
            certs = ([store.cert.certificate] if store.cert is not None else []) + [
                c.certificate for c in store.additional_certs]
            if not certs:
                raise UsageError(f"{tkey} {path}: the PKCS12 store holds no certificate")
            trust = _pem_certs(certs)
    password = tls.get("ssl.key.password") or tls.get("ssl.keystore.password") or None
    chain, key = tls.get("ssl.keystore.certificate.chain"), tls.get("ssl.keystore.key")
    ikey = "ssl.keystore.key"
    if chain and key:
        cert_pem, key_pem = chain.replace("\\n", "\n").encode(), key.replace("\\n", "\n").encode()
    else:
        ikey = "ssl.keystore.location" if tls.get("ssl.keystore.location") else "ssl.certificate.location"
        path = tls.get(ikey)
        if not path:
            return trust, None, None
        data = _read(ikey, path)
        if store_type(ikey, path, data, tls.get("ssl.keystore.type")) == "PKCS12":
            store = _pkcs12(ikey, path, data, tls.get("ssl.keystore.password"))
            if store.key is None or store.cert is None:
                raise UsageError(f"{ikey} {path}: the PKCS12 keystore holds no private key with its certificate")
            pkcs8 = store.key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()).decode()
            return trust, _pem_certs([store.cert.certificate] + [c.certificate for c in store.additional_certs]), pkcs8
        cert_pem = data
        key_pem = _read("ssl.key.location", tls["ssl.key.location"]) if tls.get("ssl.key.location") else data
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
        pk = ser.load_pem_private_key(key_pem, password.encode() if password else None)
    except (ValueError, TypeError):
        raise UsageError(f"{ikey}: cannot load the client certificate and key (PEM, with ssl.key.password if "
                         "the key is encrypted)") from None
    pkcs8 = pk.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()).decode()
    return trust, _pem_certs(certs), pkcs8
