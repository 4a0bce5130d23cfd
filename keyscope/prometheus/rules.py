"""Prometheus rules for the skew alert: the set as deployed, or a fixed set, with the difference in comments.

``--set deployed`` prints the recording rules as the on-call team runs them
(verbatim, :data:`DEPLOYED_RECORDING`) and the alert on
``kafka:group_skew_ratio``: what ``keyscope lag`` shows as "as your alert
computes it".  Fed by kafka_exporter, they keep its ``-1`` sentinel for a
partition never committed and negative lags for a partition committed ahead,
so the mean drops and the ratio can exceed the partition count (9.0 on 3
partitions with two never committed), and ``topk(1, …)`` without ``by`` keeps
one hottest series for the whole cluster.

``--set fixed`` (the default) records keyscope's own names
(``keyscope:group_partition_lag`` …, what ``keyscope lag`` shows as
"corrected"): ``kafka_consumergroup_lag >= 0`` drops the artefacts, ``topk by
(topic, consumergroup)`` keeps one hottest partition per group and topic, and
the alert is per topic.  Both sets can be loaded side by side: no series name
is shared.

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

from .. import __version__
from ..errors import UsageError
from ..lag import (
    CORRECTED_HOTTEST_PARTITION,
    CORRECTED_PARTITION_LAG,
    CORRECTED_SKEW_RATIO,
    SERIES_HOTTEST_PARTITION,
    SERIES_PARTITION_LAG,
    SERIES_SKEW_RATIO,
)
from ..stats import CLAMP_MIN

RECORDING_GROUP = "keyscope-consumer-lag"
DEPLOYED_RECORDING_GROUP = "kafka-consumer-lag"
RULE_SETS = ("fixed", "deployed")

# The recording rules as deployed (issue 11), verbatim: `keyscope lag` reproduces what they record.
DEPLOYED_RECORDING = [
    {
        "record": SERIES_PARTITION_LAG,
        "expr": "max by (topic, consumergroup, partition) (kafka_consumergroup_lag)",
    },
    {
        "record": SERIES_SKEW_RATIO,
        "expr": (
            f"(max by (topic, consumergroup) ({SERIES_PARTITION_LAG})) / "
            f"clamp_min(avg by (topic, consumergroup) ({SERIES_PARTITION_LAG}), 0.001)"
        ),
    },
    {
        "record": SERIES_HOTTEST_PARTITION,
        "expr": f"topk(1, sum by (topic, consumergroup, partition) ({SERIES_PARTITION_LAG}))",
    },
]

# Why each rule is as it is: YAML comments above the rule (JSON cannot carry them).
RULE_COMMENTS = {
    SERIES_PARTITION_LAG: [
        "As deployed. kafka_exporter 1.7.0 reports -1 for a partition the group never committed (in a topic",
        "it committed on) and a negative lag for one committed ahead of the end offset; this rule keeps both.",
    ],
    SERIES_SKEW_RATIO: [
        "As deployed. The -1 and negative lags enter max and avg: the mean drops and the ratio can exceed the",
        "partition count (lags 3, -1, -1 give 9.0 on 3 partitions). Prometheus 2.42 averages incrementally.",
    ],
    SERIES_HOTTEST_PARTITION: [
        "As deployed. topk(1, ...) without `by` keeps ONE series for the whole cluster, not one per group",
        "and topic: for every group but the worst, there is no hottest partition.",
    ],
    CORRECTED_PARTITION_LAG: [
        "Fixed: `>= 0` drops kafka_exporter's -1 (never committed) and negative lags (committed ahead of",
        f"the end offset): only true lags. Differs from {SERIES_PARTITION_LAG} exactly there.",
    ],
    CORRECTED_SKEW_RATIO: [
        "Fixed: same formula over true lags only, so it never exceeds the number of partitions with a",
        "true lag (max <= sum = n * avg): a threshold needs more partitions than its value to fire.",
    ],
    CORRECTED_HOTTEST_PARTITION: [
        "Fixed: `topk by (topic, consumergroup)` keeps one hottest partition per group and topic",
        f"({SERIES_HOTTEST_PARTITION} keeps one for the whole cluster). Ties: the first series stored.",
    ],
}
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


def recording_rules(rule_set: str = "fixed") -> list[dict]:
    """The three series, for every group and topic kafka-exporter reports: fixed (keyscope:*) or as deployed."""
    if rule_set == "deployed":
        return [dict(r) for r in DEPLOYED_RECORDING]
    return [
        {
            "record": CORRECTED_PARTITION_LAG,
            "expr": "max by (topic, consumergroup, partition) (kafka_consumergroup_lag >= 0)",
        },
        {
            "record": CORRECTED_SKEW_RATIO,
            "expr": (
                f"max by (topic, consumergroup) ({CORRECTED_PARTITION_LAG})\n"
                "/\n"
                f"clamp_min(avg by (topic, consumergroup) ({CORRECTED_PARTITION_LAG}), {promql_number(CLAMP_MIN)})"
            ),
        },
        {
            "record": CORRECTED_HOTTEST_PARTITION,
            "expr": f"topk by (topic, consumergroup) (1, {CORRECTED_PARTITION_LAG})",
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
    rule_set: str = "fixed",
) -> list[dict]:
    """The skew alert and the members-vs-partitions view for one group and topic.

    ``deployed``: the deployed alert's form, ``kafka:group_skew_ratio{consumergroup=G} > X``
    (every topic of the group, one alert per topic series); ``fixed``: on the
    corrected ratio, for this topic.
    """
    prefix = alert_prefix or default_alert_prefix(topic)
    g, t, thr = promql_str(group), promql_str(topic), promql_number(threshold)
    ratio = SERIES_SKEW_RATIO if rule_set == "deployed" else CORRECTED_SKEW_RATIO
    hottest = SERIES_HOTTEST_PARTITION if rule_set == "deployed" else CORRECTED_HOTTEST_PARTITION
    selector = f"{{consumergroup={g}}}" if rule_set == "deployed" else f"{{consumergroup={g}, topic={t}}}"
    bound = (
        "Note: kafka_exporter's -1 (never committed) and negative lags (committed ahead) enter this ratio, "
        "so it can exceed the partition count on those artefacts alone; `keyscope lag` says when."
        if rule_set == "deployed" else
        "Note: the ratio cannot exceed the number of partitions with a true lag, so this alert can only "
        f"fire on topics with more than {thr} such partitions."
    )
    runbook = (
        "Run: keyscope lag --bootstrap-server <broker> --group '{{ $labels.consumergroup }}' "
        f"--topic {topic} --watch 10   (per-partition lag, the same three numbers, draining or growing). "
        "Then sample the topic to find the keys behind the hottest partition."
    )
    skew = {
        "alert": f"{prefix}HotKeySkewHigh",
        "expr": f"{ratio}{selector} > {thr}",
        "for": for_window,
        "labels": {"severity": severity},
        "annotations": {
            "summary": (
                "Lag of {{ $labels.consumergroup }} on {{ $labels.topic }} sits in one partition "
                '(skew ratio {{ $value | printf "%.2f" }} > ' + thr + ")"
            ),
            "description": (
                f"{ratio} = max partition lag / clamp_min(avg partition lag, {promql_number(CLAMP_MIN)}) "
                f"has been above {thr} for {for_window}. A hot key (or a consumer stuck on one partition) holds "
                "the lag; more consumers cannot help while one partition holds it. The partition is "
                f"{hottest}" + (" for this group and topic. " if rule_set == "fixed" else " (one series for the whole cluster). ")
                + bound
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
    rule_set: str = "fixed",
) -> dict:
    """A Prometheus rule file as a dict (``groups: [...]``)."""
    validate(group, topic, threshold, for_window, alert_prefix)
    if not severity:
        raise UsageError("--severity must not be empty")
    if rule_set not in RULE_SETS:
        raise UsageError(f"--set must be one of {', '.join(RULE_SETS)}, got {rule_set!r}")
    groups = []
    if recording:
        name = RECORDING_GROUP if rule_set == "fixed" else DEPLOYED_RECORDING_GROUP
        groups.append({"name": name, "rules": recording_rules(rule_set)})
    groups.append(
        {
            "name": f"keyscope-{group}-{topic}" + ("-deployed" if rule_set == "deployed" else ""),
            "rules": alert_rules(group, topic, threshold, for_window, severity, runbook_url, alert_prefix, rule_set),
        }
    )
    return {"groups": groups}


def to_yaml(doc: dict, comments: list[str] = (), rule_comments: dict[str, list[str]] | None = None) -> str:
    """Emit the rule-file dict as YAML: block style, literal blocks for multi-line PromQL.

    ``rule_comments``: comment lines to put above the rule recording (or alerting) that name.
    """
    lines = ["# " + _comment(c) for c in comments]
    _emit(doc, 0, lines, rule_comments=rule_comments or {})
    return "\n".join(lines) + "\n"


def header(argv_text: str, threshold: float, rule_set: str = "fixed") -> list[str]:
    thr = promql_number(threshold)
    if rule_set == "deployed":
        return [
            f"Generated by keyscope {__version__}: {argv_text}",
            "The rules AS DEPLOYED (verbatim), on kafka_exporter metrics: `keyscope lag` shows what they",
            "record as 'as your alert computes it'. They keep kafka_exporter's -1 and negative lags, so",
            f"{SERIES_SKEW_RATIO} can exceed the partition count and a threshold of {thr} can fire on few",
            "partitions on those artefacts alone. `keyscope rules --set fixed` prints the fixed set.",
        ]
    return [
        f"Generated by keyscope {__version__}: {argv_text}",
        "The FIXED set, on kafka_exporter metrics, under keyscope's own names: `keyscope lag` shows what it",
        "records as 'corrected'. Differences from the deployed rules (`--set deployed`) are in the comments.",
        f"Load the '{RECORDING_GROUP}' group once per Prometheus (--no-recording for further groups).",
        f"{CORRECTED_SKEW_RATIO} <= number of partitions with a true lag (max/avg <= n): "
        f"threshold {thr} needs more than {thr} partitions to fire.",
    ]


def _comment(text: str) -> str:
    return "".join(ch if ch.isprintable() else _code_escape(ch) for ch in text)


def _emit(obj, indent: int, lines: list[str], key_prefix: str = "", rule_comments: dict | None = None) -> None:
    pad = " " * indent
    rule_comments = rule_comments or {}
    if isinstance(obj, dict):
        first = True
        for k, v in obj.items():
            if not _PLAIN.match(k):
                raise ValueError(f"unexpected YAML key {k!r}")
            lead = (key_prefix if first else pad) if key_prefix else pad
            first = False
            if isinstance(v, (dict, list)):
                lines.append(f"{lead}{k}:")
                _emit(v, indent + 2, lines, rule_comments=rule_comments)
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
                name = item.get("record") or item.get("alert")
                lines += [f"{pad}# {_comment(c)}" for c in rule_comments.get(name, [])]
                _emit(item, indent + 2, lines, key_prefix=pad + "- ", rule_comments=rule_comments)
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
