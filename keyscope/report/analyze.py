"""``keyscope analyze``'s report: one screen of text (100 columns), Markdown for incident docs, or JSON."""

from __future__ import annotations

import textwrap

from ..model.keys import display_name
from .documents import AnalyzeDocument
from .format import to_json

WIDTH = 100
BAR = 24
KEY_WIDTH = 28


def render(document: "AnalyzeDocument", fmt: str) -> str:
    """``keyscope analyze``'s output in ``fmt``."""
    doc = document.to_dict()
    if fmt == "json":
        return to_json(doc)
    return display_name(markdown_report(doc) if fmt == "markdown" else table_report(doc))


def _bytes(n: float | int | None) -> str:
    if n is None:
        return "-"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} TB"  # pragma: no cover


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _interval(iv, pct: bool = False) -> str:
    if not iv:
        return "-"
    if pct:
        return f"{100 * iv[0]:.1f}–{100 * iv[1]:.1f}%"
    return f"{iv[0]:,.2f}–{iv[1]:,.2f}"


def _pvalue(p: float) -> str:
    if p == 0.0:
        return "p < 1e-300"
    if p < 0.001:
        return f"p = {p:.1e}"
    return f"p = {p:.3f}"


def _short_key(key, enc, width: int = KEY_WIDTH) -> str:
    text = '""' if key == "" else (f"0x{key}" if enc == "hex" else str(key))
    return text if len(text) <= width else text[: width - 1] + "…"


def _summary_lines(d: dict) -> list[str]:
    from .format import fmt_pct

    s, sk, base, det = d["sample"], d["skew"], d["baseline"], d["partitioner"]
    lines = [
        f"topic {d['topic']} · {d['partition_count']} partition(s) · {s['records']:,} records sampled "
        f"({s['distinct_keys']:,} distinct keys, {s['null_key_records']:,} null-key)",
    ]
    basis = {"rate": "real rate (offsets/s)", "watermarks": "records by offsets (re-weighted)"}.get(
        d["load_basis"], "sample counts")
    iv = f" (95%: {_interval(sk['interval'])})" if sk["interval"] else ""
    hot = f" · hottest partition {sk['hottest_partition']}" if sk["hottest_partition"] is not None else ""
    lines.append(f"skew ratio {_ratio(sk['ratio'])}{iv} by {d['by']}, load = {basis}{hot}")
    extra = [f"CV {sk['cv']:.2f}", f"Gini {sk['gini']:.2f}"]
    if sk["chi_square"]:
        extra.append(f"chi-square vs even {_pvalue(sk['chi_square']['p_value'])}")
    if sk["rate_ratio"] is not None and d["load_basis"] != "rate":
        extra.append(f"skew by real rate {_ratio(sk['rate_ratio'])}")
    lines.append(" · ".join(extra))
    lines.append(f"cause: {base['cause']}: {base['explanation']}")
    if d["partition_count"] > 1 and base["cause"] != "no-data":
        lines.append(
            f"baseline: perfect hashing of these keys would give a skew of {base['random_hashing_median']:.2f} "
            f"(95% of placements ≤ {base['random_hashing_p95']:.2f}); no placement gets below "
            f"{base['floor_ratio']:.2f}"
        )
    lines.append(f"partitioner: {det['verdict']}: {det['explanation']}")
    if det["agreement"]:
        agree = " · ".join(f"{n} {fmt_pct(a['fraction'])}" for n, a in det["agreement"].items())
        lines.append(f"agreement over {det['keyed_records']:,} keyed records: {agree}")
    return lines


def _partition_rows(d: dict) -> tuple[list[str], list[list[str]], str]:
    from .format import bar

    parts = d["partitions"]
    top_load = max((p["load"] for p in parts), default=0.0)
    rate = any(p["rate_per_s"] is not None for p in parts)
    ci = any(p["share_interval"] is not None for p in parts)
    headers = ["partition", "records", "bytes", "share"] + (["95% CI"] if ci else []) + (["rate/s"] if rate else [])
    rows = []
    for p in parts:
        row = [
            str(p["partition"]) + (" *" if p["partition"] == d["skew"]["hottest_partition"] else ""),
            f"{p['records']:,}",
            _bytes(p["bytes"]),
            f"{100 * p['share']:.1f}%",
        ]
        if ci:
            row.append(_interval(p["share_interval"], pct=True))
        if rate:
            row.append("-" if p["rate_per_s"] is None else f"{p['rate_per_s']:,.1f}")
        row.append(bar(p["load"] / top_load if top_load > 0 else 0.0, BAR).rstrip())
        rows.append(row)
    return headers + ["load"], rows, "lrrr" + ("r" if ci else "") + ("r" if rate else "") + "l"


def _key_rows(d: dict, width: int = KEY_WIDTH) -> tuple[list[str], list[list[str]], str]:
    headers = ["#", "key", d["by"], "share", "95% CI", "partition", "of partition", "excess"]
    rows = []
    for k in d["hot_keys"]:
        n = k["records"] if d["by"] == "records" else k["bytes"]
        part = str(k["partition"]) + (f" (+{len(k['partitions']) - 1})" if len(k["partitions"]) > 1 else "")
        rows.append(
            [
                str(k["rank"]),
                _short_key(k["key"], k["key_encoding"], width),
                f"{n:,}" if d["by"] == "records" else _bytes(n),
                f"{100 * k['share']:.1f}%",
                _interval(k["share_interval"], pct=True),
                part,
                f"{100 * k['share_of_partition']:.1f}%",
                "alone" if k["explains_excess"] else "",
            ]
        )
    return headers, rows, "rlrrrrrl"


def table_report(d: dict) -> str:
    """One screen, at most 100 columns."""
    from .format import text_table

    out = ["keyscope analyze"]
    for line in _summary_lines(d):
        out += textwrap.wrap(line, WIDTH, subsequent_indent="  ", break_on_hyphens=False)
    if d["partitions"]:
        out.append("")
        out.append(text_table(*_partition_rows(d)))
        if d["skew"]["hottest_partition"] is not None:
            out.append("* hottest partition")
    if d["hot_keys"]:
        out.append("")
        out.append(f"hot keys (top {len(d['hot_keys'])} by {d['by']}; 'alone': this key alone explains the excess)")
        out.append(text_table(*_key_rows(d)))
    mixed = d["partitioner"].get("mixed")
    if mixed:
        out.append("")
        story = {
            "two-producers": "two producers with different partitioners ({})".format(
                " and ".join(mixed.get("partitioners") or [])),
            "partition-count-changed": "the partition count changed (was {})".format(
                mixed.get("previous_partition_count") or "?"),
            "unexplained": "no partitioner pair or count change explains it: a custom partitioner?",
        }.get(mixed["likelier"], mixed["likelier"])
        if mixed.get("switched_from") and mixed.get("switched_to"):
            story += f"; a switch from {mixed['switched_from']} to {mixed['switched_to']}, not interleaved writers"
        out += textwrap.wrap(f"mixed, likelier: {story}", WIDTH, subsequent_indent="  ")
    for w in d["warnings"]:
        out += textwrap.wrap(f"warning: {w}", WIDTH, subsequent_indent="  ")
    fos = d.get("fail_on_skew")
    if fos:
        out.append(f"--fail-on-skew {fos['threshold']:g}: {'EXCEEDED' if fos['exceeded'] else 'ok'}")
    return "\n".join(out)


def markdown_report(d: dict) -> str:
    """Pastes into an incident doc: a heading, the verdicts as bullets, two tables."""
    from .format import markdown_table

    out = [f"### keyscope analyze: `{d['topic']}`", ""]
    out += [f"- {line}" for line in _summary_lines(d)]
    if d["partitions"]:
        h, rows, align = _partition_rows(d)
        rows = [[f"**{r[0][:-2]}**" if r[0].endswith(" *") else r[0]] + r[1:] for r in rows]
        out += ["", "**Partitions** (hottest in bold)", "", markdown_table(h, rows, align)]
    if d["hot_keys"]:
        h, rows, align = _key_rows(d, width=64)
        rows = [[c.replace("`", "'") if i == 1 else c for i, c in enumerate(r)] for r in rows]
        rows = [[f"`{c}`" if i == 1 else c for i, c in enumerate(r)] for r in rows]
        out += ["", f"**Hot keys** (top {len(d['hot_keys'])} by {d['by']})", "", markdown_table(h, rows, align)]
    if d["warnings"]:
        out += ["", "**Warnings**", ""] + [f"- {w}" for w in d["warnings"]]
    fos = d.get("fail_on_skew")
    if fos:
        out += ["", f"`--fail-on-skew {fos['threshold']:g}`: {'**exceeded**' if fos['exceeded'] else 'ok'}"]
    return "\n".join(out)
