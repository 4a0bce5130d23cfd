"""`keyscope demo` end to end: its own broker, the whole story, and it cleans up."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_demo_tells_the_incident_and_cleans_up():
    r = subprocess.run(
        [sys.executable, "-m", "keyscope", "demo", "--records", "12000"],
        capture_output=True, timeout=240, text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    # lag: partition 2 holds all the lag, and the ratio is the alert's
    assert re.search(r"kafka:group_hottest_partition\s+2\b", out)
    # the corrected reading (third column) is 3: all the lag on one of 3 partitions
    assert re.search(r"kafka:group_skew_ratio\s+\S+\s+(3|2\.99999+\d*|3\.00000+\d*)\s", out)
    # analyze: the hot tenant is found, alone explaining partition 2, and murmur2 detected
    assert "stark-industries" in out and "alone" in out
    assert re.search(r"partitioner: murmur2", out)
    # the story ends with a recommendation and a producer change
    assert "Recommended:" in out and "[kafka-python]" in out
    # the broker it started is gone
    pid = int(re.search(r"pid (\d+)", out).group(1))
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def test_demo_headings_honour_no_color(monkeypatch):
    """NO_COLOR (no-color.org) turns off the demo's bold/cyan even where click would color a terminal."""
    import click
    from click.testing import CliRunner

    from keyscope.cli import demo as demo_cli

    @click.command()
    def show():
        demo_cli._step(1, 6, "Start the embedded broker")
        demo_cli._cmd("keyscope lag")

    runner = CliRunner()
    assert "\x1b[" in runner.invoke(show, color=True).output  # a terminal: colored
    monkeypatch.setenv("NO_COLOR", "1")
    out = runner.invoke(show, color=True).output
    assert "\x1b[" not in out and "[1/6] Start the embedded broker" in out and "$ keyscope lag" in out
