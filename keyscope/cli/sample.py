"""``keyscope sample`` (live topic -> Parquet sample) and ``keyscope info`` (what a sample holds)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from ..errors import EXIT_PARTIAL, InputError, KeyscopeError, UsageError
from ..model.keys import display_name
from . import FORMAT_OPTION, cli, connection_options


class PartialSample(KeyscopeError):
    """The sample was cut short (Ctrl-C, lost broker); what was read is written."""

    exit_code = EXIT_PARTIAL


@cli.command()
@connection_options
@click.option("-t", "--topic", required=True, help="Topic to sample.")
@click.option(
    "-o", "--output", type=click.Path(), metavar="FILE",
    help="Parquet file to write [default: TOPIC.parquet].",
)
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
@click.option(
    "--from", "start", type=click.Choice(["latest", "earliest"]), default=None,
    help="latest: the most recent records of each partition (default); earliest: from the oldest retained.",
)
@click.option(
    "--from-time", metavar="TIME",
    help="Start at the first record at or after TIME: ISO-8601 (UTC unless a zone is given) or a span back from now (30m, 2h, 1d).",
)
@click.option("--partitions", metavar="LIST", help="Only these partitions, e.g. 0,2,5-7 [default: all].")
@click.option("--per-partition", type=click.IntRange(min=1), metavar="N", help="At most N records from each partition.")
@click.option(
    "--max-records", type=click.IntRange(min=1), metavar="N",
    help="At most N records in all, split across partitions in proportion to what each holds "
    "[default: 100000 unless --per-partition is given].",
)
@click.option("--max-bytes", metavar="SIZE", help="Stop after fetching SIZE bytes from the brokers, e.g. 64MB [default: 256MiB].")
@click.option("--timeout", type=float, default=60.0, show_default=True, metavar="SECONDS",
              help="Stop after this long; also bounds connecting.")
@click.option(
    "--field", "fields", multiple=True, metavar="NAME=PATH",
    help="Also capture a column: a JSON path into the value ($.tenant_id, $.event.type) or header:NAME. Repeatable.",
)
@click.option(
    "--isolation", type=click.Choice(["read_committed", "read_uncommitted"]), default="read_committed",
    show_default=True,
    help="read_committed: what a read_committed consumer sees (aborted transactions left out, up to the last "
    "stable offset); read_uncommitted: aborted and open transactions' records too.",
)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@FORMAT_OPTION
def sample(conn, topic, output, force, start, from_time, partitions, per_partition, max_records, max_bytes, timeout,
           fields, isolation, quiet, fmt):
    """Read a bounded sample of TOPIC into a Parquet file every other command can use offline.

    Read-only: never joins a consumer group, never commits, never creates a
    topic.  Reads each partition from a start point up to its high watermark
    as it was when sampling began, so it always ends; the first of
    --per-partition, --max-records, --max-bytes and --timeout stops it early.

    \b
    Examples:
      keyscope sample -b kafka:9092 -t crm-events -o crm.parquet
      keyscope sample -t crm-events --from-time 2h --field tenant=$.tenant_id
      keyscope sample -t crm-events --from earliest --partitions 0,2 --per-partition 50000

    \b
    Exit codes: 0 written; 2 bad options or client properties; 3 output not writable;
    4 cluster unreachable, TLS/SASL failure, topic not authorized, unknown topic or partition;
    6 cut short by Ctrl-C or a lost broker (what was read is written and marked partial);
    6 also for SIGTERM (e.g. from `timeout`); a second Ctrl-C is ignored while writing;
    130 Ctrl-C before any record was read.
    """
    from . import memory

    memory.tune_for_sampling()  # before pyarrow is imported: see keyscope/cli/memory.py
    from .. import sampling
    from ..report.sample import render_sample

    if start and from_time:
        raise UsageError("give --from or --from-time, not both")
    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout must be positive, got {timeout:g}")
    spec = sampling.SampleSpec(
        topic=topic,
        start="time" if from_time else (start or "latest"),
        from_time_ms=sampling.parse_time(from_time) if from_time else None,
        from_time_text=from_time,
        partitions=sampling.parse_partitions(partitions) if partitions else None,
        per_partition=per_partition,
        max_records=max_records,
        max_bytes=sampling.parse_size(max_bytes) if max_bytes else None,
        timeout_s=timeout,
        fields=[sampling.parse_field(f) for f in fields],
        isolation=isolation,
    ).validate()
    path = Path(output) if output else Path(f"{topic}.parquet")
    _check_writable(path, force)

    show = not quiet and sys.stderr.isatty()
    progress = _Progress(topic) if show else None
    with StopOnce(progress) as stop:
        def finish(s) -> None:  # the sample is read, the file not yet published: say what stopped it
            if progress is not None:
                progress.clear()
            stop.mark(s)

        try:
            s = sampling.sample_to_file(conn, spec, path, overwrite=force, progress=stop.progress,
                                        phase=stop.phase, finish=finish)
        finally:
            if progress is not None:
                progress.clear()
        click.echo(render_sample(s, str(path), fmt))
    if s.meta.partial:
        raise PartialSample(
            f"sample is partial ({s.meta.partial_reason}): kept {len(s):,} records in {path}"
        )


@cli.command()
@click.argument("file", type=click.Path(readable=False))
@FORMAT_OPTION
def info(file, fmt):
    """What a sample FILE holds: topic, watermarks and ranges read, fields, how it was taken.

    Reads keyscope Parquet samples and what other tools captured: kcat JSON
    (kcat -C -J), and CSV or JSON lines with partition and key columns.

    Exit codes: 0 ok; 3 the file is missing, damaged or lacks partition/key.
    """
    from ..report.sample import render_file_info
    from ..sample import read_sample

    s = read_sample(file)
    click.echo(render_file_info(s, file, fmt))


# --------------------------------------------------------------------------- interaction: progress, signals


class _Progress:
    """One self-rewriting line on stderr, at most ~10 updates a second."""

    def __init__(self, topic: str):
        self.topic = topic
        self.last = 0.0
        self.shown = False

    def __call__(self, p) -> None:
        now = time.monotonic()
        if now - self.last < 0.1:
            return
        self.last = now
        from ..report.format import fmt_num
        from ..report.sample import mib

        line = (
            f"sampling {display_name(self.topic)}: {fmt_num(p.records)} records, {mib(p.bytes)} fetched, "
            f"{p.partitions_done}/{p.partitions_total} partitions done, {p.elapsed_s:.1f}s"
        )
        sys.stderr.write("\r" + line[:_width()] + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _width() -> int:
    try:
        cols = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        cols = 0
    return cols - 1 if cols > 20 else 100  # a terminal that reports no size gets a sane width


class StopOnce:
    """Ctrl-C and SIGTERM while sampling: the first stops the read, what was read is kept.

    The first signal raises KeyboardInterrupt while the sampler still reads
    (its fetch loop turns that into a partial sample) or before any record
    came; once the records are being assembled and written, and for every
    later signal (a second Ctrl-C 0.1 s after the first, ``timeout``'s SIGTERM
    during the write), it is only noted: the file is written, the exit code
    is 6.  The sampler says which (:class:`keyscope.sampling.Phase`, passed as
    ``phase=stop.phase``).  Only the main thread can set handlers; elsewhere
    this does nothing.
    """

    def __init__(self, shown=None):
        from ..sampling import Phase

        self.shown = shown  # the progress line, if one is drawn
        self.phase = Phase()
        self.records = 0
        self.signals: list[int] = []
        self.old: dict = {}

    def progress(self, p) -> None:
        self.records = p.records
        if self.shown is not None:
            self.shown(p)

    def __enter__(self) -> "StopOnce":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        # After a signal the command is on its way to exit 6: a later one (``timeout``'s second SIGTERM)
        # arriving while the partial sample is reported is ignored, not the default death by signal.
        for sig, old in self.old.items():
            signal.signal(sig, signal.SIG_IGN if self.signals else old)

    def _handle(self, signum, frame) -> None:
        self.signals.append(signum)
        if len(self.signals) == 1 and (self.records == 0 or self.phase.name == "reading"):
            raise KeyboardInterrupt
        sys.stderr.write(f"\r\x1b[Kkeyscope: stopping: writing the {self.records:,} records read\n"
                         if sys.stderr.isatty() else f"keyscope: stopping: writing the {self.records:,} records read\n")
        sys.stderr.flush()

    def mark(self, s) -> None:
        """A signal during the read made a partial sample: say which one stopped it."""
        import signal

        if not self.signals:
            return
        why = "terminated (SIGTERM)" if self.signals[0] == signal.SIGTERM else "interrupted (Ctrl-C)"
        if s.meta.partial and s.meta.partial_reason == "interrupted (Ctrl-C)":
            s.meta.partial_reason = why
        elif not s.meta.partial and len(s):
            s.meta.partial, s.meta.partial_reason = True, why
            s.meta.how["stopped_by"] = "partial"


def _check_writable(path: Path, force: bool) -> None:
    """Fail before sampling, not after: a long sample must not be lost to a bad path."""
    import stat

    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise InputError(f"cannot write {path}: it is a directory")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise InputError(f"cannot write {path}: not a regular file (a device or pipe); choose a file name")
    if st is not None and not force:
        raise UsageError(f"{path} exists; pass --force to overwrite it or -o to choose another file")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {path}: directory {parent} is not writable")

