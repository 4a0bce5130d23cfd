"""What-if: the load a change would put on each partition, predicted from a Sample.

A *scenario* is a key expression (the key, the key joined with captured
fields, and optionally the hottest keys salted into sub-keys) x a partitioner
x a partition count.  Everything is evaluated on *unit tables*: the sample
grouped once by (today's partition, key, fields).  Each distinct producer key
is hashed once; the partition for any count N is then ``operand % N``, so a
3 -> 6 what-if is arithmetic on a column, never a rehash per record.

Exact rules, so a producer can implement what keyscope predicted:

* composite key: ``key + sep + f1 [+ sep + f2 ...]`` over the fields as
  captured (UTF-8); a null field is skipped, so a record missing every field
  keeps its plain key.  A null key stays null (the client does not hash it).
* salting: for the hot (composite) keys only, ``subkey = key + b"#" +
  str(salt)`` with ``salt = mmh3.hash(data, seed, signed=False) % D``; ``data``
  is the salt field's UTF-8 bytes (a missing field counts as ``b""``) or, for
  ``by="offset"``, the record's offset as 8 bytes little-endian signed
  (``struct.pack("<q", offset)``).  Salting by offset models a producer that
  picks the salt at random or round-robin: exact on the sample, the same load
  in expectation in production.

Uncertainty: a sample is not the topic.  The skew interval treats sampled
records as independent draws (as ``keyscope analyze`` does): N x the interval
of the largest partition share.  It does not cover the key mix changing after
the sample window.

Modules, in the order a number flows: :mod:`.spec` (what a scenario is),
:mod:`.tables` (unit tables; composite keys), :mod:`.kernels` (compiled
passes), :mod:`.engine` (``WhatIf``: caches and evaluates), :mod:`.result`
(``Result`` and its JSON), :mod:`.murmur` (the salt hash).

Names are loaded on first use, so ``from keyscope.whatif import parse_key_by``
does not import Polars or llvmlite (the engine and its kernels do).
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "Salt": "spec",
    "Scenario": "spec",
    "parse_salt": "spec",
    "parse_key_by": "spec",
    "salt_rule": "spec",
    "DEFAULT_SEPARATOR": "spec",
    "Result": "result",
    "expected_keys_moved": "result",
    "WhatIf": "engine",
    "murmur3_int64": "murmur",
    "murmur3_binary": "murmur",
    "compose_keys": "tables",
    "concat_binary": "tables",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
