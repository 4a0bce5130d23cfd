"""Imported once by the process pool's fork server: workers fork with the imports done and the
decoder and hash kernels compiled (each took 0.1-0.6 s per worker process otherwise)."""

import datasketches  # noqa: F401
import pyarrow  # noqa: F401
import pyarrow.compute  # noqa: F401

# Not Polars: a scan of the plain key never imports it (~0.3 s); --key-by/--field import it in the task.

from .. import _kernels, sampling
from ..kafka import client
from . import task  # noqa: F401

client.preload()  # kafka-python: ~0.3-0.5 s to import, the largest part of a worker's start-up
try:
    sampling._kernels()
    _kernels._kernels()
except Exception:  # reported in the task, where the kernel is needed
    pass
