"""``keyscope whatif`` and ``keyscope recommend``: remedies evaluated before anything is changed."""

from __future__ import annotations

import itertools
import textwrap

import click

from ..errors import EXIT_SKEW, UsageError
from ..keys import display_name, shown_label
from ..limits import check_count, finite_threshold
from . import FORMAT_OPTION, cli

WIDTH = 100
BAR = 16


def _int_list(values, what: str) -> list[int]:
    out = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                raise UsageError(f"{what}: empty item in {str(v)!r}; give numbers separated by commas, e.g. 4,6,12")
            try:
                n = int(part)
            except ValueError:
                raise UsageError(f"{what}: {part!r} is not a whole number") from None
            out.append(check_count(n, what))
    return list(dict.fromkeys(out))


def _partitioner_list(values) -> list[str]:
    from ..partitioners import get_partitioner

    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                out.append(get_partitioner(part).name)
    return list(dict.fromkeys(out))


SAMPLE_ARG = click.argument("sample_path", metavar="SAMPLE", type=click.Path(readable=False))
TODAY_OPTION = click.option(
    "--today-partitioner",
    "today_partitioner",
    default=None,
    metavar="NAME",
    help="The producers' partitioner today (default: detected from the sample: the one that explains "
    "where the sampled keys are).",
)
SEPARATOR_OPTION = click.option(
    "--separator",
    default="|",
    show_default=True,
    help="Joins the key and fields in a composite key: key + SEP + field.",
)


@cli.command()
@SAMPLE_ARG
@click.option(
    "-p",
    "--partitions",
    "partitions",
    multiple=True,
    metavar="N[,N...]",
    help="Partition counts to evaluate, e.g. 6 or 4,6,12 (default: today's).",
)
@click.option(
    "--partitioner",
    "partitioners",
    multiple=True,
    metavar="NAME[,NAME...]",
    help="Producer partitioner(s) to evaluate: murmur2 (Java, kafka-python), consistent (librdkafka "
    "default), fnv1a (Sarama), or a client's name (default: today's).",
)
@click.option(
    "--key-by",
    "key_by",
    multiple=True,
    metavar="key[,FIELD...]",
    help="Key expression: the key plus fields captured with `keyscope sample --field`, e.g. "
    "key,tenant_id. Repeat to compare several. Records whose field is null keep the plain key.",
)
@SEPARATOR_OPTION
@click.option(
    "--salt-hot",
    "salt_hot",
    multiple=True,
    metavar="K[:D] | P%[:D]",
    help="Split the top K keys (or keys with at least P% of traffic) over D sub-keys key#0..key#D-1 "
    "(D default 4). Repeat to compare several.",
)
@click.option(
    "--salt-by",
    "salt_by",
    default="offset",
    show_default=True,
    metavar="offset|FIELD",
    help="What picks a record's salt: mmh3 of a captured field (per key+field order kept), or of the "
    "offset (stands for a random/round-robin salt: no order for salted keys).",
)
@click.option("--salt-seed", type=int, default=0, show_default=True, help="mmh3 seed of the salt hash.")
@click.option(
    "--consumers",
    "consumers",
    multiple=True,
    metavar="C[,C...]",
    help="Consumer-group sizes for the busiest-consumer figures (default: today's partition count and twice it).",
)
@TODAY_OPTION
@click.option(
    "--fail-on-skew",
    "fail_on_skew",
    type=click.FloatRange(min=0),
    default=None,
    metavar="X",
    callback=finite_threshold,
    help="Exit with code 5 when even the best scenario's predicted skew is above X (report still printed).",
)
@click.option(
    "--plot",
    "plot",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.png",
    help="Also write a before/after chart (needs matplotlib: pip install 'keyscope[plot]').",
)
@FORMAT_OPTION
def whatif(
    sample_path, partitions, partitioners, key_by, separator, salt_hot, salt_by, salt_seed, consumers,
    today_partitioner, fail_on_skew, plot, fmt,
):
    """Predict what more partitions, another partitioner or another key strategy would do.

    Evaluated on SAMPLE (from `keyscope sample`) without touching the cluster:
    per-partition records and bytes, the skew ratio (the alert's definition)
    with its 95% interval, the keys and traffic that change partition (their
    order breaks across the switch), the ordering that remains, and the
    busiest consumer under Kafka's range and round-robin assignors.

    Scenarios are every combination of the options given, e.g.
    `--partitions 4,6 --partitioner murmur2,consistent` is four scenarios.

    \b
    Examples:
      keyscope whatif sample.parquet --partitions 6
      keyscope whatif sample.parquet --key-by key,tenant_id --partitions 3,6
      keyscope whatif sample.parquet --salt-hot 1:4 --salt-by contact_id

    \b
    Exit codes:
      0  report printed
      2  bad option (unknown field, partitioner, malformed list)
      3  SAMPLE unreadable
      5  --fail-on-skew X: the best scenario's predicted skew is above X
      7  the sample cannot be re-weighted to the topic (see keyscope analyze)
    """
    from .. import render
    from ..sample import read_sample
    from ..scenarios import Scenario, WhatIf, parse_key_by, parse_salt

    counts = _int_list(partitions, "--partitions")
    parts = _partitioner_list(partitioners)
    keysets = [parse_key_by(k) for k in key_by]
    salts = [parse_salt(s, by=salt_by, seed=salt_seed) for s in salt_hot]
    group = _int_list(consumers, "--consumers")
    if not (counts or parts or keysets or salts or group):
        raise UsageError(
            "give at least one scenario: --partitions, --partitioner, --key-by, --salt-hot, or --consumers"
            " alone for today's layout (or let `keyscope recommend` generate them)"
        )
    if salt_by != "offset" and not salts:
        raise UsageError("--salt-by only applies with --salt-hot")
    from ..scan.profile import is_profile

    if is_profile(sample_path):  # a whole-topic scan (keyscope scan): exact loads
        from .scan import whatif_profile_cmd

        return whatif_profile_cmd(sample_path, counts, parts, keysets, separator, salts, group, today_partitioner,
                                  fail_on_skew, plot, fmt)
    if plot:
        _matplotlib()  # fail before the work, not after it
    sample = read_sample(sample_path)
    w = WhatIf(sample, partitioner=today_partitioner, consumers=group or None)
    scenarios = [
        Scenario(n, p, key_fields=ks, separator=separator, salt=s)
        for n, p, ks, s in itertools.product(
            counts or [w.today_partitions], parts or [w.today_partitioner], keysets or [()], salts or [None]
        )
    ]
    scenarios = list(dict.fromkeys(scenarios))
    if not (counts or parts or keysets or salts):
        scenarios = []  # --consumers alone: today's layout, consumer counts only
    results = w.evaluate_all(scenarios) if scenarios else []
    doc = whatif_doc(w, results, sample_path)
    fewer = sorted({sc.partitions for sc in scenarios if sc.partitions < w.today_partitions})
    if fewer:
        doc["sample"]["notes"].append(
            f"Kafka cannot reduce a topic's partitions: {', '.join(map(str, fewer))} partition(s) mean a new topic"
            " and moving every consumer to it"
        )
    best = min(results or [w.today], key=lambda r: r.skew)
    exceeded = fail_on_skew is not None and best.skew > fail_on_skew
    if fail_on_skew is not None:
        doc["fail_on_skew"] = {
            "threshold": fail_on_skew,
            "applies_to": "best scenario (lowest predicted skew)",
            "best_scenario": best.name,
            "best_skew": best.skew,
            "exceeded": exceeded,
        }
    if plot:
        write_plot(plot, w.today, results)
    if fmt == "json":
        click.echo(render.to_json(doc))
    else:
        click.echo(display_name(whatif_report(doc, markdown=(fmt == "markdown"))))
    if exceeded:
        click.echo(
            f"keyscope: best predicted skew {best.skew:.2f} ({best.name}) is above --fail-on-skew {fail_on_skew:g}",
            err=True,
        )
        click.get_current_context().exit(EXIT_SKEW)


def whatif_doc(w, results, path) -> dict:
    s = w.sample
    return {
        "sample": {
            "path": str(path),
            "topic": s.meta.topic,
            "records": s.df.height,
            "partitions": w.today_partitions,
            "load_unit": w.load_unit,
            "today_partitioner": {"name": w.today_partitioner, "match_share": w.today_match},
            "notes": list(w.notes),
        },
        "today": w.today.to_dict(),
        "scenarios": [r.to_dict() for r in results],
    }


# ---------------------------------------------------------------- rendering


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
    from ..render import bar

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
    from ..render import text_table

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
    from ..render import markdown_table, text_table

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


def _matplotlib():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed: pip install 'keyscope[plot]'") from None
    return plt


def write_plot(path: str, today, results) -> None:
    """Before/after bars per partition, one panel per scenario."""
    plt = _matplotlib()
    import numpy as np

    fig, axes = plt.subplots(len(results), 1, figsize=(8, 2.6 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        n = max(today.partitions, r.partitions)
        x = np.arange(n)
        before = np.zeros(n)
        before[: today.partitions] = today.records
        after = np.zeros(n)
        after[: r.partitions] = r.records
        ax.bar(x - 0.2, before, 0.4, label=f"today (skew {today.skew:.2f})", color="#999999")
        ax.bar(x + 0.2, after, 0.4, label=f"predicted (skew {r.skew:.2f})", color="#d95f02")
        ax.set_title(r.name, fontsize=10)
        ax.set_xticks(x)
        ax.set_xlabel("partition")
        ax.set_ylabel("records")
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise UsageError(f"--plot {path}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- recommend


@cli.command()
@SAMPLE_ARG
@click.option(
    "--keep-order-by",
    "keep_order_by",
    default="key",
    show_default=True,
    metavar="key|FIELD|none",
    help="Ordering the consumers need: per key (only partition counts and partitioners may change), "
    "per key+FIELD (composite keys and salting by FIELD allowed too), or none.",
)
@click.option(
    "--max-partitions",
    "max_partitions",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Largest partition count to consider (default: twice today's).",
)
@click.option(
    "--max-keys-moved",
    "max_keys_moved",
    type=click.FloatRange(min=0, max=1),
    default=1.0,
    show_default=True,
    metavar="F",
    help="Largest share of distinct keys allowed to change partition (0.5 = 50%).",
)
@click.option(
    "--consumers",
    "consumers",
    type=click.IntRange(min=1),
    default=None,
    metavar="C",
    help="Consumers in the group, for the busiest-consumer figure (default: today's partition count).",
)
@click.option(
    "--target-skew",
    "target_skew",
    type=click.FloatRange(min=1),
    default=1.25,
    show_default=True,
    metavar="X",
    help="Skew that counts as fixed: of the remedies whose predicted skew (upper 95% bound) is at or "
    "under X, the least disruptive is recommended.",
)
@TODAY_OPTION
@SEPARATOR_OPTION
@click.option("--top", type=click.IntRange(min=1), default=8, show_default=True, help="Ranked alternatives to list.")
@FORMAT_OPTION
def recommend(sample_path, keep_order_by, max_partitions, max_keys_moved, target_skew, consumers, today_partitioner,
              separator, top, fmt):
    """Recommend the remedy for a hot partition, with its cost and the producer change.

    Generates the candidates itself (partition counts up to --max-partitions,
    the three partitioners, composite keys over captured fields that vary
    within the hottest key, salting the hot keys with D = 2, 4, 8, and
    combinations), ranks them by the upper end of the predicted skew's 95%
    interval under the constraints, recommends the least disruptive of those
    that reach --target-skew (else the best, near-ties by least disruption), and
    prints why, what it costs, snippets for kafka-python, confluent-kafka and
    the Java client, and migration notes.  When nothing under the constraints
    helps, it says so and which constraint to relax.

    \b
    Exit codes:
      0  advice printed (including "nothing helps")
      2  bad option (unknown field, --max-partitions below today's count)
      3  SAMPLE unreadable
      7  the sample cannot be re-weighted to the topic (see keyscope analyze)
    """
    from .. import render
    from ..advice import Constraints
    from ..advice import recommend as run
    from ..sample import read_sample

    keep = keep_order_by.strip()
    if max_partitions is not None:
        check_count(max_partitions, "--max-partitions")
    if consumers is not None:
        check_count(consumers, "--consumers")
    from ..scan.profile import is_profile

    if is_profile(sample_path):  # a whole-topic scan: partition counts and partitioners, exact
        from .scan import recommend_profile_cmd

        return recommend_profile_cmd(sample_path, keep, max_partitions, target_skew, today_partitioner, top, fmt)
    sample = read_sample(sample_path)
    c = Constraints(keep_order_by=keep, max_partitions=max_partitions, max_keys_moved=max_keys_moved,
                    target_skew=target_skew)
    advice = run(sample, c, consumers=consumers, partitioner=today_partitioner, separator=separator)
    doc = advice.to_dict(top=top)
    doc["sample"] = {"path": str(sample_path), "topic": sample.meta.topic, "records": sample.df.height}
    if fmt == "json":
        click.echo(render.to_json(doc))
    else:
        click.echo(display_name(recommend_report(advice, doc, top, markdown=(fmt == "markdown"))))


def recommend_report(advice, doc: dict, top: int, markdown: bool = False) -> str:
    from ..render import markdown_table, text_table

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
