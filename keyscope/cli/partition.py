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
@click.option("--summary", is_flag=True, help="Print records per partition instead of one row per key.")
@FORMAT_OPTION
def partition(keys, partitions, partitioner, key_encoding, summary, fmt):
    """Which partition does each KEY land on, and why.

    With no KEY, reads keys from stdin, one per line, at column speed:

      kcat -C -b HOST -t TOPIC -e -f '%k\\n' | keyscope partition -p 6 --summary

    Null keys are never hashed by producers (sticky/random placement);
    librdkafka's default also sends the empty key to a random partition.
    """
    from .. import keys as keyio
    from .. import render
    from ..partitioners import partition_frame

    if keys:
        series = keyio.keys_from_args(keys, key_encoding)
    else:
        if sys.stdin.isatty():
            raise UsageError("give one or more KEYs, or pipe keys on stdin (one per line)")
        series = keyio.keys_from_lines(sys.stdin.buffer.read(), key_encoding)
    result = partition_frame(series, partitions, partitioner)
    if summary:
        click.echo(render.partition_summary(result, partitions, fmt))
    else:
        render.partition_rows(result, partitions, fmt, sys.stdout)
