"""``keyscope partition``: which partition does this key land on, and why."""

from __future__ import annotations

import sys

import click

from ..errors import UsageError
from . import FORMAT_OPTION, cli



def _partitioner_help() -> str:
    from ..partitioners import PARTITIONERS

    parts = [f"{p.name} ({', '.join(p.aliases)})" for p in PARTITIONERS.values()]
    return "Partitioner, or a client's name for it, or 'all': " + "; ".join(parts) + "."


@cli.command()
@click.argument("keys", nargs=-1)
@click.option("-p", "--partitions", "partitions", type=int, required=True, help="Partition count of the topic.")
@click.option("--partitioner", "partitioner", default="all", show_default=True, help=_partitioner_help())
@click.option(
    "--key-encoding",
    type=click.Choice(["utf8", "hex", "base64"]),
    default="utf8",
    show_default=True,
    help="How KEYs (or stdin lines) are written.",
)
@click.option(
    "--stdin-format",
    type=click.Choice(["lines", "kcat"]),
    default="lines",
    show_default=True,
    help="stdin: one key per line, or kcat -f '%K:%k\\n' records (null keys kept apart).",
)
@click.option("--summary", is_flag=True, help="Print records per partition instead of one row per key.")
@FORMAT_OPTION
def partition(keys, partitions, partitioner, key_encoding, stdin_format, summary, fmt):
    """Which partition does each KEY land on, and why.

    With no KEY, reads keys from stdin.  From a topic, keep null keys apart
    from the empty key with kcat's %K (the key length, -1 for null):

    \b
      kcat -C -b HOST -t TOPIC -e -f '%K:%k\\n' |
        keyscope partition -p 6 --summary --stdin-format kcat

    Otherwise one key per line (a null key cannot be written that way).
    Most producers never hash a null key (sticky/random placement);
    librdkafka's default also sends the empty key to a random partition.
    Rules, formulas and test vectors: docs/partitioners.md.

    Exit codes: 0 ok; 2 bad option, unknown partitioner or partition count
    < 1; 3 a key that is not valid hex/base64; 130 Ctrl-C (docs/exit-codes.md).
    """
    from ..model import keys as keyio
    from ..report import format as render
    from ..partitioners import SMALL_COLUMN, partition_counts, partition_frame, partition_records

    if keys:
        raw = keyio.decode_key_args(keys, key_encoding)
        if len(raw) < SMALL_COLUMN:
            # A handful of keys: plain Python end to end (no Polars/LLVM start-up).
            if summary:
                click.echo(render.partition_summary(partition_counts(raw, partitions, partitioner), partitions, fmt))
            else:
                render.partition_rows_small(partition_records(raw, partitions, partitioner), partitions, fmt, sys.stdout)
            return
        series = keyio.keys_from_args(keys, key_encoding)
    else:
        if sys.stdin.isatty():
            raise UsageError("give one or more KEYs, or pipe keys on stdin (one per line)")
        data = sys.stdin.buffer.read()
        if stdin_format == "kcat":
            series = keyio.keys_from_kcat(data)
        else:
            series = keyio.keys_from_lines(data, key_encoding)
    if summary:
        click.echo(render.partition_summary(partition_counts(series, partitions, partitioner), partitions, fmt))
    else:
        render.partition_rows(partition_frame(series, partitions, partitioner), partitions, fmt, sys.stdout)
