"""``keyscope whatif``'s report: today beside every scenario, in 100 columns, Markdown or JSON."""

from __future__ import annotations

import textwrap

from ..model.keys import display_name, shown_label
from .documents import WhatIfDocument
from .format import to_json

WIDTH = 100
BAR = 16


def render(document: "WhatIfDocument", fmt: str) -> str:
    """``keyscope whatif``'s output in ``fmt``."""
    doc = document.to_dict()
    if fmt == "json":
        return to_json(doc)
    return display_name(whatif_report(doc, markdown=(fmt == "markdown")))


def _skew(d: dict) -> str:
    s = d["skew"]
    return f"{s['value']:.2f} ({s['low']:.2f}–{s['high']:.2f})"


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    return "<0.1%" if 0 < x < 0.001 else f"{100 * x:.1f}%"


def _moved(d: dict) -> str:
    exp = d["expected_keys_moved_share"]
    return _pct(d["keys_moved_share"]) + (f" (exp. {_pct(exp)})" if exp is not None else "")


def _summary(docs: list[dict]) -> tuple[list[str], list[list[str]], str]:
    """One row per scenario (today first), so any number of scenarios fits."""
    groups = list(dict.fromkeys(c["consumers"] for c in docs[0]["consumers"]))
    headers = ["scenario", "parts", "skew (95% CI)", "hottest", "keys moved", "traffic moved", "order kept", "keys split"]
    headers += [f"busiest of {g}: range / rr" for g in groups]
    rows = []
    for i, d in enumerate(docs):
        row = [
            d["name"],
            str(d["partitions"]),
            _skew(d),
            f"{d['hottest_partition']}: {_pct(d['shares'][d['hottest_partition']])}",
            "-" if i == 0 else _moved(d),
            "-" if i == 0 else _pct(d["traffic_moved_share"]),
            d["order"]["kept"],
            "-" if i == 0 else (
                f"{d['order']['keys_split']:,} ({_pct(d['order']['traffic_order_lost_share'])})"
                if d["order"]["keys_split"] else "0"
            ),
        ]
        for g in groups:
            cells = []
            for a in ("range", "roundrobin"):
                m = next(x for x in d["consumers"] if x["consumers"] == g and x["assignor"] == a)
                cells.append(_pct(m["busiest_share"]) + ("*" if m["limited_by_one_partition"] else ""))
            row.append(" / ".join(cells))
        rows.append(row)
    return headers, rows, "lrrrrrlr" + "r" * len(groups)


def _partition_rows(today: dict, d: dict) -> list[list[str]]:
    from .format import bar

    n = max(today["partitions"], d["partitions"])
    top = max(max(today["records"]), max(d["records"])) or 1
    rows = []
    for p in range(n):
        before = today["records"][p] if p < today["partitions"] else None
        after = d["records"][p] if p < d["partitions"] else None
        rows.append(
            [
                str(p),
                "-" if before is None else f"{before:,}",
                "-" if before is None else _pct(today["shares"][p]),
                "" if before is None else bar(before / top, BAR).rstrip() or "▏",
                "-" if after is None else f"{after:,}",
                "-" if after is None else _pct(d["shares"][p]),
                "" if after is None else bar(after / top, BAR).rstrip() or "▏",
            ]
        )
    return rows


def _ids(docs: list[dict]) -> list[str]:
    return ["today"] + [f"S{i}" for i in range(1, len(docs))]


def _busiest(d: dict, g: int) -> str:
    cells = []
    for a in ("range", "roundrobin"):
        m = next(x for x in d["consumers"] if x["consumers"] == g and x["assignor"] == a)
        cells.append(_pct(m["busiest_share"]) + ("*" if m["limited_by_one_partition"] else ""))
    return " / ".join(cells)


def _text_blocks(doc: dict, docs: list[dict]) -> list[str]:
    """The side-by-side comparison in three narrow blocks, so it fits WIDTH columns.

    One wide row per scenario grows past 200 columns (long names, the
    order-kept text, a column per consumer count); instead: a legend naming
    each scenario and the order it keeps, the load figures keyed by a short
    id, and the busiest-consumer figures, with consumer counts split over as
    many tables as it takes.
    """
    from .format import text_table

    ids = _ids(docs)
    tp = doc["sample"]["today_partitioner"]["name"]
    out = ["scenarios (and the order each keeps):"]
    pad = max(len(i) for i in ids) + 2
    for i, d in zip(ids, docs):
        name = f"{d['partitions']}p {tp}, as sampled" if d is docs[0] else d["name"]
        out += textwrap.wrap(
            f"{name}; order kept {d['order']['kept']}", WIDTH, initial_indent=f"  {i:<{pad}}", subsequent_indent=" " * (pad + 4)
        )
    headers = ["scenario", "parts", "skew (95% CI)", "hottest", "keys moved", "traffic moved", "keys split"]
    rows = []
    for j, (i, d) in enumerate(zip(ids, docs)):
        rows.append(
            [
                i,
                str(d["partitions"]),
                _skew(d),
                f"{d['hottest_partition']}: {_pct(d['shares'][d['hottest_partition']])}",
                "-" if j == 0 else _moved(d),
                "-" if j == 0 else _pct(d["traffic_moved_share"]),
                "-" if j == 0 else (
                    f"{d['order']['keys_split']:,} ({_pct(d['order']['traffic_order_lost_share'])})"
                    if d["order"]["keys_split"] else "0"
                ),
            ]
        )
    out += ["", text_table(headers, rows, "lrrrrrr")]
    groups = list(dict.fromkeys(c["consumers"] for c in docs[0]["consumers"]))
    out += [""] + textwrap.wrap(
        "busiest consumer's share of the load, range / round-robin assignor, by consumers in the group:", WIDTH
    )
    idw = max(len("scenario"), max(len(i) for i in ids))
    cellw = max(len(_busiest(d, g)) for d in docs for g in groups) if groups else 0
    per = max(1, (WIDTH - idw) // (max(cellw, len(f"{max(groups, default=0)} consumers")) + 2))
    for k in range(0, len(groups), per):
        chunk = groups[k : k + per]
        out.append(
            text_table(
                ["scenario"] + [f"{g} consumer{'s' if g != 1 else ''}" for g in chunk],
                [[i] + [_busiest(d, g) for g in chunk] for i, d in zip(ids, docs)],
                "l" + "r" * len(chunk),
            )
        )
    return out


def whatif_report(doc: dict, markdown: bool = False) -> str:
    """Markdown keeps one wide row per scenario; the text table fits WIDTH columns."""
    from .format import markdown_table, text_table

    table = markdown_table if markdown else text_table
    s = doc["sample"]
    tp = s["today_partitioner"]
    head = (
        f"topic {s['topic']} · {s['records']:,} sampled records · {s['partitions']} partitions · today's"
        f" partitioner {tp['name']} (explains {_pct(tp['match_share'])} of keyed records) · loads in {s['load_unit']}"
    )
    out = [f"### keyscope whatif: `{s['topic']}`", "", head] if markdown else ["keyscope whatif"] + textwrap.wrap(head, WIDTH)
    for note in s["notes"]:
        out += textwrap.wrap(f"note: {note}", WIDTH, subsequent_indent="  ")
    docs = [doc["today"]] + doc["scenarios"]
    if markdown:
        out += ["", table(*_summary(docs)), ""]
    else:
        out += [""] + _text_blocks(doc, docs) + [""]
    out += textwrap.wrap(
        "* the busiest consumer holds the hottest partition alone: adding consumers cannot split a partition;"
        " only another key, partitioner or partition count moves that load. keys split: keys whose records"
        " land on several partitions (per-key order lost), with their share of traffic.",
        WIDTH,
    )
    for sid, d in zip(_ids(docs)[1:], doc["scenarios"]):
        what = (
            f"records per partition, today -> predicted (skew {doc['today']['skew']['value']:.2f}"
            f" -> {d['skew']['value']:.2f})"
        )
        if markdown:
            out += ["", f"**{d['name']}**: {what}", ""]
        else:
            out += [""] + textwrap.wrap(f"{sid}: {d['name']}", WIDTH, subsequent_indent="  ") + [what]
        out.append(
            table(["partition", "today", "share", "before", "predicted", "share", "after"], _partition_rows(doc["today"], d), "lrrlrrl")
        )
        salted = d["order"]["salted_keys"]
        if salted:
            keys = ", ".join(f"{shown_label(k['key'], k['key_encoding'], quote=False)} ({_pct(k['share'])})" for k in salted[:5])
            line = f"salted: {keys}{' ...' if len(salted) > 5 else ''}"
            rule = f"rule: {d['scenario']['salt']['rule']}"
            if markdown:
                out.append(f"{line}; {rule}")
            else:
                out += textwrap.wrap(line, WIDTH, subsequent_indent="  ") + textwrap.wrap(
                    rule, WIDTH, initial_indent="  ", subsequent_indent="    "
                )
        if d["unkeyed_records"]:
            out.append(f"{d['unkeyed_records']:,} null-key records spread evenly (producers place them at random)")
    fos = doc.get("fail_on_skew")
    if fos:
        out += ["", f"--fail-on-skew {fos['threshold']:g} (best scenario): {'EXCEEDED' if fos['exceeded'] else 'ok'}"]
    return "\n".join(out)
