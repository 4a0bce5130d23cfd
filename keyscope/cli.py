"""The ``keyscope`` command: parse options, call the library, render.

Exit codes (docs/exit-codes.md): 0 ok, 1 internal error (a bug: please report),
2 usage error, 3 unreadable input, 4 Kafka/broker problem, 5 skew above
``--fail-on-skew``, 6 partial result kept (interrupted or broker lost),
130 interrupted before anything was kept.
"""

from __future__ import annotations

import sys

import click

from . import __version__
from .errors import EXIT_INTERRUPTED, KeyscopeError, UsageError

FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
    help="table for people, json for machines, markdown for incident docs.",
)


class KeyscopeGroup(click.Group):
    """Turns user mistakes into one line and a documented exit code, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyscopeError as e:
            click.echo(f"keyscope: error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("keyscope: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except BrokenPipeError:
            # `keyscope ... | head`: the reader left; that is not an error.
            import os

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)


@click.group(cls=KeyscopeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="keyscope")
def cli():
    """keyscope: Kafka partition-key distribution analyzer and rebalancing advisor.

    Reproduces the producers' partitioner exactly, finds hot keys, predicts
    what more partitions or another key strategy would do, and computes the
    same skew numbers as the consumer-lag alert.
    """


# ---------------------------------------------------------------- partition


def _partitioner_help() -> str:
    from .partitioners import PARTITIONERS

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
    from . import keys as keyio
    from . import render
    from .partitioners import partition_frame

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


def main(argv=None):
    cli.main(args=argv, prog_name="keyscope")


if __name__ == "__main__":  # pragma: no cover
    main()
