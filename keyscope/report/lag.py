"""``keyscope lag``'s report: both readings per topic, members, notes; JSON (one line per reading under --watch)."""

from __future__ import annotations

import json


def render(g, trend, fmt: str, watch: float | None = None) -> str:
    """One reading ``g`` (a :class:`keyscope.lag.GroupLag`), with its ``trend`` under --watch."""
    from ..model.keys import display_name, json_safe

    if fmt == "json":
        from .documents import LagDocument

        doc = LagDocument(g, trend).to_dict()
        if watch is None:
            from .format import to_json

            return to_json(doc)
        return json_safe(json.dumps(doc, allow_nan=False, ensure_ascii=False))
    return display_name(_render(g, trend, markdown=(fmt == "markdown"), watch=watch))


def _trend_text(tr, lag) -> str:
    from .format import fmt_num

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

    from .format import bar, fmt_num, fmt_pct, markdown_table, text_table

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
    from .format import fmt_num, markdown_table, text_table

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
    from .format import fmt_num

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
