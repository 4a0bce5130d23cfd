"""``keyscope sample`` and ``keyscope info``: what a sample holds, as a table, Markdown or JSON."""

from __future__ import annotations

from ..model.keys import display_name
from .documents import SampleDocument


def render_sample(s, path: str, fmt: str) -> str:
    """The report after ``keyscope sample`` wrote ``path``."""
    return display_name(render_sample_report(s, path, fmt))


def render_file_info(s, path: str, fmt: str) -> str:
    """``keyscope info FILE``."""
    return display_name(render_info(s, path, fmt))


def mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def _partition_rows(summary: dict) -> list[list]:
    from .format import fmt_num

    rows = []
    for r in summary["partitions"]:
        rng = "-" if r["first"] is None else f"{r['first']:,}..{r['last']:,}"
        rows.append([
            r["partition"], fmt_num(r["low"]), fmt_num(r["high"]), rng, fmt_num(r["records"]), fmt_num(r["null_keys"]),
        ])
    return rows


_PART_HEADERS = ["partition", "low", "high", "offsets read", "records", "null keys"]


def render_sample_report(s, path: str, fmt: str) -> str:
    from . import format as render

    if fmt == "json":
        return render.to_json(SampleDocument(s, output=path).to_dict())
    summary = s.summary()
    how = s.meta.how or {}
    head = [
        ("topic", s.meta.topic),
        ("written", path),
        ("records", render.fmt_num(summary["records"])),
        ("fetched", f"{mib(how.get('bytes_fetched', 0))} in {how.get('elapsed_s', 0):.2f}s"),
        ("stopped by", how.get("stopped_by", "-")),
    ]
    if s.meta.partial:
        head.append(("PARTIAL", s.meta.partial_reason or "stopped early"))
    return _compose(fmt, f"Sample of {s.meta.topic}", head, summary, how.get("notes") or [])


def render_info(s, path: str, fmt: str) -> str:
    from . import format as render

    if fmt == "json":
        return render.to_json(SampleDocument(s, file=path).to_dict())
    summary = s.summary()
    how = s.meta.how or {}
    head = [
        ("file", path),
        ("topic", s.meta.topic),
        ("source", s.meta.source),
        ("sampled at", s.meta.sampled_at or "-"),
        ("records", render.fmt_num(summary["records"])),
        ("partitions", f"{summary['partitions_sampled']} sampled of {summary['partition_count']}"
         + (" (count inferred from the records)" if how.get("partition_count_inferred") else "")),
        ("keys", f"{render.fmt_num(summary['distinct_keys'])} distinct, {render.fmt_num(summary['null_keys'])} null, "
                 f"{render.fmt_num(summary['empty_keys'])} empty"),
        ("time span", f"{summary['first_timestamp'] or '-'} .. {summary['last_timestamp'] or '-'}"),
    ]
    if how.get("mode"):
        bounds = ", ".join(
            f"{k.replace('_', '-')} {mib(how[k]) if k == 'max_bytes' else render.fmt_num(how[k])}"
            for k in ("per_partition", "max_records", "max_bytes") if how.get(k) is not None
        )
        mode = how["mode"] + (f" {how['from_time']}" if how.get("from_time") else "")
        head.append(("how", f"from {mode}; {bounds or 'no bounds'}; stopped by {how.get('stopped_by', '-')}"))
    if s.meta.partial:
        head.append(("PARTIAL", s.meta.partial_reason or "stopped early"))
    head.append(("keyscope", s.meta.keyscope_version))
    return _compose(fmt, f"Sample {path}", head, summary, how.get("notes") or [])


def _compose(fmt: str, title: str, head: list[tuple[str, str]], summary: dict, notes: list[str] = ()) -> str:
    from . import format as render

    fields = [
        [name, f["path"], render.fmt_num(f["misses"]), render.fmt_pct(f["miss_rate"])]
        for name, f in summary["fields"].items()
    ]
    parts = _partition_rows(summary)
    if fmt == "markdown":
        out = [f"### {title}", "", render.markdown_table(["", ""], [[k, v] for k, v in head]), ""]
        out += [render.markdown_table(_PART_HEADERS, parts, "rrrrrr")]
        if fields:
            out += ["", render.markdown_table(["field", "path", "misses", "miss rate"], fields, "llrr")]
        if notes:
            out += [""] + [f"- {n}" for n in notes]
        return "\n".join(out)
    width = max(len(k) for k, _ in head)
    out = [f"{k.ljust(width)}  {v}" for k, v in head]
    out += ["", render.text_table(_PART_HEADERS, parts, "rrrrrr")]
    if fields:
        out += ["", render.text_table(["field", "path", "misses", "miss rate"], fields, "llrr")]
    if notes:
        out += [""] + [f"note: {n}" for n in notes]
    return "\n".join(out)
