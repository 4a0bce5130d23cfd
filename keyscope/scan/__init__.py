"""Whole-topic scan: every record of a range into a mergeable :class:`Profile` (``keyscope scan``).

``plan`` splits the range into offset-range tasks, ``task`` reads one,
``profile`` holds and merges the results, ``engine`` runs the tasks here, in
a process pool or on Dask, and ``answers`` turns a profile into the figures
``analyze``/``whatif`` give, saying which are exact and which carry a sketch
bound.

The names below load with their module on first use: ``keyscope.scan.profile``
(what ``whatif``/``recommend`` test a file with) would otherwise import the
engine and the task reader too (~0.02-0.04 s of a cold command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import ScanProgress, ScanRequest, ScanResult, parse_bound, run_scan
    from .plan import Task, plan_tasks
    from .profile import Profile, is_profile, merge, read_profile, write_profile
    from .task import ScanSpec, scan_task

_WHERE = {
    "ScanProgress": "engine", "ScanRequest": "engine", "ScanResult": "engine", "parse_bound": "engine",
    "run_scan": "engine", "Task": "plan", "plan_tasks": "plan", "Profile": "profile", "is_profile": "profile",
    "merge": "profile", "read_profile": "profile", "write_profile": "profile", "ScanSpec": "task",
    "scan_task": "task",
}

__all__ = ["Profile", "ScanProgress", "ScanRequest", "ScanResult", "ScanSpec", "Task", "is_profile", "merge",
           "parse_bound", "plan_tasks", "read_profile", "run_scan", "scan_task", "write_profile"]


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
