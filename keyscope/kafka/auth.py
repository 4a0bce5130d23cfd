"""From a Connection to what kafka-python needs to authenticate: SSLContext, SASL mechanism, OAuth tokens.

Why a module: the consumer, the admin client and the connection probe must
authenticate the same way, and each failure (a missing file, a package that
is not installed) must be named before the first byte goes out.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import threading
import time

from .connection import Connection
from ..errors import KafkaError, UsageError


def client_config(conn: Connection) -> dict:
    """kafka-python keyword arguments for ``conn`` (built once per Connection)."""
    cached = getattr(conn, "_client_config", None)
    if cached is not None:
        return dict(cached)
    cfg = dict(conn.kwargs)
    protocol = conn.protocol
    if protocol in ("SSL", "SASL_SSL"):
        from .tls import build_context

        cfg["ssl_context"] = build_context(conn.tls)
    mech = conn.mechanism if protocol.startswith("SASL_") else None
    if mech == "OAUTHBEARER":
        cfg["sasl_oauth_token_provider"] = oauth_provider(conn)
    elif mech == "AWS_MSK_IAM":
        if not _have("botocore"):
            raise UsageError(
                "sasl.mechanism=AWS_MSK_IAM needs the botocore package: pip install 'keyscope[aws]' "
                "(or pip install botocore)"
            )
        if conn.sasl.get("awsProfileName"):
            os.environ["AWS_PROFILE"] = conn.sasl["awsProfileName"]  # what botocore's default session reads
    elif mech == "GSSAPI":
        if not _have("gssapi"):
            raise UsageError("sasl.mechanism=GSSAPI needs the gssapi package (pip install gssapi) and a Kerberos ticket")
    object.__setattr__(conn, "_client_config", cfg)
    return dict(cfg)


def _have(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def oauth_provider(conn: Connection):
    """A kafka-python token provider for the OAUTHBEARER settings in ``conn.sasl``."""
    from kafka.net.sasl.oauth import AbstractTokenProvider

    s = conn.sasl
    extensions = {k[len("extension_"):]: v for k, v in s.items() if k.startswith("extension_")}

    class Provider(AbstractTokenProvider):
        def __init__(self, make):
            self._make = make
            self._token, self._expires = None, 0.0
            self._lock = threading.Lock()

        def token(self):
            with self._lock:
                if self._token is None or time.time() > self._expires - 30:
                    self._token, self._expires = self._make()
                return self._token

        def extensions(self):
            return extensions

    url = s.get("sasl.oauthbearer.token.endpoint.url")
    if url:
        return Provider(lambda: fetch_token(url, s["clientId"], s["clientSecret"], s.get("scope"), conn))
    return Provider(lambda: unsecured_token(s))


def _b64(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def unsecured_token(s: dict) -> tuple[str, float]:
    """An unsigned JWS (alg none), as Kafka's OAuthBearerLoginModule makes from unsecuredLoginStringClaim_sub.

    Only brokers with the unsecured validator (test clusters) accept it.
    """
    now = time.time()
    try:
        life = int(s.get("unsecuredLoginLifetimeSeconds", "3600"))
    except ValueError:
        raise UsageError("unsecuredLoginLifetimeSeconds in sasl.jaas.config must be an integer") from None
    claims = {s.get("unsecuredLoginPrincipalClaimName", "sub"): s["unsecuredLoginStringClaim_sub"],
              "iat": int(now), "exp": int(now + life)}
    return f"{_b64({'alg': 'none'})}.{_b64(claims)}.", now + life


def fetch_token(url: str, client_id: str, secret: str, scope: str | None, conn: Connection) -> tuple[str, float]:
    """OAuth 2 client credentials grant, as Kafka's OAuthBearerLoginCallbackHandler does it (HTTP Basic)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    body = {"grant_type": "client_credentials"}
    if scope:
        body["scope"] = scope
    basic = base64.b64encode(
        f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(secret, safe='')}".encode()
    ).decode()
    req = urllib.request.Request(
        url, data=urllib.parse.urlencode(body).encode(), method="POST",
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded",
                 "Accept": "application/json"},
    )
    conn.log(f"oauth: requesting a token from {url} for client {client_id!r}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            doc = json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        raise KafkaError(f"OAuth token endpoint {url} refused client {client_id!r}: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise KafkaError(f"OAuth token endpoint {url} failed: {reason}") from None
    token = doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise KafkaError(f"OAuth token endpoint {url} answered without an access_token")
    try:
        life = float(doc.get("expires_in", 3600))
    except (TypeError, ValueError):
        life = 3600.0
    conn.log(f"oauth: got a token valid for {life:g}s")
    return token, time.time() + life
