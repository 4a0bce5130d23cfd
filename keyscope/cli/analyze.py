"""``keyscope analyze``: which partition is hot, which keys make it hot, how sure we are."""

from __future__ import annotations

import click

from ..errors import EXIT_SKEW
from ..model.limits import finite_threshold
from . import FORMAT_OPTION, cli, parquet_magic

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
    if sample_path and not topic and parquet_magic(sample_path):
        from ..io import prefetch

        prefetch.start(sample_path)  # the key table read on a thread while the rest is imported
    from ..report import analyze as report
    from ..report.documents import AnalyzeDocument
    from ..analysis import analyze as run_analysis
    from ..errors import EXIT_PARTIAL, UsageError

    if sample_path and topic:
        raise UsageError("give a SAMPLE file or --topic, not both")
    if not sample_path and not topic:
        raise UsageError("give a SAMPLE file, or --topic (with --bootstrap-server) to sample and analyze in one go")
    if sample_path:
        from ..sample import read_sample

        # a Parquet file is never a profile: keyscope.scan (0.02-0.04 s to import) only for the rest
        if not parquet_magic(sample_path):
            from ..scan.profile import is_profile

            if is_profile(sample_path):  # a whole-topic scan (keyscope scan): exact loads, sketched hot keys
                from .scan import analyze_profile_cmd

                return analyze_profile_cmd(sample_path, top, fmt, fail_on_skew)
        sample = read_sample(sample_path, columns=())  # keys and partitions from the pages, with the key table
    else:
        sample = _sample_now(topic, bootstrap_server, command_config, overrides, max_records, per_partition,
                             from_time, timeout)  # fmt: skip
    result = run_analysis(sample, top=top, by=by, load=load, seed=seed)
    document = AnalyzeDocument(result, fail_on_skew)
    click.echo(report.render(document, fmt))
    if document.exceeded:
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
    from ..kafka.connection import resolve

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
        s = sampling.sample_topic(conn, spec, progress=stop.progress, phase=stop.phase)
        stop.mark(s)
    return s
