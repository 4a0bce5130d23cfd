"""Prometheus recording rules and alerts that compute what ``keyscope lag`` prints.

For teams that do not have the rules yet: the same series names and math as
:mod:`keyscope.lag`, built on kafka-exporter's metrics
(``kafka_consumergroup_lag``, ``kafka_consumergroup_members``,
``kafka_topic_partitions``), with the seed's safeguards: ``clamp_min(avg,
0.001)``, a ``for:`` window and runbook annotations.

``kafka_consumergroup_lag >= 0`` drops kafka-exporter's ``-1`` sentinel for a
partition the group never committed, which would otherwise pull the average
down and push the ratio up; ``keyscope lag`` leaves those partitions out the
same way.

The YAML is written here (no YAML library at run time), so every value that
reaches it goes through :func:`yaml_str` or a literal block whose lines are
checked printable, and every label value inside PromQL through
:func:`promql_str`.  Annotations name the group through
``{{ $labels.consumergroup }}``, never literally, so a group id containing
``{{`` cannot inject an alert template.
"""

from __future__ import annotations

import math
import re

from . import __version__
from .errors import UsageError
from .lag import SERIES_HOTTEST_PARTITION, SERIES_PARTITION_LAG, SERIES_SKEW_RATIO
from .stats import CLAMP_MIN

RECORDING_GROUP = "keyscope-consumer-lag"
_DURATION = re.compile(r"^(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_METRIC_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_:./-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}


_PROMQL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_YAML_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t"}


def _double_quoted(value: str, escapes: dict[str, str]) -> str:
    return '"' + "".join(
        escapes.get(ch) or (ch if ch.isprintable() else _code_escape(ch)) for ch in value
    ) + '"'


def promql_str(value: str) -> str:
    """A PromQL double-quoted string literal (Go escapes); the result is printable ASCII-safe text."""
    return _double_quoted(value, _PROMQL_ESCAPES)


def yaml_str(value: str) -> str:
    """A YAML scalar for any string: plain when unambiguous, else double-quoted with escapes."""
    if _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return _double_quoted(value, _YAML_ESCAPES)


def _code_escape(ch: str) -> str:
    # \x, \u and \U mean the same in PromQL (Go) and YAML double-quoted strings.
    cp = ord(ch)
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def promql_number(x: float) -> str:
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def default_alert_prefix(topic: str) -> str:
    """``crm-events`` -> ``CrmEvents``, as the seed named ``CrmEventsHotKeySkewHigh``."""
    words = [w for w in re.split(r"[._-]+", topic) if w]
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Kafka"
    return name if _METRIC_NAME.match(name) else "Topic" + name


def validate(group: str, topic: str, threshold: float, for_window: str, alert_prefix: str | None) -> None:
    if not group:
        raise UsageError("--group must not be empty")
    if not _TOPIC.match(topic) or topic in (".", ".."):
        raise UsageError(f"{topic!r} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise UsageError(f"--threshold must be a positive number, got {threshold!r}")
    if not for_window or not _DURATION.match(for_window) or not re.search(r"\d", for_window):
        raise UsageError(f"--for must be a Prometheus duration such as 10m, 1h30m or 90s, got {for_window!r}")
    if alert_prefix is not None and not _METRIC_NAME.match(alert_prefix):
        raise UsageError(f"--alert-prefix must be a valid Prometheus name ([A-Za-z_:][A-Za-z0-9_:]*), got {alert_prefix!r}")


def recording_rules() -> list[dict]:
    """The three series, for every group and topic kafka-exporter reports."""
    return [
        {
            "record": SERIES_PARTITION_LAG,
            "expr": "max by (consumergroup, topic, partition) (kafka_consumergroup_lag >= 0)",
        },
        {
            "record": SERIES_SKEW_RATIO,
            "expr": (
                f"max by (consumergroup, topic) ({SERIES_PARTITION_LAG})\n"
                "/\n"
                f"clamp_min(avg by (consumergroup, topic) ({SERIES_PARTITION_LAG}), {promql_number(CLAMP_MIN)})"
            ),
        },
        {
            "record": SERIES_HOTTEST_PARTITION,
            "expr": (
                f"{SERIES_PARTITION_LAG}\n"
                "== on (consumergroup, topic) group_left\n"
                f"max by (consumergroup, topic) ({SERIES_PARTITION_LAG})"
            ),
        },
    ]


def alert_rules(
    group: str,
    topic: str,
    threshold: float = 4.0,
    for_window: str = "10m",
    severity: str = "warning",
    runbook_url: str | None = None,
    alert_prefix: str | None = None,
) -> list[dict]:
    """The skew alert and the members-vs-partitions view for one group and topic."""
    prefix = alert_prefix or default_alert_prefix(topic)
    g, t, thr = promql_str(group), promql_str(topic), promql_number(threshold)
    runbook = (
        "Run: keyscope lag --bootstrap-server <broker> --group '{{ $labels.consumergroup }}' "
        f"--topic {topic} --watch 10   (per-partition lag, the same three numbers, draining or growing). "
        "Then sample the topic to find the keys behind the hottest partition."
    )
    skew = {
        "alert": f"{prefix}HotKeySkewHigh",
        "expr": f"{SERIES_SKEW_RATIO}{{consumergroup={g}, topic={t}}} > {thr}",
        "for": for_window,
        "labels": {"severity": severity},
        "annotations": {
            "summary": (
                "Lag of {{ $labels.consumergroup }} on {{ $labels.topic }} sits in one partition "
                '(skew ratio {{ $value | printf "%.2f" }} > ' + thr + ")"
            ),
            "description": (
                f"{SERIES_SKEW_RATIO} = max partition lag / clamp_min(avg partition lag, {promql_number(CLAMP_MIN)}) "
                f"has been above {thr} for {for_window}. A hot key (or a consumer stuck on one partition) holds "
                "the lag; more consumers cannot help while one partition holds it. The partition is "
                f"{SERIES_HOTTEST_PARTITION} for this group and topic. Note: the ratio cannot exceed the number "
                f"of partitions with a lag series, so this alert can only fire on topics with more than {thr} partitions."
            ),
            "runbook": runbook,
        },
    }
    members = {
        "alert": f"{prefix}UnderReplicatedConsumers",
        "expr": (
            f"max by (consumergroup) (kafka_consumergroup_members{{consumergroup={g}}})\n"
            "< on () group_left\n"
            f"max(kafka_topic_partitions{{topic={t}}})"
        ),
        "for": for_window,
        "labels": {"severity": severity},
        "annotations": {
            "summary": (
                "{{ $labels.consumergroup }} has {{ $value }} members, fewer than the partitions of " + topic
            ),
            "description": (
                f"Some members of the group read several partitions of {topic}; with the lag concentrated in one "
                "partition the member that owns it decides how fast it drains. 0 members means nothing consumes."
            ),
            "runbook": runbook,
        },
    }
    if runbook_url:
        for rule in (skew, members):
            rule["annotations"]["runbook_url"] = runbook_url
    return [skew, members]


def build(
    group: str,
    topic: str,
    threshold: float = 4.0,
    for_window: str = "10m",
    severity: str = "warning",
    runbook_url: str | None = None,
    alert_prefix: str | None = None,
    recording: bool = True,
) -> dict:
    """A Prometheus rule file as a dict (``groups: [...]``)."""
    validate(group, topic, threshold, for_window, alert_prefix)
    if not severity:
        raise UsageError("--severity must not be empty")
    groups = []
    if recording:
        groups.append({"name": RECORDING_GROUP, "rules": recording_rules()})
    groups.append(
        {
            "name": f"keyscope-{group}-{topic}",
            "rules": alert_rules(group, topic, threshold, for_window, severity, runbook_url, alert_prefix),
        }
    )
    return {"groups": groups}


def to_yaml(doc: dict, comments: list[str] = ()) -> str:
    """Emit the rule-file dict as YAML: block style, literal blocks for multi-line PromQL."""
    lines = ["# " + _comment(c) for c in comments]
    _emit(doc, 0, lines)
    return "\n".join(lines) + "\n"


def header(argv_text: str, threshold: float) -> list[str]:
    return [
        f"Generated by keyscope {__version__}: {argv_text}",
        f"Same names and math as `keyscope lag`; built on kafka-exporter metrics.",
        f"Load the '{RECORDING_GROUP}' group once per Prometheus (--no-recording for further groups).",
        f"{SERIES_SKEW_RATIO} <= number of partitions with a lag series (max/avg <= n): "
        f"threshold {promql_number(threshold)} needs more than {promql_number(threshold)} partitions to fire.",
    ]


def _comment(text: str) -> str:
    return "".join(ch if ch.isprintable() else _code_escape(ch) for ch in text)


def _emit(obj, indent: int, lines: list[str], key_prefix: str = "") -> None:
    pad = " " * indent
    if isinstance(obj, dict):
        first = True
        for k, v in obj.items():
            if not _PLAIN.match(k):
                raise ValueError(f"unexpected YAML key {k!r}")
            lead = (key_prefix if first else pad) if key_prefix else pad
            first = False
            if isinstance(v, (dict, list)):
                lines.append(f"{lead}{k}:")
                _emit(v, indent + 2, lines)
            elif k == "expr" and isinstance(v, str) and "\n" in v:
                lines.append(f"{lead}{k}: |-")
                for part in v.split("\n"):
                    if not part or part[0] == " " or not part.isprintable():
                        raise ValueError(f"cannot put {part!r} in a literal block")
                    lines.append(f"{pad}  {part}")
            else:
                lines.append(f"{lead}{k}: {_scalar(v)}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                _emit(item, indent + 2, lines, key_prefix=pad + "- ")
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(obj))


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return promql_number(v) if isinstance(v, float) else str(v)
    return yaml_str(str(v))
