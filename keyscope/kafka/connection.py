"""How to reach a cluster: the same settings Kafka's CLI tools and kcat take.

Accepts Java-style ``client.properties`` (``--command-config``), kcat-style
``-X key=value`` overrides and ``KEYSCOPE_BOOTSTRAP_SERVER``, and maps them to
kafka-python keyword arguments (docs/security.md lists every key).  Secrets are
kept only in what is handed to the client: :meth:`Connection.describe` is what
may be shown or stored, and nothing here ever repeats a value or an unknown
line of the file (a misplaced password must not reach a terminal or a log).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

ENV_BOOTSTRAP = "KEYSCOPE_BOOTSTRAP_SERVER"

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "AWS_MSK_IAM", "GSSAPI")

# Java / librdkafka property -> kafka-python keyword (plain values).
_DIRECT = {
    "bootstrap.servers": "bootstrap_servers",
    "metadata.broker.list": "bootstrap_servers",
    "security.protocol": "security_protocol",
    "sasl.mechanism": "sasl_mechanism",
    "sasl.mechanisms": "sasl_mechanism",
    "sasl.username": "sasl_plain_username",
    "sasl.password": "sasl_plain_password",
    "sasl.kerberos.service.name": "sasl_kerberos_service_name",
    "client.id": "client_id",
    "request.timeout.ms": "request_timeout_ms",
}
_INT_KEYS = {"request_timeout_ms"}

# TLS material: read by keyscope.kafka.tls, which builds the one SSLContext every connection uses.
TLS_KEYS = {
    "ssl.truststore.location", "ssl.truststore.type", "ssl.truststore.password", "ssl.truststore.certificates",
    "ssl.ca.location",
    "ssl.keystore.location", "ssl.keystore.type", "ssl.keystore.password", "ssl.key.password",
    "ssl.keystore.certificate.chain", "ssl.keystore.key",
    "ssl.certificate.location", "ssl.key.location",
    "ssl.endpoint.identification.algorithm",
}
# OAUTHBEARER with an OAuth token endpoint (client credentials grant), as Kafka 3.1+ takes it.
OAUTH_KEYS = {"sasl.oauthbearer.token.endpoint.url", "sasl.oauthbearer.scope.claim.name",
              "sasl.oauthbearer.sub.claim.name"}

SECRET_HINTS = ("password", "jaas", "secret", "token", "ssl.keystore.key")
# Keys a shared client.properties often carries that do not change how keyscope reads: ignored quietly.
_IGNORED_QUIETLY = re.compile(
    r"^(acks|linger\.ms|batch\.size|compression\.type|retries|retry\.backoff\.ms|key\.serializer|"
    r"value\.serializer|key\.deserializer|value\.deserializer|enable\.idempotence|group\.id|"
    r"auto\.offset\.reset|ssl\.protocol|ssl\.enabled\.protocols|ssl\.keymanager\.algorithm|"
    r"ssl\.trustmanager\.algorithm|sasl\.login\.callback\.handler\.class|sasl\.client\.callback\.handler\.class|"
    r"sasl\.login\.class)$"
)
# What an unknown key may look like to be named in a note; anything else is counted, never shown.
_PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$")


def is_secret(key: str) -> bool:
    return any(h in key.lower() for h in SECRET_HINTS)


@dataclass
class Properties:
    """A parsed ``.properties`` file: values by key, and where each came from."""

    values: dict[str, str]
    lines: dict[str, int]  # key -> line number
    separated: set[str]  # keys written with '=' or ':' (not a bare word or a whitespace pair)

    def __iter__(self):
        return iter(self.values)


def _parse_properties(text: str) -> Properties:
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    separated: set[str] = set()
    logical = ""
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if not logical:
            start = n
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical += line[:-1]
            continue
        logical += line
        m = re.match(r"^([^=:\s]+)\s*([=:]|\s)\s*(.*)$", logical)
        if m:
            key = m.group(1)
            values[key] = m.group(3)
            if m.group(2) in "=:":
                separated.add(key)
        elif logical:
            key = logical
            values[key] = ""
        else:  # pragma: no cover - blank logical line
            logical = ""
            continue
        lines[key] = start
        logical = ""
    return Properties(values, lines, separated)


def read_properties(path: str | Path) -> dict[str, str]:
    """Parse a Java ``.properties`` file (``k=v``, ``k: v`` or ``k v``, ``#``/``!`` comments, ``\\`` continuations)."""
    return dict(_read(path).values)


def _read(path: str | Path) -> Properties:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read --command-config {path}: {e.strerror or e}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UsageError(
            f"--command-config {path} is not UTF-8 text (line {line}): save it as UTF-8"
        ) from None
    return _parse_properties(text)


def _jaas_options(value: str) -> tuple[str | None, dict[str, str]]:
    """Login module class and its options out of a ``sasl.jaas.config`` value."""
    m = re.match(r"\s*([\w.$]+)\s+(required|requisite|sufficient|optional)\b(.*)$", value, re.S)
    if not m:
        return None, {}
    opts: dict[str, str] = {}
    for om in re.finditer(r'([\w.$-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^\s;]+))', m.group(3)):
        v = om.group(2) if om.group(2) is not None else (om.group(3) if om.group(3) is not None else om.group(4))
        if om.group(2) is not None:
            v = re.sub(r"\\(.)", r"\1", v)
        opts[om.group(1)] = v
    return m.group(1), opts


def parse_jaas(value: str) -> tuple[str | None, str | None]:
    """username/password out of a PlainLoginModule/ScramLoginModule ``sasl.jaas.config``."""
    _module, opts = _jaas_options(value)
    return opts.get("username"), opts.get("password")


@dataclass
class Connection:
    """Settings for one cluster; ``kwargs``, ``tls`` and ``sasl`` may hold secrets, ``describe()`` never does.

    ``tls``: the ``ssl.*`` properties as given (keyscope.kafka.tls turns them into an SSLContext).
    ``sasl``: the login module's options (``sasl.jaas.config``) and OAuth settings.
    """

    bootstrap_servers: str
    kwargs: dict = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # unknown property names safe to show
    ignored_lines: list[int] = field(default_factory=list)  # unknown lines, by line number only
    tls: dict[str, str] = field(default_factory=dict)
    sasl: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # advice about the settings, never a value
    debug: object = None  # a callable(str) for --debug lines, or None

    @property
    def protocol(self) -> str:
        return self.kwargs.get("security_protocol", "PLAINTEXT")

    @property
    def mechanism(self) -> str | None:
        return self.kwargs.get("sasl_mechanism")

    def secrets(self) -> list[str]:
        """Every secret value held, for masking what kafka-python logs under --debug."""
        out = [v for k, v in self.kwargs.items() if isinstance(v, str) and is_secret(k)]
        out += [v for k, v in self.tls.items() if is_secret(k)]
        out += [v for k, v in self.sasl.items() if is_secret(k) or k in ("clientSecret", "password")]
        return [s for s in out if s]

    def describe(self) -> dict:
        shown = {"bootstrap_servers": self.bootstrap_servers}
        for k, v in self.kwargs.items():
            shown[k] = "***" if is_secret(k) else v
        for k, v in self.tls.items():
            shown[k] = "***" if is_secret(k) else v
        for k, v in self.sasl.items():  # JAAS options as sasl.jaas.NAME; OAuth properties under their own names
            shown[k if "." in k else f"sasl.jaas.{k}"] = "***" if (is_secret(k) or k == "clientSecret") else v
        return shown

    def log(self, text: str) -> None:
        if self.debug is not None:
            self.debug(text)


def _upper(key: str, value: str) -> str:
    return value.strip().upper()


def resolve(
    bootstrap_server: str | None = None,
    command_config: str | None = None,
    overrides: tuple[str, ...] | list[str] = (),
) -> Connection:
    """Combine file, ``-X`` overrides (they win) and the environment into a Connection.

    Refuses (UsageError, exit 2) what would otherwise connect in a way the user
    did not ask for: an unknown ``security.protocol`` or ``sasl.mechanism``,
    SASL without a mechanism or credentials.
    """
    props = Properties({}, {}, set())
    if command_config:
        props = _read(command_config)
    for i, item in enumerate(overrides, 1):
        if "=" not in item:
            raise UsageError(f"-X expects key=value (the -X number {i} has no '=')")
        k, v = item.split("=", 1)
        k = k.strip()
        props.values[k] = v.strip()
        props.separated.add(k)
        props.lines.pop(k, None)
    kwargs: dict = {}
    tls: dict[str, str] = {}
    oauth: dict[str, str] = {}
    jaas: tuple[str | None, dict[str, str]] = (None, {})
    ignored: list[str] = []
    ignored_lines: list[int] = []
    bootstrap = bootstrap_server
    for key, value in props.values.items():
        if key == "sasl.jaas.config":
            jaas = _jaas_options(value)
            if jaas[0] is None:
                raise UsageError("sasl.jaas.config must read 'LoginModuleClass required key=\"value\" ...;'")
            continue
        if key in TLS_KEYS:
            tls[key] = value
            continue
        if key in OAUTH_KEYS:
            oauth[key] = value
            continue
        target = _DIRECT.get(key)
        if target is None:
            if _IGNORED_QUIETLY.match(key):
                continue
            if key in props.separated and _PROPERTY_NAME.match(key):
                ignored.append(key)
            else:
                ignored_lines.append(props.lines.get(key, 0))
            continue
        if target == "bootstrap_servers":
            bootstrap = bootstrap or value
            continue
        if target in _INT_KEYS:
            try:
                value = int(value)
            except ValueError:
                raise UsageError(f"{key} must be an integer") from None
        if target in ("security_protocol", "sasl_mechanism"):
            value = _upper(key, value)
        kwargs[target] = value

    protocol = kwargs.get("security_protocol", "PLAINTEXT")
    if protocol not in PROTOCOLS:
        raise UsageError(f"security.protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    mechanism = kwargs.get("sasl_mechanism")
    if mechanism is not None and mechanism not in MECHANISMS:
        raise UsageError(f"sasl.mechanism {mechanism!r} is not one of {', '.join(MECHANISMS)}")
    notes: list[str] = []
    sasl: dict[str, str] = {}
    if protocol.startswith("SASL_"):
        if mechanism is None:
            raise UsageError(
                f"security.protocol={protocol} needs sasl.mechanism ({', '.join(MECHANISMS)})"
            )
        sasl = _sasl_settings(mechanism, protocol, jaas, kwargs, oauth)
    else:
        if mechanism is not None or jaas[0] is not None:
            notes.append(f"sasl.* settings are not used with security.protocol={protocol} "
                         "(SASL needs SASL_PLAINTEXT or SASL_SSL)")
        if jaas[0] is not None:  # kept (masked in describe()); kafka-python ignores them without SASL
            _user, _pw = jaas[1].get("username"), jaas[1].get("password")
            if _user is not None:
                kwargs["sasl_plain_username"] = _user
            if _pw is not None:
                kwargs["sasl_plain_password"] = _pw
    if not protocol.endswith("SSL") and any(k.startswith("ssl.") for k in tls):
        notes.append(f"ssl.* settings are not used with security.protocol={protocol} (TLS needs SSL or SASL_SSL)")
    bootstrap = bootstrap or os.environ.get(ENV_BOOTSTRAP)
    if not bootstrap:
        raise UsageError(
            f"no bootstrap server: pass --bootstrap-server HOST:PORT, set {ENV_BOOTSTRAP}, "
            "or put bootstrap.servers in --command-config"
        )
    return Connection(bootstrap_servers=bootstrap, kwargs=kwargs, ignored=ignored,
                      ignored_lines=sorted(n for n in ignored_lines if n), tls=tls, sasl=sasl, notes=notes)


def _sasl_settings(mechanism: str, protocol: str, jaas, kwargs: dict, oauth: dict) -> dict[str, str]:
    """Check one mechanism's settings; return the login module options keyscope uses."""
    module, opts = jaas
    sasl: dict[str, str] = {}
    if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        if "username" in opts:
            kwargs["sasl_plain_username"] = opts["username"]
        if "password" in opts:
            kwargs["sasl_plain_password"] = opts["password"]
        if not kwargs.get("sasl_plain_username") or "sasl_plain_password" not in kwargs:
            raise UsageError(
                f"sasl.mechanism={mechanism} needs a username and password: "
                'sasl.jaas.config=... required username="USER" password="PASSWORD";'
            )
    elif mechanism == "OAUTHBEARER":
        url = oauth.get("sasl.oauthbearer.token.endpoint.url")
        keep = ("clientId", "clientSecret", "scope", "unsecuredLoginStringClaim_sub",
                "unsecuredLoginLifetimeSeconds", "unsecuredLoginScopeClaimName", "unsecuredLoginPrincipalClaimName")
        sasl = {k: v for k, v in opts.items() if k in keep or k.startswith("extension_")}
        sasl.update(oauth)
        if url:
            if not (opts.get("clientId") and opts.get("clientSecret")):
                raise UsageError(
                    "OAUTHBEARER with sasl.oauthbearer.token.endpoint.url needs clientId and clientSecret in "
                    "sasl.jaas.config (OAuthBearerLoginModule required clientId=\"...\" clientSecret=\"...\";)"
                )
        elif not opts.get("unsecuredLoginStringClaim_sub"):
            raise UsageError(
                "sasl.mechanism=OAUTHBEARER needs sasl.oauthbearer.token.endpoint.url with clientId/clientSecret "
                "in sasl.jaas.config, or (test clusters) unsecuredLoginStringClaim_sub"
            )
    elif mechanism == "AWS_MSK_IAM":
        if protocol != "SASL_SSL":
            raise UsageError("sasl.mechanism=AWS_MSK_IAM needs security.protocol=SASL_SSL")
        if "awsRoleArn" in opts:
            raise UsageError(
                "awsRoleArn in sasl.jaas.config is not supported: put role_arn under a profile in "
                "~/.aws/config and name it with awsProfileName"
            )
        if opts.get("awsProfileName"):
            sasl["awsProfileName"] = opts["awsProfileName"]
    elif mechanism == "GSSAPI":
        if opts.get("serviceName") and "sasl_kerberos_service_name" not in kwargs:
            kwargs["sasl_kerberos_service_name"] = opts["serviceName"]
    return sasl
