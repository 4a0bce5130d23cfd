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


def parquet_magic(path) -> bool:
    """Does a regular file at ``path`` open with Parquet's magic bytes?  (Never opens a FIFO or device.)

    A Parquet file is never a scan profile: the commands that take either ask this first, and import
    keyscope.scan (its profile reader) only for the rest.
    """
    import os
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            return f.read(4) == b"PAR1"
    except OSError:
        return False


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


# Command -> (module that defines it, the first line of its help).  Importing
# every command module cost ~40 ms of `keyscope --version` (each pulls in its
# library imports); now a module is imported only when its command runs, and
# `keyscope --help` lists the commands from this table.  tests/test_startup.py
# checks the table against the commands themselves.
COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("analyze", "Find the hot partition, the keys that make it hot, and the producers' partitioner."),
    "demo": ("demo", "Replay the crm-events hot-key incident on an embedded broker, then diagnose it."),
    "exporter": ("exporter", "Serve per-partition load and the hot keys of TOPICs on /metrics (Prometheus), read-only."),
    "info": ("sample", "What a sample FILE holds: topic, watermarks and ranges read, fields, how it was taken."),
    "lag": ("lag", "Consumer-group lag per partition, in two readings side by side."),
    "partition": ("partition", "Which partition does each KEY land on, and why."),
    "recommend": ("whatif", "Recommend the remedy for a hot partition, with its cost and the producer change."),
    "rules": ("lag", "Prometheus rules for the skew alert: a fixed set, or the set as deployed."),
    "sample": ("sample", "Read a bounded sample of TOPIC into a Parquet file every other command can use offline."),
    "scan": ("scan", "Read every record of TOPIC in a range into a PROFILE for analyze, whatif and recommend."),
    "whatif": ("whatif", "Predict what more partitions, another partitioner or another key strategy would do."),
}


class KeyscopeGroup(click.Group):
    """Turns user mistakes into one line and a documented exit code, never a traceback.

    Also loads commands lazily: a command's module (which registers it with
    ``@cli.command()``) is imported on first lookup, from ``COMMANDS``.
    """

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        global _ran
        _ran = name  # which command ran decides how the process may end (main)
        if name in SMALL_PAGES and _as_script and reports_free_pages():  # (main(argv) keeps its caller's)
            _small_pages()
            if name in REUSE_FREED:
                _reuse_freed_memory()
        return name, cmd, rest

    def list_commands(self, ctx):
        return sorted(set(self.commands) | set(COMMANDS))

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            # __import__, not importlib.import_module: the C import path, which -X importtime sees
            __import__(f"{__name__}.{COMMANDS[cmd_name][0]}")
        return self.commands.get(cmd_name)

    def format_commands(self, ctx, formatter):
        """The command list of ``--help`` without importing any command module."""
        try:  # the same shortening click applies to a loaded command's help
            from click.utils import _make_default_short_help as shorten
        except ImportError:  # pragma: no cover - click < 8.2 named it without the underscore
            from click.utils import make_default_short_help as shorten  # type: ignore[attr-defined,no-redef]

        names = self.list_commands(ctx)
        if not names:  # pragma: no cover - keyscope always has commands
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        rows = []
        for name in names:
            cmd = self.commands.get(name)
            if cmd is not None:
                if cmd.hidden:
                    continue
                rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, shorten(COMMANDS[name][1], limit).strip()))
        with formatter.section("Commands"):
            formatter.write_dl(rows)

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


def load_all() -> None:
    """Import every command module (for tools that walk ``cli.commands``)."""
    for name in COMMANDS:
        cli.get_command(None, name)  # type: ignore[arg-type]


# Commands whose process may end without the interpreter's teardown (main): they read files, print
# and leave nothing behind (no broker they started, no file closed by a finalizer, no worker).  The
# teardown (modules, Polars', Arrow's and LLVM's destructors, ~300 MB of objects) cost a cold
# `keyscope whatif` on 1M records 0.1-0.3 s of its 1.0-1.4 s wall (load ~3 on 2 cores).
FAST_EXIT = frozenset({"analyze", "info", "partition", "recommend", "whatif"})
_ran: str | None = None
_as_script = False  # the process's entry point is main() (the console script), not a call with argv


def main(argv=None):
    """The ``keyscope`` console script (``argv`` None: the process's own arguments), or a call with ``argv``.

    As the process's entry point it also keeps OpenBLAS to one thread, sets the ``SMALL_PAGES`` commands'
    memory up for a guest whose host takes free memory back, and, for ``FAST_EXIT``
    commands, ends the process once stdout is flushed; called with ``argv`` it only runs the command
    (raising SystemExit as click does), so a caller's process is left as it was.
    """
    if argv is not None:
        cli.main(args=argv, prog_name="keyscope")
        return
    global _as_script
    _as_script = True
    _one_blas_thread()
    try:
        cli.main(prog_name="keyscope")
    except SystemExit as e:
        if _ran in FAST_EXIT:
            _exit_now(e)
        raise


def _one_blas_thread() -> None:
    """No OpenBLAS thread pool (unless the user sized it): keyscope's only BLAS calls are S x N
    matrix-vector products of partition counts, which OpenBLAS runs on one thread anyway.

    Its pool, started when numpy loads, cost a cold ``import numpy`` ~0.07 s of CPU and ~0.1 s of
    wall on 2 busy cores (0.23 vs 0.15 s CPU, 0.36 vs 0.23 s wall, median of 7); it grows with the
    cores.  Read by OpenBLAS when numpy loads, so set before any command imports numpy.
    """
    import os

    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


# virtio's balloon device (device id 5) and its feature bit 5, VIRTIO_BALLOON_F_REPORTING: the guest
# hands its free memory back to the host ("free page reporting", as Firecracker's and cloud-hypervisor's
# guests do)
_BALLOON, _REPORTING = "0x0005", 5


def reports_free_pages(devices: str = "/sys/bus/virtio/devices") -> bool:
    """Does this Linux guest hand its free memory back to the host (a balloon with free page reporting)?"""
    import os

    try:
        names = os.listdir(devices)
    except OSError:
        return False
    for name in names:
        try:
            with open(os.path.join(devices, name, "device")) as f:
                if f.read().strip() != _BALLOON:
                    continue
            with open(os.path.join(devices, name, "features")) as f:
                bits = f.read().strip()
        except OSError:
            continue
        if len(bits) > _REPORTING and bits[_REPORTING] == "1":
            return True
    return False


# Commands that hold arrays of one entry per record (codes, cells, sizes: GBs at 30M records): where
# the host takes free memory back (reports_free_pages) their fresh memory is what costs, so they get
# small pages (_small_pages) and reuse what they free (_reuse_freed_memory).  analyze's arrays are per
# key: it keeps numpy's huge pages (10M records back to back: 0.47-0.48 s with them, 0.53-0.56 s
# without; with 5 s pauses 0.51-0.89 against 0.59-0.64: no gain either way).
SMALL_PAGES = frozenset({"recommend", "sample", "whatif"})
# ...of which these reuse what they free: sample's peak RSS at 5M records rose 166 -> 174 MB with it, for
# 1.24 against 1.28 s (it frees little: its row groups are small)
REUSE_FREED = frozenset({"recommend", "whatif"})


def _small_pages() -> None:
    """No transparent huge pages for numpy's arrays (unless the user set ``NUMPY_MADVISE_HUGEPAGE``), for a
    guest that reports its free memory to the host (:func:`reports_free_pages`).

    numpy asks for huge pages for every array of 4 MB or more.  Where the host took back the guest's
    free memory, each fresh huge page is zeroed on memory the host must provide again: on this project's
    2-core Firecracker machine a fresh 1 GiB array took 7.7-8.1 s with huge pages and 0.42-0.53 s
    without (0.19 against 0.40 s when the memory was the process's own again), and a cold ``recommend``
    on 30M records 9.2 s against 3.7 s (docs/benchmarks.md, stop 28).  Read by numpy when it loads, so
    set before numpy is imported (the command modules import it lazily; else numpy's own setter).
    """
    import os

    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    os.environ["NUMPY_MADVISE_HUGEPAGE"] = "0"
    np = sys.modules.get("numpy")
    setter = getattr(getattr(getattr(np, "_core", None), "multiarray", None), "_set_madvise_hugepage", None)
    if setter is not None:
        setter(False)


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def _reuse_freed_memory() -> bool:
    """Big blocks from glibc's heap, kept when freed (no mmap, no trim), unless the user tuned malloc.

    Why: glibc serves every block over 32 MB by a fresh mmap and unmaps it when freed, so each of the
    per-record arrays (40 MB at 10M records) is page-faulted in anew, and on a guest whose host takes
    free memory back a fault costs ~3.5 us: a cold ``recommend`` of 10M records faulted 1.1 GB in
    (1.0 s of system time) for a 0.58 GB peak.  Reused from the heap: 1.54-1.58 s against 1.74-1.78 s,
    30M 3.1 against 3.5-3.6 s, peak RSS 8-14% higher (docs/benchmarks.md, stop 28).  Lasts for the
    process; these commands' processes end with their command.
    """
    import os

    if any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def _exit_now(e: SystemExit) -> None:
    """End the process with ``e``'s code now: atexit callbacks run, stdout and stderr flushed, no teardown.

    Returns (the caller re-raises ``e``: Python's own exit) when the code is not a number, a
    profiler or tracer runs (``python -m cProfile``, coverage: they write their results after the
    program), a non-daemon thread still runs (Python would wait for it), or stdout cannot be
    flushed (Python reports that the usual way).
    """
    import atexit
    import os
    import threading

    code = 0 if e.code is None else e.code
    if not isinstance(code, int) or isinstance(code, bool):
        return
    if sys.getprofile() is not None or sys.gettrace() is not None:
        return
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - e.g. a closed pipe: Python's exit reports it as before
        return
    atexit._run_exitfuncs()  # e.g. the prefetch thread stopped, logging flushed
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001
        code = 120  # what Python exits with when flushing stdout fails at exit
    os._exit(code & 0xFF)  # the status sys.exit(code) gives


if __name__ == "__main__":  # pragma: no cover
    main()
