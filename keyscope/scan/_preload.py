"""Imported once before tasks run (in the scanning process, from which --workers N forks its workers, or in a
fork server when threads forbid a fork): the imports done and the decoder and hash kernels compiled (each took
0.1-0.6 s per worker process otherwise)."""

import datasketches  # noqa: F401
import pyarrow  # noqa: F401
import pyarrow.compute  # noqa: F401

# Not Polars: a scan of the plain key never imports it (~0.3 s); --key-by/--field import it in the task.
# Not kafka-python: the scan's client is keyscope.kafka.lean (kafka-python only for SASL's mechanisms).

from .. import _kernels, sampling
from ..kafka import lean, probe  # noqa: F401
from . import task

try:
    sampling._kernels()
    _kernels._kernels()
    task.arrow_without_pandas()
except Exception:  # reported in the task, where the kernel is needed
    pass
