"""Pseudo-terminals for the tests: a keyscope process writing to a terminal, read without blocking."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
import time


def open_pty(rows: int = 40, cols: int = 160) -> tuple[int, int]:
    """(master, slave) of a new pseudo-terminal of ``rows`` x ``cols`` (the progress line fits ``cols``)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return master, slave


def read_until(master: int, needle: bytes | None = None, seen: bytes = b"", wait: float = 60,
               proc: subprocess.Popen | None = None) -> bytes:
    """Read ``master`` until ``needle`` is in what was read (None: until the end), ``wait`` seconds,
    the terminal's end, or (given ``proc``) the process exiting with nothing more to read."""
    deadline = time.monotonic() + wait
    while (needle is None or needle not in seen) and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        elif proc is not None and proc.poll() is not None:
            break
    return seen


def drain(master: int, seen: bytes = b"") -> bytes:
    """What is left to read on ``master`` now (stops at the first 0.2 s without output)."""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if not ready:
            return seen
        try:
            chunk = os.read(master, 65536)
        except OSError:
            return seen
        if not chunk:
            return seen
        seen += chunk
