"""``keyscope analyze``: which partition is hot, which keys make it hot, how sure we are."""

from __future__ import annotations

import textwrap

import click

from ..errors import EXIT_SKEW
from ..keys import display_name
from ..limits import finite_threshold
from . import FORMAT_OPTION, cli

WIDTH = 100
BAR = 24
KEY_WIDTH = 28


@cli.command()
@click.argument("sample_path", metavar="[SAMPLE]", required=False, type=click.Path(readable=False))
@click.option("--top", "top", type=click.IntRange(min=0), default=10, show_default=True, help="Hot keys to list.")
@click.option(
    "--by",
    type=click.Choice(["records", "bytes"]),
    default="records",
    show_default=True,
    help="Load measure for the skew ratio, shares and hot-key ranking.",
)
@click.option(
    "--load",
    "load",
    type=click.Choice(["auto", "sample", "watermarks", "rate"]),
    default="auto",
    show_default=True,
    help="What a partition's load is: the sample's counts, its record count from the watermarks, or its real "
    "rate from offsets and timestamps. auto re-weights a sample whose partitions were not read in proportion "
    "(cut short or --per-partition) by the watermarks, else the rates (docs/analyze.md).",
)
@click.option(
    "--fail-on-skew",
    "fail_on_skew",
    type=click.FloatRange(min=0),
    default=None,
    metavar="X",
    callback=finite_threshold,
    help="Exit with code 5 when the skew ratio is above X (after printing the report).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the perfect-hashing simulation.")
@click.option("-t", "--topic", help="Sample this topic now and analyze it (instead of a SAMPLE file).")
@click.option(
    "-b", "--bootstrap-server", envvar="KEYSCOPE_BOOTSTRAP_SERVER", metavar="HOST:PORT",
    help="With --topic: Kafka bootstrap server(s) [env: KEYSCOPE_BOOTSTRAP_SERVER].",
)
@click.option("--command-config", type=click.Path(dir_okay=False), metavar="FILE",
              help="With --topic: client.properties as for Kafka's CLI tools.")
@click.option("-X", "overrides", multiple=True, metavar="KEY=VALUE", help="With --topic: client property, as kcat -X.")
@click.option("--max-records", type=click.IntRange(min=1), metavar="N",
              help="With --topic: at most N records, split across partitions in proportion [default: 100000].")
@click.option("--per-partition", type=click.IntRange(min=1), metavar="N",
              help="With --topic: at most N records from each partition (load then comes from rates).")
@click.option("--from-time", metavar="TIME", help="With --topic: start at TIME (ISO-8601 or 30m, 2h, 1d back).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              metavar="SECONDS", help="With --topic: stop sampling after this long.")
@FORMAT_OPTION
def analyze(sample_path, top, by, load, fail_on_skew, seed, topic, bootstrap_server, command_config, overrides,
            max_records, per_partition, from_time, timeout, fmt):  # fmt: skip
    """Find the hot partition, the keys that make it hot, and the producers' partitioner.

    SAMPLE is a file written by `keyscope sample` (or one `keyscope info`
    reads); or give --topic (and --bootstrap-server) to sample and analyze in
    one go.  The skew ratio is the alert's: max over partitions /
    clamp_min(mean over partitions, 0.001).  Intervals are 95%: the sample is
    not the topic.

    \b
    Examples:
      keyscope analyze crm-events.parquet
      keyscope analyze crm-events.parquet --by bytes --top 20 --format markdown
      keyscope analyze -b kafka:9092 -t crm-events --fail-on-skew 4

    \b
    Exit codes:
      0  report printed
      2  bad option
      3  SAMPLE unreadable (missing, corrupt, missing columns)
      4  with --topic: cluster unreachable or unknown topic
      5  skew ratio above --fail-on-skew X (report still printed; wins over 6)
      6  with --topic: sampling cut short (report on what was read)
      7  the sample's partitions were not read in proportion and cannot be
         re-weighted (a partition with records but none read; no watermarks)
    """
    from .. import render
    from ..analysis import analyze as run_analysis
    from ..errors import EXIT_PARTIAL, UsageError

    if sample_path and topic:
        raise UsageError("give a SAMPLE file or --topic, not both")
    if not sample_path and not topic:
        raise UsageError("give a SAMPLE file, or --topic (with --bootstrap-server) to sample and analyze in one go")
    if sample_path:
        from ..sample import read_sample
        from ..scan.profile import is_profile

        if is_profile(sample_path):  # a whole-topic scan (keyscope scan): exact loads, sketched hot keys
            from .scan import analyze_profile_cmd

            return analyze_profile_cmd(sample_path, top, fmt, fail_on_skew)
        sample = read_sample(sample_path)
    else:
        sample = _sample_now(topic, bootstrap_server, command_config, overrides, max_records, per_partition,
                             from_time, timeout)  # fmt: skip
    result = run_analysis(sample, top=top, by=by, load=load, seed=seed)
    doc = result.to_dict()
    exceeded = fail_on_skew is not None and result.skew_ratio > fail_on_skew
    if fail_on_skew is not None:
        doc["fail_on_skew"] = {"threshold": fail_on_skew, "exceeded": exceeded}
    if fmt == "json":
        click.echo(render.to_json(doc))
    elif fmt == "markdown":
        click.echo(display_name(markdown_report(doc)))
    else:
        click.echo(display_name(table_report(doc)))
    if exceeded:
        click.echo(
            f"keyscope: skew ratio {result.skew_ratio:.2f} is above --fail-on-skew {fail_on_skew:g}", err=True
        )
        click.get_current_context().exit(EXIT_SKEW)
    if sample.meta.partial and not sample_path:
        click.echo(f"keyscope: the sample is partial ({sample.meta.partial_reason}): analyzed what was read", err=True)
        click.get_current_context().exit(EXIT_PARTIAL)


def _sample_now(topic, bootstrap_server, command_config, overrides, max_records, per_partition, from_time, timeout):
    """`keyscope sample` without the file: same reader, same bounds, same read-only guarantees."""
    from .. import sampling
    from ..connection import resolve

    conn = resolve(bootstrap_server, command_config, overrides)
    spec = sampling.SampleSpec(
        topic=topic,
        start="time" if from_time else "latest",
        from_time_ms=sampling.parse_time(from_time) if from_time else None,
        from_time_text=from_time,
        per_partition=per_partition,
        max_records=max_records,
        timeout_s=timeout,
    ).validate()
    from .sample import StopOnce

    with StopOnce() as stop:  # Ctrl-C or SIGTERM: analyze what was read (exit 6), as `keyscope sample` keeps it
        s = sampling.sample_topic(conn, spec, progress=stop.progress)
        stop.mark(s)
    return s


# ---------------------------------------------------------------- rendering


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
    from ..render import fmt_pct

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
    from ..render import bar

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
    from ..render import text_table

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
    from ..render import markdown_table

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
