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
    help="Exit 5 when kafka:group_skew_ratio of any topic (of the last reading) is above X.",
)
@click.option(
    "--timeout", type=float, default=10.0, show_default=True, metavar="SECONDS", callback=_positive,
    help="Seconds to wait for the broker.",
)
def lag(conn, group, topic, fmt, watch, count, fail_on_skew, timeout):
    """Consumer-group lag per partition, with the recording rules' three numbers.

    Committed offset, end offset (the true high watermark) and lag per
    partition; then kafka:group_partition_lag, kafka:group_skew_ratio
    (max / clamp_min(avg, 0.001)) and kafka:group_hottest_partition exactly as
    `keyscope rules` computes them in Prometheus, and the group's member count.
    A partition the group never committed shows as such and, like in
    Prometheus, has no lag series: it is left out of max and avg.

    Read-only: never joins the group, never commits.

    \b
    With --watch, a terminal is redrawn in place; a pipe gets one block per
    reading (JSON: one object per line).

    \b
    Exit codes: 0 ok, 2 bad option, 4 broker unreachable / unknown topic /
    group without committed offsets, 5 skew above --fail-on-skew,
    130 Ctrl-C outside --watch.
    """
    from .. import lag as lagmod

    if count is not None and watch is None:
        raise UsageError("--count needs --watch SECONDS")
    out = sys.stdout
    redraw = watch is not None and fmt == "table" and out.isatty()
    last = None
    with lagmod.LagReader(conn, group, topic, timeout) as reader:
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
                        from ..render import to_json

                        text = to_json(doc)
                    else:
                        text = json.dumps(doc, allow_nan=False, ensure_ascii=False)
                else:
                    text = _render(cur, trend, markdown=(fmt == "markdown"), watch=watch)
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
        _check_skew(last, fail_on_skew)


def _check_skew(g, limit: float) -> None:
    worst = [(t.skew_ratio, t) for t in g.topics if t.skew_ratio is not None]
    over = [(s, t) for s, t in worst if s > limit]
    for s, t in worst:
        n = len(t.series)
        if limit >= n:
            click.echo(
                f"keyscope: note: {t.topic} has {n} partition(s) with a lag series; "
                f"kafka:group_skew_ratio cannot exceed {n}, so --fail-on-skew {limit:g} cannot trip there",
                err=True,
            )
    if over:
        s, t = max(over, key=lambda x: x[0])
        click.echo(f"keyscope: kafka:group_skew_ratio {s:.3f} of {t.topic} is above --fail-on-skew {limit:g}", err=True)
        click.get_current_context().exit(EXIT_SKEW)


def _trend_text(tr, lag) -> str:
    from ..render import fmt_num

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

    from ..lag import SERIES_HOTTEST_PARTITION, SERIES_PARTITION_LAG, SERIES_SKEW_RATIO
    from ..render import bar, fmt_num, fmt_pct, markdown_table, text_table

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
        if trend is not None:
            headers.append("trend")
            align += "l"
        rows = []
        for p in t.partitions:
            if p.in_ratio:
                share = p.lag / total if total else 0.0
                row = [p.partition, fmt_num(p.committed), fmt_num(p.end_offset), fmt_num(p.lag), fmt_pct(share), bar(share)]
            else:
                row = [p.partition, fmt_num(p.committed), fmt_num(p.end_offset), fmt_num(p.lag), "-", f"({p.status}: no lag series)"]
            if markdown:
                row[5] = row[5].rstrip() if p.in_ratio else row[5]
            if trend is not None:
                row.append(_trend_text(trend.get((t.topic, p.partition)), p.lag))
            rows.append(row)
        if markdown:
            headers[5] = "lag share"
        table = (markdown_table if markdown else text_table)(headers, rows, align)
        lines += ["", ("### " if markdown else "") + f"topic {t.topic} ({len(t.partitions)} partitions)", table, ""]
        n = len(t.series)
        if n:
            hot = ", ".join(str(p) for p in t.hottest)
            summary = [
                [SERIES_PARTITION_LAG, f"{n} series: max {fmt_num(t.max_lag)}, avg {fmt_num(t.avg_lag)}, total {fmt_num(total)}"],
                [SERIES_SKEW_RATIO, f"{fmt_num(t.skew_ratio)}  (max / clamp_min(avg, 0.001); at most {n} with {n} series)"],
                [SERIES_HOTTEST_PARTITION, f"{hot}  (lag {fmt_num(t.max_lag)})" + ("  tie" if len(t.hottest) > 1 else "")],
            ]
        else:
            summary = [[name, "no series: no partition has a committed offset at or below its end"] for name in
                       (SERIES_PARTITION_LAG, SERIES_SKEW_RATIO, SERIES_HOTTEST_PARTITION)]
        summary += _members_rows(g.group_members, t.topic, t.hottest)
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
        notes = []
        if t.uncommitted:
            notes.append(
                f"{_partitions(t.uncommitted)} no committed offset: kafka-exporter reports "
                "lag -1 there, the rule keeps lag >= 0, so max and avg leave it out."
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


def _members_rows(gm, topic, hottest):
    """The group's protocol, the hot partition's owner, every member (keyscope.members)."""
    from ..members import summary_rows

    return summary_rows(gm, topic, hottest)


def _notes(notes, markdown: bool) -> list[str]:
    """Markdown: a list after a blank line; text: 'note: ' lines wrapped to 100 columns."""
    import textwrap

    if not notes:
        return []
    if markdown:
        return [""] + [f"- {n}" for n in notes]
    return [line for n in notes for line in textwrap.wrap(
        "note: " + n, 100, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)]


@cli.command()
@click.option("-g", "--group", required=True, help="Consumer group id the alerts watch, e.g. crm-events-sse.")
@click.option("-t", "--topic", required=True, help="Topic the group reads, e.g. crm-events.")
@click.option("--threshold", type=float, default=4.0, show_default=True, help="Alert when kafka:group_skew_ratio is above this.")
@click.option("--for", "for_window", default="10m", show_default=True, help="How long the condition must hold (Prometheus duration).")
@click.option("--severity", default="warning", show_default=True, help="severity label of the alerts.")
@click.option("--runbook-url", metavar="URL", help="Your runbook, added as the runbook_url annotation.")
@click.option("--alert-prefix", metavar="NAME", help="Alert name prefix (default: the topic in CamelCase, crm-events -> CrmEvents).")
@click.option("--no-recording", is_flag=True, help="Alerts only: the recording group is already loaded (one per Prometheus).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["yaml", "json", "markdown"]),
    default="yaml",
    show_default=True,
    help="yaml: a Prometheus rule file; json: the same file as JSON (Prometheus reads it too); markdown: YAML in a fence.",
)
def rules(group, topic, threshold, for_window, severity, runbook_url, alert_prefix, no_recording, fmt):
    """Prometheus recording rules and alerts that compute what `keyscope lag` prints.

    \b
    Recording rules (for every group and topic kafka-exporter reports):
      kafka:group_partition_lag      kafka_consumergroup_lag >= 0
      kafka:group_skew_ratio         max / clamp_min(avg, 0.001) by (consumergroup, topic)
      kafka:group_hottest_partition  the partition(s) whose lag equals the max
    Alerts for --group and --topic: <Prefix>HotKeySkewHigh (skew above
    --threshold for --for) and <Prefix>UnderReplicatedConsumers (fewer
    members than partitions).

    \b
    Check it with: keyscope rules -g G -t T > rules.yml && promtool check rules rules.yml
    Exit codes: 0 ok, 2 bad option.
    """
    from .. import rules as rulesmod
    from ..render import to_json

    doc = rulesmod.build(
        group,
        topic,
        threshold=threshold,
        for_window=for_window,
        severity=severity,
        runbook_url=runbook_url,
        alert_prefix=alert_prefix,
        recording=not no_recording,
    )
    argv = ["keyscope", "rules", "--group", group, "--topic", topic, "--threshold", f"{threshold:g}", "--for", for_window]
    if no_recording:
        argv.append("--no-recording")
    if fmt == "json":
        click.echo(to_json(doc))
        return
    text = rulesmod.to_yaml(doc, rulesmod.header(shlex.join(argv), threshold))
    if fmt == "markdown":
        text = "```yaml\n" + text + "```\n"
    click.echo(text, nl=False)
