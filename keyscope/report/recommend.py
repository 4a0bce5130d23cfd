"""``keyscope recommend``'s report: the verdict, why, what it costs, the producer change."""

from __future__ import annotations

import textwrap

from ..model.keys import display_name
from .documents import RecommendDocument
from .format import to_json
from .whatif import WIDTH, _pct


def render(document: "RecommendDocument", fmt: str) -> str:
    """``keyscope recommend``'s output in ``fmt``; text and Markdown read the Advice itself too."""
    doc = document.to_dict()
    if fmt == "json":
        return to_json(doc)
    return display_name(recommend_report(document.advice, doc, document.top, markdown=(fmt == "markdown")))


def recommend_report(advice, doc: dict, top: int, markdown: bool = False) -> str:
    from .format import markdown_table, text_table

    table = markdown_table if markdown else text_table
    today = advice.today
    out = []
    head = (
        f"topic {doc['sample']['topic']} · {today.partitions} partitions · today's partitioner"
        f" {advice.today_partitioner} · skew today {today.skew:.2f} ({today.skew_low:.2f}–{today.skew_high:.2f})"
        f" · {advice.evaluated} scenarios evaluated"
    )
    cons = advice.constraints.describe(today.partitions)
    if markdown:
        out += [f"### keyscope recommend: `{doc['sample']['topic']}`", "", head, "", f"Constraints: {cons}", ""]
    else:
        out += ["keyscope recommend"] + textwrap.wrap(head, WIDTH) + textwrap.wrap(f"constraints: {cons}", WIDTH)
        out.append("")
    for note in advice.notes:
        out += textwrap.wrap(f"note: {note}", WIDTH, subsequent_indent="  ")

    def section(title, lines):
        if not lines:
            return
        if markdown:
            out.extend(["", f"**{title}**", ""])
            out.extend(f"- {x}" for x in lines)
        else:
            out.append("")
            out.append(f"{title}:")
            for x in lines:
                out.extend(textwrap.wrap(x, WIDTH - 4, initial_indent="  - ", subsequent_indent="    "))

    if advice.helps:
        title = f"Recommended: {advice.verdict}"
        out += ([f"**{title}**"] if markdown else textwrap.wrap(title, WIDTH))
        section("Why", advice.why)
        section("Cost", advice.cost)
        if markdown:
            out += ["", "**Producer change**"]
        else:
            out += ["", "Producer change:"]
        names = {"kafka-python": "python", "confluent-kafka": "python", "java": "java", "topic": "sh"}
        for client, code in advice.snippets.items():
            label = "topic (ops)" if client == "topic" else client
            if markdown:
                out += ["", f"*{label}*", "", f"```{names[client]}", code, "```"]
            else:
                out += ["", f"  [{label}]"] + ["    " + line if line else "" for line in code.splitlines()]
        section("Migration", advice.migration)
    else:
        out += textwrap.wrap(f"No recommendation: {advice.verdict}", WIDTH) if not markdown else [f"**No recommendation**: {advice.verdict}"]
        section("Facts", advice.why)
    if advice.relax:
        section(
            "Relaxing a constraint",
            [
                f"{r['constraint']} {r['change']}: {r['scenario']} -> skew {r['skew']:.2f} (up to {r['skew_high']:.2f}),"
                f" {_pct(r['keys_moved_share'])} of keys moved, order {r['order']}"
                for r in advice.relax
            ],
        )
    if advice.ranked:
        rows = []
        for i, r in enumerate(advice.ranked[:top], 1):
            cl = r.consumer(max(advice.today.consumer_loads[0].consumers, 1), "range")
            rows.append(
                [
                    str(i),
                    r.name,
                    f"{r.skew:.2f} ({r.skew_low:.2f}–{r.skew_high:.2f})",
                    _pct(r.keys_moved_share),
                    _pct(r.traffic_moved_share),
                    r.order_scope,
                    _pct(cl.busiest_share) if cl else "-",
                ]
            )
        cc = advice.today.consumer_loads[0].consumers
        out += ["", f"Allowed scenarios, best first (of {len(advice.ranked)}):"] + ([""] if markdown else [])
        if markdown:
            out.append(
                table(["#", "scenario", "skew (95% CI)", "keys moved", "traffic moved", "order kept", f"busiest of {cc}"],
                      rows, "rlrrrlr")
            )
        else:  # 100 columns: name and order in a wrapped legend, numbers in the table
            for row in rows:
                out += textwrap.wrap(f"{row[0]:>2}  {row[1]}; order kept {row[5]}", WIDTH, subsequent_indent="    ")
            out.append("")
            out.append(
                table(["#", "skew (95% CI)", "keys moved", "traffic moved", f"busiest of {cc}"],
                      [[r[0], r[2], r[3], r[4], r[6]] for r in rows], "rrrrr")
            )
    rej = doc["rejected"]
    if rej:
        line = (
            "Rejected by the constraints (a scenario may break several): "
            + ", ".join(f"{v} {k}" for k, v in sorted(rej.items()))
        )
        out += [""] + (textwrap.wrap(line, WIDTH) if not markdown else [line])
    return "\n".join(out)
