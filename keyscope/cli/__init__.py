"""The ``keyscope`` command: parse options, call the library, render.

Exit codes (docs/exit-codes.md): 0 ok, 1 internal error (a bug: please report),
2 usage error, 3 unreadable input, 4 Kafka/broker problem, 5 skew above
``--fail-on-skew``, 6 partial result kept (interrupted or broker lost),
130 interrupted before anything was kept.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import EXIT_INTERRUPTED, KeyscopeError

FORMAT_OPTION = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown"]),
    default="table",
    show_default=True,
    help="table for people, json for machines, markdown for incident docs.",
)


def connection_options(fn):
    """--bootstrap-server / --command-config / -X, as Kafka's CLI tools and kcat take them.

    The command receives ``conn`` (a keyscope.kafka.connection.Connection) instead.
    """
    import functools

    @click.option(
        "-b",
        "--bootstrap-server",
        envvar="KEYSCOPE_BOOTSTRAP_SERVER",
        metavar="HOST:PORT",
        help="Kafka bootstrap server(s), comma-separated [env: KEYSCOPE_BOOTSTRAP_SERVER].",
    )
    @click.option(
        "--command-config",
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help="client.properties as for Kafka's CLI tools (security.protocol, sasl.mechanism, sasl.jaas.config, ssl.* PEM or PKCS12 stores, client.id; docs/security.md).",
    )
    @click.option("-X", "overrides", multiple=True, metavar="KEY=VALUE", help="Client property, as kcat -X; repeatable.")
    @click.option("-v", "--debug", is_flag=True,
                  help="Show the connection steps on stderr (TCP, TLS, SASL, metadata); secrets are masked.")
    @functools.wraps(fn)
    def wrapper(*args, bootstrap_server, command_config, overrides, debug, **kwargs):
        from ..kafka.connection import resolve

        conn = resolve(bootstrap_server, command_config, overrides)
        for note in conn.notes:
            click.echo(f"keyscope: note: {note}", err=True)
        if conn.ignored:
            click.echo(f"keyscope: note: ignoring client properties {', '.join(conn.ignored)}", err=True)
        if conn.ignored_lines:
            lines = ", ".join(map(str, conn.ignored_lines))
            click.echo(f"keyscope: note: ignoring --command-config line(s) {lines}: not a known client property "
                       "(contents not shown)", err=True)
        if debug:
            _start_debug(conn)
        return fn(*args, conn=conn, **kwargs)

    return wrapper


def _start_debug(conn) -> None:
    """--debug: keyscope's own connection steps and kafka-python's log, on stderr, with every secret masked."""
    import logging

    secrets = sorted(set(conn.secrets()), key=len, reverse=True)

    def mask(text: str) -> str:
        for s in secrets:
            text = text.replace(s, "***")
        return text

    def say(text: str) -> None:
        click.echo(f"keyscope: debug: {mask(text)}", err=True)

    conn.debug = say
    shown = " ".join(f"{k}={v}" for k, v in conn.describe().items())
    say(f"settings: {shown}")

    class Masking(logging.Handler):
        def emit(self, record):
            try:
                say(f"kafka-python: {record.name}: {record.getMessage()}")
            except Exception:  # a log line must never break the command
                pass

    log = logging.getLogger("kafka")
    handler, level = Masking(level=logging.INFO), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def stop():
        log.removeHandler(handler)
        log.setLevel(level)

    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(stop)


class KeyscopeGroup(click.Group):
    """Turns user mistakes into one line and a documented exit code, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyscopeError as e:
            from ..model.keys import display_name  # names from files and brokers reach messages too

            click.echo(f"keyscope: error: {display_name(e)}", err=True)
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


def _register() -> None:
    """One module per command family; each adds its commands to ``cli``."""
    from . import partition  # noqa: F401
    from . import lag  # noqa: F401
    from . import analyze  # noqa: F401
    from . import whatif  # noqa: F401
    from . import sample  # noqa: F401
    from . import demo  # noqa: F401
    from . import exporter  # noqa: F401
    from . import scan  # noqa: F401


_register()


def main(argv=None):
    cli.main(args=argv, prog_name="keyscope")


if __name__ == "__main__":  # pragma: no cover
    main()
