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


# stdout block-buffered, as in a user's pipe (PYTHONUNBUFFERED would hide a missing flush)
BUFFERED = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}


def console(*args: str) -> subprocess.CompletedProcess:
    """``keyscope ARGS`` as the console script runs it: ``main()`` without argv (the fast exit, one BLAS thread)."""
    code = "import sys\nfrom keyscope.cli import main\nsys.argv[0] = 'keyscope'\nmain()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=BUFFERED, timeout=120)


def called(*args: str) -> subprocess.CompletedProcess:
    """``main([ARGS])`` as a program calls it: Python's own exit, no process-wide setting."""
    code = "import sys\nfrom keyscope.cli import main\nmain(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=BUFFERED, timeout=120)


@pytest.mark.parametrize(
    "args",
    [
        ("analyze", SAMPLE, "--format", "json"),
        ("analyze", SAMPLE, "--fail-on-skew", "1.01"),  # exit 5 after the report
        ("analyze", SAMPLE + ".missing"),  # exit 3, one line on stderr
        ("whatif", SAMPLE, "-p", "6,12", "--format", "json"),
        ("recommend", SAMPLE, "--format", "markdown"),
        ("info", SAMPLE, "--format", "json"),
        ("partition", "order-42", "-p", "6", "--format", "json"),
        ("whatif", SAMPLE, "-p", "0"),  # usage error: exit 2
    ],
    ids=["analyze", "analyze-skew", "analyze-missing", "whatif", "recommend", "info", "partition", "usage"],
)
def test_fast_exit_keeps_output_and_exit_code(args):
    """The console script ends FAST_EXIT commands with os._exit: every byte and the exit code as before."""
    fast, slow = console(*args), called(*args)
    assert (fast.returncode, fast.stdout, fast.stderr) == (slow.returncode, slow.stdout, slow.stderr)
    assert fast.stdout or fast.stderr


@pytest.mark.parametrize(
    "args,fast",
    [
        (("analyze", SAMPLE), True),
        (("info", SAMPLE), True),
        (("partition", "k", "-p", "3"), True),
        (("recommend", SAMPLE), True),
        (("whatif", SAMPLE, "-p", "6"), True),
        (("rules", "--group", "g", "--topic", "t"), False),  # not a FAST_EXIT command: Python's own exit
        (("--version",), False),  # no command ran
    ],
    ids=["analyze", "info", "partition", "recommend", "whatif", "rules", "version"],
)
def test_only_fast_exit_commands_end_without_teardown(tmp_path, args, fast):
    """The rule itself: the console script ends exactly the FAST_EXIT commands with os._exit (recorded)."""
    from keyscope.cli import FAST_EXIT

    assert FAST_EXIT == {"analyze", "info", "partition", "recommend", "whatif"}  # read-and-print commands only
    marker = tmp_path / "exit"
    code = ("import os, sys\nfrom keyscope.cli import main\nreal = os._exit\n"
            f"os._exit = lambda c: (open({str(marker)!r}, 'w').write(str(c)), real(c))\n"
            "sys.argv[0] = 'keyscope'\nmain()")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, env=BUFFERED, timeout=120)
    assert r.returncode == 0, r.stderr[-500:]
    assert marker.exists() == fast
    if fast:
        assert marker.read_text() == "0"


def test_fast_exit_flushes_a_pipe_and_runs_atexit(tmp_path):
    """Output larger than a pipe's buffer arrives whole; atexit callbacks (the prefetch's stop) still run."""
    code = ("import atexit, sys\nfrom keyscope.cli import main\n"
            "atexit.register(lambda: print('atexit ran', file=sys.stderr))\nsys.argv[0] = 'keyscope'\nmain()")
    keys = [f"k{i}" for i in range(5_000)]  # ~5 MB of JSON: many times a pipe's buffer
    r = subprocess.run([sys.executable, "-c", code, "partition", *keys, "-p", "6", "--format", "json"],
                       capture_output=True, env=BUFFERED, timeout=120)
    assert r.returncode == 0
    assert r.stderr.decode().strip().endswith("atexit ran")
    import json

    assert {row["key"] for row in json.loads(r.stdout)} == set(keys)


def test_console_script_keeps_openblas_to_one_thread():
    """numpy loaded by a command of the console script starts no OpenBLAS worker thread (unless the user
    sized the pool); a program calling main(argv) keeps its own setting."""
    probe = ("import os, sys\nfrom keyscope import cli\n{call}\nimport numpy\n"
             "print(os.environ.get('OPENBLAS_NUM_THREADS'), len(os.listdir('/proc/self/task')))")
    # (every variable OpenBLAS sizes its pool by: OMP_NUM_THREADS=1 in the environment alone keeps numpy
    # to one thread, and a full run once saw 1 thread here where the test alone saw 2)
    sizing = {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS"}
    env = {k: v for k, v in os.environ.items() if k not in sizing}

    def run(call: str, **extra) -> list[str]:
        return subprocess.run([sys.executable, "-c", probe.format(call=call)], capture_output=True, text=True,
                              env=dict(env, **extra), timeout=120, check=True).stdout.split()

    assert run("cli._one_blas_thread()") == ["1", "1"]
    assert run("cli._one_blas_thread()", OPENBLAS_NUM_THREADS="2")[0] == "2"
    if len(os.sched_getaffinity(0)) > 1:  # the check can fail: without it OpenBLAS starts a worker per further core
        assert int(run("pass")[1]) > 1


def _virtio(root, *devices):
    """A fake /sys/bus/virtio/devices: (device id, negotiated feature bits) per device."""
    for i, (dev, bits) in enumerate(devices):
        d = root / f"virtio{i}"
        d.mkdir(parents=True)
        (d / "device").write_text(dev + "\n")
        (d / "features").write_text(bits + "\n")
    return root


def test_free_page_reporting_is_read_from_the_virtio_bus(tmp_path):
    """A virtio balloon (device 5) whose negotiated features have bit 5 (free page reporting) set."""
    from keyscope import cli

    reporting = _virtio(tmp_path / "a", ("0x0001", "1" * 40), ("0x0005", "0110010100" + "0" * 30))
    balloon_only = _virtio(tmp_path / "b", ("0x0005", "0110000100" + "0" * 30), ("0x0002", "0000011111"))
    assert cli.reports_free_pages(str(reporting)) and not cli.reports_free_pages(str(balloon_only))
    assert not cli.reports_free_pages(str(tmp_path / "c"))  # no virtio bus at all (bare metal)


def _probe(code: str, *args, **extra) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE" and not k.startswith("MALLOC_")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=dict(env, **extra), timeout=120, check=True).stdout.split()


def test_small_pages_unless_the_user_chose():
    """numpy reads NUMPY_MADVISE_HUGEPAGE as it loads, or takes it from its own setter when it is loaded
    already (which returns the setting it had); a user's own setting wins."""
    probe = ("import os\n{before}from keyscope import cli\ncli._small_pages()\nimport numpy\n"
             "print(os.environ.get('NUMPY_MADVISE_HUGEPAGE'), numpy._core.multiarray._set_madvise_hugepage(True))")
    assert _probe(probe.format(before="")) == ["0", "False"]
    assert _probe(probe.format(before="import numpy\n")) == ["0", "False"]
    assert _probe(probe.format(before=""), NUMPY_MADVISE_HUGEPAGE="1") == ["1", "True"]
    assert _probe("import numpy\nprint(numpy._core.multiarray._set_madvise_hugepage(True))") == ["True"]


def test_freed_memory_is_reused_unless_malloc_was_tuned():
    """After _reuse_freed_memory a 64 MB block comes from the heap (below the program break), not a fresh
    mmap (above it), as it does without; any MALLOC_* or GLIBC_TUNABLES setting of the user's stands."""
    probe = ("import ctypes, sys\nfrom keyscope import cli\nc = ctypes.CDLL(None)\n"
             "c.malloc.restype = c.sbrk.restype = ctypes.c_void_p\nc.malloc.argtypes = [ctypes.c_size_t]\n"
             "c.sbrk.argtypes = [ctypes.c_ssize_t]\n"
             "done = cli._reuse_freed_memory() if sys.argv[1] == '1' else None\n"
             "p = c.malloc(64 << 20)\nprint(done, p < c.sbrk(0))")
    assert _probe(probe, "0") == ["None", "False"]
    assert _probe(probe, "1") == ["True", "True"]
    assert _probe(probe, "1", MALLOC_ARENA_MAX="2") == ["False", "False"]


def test_memory_set_up_for_the_per_record_commands_of_the_console_script():
    """The console script sets up whatif/recommend/sample (on such a guest), not analyze; a program calling
    main(argv) keeps its own setting."""
    from keyscope import cli

    probe = ("import atexit, os, sys\nfrom keyscope import cli\ncli.reports_free_pages = lambda devices='': True\n"
             "atexit.register(lambda: print(os.environ.get('NUMPY_MADVISE_HUGEPAGE')))\n"
             "sys.argv = ['keyscope'] + sys.argv[1:]\n{call}")  # (atexit: FAST_EXIT commands end the process)

    def run(call: str, *args) -> str:
        return _probe(probe.format(call=call), *args)[-1]

    assert cli.SMALL_PAGES == {"whatif", "recommend", "sample"} and cli.REUSE_FREED == {"whatif", "recommend"}
    assert run("cli.main()", "whatif", "--help") == "0"
    assert run("cli.main()", "recommend", "--help") == "0"
    assert run("cli.main()", "analyze", "--help") == "None"
    assert run("cli.main(['whatif', '--help'])") == "None"


def test_a_profiler_still_gets_its_results(tmp_path):
    """Under cProfile (which writes its file after the program) the process ends the usual way."""
    out = tmp_path / "p.prof"
    r = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "keyscope", "info", SAMPLE],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr[-500:]
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    "args",
    [("whatif", SAMPLE, "--partitions", "6"), ("recommend", SAMPLE), ("analyze", SAMPLE)],
    ids=["whatif", "recommend", "analyze"],
)
def test_a_parquet_sample_loads_nothing_of_the_scan(args):
    """A Parquet sample is never a profile: the scan's modules (engine, task reader, profile) stay unloaded."""
    assert {m for m in imported_modules(*args) if m.startswith("keyscope.scan")} == set()


def test_a_profile_still_loads_the_scan_reader(tmp_path):
    """The check can fail: a file that is not Parquet is asked whether it is a profile (keyscope.scan.profile)."""
    path = tmp_path / "not-parquet.json"
    path.write_text('{"kind": "something-else"}')
    assert "keyscope.scan.profile" in imported_modules("whatif", str(path), "--partitions", "6")
