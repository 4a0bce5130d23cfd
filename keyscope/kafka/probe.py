"""One careful connection to a bootstrap server before kafka-python's own, to name what is wrong.

Why: kafka-python retries every failure until its bootstrap timeout and then
says only "Unable to bootstrap"; its TLS handshake has no timeout at all, so a
port that never answers TLS hangs the command.  This probe walks the steps a
client takes (TCP, TLS, ApiVersions, SaslHandshake, SaslAuthenticate, Metadata)
on a blocking socket bounded by the caller's deadline, logs each step for
``--debug``, and turns a failure into one sentence with its cause: the SSL
handshake failed and why, the port speaks TLS or does not, the broker refuses
the mechanism (and which it offers), authentication failed, the listener wants
SASL or does not use it.  Transient failures (connection refused, no route)
are retried until the deadline, as a client would.

It sends nothing but those requests: no group, no commit, no topic.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

from .connection import Connection
from ..errors import KafkaError, UsageError

API_METADATA, API_SASL_HANDSHAKE, API_API_VERSIONS, API_SASL_AUTHENTICATE = 3, 17, 18, 36
ERR_UNSUPPORTED_SASL_MECHANISM, ERR_ILLEGAL_SASL_STATE, ERR_SASL_AUTHENTICATION_FAILED = 33, 34, 58


class Definitive(Exception):
    """A failure that retrying cannot fix (wrong protocol, credentials, certificate)."""


class Transient(Exception):
    """A failure worth retrying until the deadline (refused, unreachable)."""


@dataclass
class ProbeResult:
    server: str
    tls: str | None = None  # "TLSv1.3 TLS_AES_256_GCM_SHA384"
    mechanisms: list[str] | None = None  # what the broker offers on this listener
    brokers: list[tuple[int, str, int]] = field(default_factory=list)  # advertised (id, host, port)
    cluster_id: str | None = None


def _servers(bootstrap: str) -> list[tuple[str, int]]:
    out = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"bootstrap server {item!r} must read HOST:PORT")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise UsageError("no bootstrap server given")
    return out


def probe(conn: Connection, cfg: dict, deadline: float, timeout_s: float | None = None) -> ProbeResult:
    """Connect once to a bootstrap server (retrying transient failures until ``deadline``), or raise KafkaError."""
    servers = _servers(conn.bootstrap_servers)
    first_definitive: Exception | None = None
    last_transient = "no answer"
    attempt = 0
    while True:
        definitive_all = True
        for host, port in servers:
            if time.monotonic() >= deadline:
                break
            try:
                return _attempt(host, port, conn, cfg, deadline)
            except Definitive as e:
                conn.log(f"{host}:{port}: {e}")
                first_definitive = first_definitive or e
            except Transient as e:
                conn.log(f"{host}:{port}: {e}")
                definitive_all = False
                last_transient = str(e)
        if first_definitive is not None and definitive_all:
            raise KafkaError(str(first_definitive))
        attempt += 1
        pause = min(1.0, 0.1 * 2 ** attempt)
        if time.monotonic() + pause >= deadline:
            if first_definitive is not None:
                raise KafkaError(str(first_definitive))
            raise KafkaError(
                f"cannot reach a Kafka broker at {conn.bootstrap_servers} within "
                + (f"{timeout_s:g}s" if timeout_s is not None else "the timeout") + f" ({last_transient}): "
                "check the address and port, and --command-config for TLS/SASL"
            )
        time.sleep(pause)


class _Wire:
    """Kafka requests on a blocking socket, each read bounded by the deadline."""

    def __init__(self, sock, server: str, deadline: float):
        self.sock, self.server, self.deadline = sock, server, deadline
        self.correlation = 0

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        return left

    def call(self, api_key: int, version: int, body: bytes) -> bytes:
        self.correlation += 1
        client = b"keyscope"
        header = struct.pack(">hhih", api_key, version, self.correlation, len(client)) + client
        frame = header + body
        self.sock.settimeout(self._left())
        self.sock.sendall(struct.pack(">i", len(frame)) + frame)
        head = self._read(4)
        (size,) = struct.unpack(">i", head)
        if size < 4 or size > 16 << 20:
            raise ValueError(f"bad frame size {size} (first bytes {head.hex()})")
        data = self._read(size)
        (corr,) = struct.unpack(">i", data[:4])
        if corr != self.correlation:
            raise ValueError("answer to another request")
        return data[4:]

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self.sock.settimeout(self._left())
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError(out)
            out += chunk
        return out


class _Reader:
    """Big-endian reads from one response (the probe's answers and the scan's lean client's)."""

    __slots__ = ("d", "i")

    def __init__(self, data):
        self.d, self.i = data, 0

    def int8(self) -> int:
        v = self.d[self.i]
        self.i += 1
        return v

    def int16(self) -> int:
        (v,) = struct.unpack_from(">h", self.d, self.i)
        self.i += 2
        return v

    def int32(self) -> int:
        (v,) = struct.unpack_from(">i", self.d, self.i)
        self.i += 4
        return v

    def int64(self) -> int:
        (v,) = struct.unpack_from(">q", self.d, self.i)
        self.i += 8
        return v

    def string(self) -> str | None:
        n = self.int16()
        if n < 0:
            return None
        v = bytes(self.d[self.i:self.i + n]).decode("utf-8", "replace")
        self.i += n
        return v

    def bytes_(self) -> bytes | None:
        n = self.int32()
        if n < 0:
            return None
        v = bytes(self.d[self.i:self.i + n])
        self.i += n
        return v


def _string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _tls_hint(e: ssl.SSLError, host: str) -> str:
    text = getattr(e, "verify_message", None) or e.reason or str(e)
    low = str(text).lower() + " " + str(e).lower()
    if "mismatch" in low:
        return (f"the broker's certificate does not name {host}: connect by a name it holds, or set "
                "ssl.endpoint.identification.algorithm= (empty) to skip the host name check")
    if "local issuer" in low or "self-signed" in low or "self signed" in low or "unknown ca" in low:
        return ("the broker's certificate is not signed by a CA in ssl.truststore.location "
                "(or the system's CAs when none is given)")
    if "expired" in low:
        return "the broker's certificate has expired"
    if "certificate required" in low or "certificate_required" in low:
        return "the broker requires a client certificate: set ssl.keystore.location"
    if "wrong_version_number" in low or "wrong version number" in low or "record layer failure" in low:
        return "the port does not speak TLS: is it a PLAINTEXT or SASL_PLAINTEXT listener?"
    if "bad certificate" in low or "bad_certificate" in low:
        return ("the broker refused the client certificate or requires one: set ssl.keystore.location "
                "to a certificate signed by a CA the broker trusts")
    return "check ssl.truststore.location, ssl.keystore.location and the listener's security.protocol"


def _attempt(host: str, port: int, conn: Connection, cfg: dict, deadline: float) -> ProbeResult:
    server = f"{host}:{port}"
    protocol = conn.protocol
    res = ProbeResult(server)
    left = deadline - time.monotonic()
    conn.log(f"{server}: TCP connect (timeout {left:.1f}s)")
    try:
        sock = socket.create_connection((host, port), timeout=max(0.01, left))
    except socket.gaierror as e:
        raise Definitive(f"cannot resolve host {host!r}: {e.strerror or e}") from None
    except socket.timeout:
        raise Transient(f"TCP connect to {server} timed out") from None
    except OSError as e:
        raise Transient(f"TCP connect to {server}: {e.strerror or e}") from None
    try:
        conn.log(f"{server}: TCP connected")
        if protocol in ("SSL", "SASL_SSL"):
            sock = _tls(sock, host, server, cfg["ssl_context"], deadline, conn, res)
        wire = _Wire(sock, server, deadline)
        tls = protocol in ("SSL", "SASL_SSL")
        try:
            versions = _api_versions(wire, server, tls, conn)
            if protocol.startswith("SASL_"):
                _sasl(wire, host, server, conn, cfg, versions, res)
            _metadata(wire, server, protocol, versions, conn, res)
        except ssl.SSLError as e:  # TLS 1.3: a refused client certificate shows at the first read
            raise Definitive(f"TLS with {server} failed ({e.reason or e}): {_tls_hint(e, host)}") from None
        return res
    finally:
        try:
            sock.close()
        except OSError:
            pass


def _tls(sock, host, server, ctx, deadline, conn, res):
    conn.log(f"{server}: TLS handshake (host name check {'on' if ctx.check_hostname else 'off'})")
    try:
        ssock = ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        ssock.settimeout(max(0.01, deadline - time.monotonic()))
        ssock.do_handshake()
    except ssl.SSLCertVerificationError as e:
        raise Definitive(f"TLS handshake with {server} failed: {e.verify_message}: {_tls_hint(e, host)}") from None
    except socket.timeout:
        raise Definitive(
            f"TLS handshake with {server} got no answer within the timeout: the port does not speak TLS "
            "(a PLAINTEXT or SASL_PLAINTEXT listener?); check security.protocol"
        ) from None
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError):
        raise Definitive(
            f"{server} closed the connection during the TLS handshake: the port does not speak TLS "
            "(a PLAINTEXT or SASL_PLAINTEXT listener?); check security.protocol"
        ) from None
    except ssl.SSLError as e:
        raise Definitive(f"TLS handshake with {server} failed ({e.reason or e}): {_tls_hint(e, host)}") from None
    except OSError as e:
        raise Transient(f"TLS handshake with {server}: {e.strerror or e}") from None
    cipher = ssock.cipher()
    res.tls = f"{ssock.version()} {cipher[0] if cipher else ''}".strip()
    peer = ssock.getpeercert() or {}
    subject = ", ".join("=".join(x) for rdn in peer.get("subject", ()) for x in rdn)
    issuer = ", ".join("=".join(x) for rdn in peer.get("issuer", ()) for x in rdn)
    conn.log(f"{server}: TLS ok: {res.tls}; broker certificate {subject or '?'} issued by {issuer or '?'}")
    return ssock


def _not_tls_answer(server: str) -> Definitive:
    return Definitive(
        f"{server} answered with TLS: the listener needs security.protocol=SSL (or SASL_SSL) "
        "and ssl.truststore.location"
    )


def _api_versions(wire: _Wire, server: str, tls: bool, conn: Connection) -> dict[int, tuple[int, int]]:
    conn.log(f"{server}: ApiVersions")
    try:
        data = wire.call(API_API_VERSIONS, 0, b"")
    except socket.timeout:
        raise Definitive(f"{server} did not answer ApiVersions within the timeout: is it a Kafka port?") from None
    except (EOFError, ConnectionResetError, BrokenPipeError) as e:
        got = e.args[0] if isinstance(e, EOFError) and e.args else b""
        if not tls and (got[:1] == b"\x15" or not got):
            raise _not_tls_answer(server) from None
        raise Definitive(f"{server} closed the connection on ApiVersions") from None
    except ValueError as e:
        if "first bytes 15" in str(e):
            raise _not_tls_answer(server) from None
        raise Definitive(f"{server} answered ApiVersions with something that is not Kafka ({e})") from None
    r = _Reader(data)
    err = r.int16()
    versions = {}
    for _ in range(max(0, r.int32())):
        k, lo, hi = r.int16(), r.int16(), r.int16()
        versions[k] = (lo, hi)
    if err and not versions:
        raise Definitive(f"{server} refused ApiVersions (error {err})")
    conn.log(f"{server}: ApiVersions ok ({len(versions)} APIs)")
    return versions


def _pick(versions, api: int, want: tuple[int, ...]) -> int | None:
    lo, hi = versions.get(api, (0, -1))
    for v in want:
        if lo <= v <= hi:
            return v
    return None


def _sasl(wire, host, server, conn: Connection, cfg: dict, versions, res: ProbeResult) -> None:
    from kafka.net.sasl import get_sasl_mechanism

    mech = conn.mechanism
    conn.log(f"{server}: SaslHandshake {mech}")
    try:
        data = wire.call(API_SASL_HANDSHAKE, 1, _string(mech))
    except socket.timeout:
        raise Definitive(f"{server} did not answer SaslHandshake within the timeout") from None
    except (EOFError, ConnectionResetError, BrokenPipeError, ValueError):
        raise Definitive(
            f"{server} closed the connection on SaslHandshake: the listener does not use SASL "
            f"(security.protocol={conn.protocol}); try PLAINTEXT or SSL"
        ) from None
    r = _Reader(data)
    err = r.int16()
    offered = [r.string() or "" for _ in range(max(0, r.int32()))]
    res.mechanisms = offered
    if err == ERR_UNSUPPORTED_SASL_MECHANISM and mech in offered:
        raise Definitive(
            f"{server} refuses SASL mechanism {mech} (UNSUPPORTED_SASL_MECHANISM) although it lists it: "
            "SASL is probably not set up on this listener; check security.protocol"
        )
    if err == ERR_UNSUPPORTED_SASL_MECHANISM:
        raise Definitive(
            f"{server} refuses SASL mechanism {mech}: this listener offers {', '.join(offered) or 'none'} "
            "(set sasl.mechanism)"
        )
    if err == ERR_ILLEGAL_SASL_STATE:
        raise Definitive(
            f"{server} does not use SASL on this listener (ILLEGAL_SASL_STATE): security.protocol={conn.protocol} "
            "does not match it; try PLAINTEXT or SSL"
        )
    if err:
        raise Definitive(f"{server} refused SaslHandshake {mech} ({_error_name(err)})")
    conn.log(f"{server}: SASL mechanisms offered: {', '.join(offered)}")
    version = _pick(versions, API_SASL_AUTHENTICATE, (1, 0))
    if version is None:
        raise Definitive(f"{server} does not offer SaslAuthenticate v0/v1")
    options = dict(cfg)
    options.setdefault("sasl_kerberos_service_name", "kafka")
    options.setdefault("sasl_kerberos_name", None)
    options.setdefault("sasl_kerberos_domain_name", None)
    try:
        mechanism = get_sasl_mechanism(mech)(host=host, **options)
    except KafkaError:
        raise
    except Exception as e:  # a package or setting the mechanism needs
        raise UsageError(f"sasl.mechanism={mech}: {_one_line(e)}") from None
    who = f" as {conn.kwargs['sasl_plain_username']!r}" if conn.kwargs.get("sasl_plain_username") else ""
    conn.log(f"{server}: SaslAuthenticate {mech}{who}")
    rounds = 0
    while not mechanism.is_done():
        rounds += 1
        if rounds > 10:
            raise Definitive(f"{server}: SASL {mech} did not finish in 10 rounds")
        try:
            token = mechanism.auth_bytes()
        except KafkaError:
            raise
        except Exception as e:
            raise UsageError(f"sasl.mechanism={mech}: cannot make a token: {_one_line(e)}") from None
        try:
            data = wire.call(API_SASL_AUTHENTICATE, version, struct.pack(">i", len(token)) + token)
        except socket.timeout:
            raise Definitive(f"{server} did not answer SaslAuthenticate within the timeout") from None
        except (EOFError, ConnectionResetError, BrokenPipeError, ValueError):
            raise Definitive(f"{server} closed the connection during SASL {mech} authentication{who}") from None
        r = _Reader(data)
        err = r.int16()
        message = r.string()
        answer = r.bytes_() or b""
        if err:
            detail = f": {message}" if message else ""
            if err == ERR_SASL_AUTHENTICATION_FAILED:
                raise Definitive(f"authentication failed{who} with SASL {mech} at {server}{detail}")
            raise Definitive(f"SASL {mech} at {server} failed ({_error_name(err)}){detail}")
        try:
            mechanism.receive(answer)
        except Exception as e:
            raise Definitive(f"authentication failed{who} with SASL {mech} at {server}: {_one_line(e)}") from None
    if not mechanism.is_authenticated():
        raise Definitive(f"authentication failed{who} with SASL {mech} at {server}")
    conn.log(f"{server}: SASL {mech} authenticated{who}")


def _metadata(wire, server, protocol, versions, conn: Connection, res: ProbeResult) -> None:
    version = _pick(versions, API_METADATA, (4, 5, 6, 7, 8))
    if version is None:
        conn.log(f"{server}: no Metadata version between 4 and 8 offered; leaving it to the client")
        return
    conn.log(f"{server}: Metadata v{version} (brokers only)")
    body = struct.pack(">i", 0) + b"\x00"  # no topics, no auto-creation
    if version >= 8:
        body += b"\x00\x00"  # include_cluster/topic_authorized_operations = false
    try:
        data = wire.call(API_METADATA, version, body)
    except socket.timeout:
        raise Definitive(f"{server} did not answer Metadata within the timeout") from None
    except (EOFError, ConnectionResetError, BrokenPipeError):
        if not protocol.startswith("SASL_"):
            raise Definitive(
                f"{server} closed the connection after ApiVersions: the listener requires SASL "
                "(security.protocol=SASL_PLAINTEXT or SASL_SSL, with sasl.mechanism and sasl.jaas.config)"
            ) from None
        raise Definitive(f"{server} closed the connection on Metadata") from None
    except ValueError as e:
        conn.log(f"{server}: Metadata answer not understood ({e}); leaving it to the client")
        return
    try:
        r = _Reader(data)
        r.int32()  # throttle
        for _ in range(max(0, r.int32())):
            node, host, port, _rack = r.int32(), r.string(), r.int32(), r.string()
            res.brokers.append((node, host or "", port))
        res.cluster_id = r.string()
    except (struct.error, UnicodeDecodeError):
        conn.log(f"{server}: Metadata answer not understood; leaving it to the client")
        return
    shown = ", ".join(f"{n}@{h}:{p}" for n, h, p in res.brokers)
    conn.log(f"{server}: Metadata ok: cluster {res.cluster_id or '?'}, brokers {shown or 'none'}")


def _error_name(code: int) -> str:
    try:
        import kafka.errors as Errors

        return Errors.for_code(code).__name__
    except Exception:
        return f"error {code}"


def _one_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
