"""Quick commands stay quick: heavy libraries stay off their import path.

Measured with ``python -X importtime`` in a fresh process, as a user runs the
command (no timing asserted: what is imported is).  scipy.stats cost 0.87 s,
numba ~0.4 s, matplotlib ~0.5 s; Polars/pyarrow/llvmlite ~0.3 s together.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = str(Path(__file__).resolve().parent.parent / "samples" / "crm-events-hot-tenant.parquet")
HEAVY = {"scipy", "numba", "matplotlib"}
COLUMNAR = {"polars", "pyarrow", "llvmlite"}


def imported(*args: str) -> set[str]:
    """Top-level packages a fresh ``python -m keyscope ARGS`` imports."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "keyscope", *args],
                       capture_output=True, text=True, timeout=120)
    mods = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert mods, r.stderr[-500:]
    return mods


@pytest.mark.parametrize(
    "args,banned",
    [
        (("--version",), HEAVY | COLUMNAR | {"kafka"}),
        (("partition", "order-42", "-p", "6"), HEAVY | COLUMNAR | {"kafka"}),
        (("info", SAMPLE), HEAVY | {"kafka"}),
        (("lag", "-b", "127.0.0.1:1", "--group", "g", "--timeout", "1"), HEAVY | COLUMNAR),
        (("rules", "--group", "g", "--topic", "t"), HEAVY | COLUMNAR | {"kafka"}),
        # below 2M records analyze groups with Polars: numba (0.2 s import + ~0.5 s loading its cached kernels) stays off
        (("analyze", SAMPLE), {"numba", "matplotlib", "kafka"}),
    ],
    ids=["version", "partition", "info", "lag", "rules", "analyze-small"],
)
def test_quick_commands_import_no_heavy_library(args, banned):
    assert imported(*args) & banned == set()


def test_the_check_can_fail():
    """analyze does use scipy (chi-square tail) and Polars: the parser sees them."""
    assert {"scipy", "polars"} <= imported("analyze", SAMPLE)
