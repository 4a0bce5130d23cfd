"""``keyscope scan``: every record of a range into a profile (exact what-if loads, sketched hot keys)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ..errors import EXIT_PARTIAL, InputError, KeyscopeError, UsageError
from ..model.keys import display_name
from . import FORMAT_OPTION, cli, connection_options


class PartialScan(KeyscopeError):
    exit_code = EXIT_PARTIAL


@cli.command()
@connection_options
@click.option("-t", "--topic", required=True, help="Topic to scan.")
@click.option("-o", "--output", type=click.Path(), metavar="PROFILE", help="Profile file to write [default: TOPIC.profile.json].")
@click.option("--force", is_flag=True, help="Overwrite PROFILE if it exists.")
@click.option("--from", "start", metavar="WHERE", default="earliest", show_default=True,
              help="earliest, an offset (every partition from it), or a time (ISO-8601, or 2h back from now).")
@click.option("--to", "stop", metavar="WHERE", default="latest", show_default=True,
              help="latest (the high watermarks, or last stable offsets, when the scan starts), an offset or a time.")
@click.option("--key-by", "key_by", multiple=True, metavar="key[,FIELD...]",
              help="Also count this key expression (the key plus --field columns), for whatif --key-by. Repeatable.")
@click.option("--field", "fields", multiple=True, metavar="NAME=PATH",
              help="A column for --key-by: a JSON path into the value ($.tenant_id) or header:NAME. Repeatable.")
@click.option("--separator", default="|", show_default=True, help="Joins the key and fields in a composite key.")
@click.option("--partitions-max", type=int, default=64, show_default=True, metavar="N",
              help="Count exact loads for every partition count 1..N (and today's).")
@click.option("--partitioner", "partitioners", default="murmur2,consistent,fnv1a", show_default=True,
              metavar="NAME[,NAME...]", help="Partitioners to count loads for (agreement covers every rule).")
@click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
              help="Local worker processes [default: the machine's cores].")
@click.option("--dask", "dask", metavar="ADDRESS", default=None,
              help="Run the tasks on this Dask scheduler (tcp://host:8786) instead of local processes.")
@click.option("--spark", "spark", metavar="MASTER", default=None,
              help="Run the scan as a PySpark job over Spark's Kafka source (local[2], spark://host:7077); "
              "TLS/SASL settings reach it as Kafka client properties (not AWS_MSK_IAM, GSSAPI, an OAuth token URL).")
@click.option("--tasks", type=click.IntRange(min=1), default=None, metavar="N",
              help="Split the range into about N offset-range tasks [default: 2 per local worker, 4 per Dask worker].")
@click.option("--isolation", type=click.Choice(["read_committed", "read_uncommitted"]), default="read_committed",
              show_default=True, help="As keyscope sample: aborted transactions left out, up to the last stable offset.")
@click.option("--top", type=click.IntRange(min=0), default=10, show_default=True, help="Hot keys to list.")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@FORMAT_OPTION
def scan(conn, topic, output, force, start, stop, key_by, fields, separator, partitions_max, partitioners, workers,
         dask, spark, tasks, isolation, top, quiet, fmt):
    """Read every record of TOPIC in a range into a PROFILE for analyze, whatif and recommend.

    Read-only (no group, no commit).  The range is split into offset-range
    tasks (big partitions into more), run in local processes or on a Dask
    cluster; each returns small counters that add up: exact loads of every
    partition count 1..--partitions-max, exact partitioner agreement, and
    sketches (hot keys with an error bound, distinct keys, record sizes).

    \b
    Examples:
      keyscope scan -b kafka:9092 -t orders -o orders.profile.json
      keyscope scan -t orders --key-by key,tenant --field tenant=$.tenant_id --partitions-max 128
      keyscope scan -t orders --dask tcp://scheduler:8786 --from 2026-11-01T00:00:00Z
      keyscope whatif orders.profile.json --partitions 6,12

    \b
    Exit codes: 0 written; 2 bad option, unreachable --dask scheduler, --spark without pyspark, output exists
    without --force; 3 output not writable; 4 cluster unreachable, unknown topic, a task failing 3 times, the
    Spark job failing;
    6 Ctrl-C or SIGTERM after some tasks completed (their profile is written, marked partial);
    130 Ctrl-C before any task completed (nothing written).
    """
    from ..partitioners import get_partitioner
    from ..sampling import parse_field
    from ..scan import ScanRequest, parse_bound, run_scan, write_profile
    from ..scan.answers import analyze_profile
    from ..whatif.spec import parse_key_by
    from .sample import _check_writable

    if spark is not None:
        from ..scan.spark import check_options

        check_options(spark, workers, dask)
    specs = [parse_field(f) for f in fields]
    names = {f.name for f in specs}
    exprs = [()] + [parse_key_by(k) for k in key_by]
    exprs = list(dict.fromkeys(exprs))
    for e in exprs:
        missing = [f for f in e if f not in names]
        if missing:
            raise UsageError(f"--key-by key,{','.join(e)}: give --field {missing[0]}=PATH for {missing[0]!r}")
    rules = list(dict.fromkeys(get_partitioner(r).name for r in partitioners.split(",") if r.strip()))
    if not rules:
        raise UsageError("--partitioner: give at least one name")
    req = ScanRequest(
        topic, parse_bound(start, "--from", "earliest"), parse_bound(stop, "--to", "latest"), tuple(exprs),
        tuple(specs), separator, partitions_max, tuple(rules), workers, dask, tasks, isolation,
    )
    if req.start.kind == "latest":
        raise UsageError("--from latest reads nothing; give earliest, an offset or a time")
    if req.partitions_max < 1:
        raise UsageError(f"--partitions-max must be at least 1, got {partitions_max}")
    path = Path(output) if output else Path(f"{topic}.profile.json")
    _check_writable(path, force)
    show = _Progress(topic) if not quiet else None
    with _Signals():
        try:
            if spark is None:
                result = run_scan(conn, req, progress=show)
            else:
                from ..scan.spark import run_spark

                result = run_spark(conn, req, spark, progress=show)
        except KeyboardInterrupt:
            if show:
                show.clear()
            raise
        if show:
            show.clear()
        try:
            write_profile(result.profile, path)
        except OSError as e:
            raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    doc = scan_doc(result, analyze_profile(result.profile, top), str(path))
    click.echo(display_name(render_scan(doc, fmt)))
    if result.partial:
        raise PartialScan(f"scan stopped early: {doc['tasks']['done']} of {doc['tasks']['planned']} tasks kept in {path}")


def scan_doc(result, analysis, path: str) -> dict:
    d = analysis.to_dict()
    return {
        "kind": "scan",
        "profile": path,
        "topic": d["topic"],
        "partition_count": d["partition_count"],
        "complete": d["complete"],
        "engine": result.engine,
        "elapsed_s": round(result.elapsed_s, 3),
        "records": d["records"],
        "bytes": d["bytes"],
        "records_per_s": round(d["records"] / result.elapsed_s, 1) if result.elapsed_s > 0 else 0.0,
        "tasks": {"planned": d["tasks_planned"], "done": d["tasks_done"], "retried": result.retried},
        "partitions": d["partitions"],
        "skew": d["skew"],
        "agreement": d["agreement"],
        "today_partitioner": d["today_partitioner"],
        "expressions": d["expressions"],
        "sizes": d["sizes"],
        "notes": d["notes"],
    }


def _pct(x: float) -> str:
    return "<0.1%" if 0 < x < 0.001 else f"{100 * x:.1f}%"


def _field_cell(name: str, d: dict) -> str:
    vals = ", ".join(f"{'(none)' if v is None else v} {n:,}" for v, n in d["values"][:3])
    rest = [f"{d['other']:,} other"] if d["other"] else []
    rest += [f"{d['cut']:,} not tracked"] if d["cut"] else []
    return f"{name}: {vals}" + (f" (+{', '.join(rest)})" if rest else "")


def render_analysis_text(d: dict, markdown: bool) -> list[str]:
    """Partitions, agreement, hot keys: shared by scan's summary and analyze of a profile."""
    from ..report.format import markdown_table, text_table

    table = markdown_table if markdown else text_table
    out = []
    sk = d["skew"]
    out.append(f"{d['records']:,} records, {d['bytes']:,} bytes in {d['partition_count']} partitions"
               f" (exact); skew ratio {sk['records']:.2f} by records, {sk['bytes']:.2f} by bytes, hottest partition "
               f"{sk['hottest_partition']}")
    out.append("")
    out.append(table(["partition", "records", "share", "bytes", "null keys", "offsets"],
                     [[r["partition"], f"{r['records']:,}", _pct(r["share"]), f"{r['bytes']:,}", f"{r['null_keys']:,}",
                       "-" if r["first_offset"] is None else f"{r['first_offset']:,}..{r['last_offset']:,}"]
                      for r in d["partitions"]], "rrrrrl"))
    out.append("")
    out.append("Partitioner agreement (exact: records on the rule's partition / records it hashes):")
    out.append(table(["partitioner", "agree", "of", "share"],
                     [[a["partitioner"], f"{a['matches']:,}", f"{a['hashed']:,}", _pct(a["share"])]
                      for a in d["agreement"][:5]], "lrrr"))
    for e in d["expressions"]:
        out.append("")
        de = e["distinct_keys"]
        out.append(f"{e['name']}: distinct keys ~{de['estimate']:,.0f} (95%: {de['low']:,.0f}–{de['high']:,.0f}, HLL); "
                   f"hot-key counts within ±{e['max_error']:,} records; every key above {e['threshold']:,} records is listed")
        rows = []
        with_fields = any(h.get("fields") for h in e["top_keys"])
        for h in e["top_keys"]:
            r = h["records"]
            row = [h["key"] if h["key_encoding"] == "utf8" else f"0x{h['key']}",
                   f"{r['estimate']:,.0f}" + ("" if r["exact"] else f" ({r['low']:,.0f}–{r['high']:,.0f})"),
                   _pct(h["share"]["estimate"])]
            if with_fields:
                row.append("; ".join(_field_cell(f, d) for f, d in h.get("fields", {}).items()) or "-")
            rows.append(row)
        if rows:
            out.append(table(["key", "records", "share"] + (["top field values (exact)"] if with_fields else []), rows,
                             "lrr" + ("l" if with_fields else "")))
        else:
            out.append(f"no key holds more than {e['threshold']:,} records: no hot key")
    s = d["sizes"]
    out.append("")
    out.append(f"record size (key+value) p50 {s['p50']:,} B, p99 {s['p99']:,} B, max {s['max']:,} B "
               f"(KLL, rank error {_pct(s['rank_error'])})")
    for n in d["notes"]:
        out.append(f"note: {n}")
    return out


def render_scan(doc: dict, fmt: str) -> str:
    from ..report import format as render

    if fmt == "json":
        return render.to_json(doc)
    md = fmt == "markdown"
    head = (f"{'## ' if md else ''}scan of {doc['topic']}: {doc['tasks']['done']}/{doc['tasks']['planned']} tasks "
            f"({doc['engine']}), {doc['elapsed_s']:.1f}s, {doc['records_per_s']:,.0f} records/s -> {doc['profile']}")
    return "\n".join([head, ""] + render_analysis_text(doc, md))


class _Progress:
    """records and bytes done of the total the watermarks give, rate, ETA; one line, rewritten on a terminal."""

    def __init__(self, topic: str):
        self.topic = topic
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, p) -> None:
        now = time.monotonic()
        if self.tty and now - self.last < 0.2 and p.tasks_done < p.tasks_total:
            return
        self.last = now
        eta = p.eta_s
        bytes_total = p.bytes * p.offsets_total / p.offsets_done if p.offsets_done else 0
        line = (f"scanning {display_name(self.topic)}: {p.offsets_done:,}/{p.offsets_total:,} offsets "
                f"({100 * p.offsets_done / max(1, p.offsets_total):.0f}%), {p.records:,} records, "
                f"{p.bytes / 2**20:,.1f}/{bytes_total / 2**20:,.1f} MiB, {p.rate:,.0f} records/s, "
                f"tasks {p.tasks_done}/{p.tasks_total}" + (f", ETA {eta:.0f}s" if eta is not None else ""))
        sys.stderr.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown and self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


class _Signals:
    """SIGTERM stops the scan as Ctrl-C does (completed tasks are written); while the profile is written,
    signals are held until the file is in place (it is written to a temporary name and renamed)."""

    def __enter__(self):
        import signal
        import threading

        self.old = {}
        if threading.current_thread() is threading.main_thread():
            self.old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._term)
        return self

    def _term(self, signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        import signal

        for s, h in self.old.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- analyze / whatif / recommend on a profile


def _refuse(option: str, value) -> None:
    if value:
        raise UsageError(f"{option} needs the records themselves: give a sample (keyscope sample), not a profile")


def analyze_profile_cmd(path, top: int, fmt: str, fail_on_skew) -> None:
    """``keyscope analyze PROFILE``: exact partition loads and agreement, sketch-bounded hot keys."""
    from ..report import format as render
    from ..errors import EXIT_PARTIAL, EXIT_SKEW
    from ..scan import read_profile
    from ..scan.answers import analyze_profile

    a = analyze_profile(read_profile(path), top)
    doc = {"kind": "profile-analysis", "profile": str(path)} | a.to_dict()
    exceeded = fail_on_skew is not None and a.skew["records"] > fail_on_skew
    if fail_on_skew is not None:
        doc["fail_on_skew"] = {"threshold": fail_on_skew, "exceeded": exceeded}
    if fmt == "json":
        click.echo(render.to_json(doc))
    else:
        md = fmt == "markdown"
        head = f"{'## ' if md else ''}profile of {a.topic} ({path}): every record of the range"
        click.echo(display_name("\n".join([head, ""] + render_analysis_text(doc, md))))
    if exceeded:
        click.echo(f"keyscope: skew ratio {a.skew['records']:.2f} is above --fail-on-skew {fail_on_skew:g}", err=True)
        click.get_current_context().exit(EXIT_SKEW)
    if not a.complete:
        click.echo(f"keyscope: the profile is partial ({a.tasks_done} of {a.tasks_planned} tasks)", err=True)
        click.get_current_context().exit(EXIT_PARTIAL)


def _load_row(s: dict, today: bool = False) -> list[str]:
    hot = s["hottest_partition"]
    skew = f"{s['skew']:.2f}" + ("" if s["exact"] else "*")
    if s.get("bounds"):
        skew += f" (<={s['bounds']['skew_high']:.2f})"
    return [s["name"], str(s["partitions"]), skew,
            f"{s['bytes_skew']:.2f}", f"{hot}: {_pct(s['shares'][hot])}", f"{sum(s['records']):,}",
            f"{s['unhashed_records']:,}"]


def whatif_profile_cmd(path, counts, parts, keysets, separator, salts, group, today_partitioner, fail_on_skew, plot,
                       fmt) -> None:
    """``keyscope whatif PROFILE``: exact loads of other partition counts, partitioners and key expressions."""
    from ..report import format as render
    from ..errors import EXIT_SKEW
    from ..report.format import markdown_table, text_table
    from ..scan import read_profile
    from ..scan.answers import whatif_profile
    from ..scan.task import expression_name

    _refuse("--consumers", group)
    _refuse("--plot", plot)
    p = read_profile(path)
    exprs = [expression_name(k) for k in keysets]
    for k, e in zip(keysets, exprs):
        if k and e in p.expressions and p.expressions[e].separator != separator:
            raise UsageError(f"the profile joined key+{'+'.join(k)} with {p.expressions[e].separator!r}, "
                             f"not --separator {separator!r}")
    w = whatif_profile(p, counts, parts, exprs, today_partitioner, salts)
    doc = {"kind": "profile-whatif", "profile": str(path)} | w.to_dict()
    best = min(w.scenarios or [w.today], key=lambda s: s.skew)
    exceeded = fail_on_skew is not None and best.skew > fail_on_skew
    if fail_on_skew is not None:
        doc["fail_on_skew"] = {"threshold": fail_on_skew, "best_scenario": best.name, "best_skew": best.skew,
                               "exceeded": exceeded}
    if fmt == "json":
        click.echo(render.to_json(doc))
    else:
        md = fmt == "markdown"
        table = markdown_table if md else text_table
        rows = [_load_row(doc["today"], True)] + [_load_row(s) for s in doc["scenarios"]]
        out = [f"{'## ' if md else ''}what-if on the profile of {w.topic} ({path}): {w.records:,} records, "
               f"today {w.today_partitions} partitions, partitioner {w.today_partitioner} "
               f"({_pct(w.today_match_share)} agree, exact)", "",
               table(["scenario", "parts", "skew", "bytes skew", "hottest", "hashed records", "null keys"], rows,
                     "lrrrrrr"),
               "", "Loads are exact (counted over every record, not sampled); * null keys spread evenly, or a salted "
               "figure with a bound (<= the highest skew the bound allows)."]
        out += [f"note: {n}" for n in w.notes]
        click.echo(display_name("\n".join(out)))
    if exceeded:
        click.echo(f"keyscope: best predicted skew {best.skew:.2f} ({best.name}) is above --fail-on-skew "
                   f"{fail_on_skew:g}", err=True)
        click.get_current_context().exit(EXIT_SKEW)


def recommend_profile_cmd(path, keep_order_by, max_partitions, target_skew, today_partitioner, top, fmt) -> None:
    from ..report import format as render
    from ..scan import read_profile
    from ..scan.answers import recommend_profile

    keep = keep_order_by.strip()
    p = read_profile(path)
    if keep not in ("key", "none"):
        counted = {f for e in p.expressions.values() for f in e.fields}
        tracked = {f for e in p.expressions.values() for t in e.tracked.values() for f in t.fields}
        if keep not in counted | tracked:
            raise UsageError(f"--keep-order-by {keep}: the profile has no counters nor distribution of {keep!r}; "
                             f"scan again with --field {keep}=PATH (and --key-by key,{keep}), or give a sample")
    a = recommend_profile(p, target_skew, max_partitions, today_partitioner, top, keep)
    doc = {"kind": "profile-recommend", "profile": str(path)} | a.to_dict()
    if fmt == "json":
        click.echo(render.to_json(doc))
        return
    md = fmt == "markdown"
    out = [f"{'## ' if md else ''}recommendation from the profile of {a.topic} ({path})", "", a.reason, ""]
    table = render.markdown_table if md else render.text_table
    out.append(table(["scenario", "parts", "skew", "bytes skew", "hottest", "hashed records", "null keys"],
                     [_load_row(doc["today"])] + [_load_row(s) for s in doc["ranked"]], "lrrrrrr"))
    out += [f"note: {n}" for n in a.notes]
    click.echo(display_name("\n".join(out)))
