"""``keyscope whatif`` and ``keyscope recommend``: remedies evaluated before anything is changed."""

from __future__ import annotations

import click

from ..errors import EXIT_SKEW
from ..model.limits import check_count, finite_threshold
from . import FORMAT_OPTION, cli, parquet_magic

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
    from ..grid import Grid, run_whatif
    from . import memory

    memory.one_arena()  # before any thread: see keyscope/cli/memory.py
    grid = Grid.parse(partitions, partitioners, key_by, separator, salt_hot, salt_by, salt_seed, consumers)
    magic = parquet_magic(sample_path)
    if magic and grid.fields:
        from ..io import prefetch

        prefetch.start_codes(sample_path, grid.fields)  # the fields' codes read on a thread while the rest is imported
    from ..report import plot as plotting
    from ..report import whatif as report
    from ..report.documents import WhatIfDocument

    if not magic and _is_profile(sample_path):  # a whole-topic scan (keyscope scan): exact loads
        from .scan import whatif_profile_cmd

        return whatif_profile_cmd(sample_path, grid.counts, grid.partitioners, grid.keysets, separator, grid.salts,
                                  grid.consumers, today_partitioner, fail_on_skew, plot, fmt)
    if plot:
        plotting.matplotlib()  # fail before the work, not after it
    run = run_whatif(sample_path, grid, today_partitioner, fail_on_skew)
    if plot:
        plotting.write_plot(plot, run.whatif.today, run.results)
    click.echo(report.render(WhatIfDocument(run), fmt))
    if run.exceeded:
        best = run.best
        click.echo(
            f"keyscope: best predicted skew {best.skew:.2f} ({best.name}) is above --fail-on-skew {fail_on_skew:g}",
            err=True,
        )
        click.get_current_context().exit(EXIT_SKEW)




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
    keep = keep_order_by.strip()
    if max_partitions is not None:
        check_count(max_partitions, "--max-partitions")
    if consumers is not None:
        check_count(consumers, "--consumers")
    from . import memory

    memory.one_arena()  # before any thread: see keyscope/cli/memory.py
    magic = parquet_magic(sample_path)
    if magic:
        from ..io import prefetch

        prefetch.start_codes(sample_path)  # every field's codes read on a thread while the rest is imported
    from ..advice import Constraints
    from ..advice import recommend as run
    from ..report import recommend as report
    from ..report.documents import RecommendDocument
    from ..sample import read_sample

    if not magic and _is_profile(sample_path):  # a whole-topic scan: counts, partitioners, exact
        from .scan import recommend_profile_cmd

        return recommend_profile_cmd(sample_path, keep, max_partitions, target_skew, today_partitioner, top, fmt)
    sample = read_sample(sample_path, columns=("partition",))  # the keys stay in the file until needed (WhatIf)
    c = Constraints(keep_order_by=keep, max_partitions=max_partitions, max_keys_moved=max_keys_moved,
                    target_skew=target_skew)
    advice = run(sample, c, consumers=consumers, partitioner=today_partitioner, separator=separator)
    click.echo(report.render(RecommendDocument(advice, str(sample_path), sample.meta.topic, len(sample), top), fmt))


def _is_profile(path) -> bool:
    from ..scan.profile import is_profile

    return is_profile(path)
