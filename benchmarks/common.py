"""Shared by every benchmark: timing, peak memory, a printed table, optional JSON.

Benchmarks report ratios against the peer a user would otherwise use, measured
in the same run; they never assert timings (machines here are shared/noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes (CI: proves the benchmark runs, not its speed)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--repeat", type=int, default=3, help="best of N timings (default 3)")
    return p


def best_of(fn: Callable[[], Any], repeat: int = 3) -> tuple[float, Any]:
    """Best wall time of ``repeat`` runs (the least disturbed by neighbours) and the last result."""
    best, result = float("inf"), None
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# A child's ru_maxrss is at least the peak RSS of the process it was forked from: Linux carries the
# old address space's high-water mark over at exec, and Python's subprocess forks with vfork, which
# borrows the parent's.  A benchmark grown to 654 MB by producing records measured every child,
# kcat included, at 654 MB (sample5, 2026-12-02).  So each measured command is started by a small
# launcher (`python -S`, ~9 MB) that forks it from its own fresh address space, waits for it and
# writes the grandchild's own wall time, CPU and peak RSS to a pipe.
_LAUNCH = """import os, sys, time
fd = int(sys.argv[1])
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(fd)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        os.write(2, f"cannot run {sys.argv[2]}: {e}".encode())
        os._exit(127)
_, st, ru = os.wait4(pid, 0)
os.write(fd, f"{time.perf_counter() - t} {ru.ru_utime + ru.ru_stime} {ru.ru_maxrss}".encode())
code = os.waitstatus_to_exitcode(st)
sys.exit(code if code >= 0 else 128 - code)
"""


@dataclass(frozen=True)
class Measured:
    """One fresh child process: its own wall seconds, user+sys CPU seconds and peak RSS (MB)."""

    seconds: float
    cpu_s: float
    rss_mb: float
    returncode: int
    stderr: str


def measured_child(cmd: list[str], stdout=subprocess.DEVNULL, env=None, cwd=None) -> Measured:
    """Run ``cmd`` as a user would, measured by the launcher above (stderr is captured)."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen([sys.executable, "-S", "-c", _LAUNCH, str(w), *cmd], stdout=stdout,
                                stderr=subprocess.PIPE, env=env, cwd=cwd, pass_fds=(w,))
    finally:
        os.close(w)
    err = proc.stderr.read().decode(errors="replace")  # the child cannot block on a full stderr pipe
    proc.wait()
    with os.fdopen(r, "rb") as f:
        got = f.read().split()
    if len(got) != 3:
        raise SystemExit(f"the measuring launcher failed ({proc.returncode}) for {cmd[:4]}: {err[-500:]}")
    return Measured(float(got[0]), float(got[1]), int(got[2]) / 1024, proc.returncode, err)


def print_table(title: str, headers: list[str], rows: list[list[Any]]) -> None:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths))))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    sys.stdout.flush()


def _fmt(c: Any) -> str:
    if isinstance(c, float):
        return f"{c:,.3g}" if abs(c) < 100 else f"{c:,.0f}"
    if isinstance(c, int):
        return f"{c:,}"
    return str(c)


def write_json(path: str | None, name: str, results: Any, **extra: Any) -> None:
    if not path:
        return
    doc = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpu_count": _cpus(), "platform": platform.platform()},
        "results": results,
        **extra,
    }
    Path(path).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
