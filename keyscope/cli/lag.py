"""``keyscope lag`` and ``keyscope rules``: the consumer-lag alert's numbers, live and as Prometheus rules."""

from __future__ import annotations

import json
import shlex
import sys
import time

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

    if count is not None and watch is None:
        raise UsageError("--count needs --watch SECONDS")
    out = sys.stdout
    redraw = watch is not None and fmt == "table" and out.isatty()
    last = None
    with lagmod.LagReader(conn, group, topic, timeout, scan_cluster=not no_cluster_scan) as reader:
        prev = None
        n = 0
        try:
            while True:
                cur = reader.read()
                last = cur  # before printing: a Ctrl-C from here on ends with this reading's verdict
                trend = None if watch is None else (lagmod.trends(prev, cur) if prev is not None else {})
                if fmt == "json":
                    doc = lagmod.to_dict(cur, trend)
                    if watch is None:
                        from ..report.format import to_json

                        text = to_json(doc)
                    else:
                        from ..model.keys import json_safe

                        text = json_safe(json.dumps(doc, allow_nan=False, ensure_ascii=False))
                else:
                    from ..model.keys import display_name

                    text = display_name(_render(cur, trend, markdown=(fmt == "markdown"), watch=watch))
                if redraw:
                    out.write("\x1b[H\x1b[J" + text + "\n")
                else:
                    out.write(("\n" if n and fmt != "json" else "") + text + "\n")
                out.flush()
                prev, n = cur, n + 1
                if watch is None or (count is not None and n >= count):
                    break
                time.sleep(watch)
        except KeyboardInterrupt:
            if last is None:
                raise
    if fail_on_skew is not None:
        _check_skew(last, fail_on_skew, skew_reading)


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


def _trend_text(tr, lag) -> str:
    from ..report.format import fmt_num

    if tr is None:
        return "-"
    if tr.direction is None:
        return f"end +{fmt_num(tr.produce_rate, 1)}/s"
    if tr.direction == "steady":
        return "steady"
    text = f"{tr.direction} {fmt_num(abs(tr.lag_rate), 1)}/s"
    if tr.direction == "draining" and lag:
        text += f", empty in ~{_duration(lag / -tr.lag_rate)}"
    return text


def _partitions(ids, verb=True) -> str:
    text = ("partition " if len(ids) == 1 else "partitions ") + ", ".join(map(str, ids))
    return text + (" has" if len(ids) == 1 else " have") if verb else text


def _duration(seconds: float) -> str:
    if seconds > 7 * 86400:  # a drain that slow is no forecast worth printing
        return "more than a week"
    s = int(round(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _render(g, trend, markdown: bool, watch) -> str:
    import datetime as dt

    from ..report.format import bar, fmt_num, fmt_pct, markdown_table, text_table

    when = dt.datetime.fromtimestamp(g.read_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    members = "unknown" if g.members is None else str(g.members)
    state = f" ({g.state})" if g.state else ""
    head = f"consumer group {g.group}: {members} member(s){state}, read {when}"
    if watch is not None:
        head += f", every {watch:g}s"
    lines = [("## " if markdown else "") + head]
    for t in g.topics:
        total = t.total_lag
        headers = ["partition", "committed", "end offset", "lag", "share", "" if markdown else "lag share"]
        align = "rrrrrl"
        alert_col = g.alert is not None  # the lag kafka_exporter reports, beside the true one
        if trend is not None:
            headers.append("trend")
            align += "l"
        rows = []
        for p in t.partitions:
            if p.in_ratio:
                share = p.lag / total if total else 0.0
                row = [p.partition, fmt_num(p.committed), fmt_num(p.end_offset), fmt_num(p.lag), fmt_pct(share), bar(share)]
            else:
                row = [p.partition, fmt_num(p.committed), fmt_num(p.end_offset), fmt_num(p.lag), "-", f"({p.status}: no true lag)"]
            if markdown:
                row[5] = row[5].rstrip() if p.in_ratio else row[5]
            if alert_col:
                row.insert(4, fmt_num(p.exporter_lag))
            if trend is not None:
                row.append(_trend_text(trend.get((t.topic, p.partition)), p.lag))
            rows.append(row)
        if markdown:
            headers[5] = "lag share"
        if alert_col:
            headers.insert(4, "alert lag")
            align = align[:4] + "r" + align[4:]
        table = (markdown_table if markdown else text_table)(headers, rows, align)
        lines += ["", ("### " if markdown else "") + f"topic {t.topic} ({len(t.partitions)} partitions)", table, ""]
        summary = _members_rows(g.group_members, t.topic, t.hottest)
        lines += _readings(g, t, markdown)
        if g.members is not None:
            flag = (
                "  no live member: nothing consumes" if g.members == 0
                else "  fewer members than partitions" if g.members < len(t.partitions) else ""
            )
            summary.append(["members vs partitions", f"{g.members} / {len(t.partitions)}{flag}"])
        else:
            summary.append(["members vs partitions", f"unknown / {len(t.partitions)}  ({g.members_error})"])
        if markdown:
            lines.append(markdown_table(["series", "value"], summary))
        else:
            width = max(len(r[0]) for r in summary)
            lines += [f"{r[0].ljust(width)}  {r[1]}" for r in summary]
        notes = _alert_notes(g, t)
        if t.uncommitted:
            notes.append(
                f"{_partitions(t.uncommitted)} no committed offset: no true lag (kafka_exporter reports "
                f"-1 there); the corrected reading leaves {'it' if len(t.uncommitted) == 1 else 'them'} out of max and avg."
            )
        if t.corrected_end_offsets:
            worst = max(p.end_offset - p.list_offsets_end for p in t.partitions)
            notes.append(
                f"end offsets come from fetch responses: ListOffsets under-reported "
                f"{_partitions(t.corrected_end_offsets, verb=False)} by up to {fmt_num(worst)}."
            )
        lines += _notes(notes, markdown)
    lines += _notes(g.notes, markdown)
    return "\n".join(lines).rstrip()


def _readings(g, t, markdown: bool) -> list[str]:
    """The two readings side by side: the deployed alert's kafka:group_* series and keyscope's corrected ones."""
    from ..prometheus.alert import prom_text
    from ..report.format import fmt_num, markdown_table, text_table

    a = g.alert_topic(t.topic)
    n = len(t.series)
    if g.alert is None:
        alert = ["not read", "not read", "not read"]
    elif a is None:
        alert = ["no series (none exported)", "no series", _hottest_cell(g, t)]
    else:
        bad = len(a.sentinels)
        alert = [
            f"{len(a.partition_lag)} series, max {fmt_num(a.max_lag, 0)}" + (f", {bad} at -1" if bad else ""),
            prom_text(a.skew_ratio),
            _hottest_cell(g, t),
        ]
    if n:
        hot = ", ".join(str(p) for p in t.hottest)
        corrected = [
            f"{n} series, max {fmt_num(t.max_lag)}",
            prom_text(t.skew_ratio) + f"  (at most {n})",
            f"{hot}: {fmt_num(t.max_lag)}" + ("  tie" if len(t.hottest) > 1 else ""),
        ]
    else:
        corrected = ["no series: no true lag", "no series", "-"]
    from ..lag import SERIES

    names = list(SERIES)  # the real names; the corrected ones are keyscope:group_* with the same suffix
    headers = ["series", "as your alert computes it", "corrected (keyscope:group_*)"]
    rows = [[names[i], alert[i], corrected[i]] for i in range(3)]
    out = [(markdown_table if markdown else text_table)(headers, rows)]
    why = alert_why(g, t)
    if why:
        out += ["", "why they differ: " + why] if markdown else _wrap("why they differ: " + why)
    out.append("")
    return out


def alert_why(g, t) -> str | None:
    from ..prometheus.alert import why_differ

    return None if g.alert is None else why_differ(t, g.alert_topic(t.topic))


def _hottest_cell(g, t) -> str:
    from ..report.format import fmt_num

    h = g.alert.hottest
    if h is None:
        return "-" if g.alert.scan_error else "no series"
    if h.group == g.group and h.topic == t.topic:
        return f"{h.partition}: {fmt_num(h.value, 0)}  (whole cluster)" + ("  tie" if h.ties else "")
    return "another group/topic (note)"


def _alert_notes(g, t) -> list[str]:
    """What the table cannot say about the alert's reading: the cluster-wide hottest series, a failed scan."""
    from ..prometheus.alert import SERIES_HOTTEST_PARTITION, prom_text

    a = g.alert
    if a is None or t is not g.topics[0]:  # cluster-wide: said once, under the first topic
        return []
    if a.scan_error:
        return [f"{SERIES_HOTTEST_PARTITION} not computed: {a.scan_error}"]
    h = a.hottest
    if h is None:
        return list(a.notes)
    where = f"group {h.group}, topic {h.topic}, partition {h.partition} ({prom_text(h.value)})"
    text = (f"{SERIES_HOTTEST_PARTITION} is topk(1) without `by`: one series for the whole cluster "
            f"({a.groups_scanned} group{'s' if a.groups_scanned != 1 else ''} read): {where}")
    if h.ties:
        text += f"; {len(h.ties)} other series tie, Prometheus keeps the one it stored first (label order assumed)"
    return [text + "."] + list(a.notes)


def _members_rows(gm, topic, hottest):
    """The group's protocol, the hot partition's owner, every member (keyscope.kafka.members)."""
    from ..kafka.members import summary_rows

    return summary_rows(gm, topic, hottest)


def _notes(notes, markdown: bool) -> list[str]:
    """Markdown: a list after a blank line; text: 'note: ' lines wrapped to 100 columns."""
    if not notes:
        return []
    if markdown:
        return [""] + [f"- {n}" for n in notes]
    return [line for n in notes for line in _wrap("note: " + n)]


def _wrap(text: str) -> list[str]:
    import textwrap

    return textwrap.wrap(text, 100, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)


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
    from ..report.format import to_json

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
    if fmt == "json":
        click.echo(to_json(doc))
        return
    text = rulesmod.to_yaml(doc, rulesmod.header(shlex.join(argv), threshold, rule_set), rulesmod.RULE_COMMENTS)
    if fmt == "markdown":
        text = "```yaml\n" + text + "```\n"
    click.echo(text, nl=False)
