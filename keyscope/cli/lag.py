"""``keyscope lag`` and ``keyscope rules``: the consumer-lag alert's numbers, live and as Prometheus rules."""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import threading

import click

from ..errors import EXIT_SKEW, UsageError
from . import FORMAT_OPTION, cli, connection_options


def _positive(ctx, param, value):
    if value is not None and not value > 0:
        raise click.BadParameter("must be greater than 0")
    return value


@cli.command()
@connection_options
@click.option("-g", "--group", required=True, help="Consumer group id, e.g. crm-events-sse.")
@click.option("-t", "--topic", help="Only this topic (default: every topic the group committed offsets for).")
@FORMAT_OPTION
@click.option(
    "--watch",
    type=float,
    metavar="SECONDS",
    callback=_positive,
    help="Read again every SECONDS and show per-partition trend (draining/growing, records/s). Stop with Ctrl-C.",
)
@click.option("--count", type=int, metavar="N", callback=_positive, help="With --watch: stop after N readings.")
@click.option(
    "--fail-on-skew",
    type=float,
    metavar="X",
    callback=_positive,
    help="Exit 5 when the skew ratio of any topic (of the last reading) is above X; --skew-reading says which.",
)
@click.option(
    "--skew-reading",
    type=click.Choice(["alert", "corrected"]),
    default="alert",
    show_default=True,
    help="What --fail-on-skew gates on: alert = kafka:group_skew_ratio as your alert computes it "
    "(kafka_exporter -1 sentinels and negative lags included); corrected = keyscope:group_skew_ratio (true lag).",
)
@click.option(
    "--no-cluster-scan",
    is_flag=True,
    help="Do not read every group's offsets: kafka:group_hottest_partition (topk(1) over the whole cluster) "
    "is then not computed.",
)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, metavar="SECONDS", callback=_positive,
    help="Seconds to wait for the broker.",
)
def lag(conn, group, topic, fmt, watch, count, fail_on_skew, skew_reading, no_cluster_scan, timeout):
    """Consumer-group lag per partition, in two readings side by side.

    As your alert computes it: kafka:group_partition_lag, kafka:group_skew_ratio
    and kafka:group_hottest_partition bit for bit as kafka_exporter 1.7.0 +
    Prometheus 2.42 + the deployed rules (`keyscope rules --set deployed`)
    hold them: -1 for a partition never committed, negative lag for one
    committed ahead, one hottest series for the whole cluster. Corrected: the
    true lag (end offset = true high watermark) and skew under keyscope's own
    names (keyscope:group_*, `keyscope rules --set fixed`). When they differ,
    one line says why.

    Read-only: never joins the group, never commits.

    \b
    With --watch, a terminal is redrawn in place; a pipe gets one block per
    reading (JSON: one object per line).

    \b
    Exit codes: 0 ok, 2 bad option or client properties, 4 broker unreachable /
    TLS/SASL failure / not authorized / unknown topic / group without committed offsets, 5 skew above --fail-on-skew,
    130 Ctrl-C outside --watch.
    """
    from .. import lag as lagmod
    from ..report import lag as report

    if count is not None and watch is None:
        raise UsageError("--count needs --watch SECONDS")
    out = sys.stdout
    redraw = watch is not None and fmt == "table" and out.isatty()
    last = None
    stop = _WatchStop() if watch is not None else None
    with lagmod.LagReader(conn, group, topic, timeout, scan_cluster=not no_cluster_scan) as reader, \
            (stop or contextlib.nullcontext()):
        prev = None
        n = 0
        try:
            while stop is None or not stop.is_set():
                cur = reader.read()
                last = cur  # before printing: a Ctrl-C from here on ends with this reading's verdict
                trend = None if watch is None else (lagmod.trends(prev, cur) if prev is not None else {})
                text = report.render(cur, trend, fmt, watch)
                if redraw:
                    out.write("\x1b[H\x1b[J" + text + "\n")
                else:
                    out.write(("\n" if n and fmt != "json" else "") + text + "\n")
                out.flush()
                prev, n = cur, n + 1
                if watch is None or (count is not None and n >= count):
                    break
                stop.wait(watch)
        except KeyboardInterrupt:
            if last is None:
                raise
    if fail_on_skew is not None:
        _check_skew(last, fail_on_skew, skew_reading)


class _WatchStop(threading.Event):
    """The first Ctrl-C ends --watch after the reading under way; a second one interrupts at once.

    A KeyboardInterrupt raised inside kafka-python's network code can leave
    its locks held, and closing the clients then hung (seen under CI load:
    no exit 30 s after SIGINT), so the first signal only sets this flag.
    """

    def __enter__(self):
        self._old = signal.signal(signal.SIGINT, self._on_int)
        return self

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self._old)

    def _on_int(self, signum, frame):
        self.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _check_skew(g, limit: float, reading: str = "alert") -> None:
    """Exit 5 when the chosen reading's ratio is above ``limit``; say which reading, and when it cannot trip."""
    from ..lag import CORRECTED_SKEW_RATIO, SERIES_SKEW_RATIO

    name = SERIES_SKEW_RATIO if reading == "alert" else CORRECTED_SKEW_RATIO
    what = "as your alert computes it" if reading == "alert" else "corrected"
    worst = [(g.skew(t, reading), t) for t in g.topics]
    worst = [(s, t) for s, t in worst if s is not None]
    over = [(s, t) for s, t in worst if s > limit]
    for s, t in worst:
        if reading == "alert":
            a = g.alert_topic(t.topic)
            n, clean = len(a.partition_lag), all(v >= 0 for v in a.values)
        else:
            n, clean = len(t.series), True
        if clean and limit >= n:
            click.echo(
                f"keyscope: note: {t.topic} has {n} lag series, all >= 0: {name} cannot exceed {n}, "
                f"so --fail-on-skew {limit:g} cannot trip there",
                err=True,
            )
    if over:
        s, t = max(over, key=lambda x: x[0])
        click.echo(f"keyscope: {name} ({what}) {s:.3f} of {t.topic} is above --fail-on-skew {limit:g}", err=True)
        click.get_current_context().exit(EXIT_SKEW)


@cli.command()
@click.option("-g", "--group", required=True, help="Consumer group id the alerts watch, e.g. crm-events-sse.")
@click.option("-t", "--topic", required=True, help="Topic the group reads, e.g. crm-events.")
@click.option("--threshold", type=float, default=4.0, show_default=True, help="Alert when the skew ratio (keyscope:group_skew_ratio, or kafka:group_skew_ratio with --set deployed) is above this.")
@click.option("--for", "for_window", default="10m", show_default=True, help="How long the condition must hold (Prometheus duration).")
@click.option("--severity", default="warning", show_default=True, help="severity label of the alerts.")
@click.option("--runbook-url", metavar="URL", help="Your runbook, added as the runbook_url annotation.")
@click.option("--alert-prefix", metavar="NAME", help="Alert name prefix (default: the topic in CamelCase, crm-events -> CrmEvents).")
@click.option("--no-recording", is_flag=True, help="Alerts only: the recording group is already loaded (one per Prometheus).")
@click.option(
    "--set",
    "rule_set",
    type=click.Choice(["fixed", "deployed"]),
    default="fixed",
    show_default=True,
    help="fixed: keyscope:* series over true lags (>= 0, topk by group and topic, alert per topic); "
    "deployed: the rules as deployed, verbatim (kafka:* series, what `keyscope lag` shows as the alert's reading).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json", "markdown"]),
    default="yaml",
    show_default=True,
    help="yaml: a Prometheus rule file; json: the same file as JSON (Prometheus reads it too); markdown: YAML in a fence.",
)
def rules(group, topic, threshold, for_window, severity, runbook_url, alert_prefix, no_recording, rule_set, fmt):
    """Prometheus rules for the skew alert: a fixed set, or the set as deployed.

    \b
    --set fixed (default), keyscope's own names, over true lags (`keyscope lag`'s "corrected"):
      keyscope:group_partition_lag      kafka_consumergroup_lag >= 0
      keyscope:group_skew_ratio         max / clamp_min(avg, 0.001) by (topic, consumergroup)
      keyscope:group_hottest_partition  topk by (topic, consumergroup) (1, ...)
    --set deployed, verbatim (`keyscope lag`'s "as your alert computes it"):
      kafka:group_partition_lag, kafka:group_skew_ratio, kafka:group_hottest_partition
      (kafka_exporter's -1 and negative lags kept; topk(1) for the whole cluster)
    Comments in the YAML explain each difference. Alerts for --group and
    --topic: <Prefix>HotKeySkewHigh (skew above --threshold for --for) and
    <Prefix>UnderReplicatedConsumers (fewer members than partitions).

    \b
    Check it with: keyscope rules -g G -t T > rules.yml && promtool check rules rules.yml
    Exit codes: 0 ok, 2 bad option.
    """
    from ..prometheus import rules as rulesmod
    from ..report.rules import render

    doc = rulesmod.build(
        group,
        topic,
        threshold=threshold,
        for_window=for_window,
        severity=severity,
        runbook_url=runbook_url,
        alert_prefix=alert_prefix,
        recording=not no_recording,
        rule_set=rule_set,
    )
    argv = ["keyscope", "rules", "--set", rule_set, "--group", group, "--topic", topic,
            "--threshold", f"{threshold:g}", "--for", for_window]
    if no_recording:
        argv.append("--no-recording")
    click.echo(render(doc, shlex.join(argv), threshold, rule_set, fmt), nl=False)
