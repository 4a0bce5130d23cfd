"""``keyscope demo``: the crm-events incident end to end, with nothing installed but keyscope.

It runs the very commands a person would (same code, same output), so the
demo is also a smoke test of the whole tool against a real broker.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import click

from . import cli


def _color() -> bool | None:
    """False when NO_COLOR is set (no-color.org); else click decides (a terminal gets color)."""
    import os

    return False if os.environ.get("NO_COLOR") else None


def _step(n: int, total: int, text: str) -> None:
    click.secho(f"\n[{n}/{total}] {text}", bold=True, color=_color())


def _cmd(text: str) -> None:
    click.secho(f"$ {text}", fg="cyan", color=_color())


@cli.command()
@click.option("--records", type=click.IntRange(min=1000), default=60_000, show_default=True,
              help="CRM events to produce.")
@click.option("--keep", is_flag=True, help="Leave the broker running (address printed) and keep the sample file.")
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the generated stream.")
@click.pass_context
def demo(ctx, records, keep, seed):
    """Replay the crm-events hot-key incident on an embedded broker, then diagnose it.

    Starts the embedded Kafka-compatible broker (Tansu) on a free loopback
    port, creates crm-events with 3 partitions, produces CRM events keyed by
    tenant_id (one tenant far hotter than the rest), leaves consumer group
    crm-events-sse lagging on the hot partition, then runs lag, sample,
    analyze, whatif and recommend as you would.  Takes well under a minute.

    \b
    Exit codes: 0 done; 4 the embedded broker could not start.
    """
    from ..kafka import demo as story
    from ..kafka.broker import EmbeddedBroker
    from .analyze import analyze
    from .lag import lag
    from .sample import sample
    from .whatif import recommend, whatif

    total = 6
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="keyscope-demo-"))
    sample_path = workdir / "crm-events.parquet"
    broker = EmbeddedBroker()
    try:
        _step(1, total, "Start the embedded broker")
        broker.start()
        bs = broker.bootstrap_server
        click.echo(f"Tansu (Kafka-compatible) listening on {bs}, pid {broker.pid}")

        _step(2, total, f"Producers write {records:,} CRM events to {story.TOPIC} (3 partitions), keyed by tenant_id")
        spec = story.StreamSpec(records=records, seed=seed)
        frame = story.crm_events(spec)
        story.create_topic(bs, story.TOPIC, 3)
        story.produce(bs, story.TOPIC, frame)
        committed = story.commit_group_lag(bs, story.TOPIC, story.GROUP, {2: 0.3})
        click.echo(textwrap.fill(
            f"kafka-python's default partitioner (murmur2). {story.HOT_TENANT} is {spec.hot_share:.0%} of events; "
            f"consumer group {story.GROUP} kept up on partitions 0 and 1 and stalled on partition 2 "
            f"(committed offsets {committed}).", 100))

        _step(3, total, "The alert fired: is the lag really on one partition?")
        _cmd(f"keyscope lag -b {bs} --group {story.GROUP} --topic {story.TOPIC}")
        ctx.invoke(lag, bootstrap_server=bs, group=story.GROUP, topic=story.TOPIC)

        _step(4, total, "Take a sample of what producers write (read-only: no group, no commits)")
        fields = ("tenant_id=$.tenant_id", "contact_id=$.contact_id", "event_type=$.event_type")
        _cmd(f"keyscope sample -b {bs} -t {story.TOPIC} --from earliest "
             + " ".join(f"--field {f}" for f in fields) + f" -o {sample_path}")
        ctx.invoke(sample, bootstrap_server=bs, topic=story.TOPIC, output=str(sample_path), start="earliest",
                   fields=fields, quiet=True, force=True)

        _step(5, total, "Which keys make partition 2 hot, and how sure is that?")
        _cmd(f"keyscope analyze {sample_path}")
        ctx.invoke(analyze, sample_path=str(sample_path))

        _step(6, total, "What would fix it? Predict before changing anything")
        _cmd(f"keyscope whatif {sample_path} --partitions 6")
        ctx.invoke(whatif, sample_path=str(sample_path), partitions=("6",))
        _cmd(f"keyscope whatif {sample_path} --key-by key,contact_id")
        ctx.invoke(whatif, sample_path=str(sample_path), key_by=("key,contact_id",))
        _cmd(f"keyscope recommend {sample_path} --keep-order-by contact_id")
        ctx.invoke(recommend, sample_path=str(sample_path), keep_order_by="contact_id")

        click.secho(f"\nDone in {time.monotonic() - started:.1f} s.", bold=True, color=_color())
        if keep:
            click.echo(
                f"The broker is still running on {bs} (pid {broker.pid}); the sample is {sample_path}.\n"
                f"Try:  export KEYSCOPE_BOOTSTRAP_SERVER={bs}; keyscope lag --group {story.GROUP}\n"
                f"Stop it with:  kill {broker.pid}"
            )
    finally:
        if not keep:
            broker.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            broker.process = None  # detach: leave it running for the user
        sys.stdout.flush()
