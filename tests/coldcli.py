"""A keyscope command run cold in a fresh interpreter, watching whether a module is imported on the way."""

from __future__ import annotations

import subprocess
import sys

_SCRIPT = (
    "import sys\n"
    "def hook(event, args):\n"
    "    if event == 'import' and args[0] == {module!r}:\n"
    "        print('IMPORTED ' + args[0], file=sys.stderr, flush=True)\n"
    "sys.addaudithook(hook)\n"
    "{patches}"
    "sys.argv = ['keyscope', *sys.argv[1:]]\n"
    "from keyscope.cli import main\n"
    "main()\n"
)


def run_watching(module: str, args: list[str], patches: str = "", env=None, timeout: int = 300):
    """(the finished process, whether ``module`` was imported): ``keyscope args`` after ``patches`` (Python
    lines run first, e.g. thresholds lowered so that a small file takes the large-file paths)."""
    script = _SCRIPT.format(module=module, patches=patches)
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=timeout, env=env)
    return r, f"IMPORTED {module}" in r.stderr
