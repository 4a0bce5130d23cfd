"""``keyscope exporter``: hot keys and partition load for Prometheus (keyscope.exporter)."""

from __future__ import annotations

import click

from . import cli, connection_options


def _print_rules(ctx, param, value):
    """Eager: the rule file needs no broker, so it is printed before the connection options are resolved."""
    if value:
        from ..exporter import rules_text

        click.echo(rules_text(), nl=False)
        ctx.exit(0)


@cli.command()
@connection_options
@click.option("-t", "--topic", "topics", multiple=True, metavar="TOPIC", help="Topic to watch; repeatable.")
@click.option("--listen", default="127.0.0.1:9309", show_default=True, metavar="HOST:PORT",
              help="Where /metrics and /healthz are served.")
@click.option("--window", default="5m", show_default=True, metavar="DURATION",
              help="Sliding window for shares, skew and predictions (10s, 5m, 1h).")
@click.option("--top-k", type=int, default=10, show_default=True, metavar="K",
              help="Hot keys published per topic (1-100): the label cardinality cap.")
@click.option("--hash-keys", is_flag=True, help="Publish sha256:<16 hex> of each key instead of the key (keys can be personal data).")
@click.option("--sketch-size", type=int, default=None, metavar="M",
              help="Space-Saving counters per partition and time bucket (default max(64, 10 x K)); share error <= 1/M.")
@click.option("--predict-partitions", default=None, metavar="N,N,...",
              help="Candidate partition counts for keyscope_predicted_skew (default: n, 2n, 3n).")
@click.option("-g", "--group", "groups", multiple=True, metavar="GROUP",
              help="Also publish this consumer group's lag (kafka_consumergroup_lag as kafka_exporter, and the true lag); repeatable.")
@click.option("--lag-interval", default="15s", show_default=True, metavar="DURATION", help="How often --group lag is read.")
@click.option("--timeout", type=float, default=10.0, show_default=True, metavar="SECONDS",
              help="Seconds to wait for the broker at start (then exit 4), and for each fetch or lag reading while serving.")
@click.option("--print-rules", is_flag=True, is_eager=True, expose_value=False, callback=_print_rules,
              help="Print the Prometheus rule file (KeyscopeHotKey: share > 0.3 for 5m, naming the key) and exit.")
def exporter(conn, topics, listen, window, top_k, hash_keys, sketch_size, predict_partitions, groups, lag_interval, timeout):
    """Serve per-partition load and the hot keys of TOPICs on /metrics (Prometheus), read-only.

    Reads new records from the end of each partition (assign mode: never joins
    a group, never commits), keeps a sliding window in bounded memory
    (Space-Saving per partition and time bucket) and publishes the top K keys'
    shares, the skew ratio, partitioner agreement and predicted skew for other
    partition counts. Stops cleanly (exit 0) on SIGTERM or Ctrl-C.

    \b
    Exit codes: 0 stopped by SIGTERM/Ctrl-C, 2 bad option or --listen address in use,
    4 broker unreachable within --timeout at start, or unknown topic.
    """
    from ..errors import UsageError
    from ..exporter import ExporterSpec, parse_duration, parse_listen, run_exporter

    if conn.bootstrap_servers is None or not str(conn.bootstrap_servers).strip():
        raise UsageError("give --bootstrap-server (or KEYSCOPE_BOOTSTRAP_SERVER)")
    predict = ()
    if predict_partitions:
        try:
            predict = tuple(sorted({int(x) for x in predict_partitions.split(",") if x.strip()}))
        except ValueError:
            raise UsageError(f"--predict-partitions {predict_partitions!r}: expected numbers like 6,12,24") from None
    if sketch_size is not None and sketch_size < 1:
        raise UsageError("--sketch-size must be at least 1")
    spec = ExporterSpec(topics=tuple(topics), listen=parse_listen(listen), window_s=parse_duration(window, "--window"),
                        top_k=top_k, hash_keys=hash_keys, capacity=sketch_size, predict=predict,
                        groups=tuple(groups), lag_interval_s=parse_duration(lag_interval, "--lag-interval"),
                        timeout_s=timeout)
    spec.validate()

    def ready(url):
        click.echo(f"keyscope: exporter serving {url} (window {spec.window_s:g}s, top {spec.top_k})", err=True)

    result = run_exporter(conn, spec, ready=ready)
    click.echo(f"keyscope: exporter stopped ({result.stopped_by}) after {result.records:,} records", err=True)
