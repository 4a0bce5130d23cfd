""".ci/run runs the README's test command verbatim, and any failing step of it fails CI.

Why: under ``set -e`` a failure inside an ``&&`` list does not end the script (only the list's
last command's does), so a mypy failure once skipped the tests and CI went on to pass.  Here
the command runs as .ci/run has it, with stand-ins for python3, pip, ruff, mypy and python on
the PATH (each records that it ran and exits as told), under the script's own shell options.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_test_command() -> str:
    lines = [ln.strip() for ln in (ROOT / "README.md").read_text().splitlines() if "python -m pytest" in ln]
    assert len(lines) == 1, lines
    return lines[0]


def ci_step() -> str:
    """The README command's lines in .ci/run: the command and its continuation lines."""
    text = (ROOT / ".ci" / "run").read_text().splitlines()
    cmd = readme_test_command()
    at = [i for i, ln in enumerate(text) if ln.startswith(cmd)]
    assert len(at) == 1, "the README's test command is not in .ci/run verbatim"
    out = [text[at[0]]]
    while out[-1].endswith("\\"):
        out.append(text[at[0] + len(out)])
    return "\n".join(out)


STUB = """#!/bin/sh
echo "$(basename "$0") $*" >> "$LOG"
if [ "$(basename "$0")" = python3 ] && [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin" && : > "$3/bin/activate"
fi
eval "exit \\${RC_$(basename "$0")}"
"""


def run(tmp_path: Path, **rc: int) -> tuple[int, list[str], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("python3", "pip", "ruff", "mypy", "python"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "log"
    log.write_text("")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LOG": str(log), "HOME": str(tmp_path)}
    env.update({f"RC_{k}": str(rc.get(k, 0)) for k in ("python3", "pip", "ruff", "mypy", "python")})
    script = "set -euo pipefail\n" + ci_step() + "\necho CI-WENT-ON\n"
    p = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    ran = [ln.split()[0] for ln in log.read_text().splitlines()]
    return p.returncode, ran, p.stdout


def test_the_readme_command_is_in_ci_verbatim():
    assert re.search(r"ruff check .* && mypy && python -m pytest -q", readme_test_command())
    assert ci_step().startswith(readme_test_command())


def test_every_step_passing_goes_on_to_the_benchmarks(tmp_path):
    code, ran, out = run(tmp_path)
    assert code == 0 and "CI-WENT-ON" in out
    assert ran == ["python3", "pip", "ruff", "mypy", "python"]


@pytest.mark.parametrize("failing, before", [("pip", 2), ("ruff", 3), ("mypy", 4), ("python", 5)])
def test_a_failing_step_fails_ci(tmp_path, failing, before):
    code, ran, out = run(tmp_path, **{failing: 5 if failing == "python" else 1})  # pytest's 5: no tests ran
    assert code != 0, f"{failing} failed and CI passed"
    assert "CI-WENT-ON" not in out and "the README test command failed" in out
    assert len(ran) == before and ran[-1] == failing  # nothing after the failing step ran
    assert os.path.isdir(tmp_path / ".venv")
