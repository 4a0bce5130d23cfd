"""Whole-topic scan: every record of a range into a mergeable :class:`Profile` (``keyscope scan``).

``plan`` splits the range into offset-range tasks, ``task`` reads one,
``profile`` holds and merges the results, ``engine`` runs the tasks here, in
a process pool or on Dask, and ``answers`` turns a profile into the figures
``analyze``/``whatif`` give, saying which are exact and which carry a sketch
bound.
"""

from .engine import ScanProgress, ScanRequest, ScanResult, parse_bound, run_scan
from .plan import Task, plan_tasks
from .profile import Profile, is_profile, merge, read_profile, write_profile
from .task import ScanSpec, scan_task

__all__ = ["Profile", "ScanProgress", "ScanRequest", "ScanResult", "ScanSpec", "Task", "is_profile", "merge",
           "parse_bound", "plan_tasks", "read_profile", "run_scan", "scan_task", "write_profile"]
