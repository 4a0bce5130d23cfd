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
    assert re.search(r"kafka:group_skew_ratio\s+3\.000", out)
    # analyze: the hot tenant is found, alone explaining partition 2, and murmur2 detected
    assert "stark-industries" in out and "alone" in out
    assert re.search(r"partitioner: murmur2", out)
    # the story ends with a recommendation and a producer change
    assert "Recommended:" in out and "[kafka-python]" in out
    # the broker it started is gone
    pid = int(re.search(r"pid (\d+)", out).group(1))
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
