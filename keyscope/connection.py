"""How to reach a cluster: the same settings Kafka's CLI tools and kcat take.

Accepts Java-style ``client.properties`` (``--command-config``), kcat-style
``-X key=value`` overrides and ``KEYSCOPE_BOOTSTRAP_SERVER``, and maps them to
kafka-python keyword arguments.  Secrets are kept only in the kwargs handed to
the client: :meth:`Connection.describe` is what may be shown or stored.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

ENV_BOOTSTRAP = "KEYSCOPE_BOOTSTRAP_SERVER"

# Java / librdkafka property -> kafka-python keyword.
_DIRECT = {
    "bootstrap.servers": "bootstrap_servers",
    "metadata.broker.list": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "client.id": "client_id",
    "ssl.ca.location": "ssl_cafile",
    "ssl.truststore.location": "ssl_cafile",  # PEM truststores only (kafka-python reads PEM)
    "ssl.certificate.location": "ssl_certfile",
    "ssl.keystore.location": "ssl_certfile",  # PEM keystores only
    "ssl.key.location": "ssl_keyfile",
    "ssl.key.password": "ssl_password",
    "ssl.keystore.password": "ssl_password",
    "request.timeout.ms": "request_timeout_ms",
}
_INT_KEYS = {"request_timeout_ms"}
SECRET_HINTS = ("password", "jaas", "secret", "token")
# Producer-side and tuning keys a shared client.properties often carries: harmless to ignore.
_IGNORED_QUIETLY = re.compile(
    r"^(acks|linger\.ms|batch\.size|compression\.type|retries|retry\.backoff\.ms|key\.serializer|"
    r"value\.serializer|key\.deserializer|value\.deserializer|enable\.idempotence|group\.id|"
    r"ssl\.truststore\.type|ssl\.keystore\.type|ssl\.truststore\.password|auto\.offset\.reset)$"
)


def is_secret(key: str) -> bool:
    return any(h in key.lower() for h in SECRET_HINTS)


def read_properties(path: str | Path) -> dict[str, str]:
    """Parse a Java ``.properties`` file (``k=v`` or ``k: v``, ``#``/``!`` comments, ``\\`` continuations)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot read --command-config {path}: {e.strerror or e}") from None
    props: dict[str, str] = {}
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical += line[:-1]
            continue
        logical += line
        m = re.match(r"^([^=:\s]+)\s*[=:\s]\s*(.*)$", logical)
        if m:
            props[m.group(1)] = m.group(2)
        elif logical:
            props[logical] = ""
        logical = ""
    return props


def parse_jaas(value: str) -> tuple[str | None, str | None]:
    """username/password out of a PlainLoginModule/ScramLoginModule ``sasl.jaas.config``."""
    user = re.search(r'username\s*=\s*"([^"]*)"', value)
    pw = re.search(r'password\s*=\s*"([^"]*)"', value)
    return (user.group(1) if user else None, pw.group(1) if pw else None)


@dataclass
class Connection:
    """kafka-python settings for one cluster; ``kwargs`` may hold secrets, ``describe()`` never does."""

    bootstrap_servers: str
    kwargs: dict = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        shown = {"bootstrap_servers": self.bootstrap_servers}
        for k, v in self.kwargs.items():
            shown[k] = "***" if is_secret(k) else v
        return shown


def resolve(
    bootstrap_server: str | None = None,
    command_config: str | None = None,
    overrides: tuple[str, ...] | list[str] = (),
) -> Connection:
    """Combine file, ``-X`` overrides (they win) and the environment into a Connection."""
    props: dict[str, str] = {}
    if command_config:
        props.update(read_properties(command_config))
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"-X expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        props[k.strip()] = v.strip()
    kwargs: dict = {}
    ignored: list[str] = []
    bootstrap = bootstrap_server
    for key, value in props.items():
        if key == "sasl.jaas.config":
            user, pw = parse_jaas(value)
            if user is not None:
                kwargs["sasl_plain_username"] = user
            if pw is not None:
                kwargs["sasl_plain_password"] = pw
            continue
        if key == "ssl.endpoint.identification.algorithm":
            kwargs["ssl_check_hostname"] = bool(value.strip())
            continue
        target = _DIRECT.get(key)
        if target is None:
            if not _IGNORED_QUIETLY.match(key):
                ignored.append(key)
            continue
        if target == "bootstrap_servers":
            bootstrap = bootstrap or value
            continue
        if target in _INT_KEYS:
            try:
                value = int(value)
            except ValueError:
                raise UsageError(f"{key} must be an integer, got {value!r}") from None
        if target == "security_protocol":
            value = value.upper()
        if target == "sasl_mechanism":
            value = value.upper()
        kwargs[target] = value
    bootstrap = bootstrap or os.environ.get(ENV_BOOTSTRAP)
    if not bootstrap:
        raise UsageError(
            f"no bootstrap server: pass --bootstrap-server HOST:PORT, set {ENV_BOOTSTRAP}, "
            "or put bootstrap.servers in --command-config"
        )
    return Connection(bootstrap_servers=bootstrap, kwargs=kwargs, ignored=ignored)
