"""Statistics that hold on a sample: the alert's skew ratio, and the rest.

``skew_ratio`` is defined exactly like the recording rule
``kafka:group_skew_ratio``: max over partitions / ``clamp_min(mean, 0.001)``,
so keyscope and Prometheus agree to the last digit.
"""

from __future__ import annotations

from typing import Sequence

CLAMP_MIN = 0.001


def clamp_min(x: float, floor: float = CLAMP_MIN) -> float:
    """PromQL's clamp_min: the guard every division here uses."""
    return x if x > floor else floor


def skew_ratio(loads: Sequence[float]) -> float:
    """max(loads) / clamp_min(mean(loads), 0.001); 0.0 for no partitions."""
    loads = [float(x) for x in loads]
    if not loads:
        return 0.0
    return max(loads) / clamp_min(sum(loads) / len(loads))
