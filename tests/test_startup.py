"""Quick commands stay quick: heavy libraries stay off their import path.

Measured with ``python -X importtime`` in a fresh process, as a user runs the
command (no timing asserted: what is imported is).  scipy.stats cost 0.87 s
(scipy.special 0.4-1.1 s), numba ~0.4 s, matplotlib ~0.5 s; Polars/pyarrow/llvmlite ~0.3 s together.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = str(Path(__file__).resolve().parent.parent / "samples" / "crm-events-hot-tenant.parquet")
HEAVY = {"scipy", "numba", "matplotlib"}
COLUMNAR = {"polars", "pyarrow", "llvmlite"}


def imported_modules(*args: str) -> set[str]:
    """Every module (dotted name) a fresh ``python -m keyscope ARGS`` imports."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "keyscope", *args],
                       capture_output=True, text=True, timeout=120)
    mods = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            mods.add(line.rsplit("|", 1)[1].strip())
    assert mods, r.stderr[-500:]
    return mods


def imported(*args: str) -> set[str]:
    """Top-level packages a fresh ``python -m keyscope ARGS`` imports."""
    return {m.split(".")[0] for m in imported_modules(*args)}


@pytest.mark.parametrize(
    "args,banned",
    [
        (("--version",), HEAVY | COLUMNAR | {"kafka"}),
        (("partition", "order-42", "-p", "6"), HEAVY | COLUMNAR | {"kafka"}),
        (("info", SAMPLE), HEAVY | {"kafka"}),
        (("lag", "-b", "127.0.0.1:1", "--group", "g", "--timeout", "1"), HEAVY | COLUMNAR),
        (("rules", "--group", "g", "--topic", "t"), HEAVY | COLUMNAR | {"kafka"}),
        # the kernels are LLVM IR (numba cost 0.2 s import + ~0.5 s loading its cached kernels);
        # the chi-square tail is keyscope.stats' own (scipy.special cost 0.4-1.1 s)
        (("analyze", SAMPLE), HEAVY | {"kafka"}),
        # what-if's kernels are LLVM IR (keyscope._native), not numba (~0.7 s per cold command)
        (("whatif", SAMPLE, "--partitions", "6", "--key-by", "key,event_type", "--salt-hot", "1:8"), HEAVY | {"kafka"}),
        (("recommend", SAMPLE), HEAVY | {"kafka"}),
    ],
    ids=["version", "partition", "info", "lag", "rules", "analyze-small", "whatif-small", "recommend-small"],
)
def test_quick_commands_import_no_heavy_library(args, banned):
    assert imported(*args) & banned == set()


def test_the_check_can_fail(tmp_path):
    """What a command does import, the parser sees: Polars for analyze, matplotlib for whatif --plot."""
    assert "polars" in imported("analyze", SAMPLE)
    assert "matplotlib" in imported("whatif", SAMPLE, "--partitions", "6", "--plot", str(tmp_path / "p.png"))


def command_modules(*args: str) -> set[str]:
    """The keyscope.cli.<command> modules a fresh ``keyscope ARGS`` imports."""
    return {m for m in imported_modules(*args) if m.startswith("keyscope.cli.")}


@pytest.mark.parametrize(
    "args,expected",
    [
        (("--version",), set()),
        (("--help",), set()),
        (("partition", "order-42", "-p", "6"), {"keyscope.cli.partition"}),
        (("info", SAMPLE), {"keyscope.cli.sample"}),
        (("rules", "--group", "g", "--topic", "t"), {"keyscope.cli.lag"}),
    ],
    ids=["version", "help", "partition", "info", "rules"],
)
def test_commands_load_only_their_own_module(args, expected):
    assert command_modules(*args) == expected


def test_lazy_table_matches_the_commands():
    """COMMANDS (what --help lists without importing) names every command, its module and its help."""
    from keyscope import cli as climod

    climod.load_all()
    assert set(climod.cli.commands) == set(climod.COMMANDS)
    for name, cmd in climod.cli.commands.items():
        module, short = climod.COMMANDS[name]
        assert cmd.callback.__module__ == f"keyscope.cli.{module}", name
        assert (cmd.help or "").split("\n\n")[0].strip() == short, name


@pytest.mark.parametrize("columns", ["100", "60"])
def test_lazy_help_is_the_eager_help(columns):
    """`keyscope --help` from the table reads exactly as with every command loaded (60 columns: shortened)."""
    env = dict(os.environ, COLUMNS=columns)
    lazy = subprocess.run([sys.executable, "-m", "keyscope", "--help"], capture_output=True, text=True,
                          env=env, timeout=120, check=True).stdout
    eager = subprocess.run([sys.executable, "-c", "from keyscope.cli import load_all, main; load_all(); main(['--help'])"],
                           capture_output=True, text=True, env=env, timeout=120).stdout
    assert "partition" in lazy and "whatif" in lazy
    assert lazy == eager


def test_keyscope_never_imports_scipy_or_numba():
    """Neither is a runtime dependency (pip install keyscope has neither): no module may import them,
    even on paths the commands above do not reach (e.g. detect's producer-switch chance)."""
    import re

    pkg = Path(__file__).resolve().parent.parent / "keyscope"
    pattern = re.compile(r"^\s*(import|from)\s+(scipy|numba)\b", re.M)
    found = [str(p.relative_to(pkg)) for p in pkg.rglob("*.py") if pattern.search(p.read_text())]
    assert found == []
