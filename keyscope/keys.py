"""Reading keys the way users write them: UTF-8, hex or base64, one per line.

Columnar: stdin with millions of lines becomes one Arrow binary array without
a Python object per key (newline positions found with numpy).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

ENCODINGS = ("utf8", "hex", "base64")


def keys_from_args(keys, encoding: str = "utf8"):
    """A Binary Series from command-line KEY arguments."""
    import polars as pl

    return decode_keys(pl.Series("key", list(keys), dtype=pl.String), encoding)


def keys_from_lines(data: bytes, encoding: str = "utf8"):
    """A Binary Series from newline-separated keys (the last newline is optional).

    Lines are taken byte for byte (a key may contain any byte but ``\\n``);
    a trailing ``\\r`` is kept, since it may be part of a key.
    """
    import polars as pl
    import pyarrow as pa

    buf = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(buf == 10)
    if len(buf) and (len(nl) == 0 or nl[-1] != len(buf) - 1):
        nl = np.append(nl, len(buf))  # last line without newline
        buf = np.append(buf, np.uint8(10))
    count = len(nl)
    compact = buf[buf != 10] if count else buf[:0]
    offsets = np.empty(count + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = nl - np.arange(count, dtype=np.int64)
    arr = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(compact)]
    )
    series = pl.Series("key", arr, dtype=pl.Binary)
    if encoding == "utf8":
        return series
    return decode_keys(series.cast(pl.String, strict=False), encoding, lines=series)


def decode_keys(text, encoding: str, lines=None):
    """Decode a String Series of keys written as ``encoding`` into Binary."""
    import polars as pl

    if encoding not in ENCODINGS:
        raise InputError(f"unknown key encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    if encoding == "utf8":
        return text.cast(pl.Binary).alias("key")
    if lines is not None and text.null_count() > lines.null_count():
        bad = lines.filter(text.is_null() & lines.is_not_null()).head(1).to_list()[0]
        raise InputError(f"key {bad!r} is not valid {encoding} text")
    cleaned = text.str.strip_chars()
    try:
        return cleaned.str.decode(encoding, strict=True).alias("key")
    except Exception:
        bad = _first_bad(cleaned.to_list(), encoding)
        raise InputError(f"key {bad!r} is not valid {encoding}") from None


def _first_bad(values, encoding):
    import base64
    import binascii

    for v in values:
        if v is None:
            continue
        try:
            if encoding == "hex":
                bytes.fromhex(v)
            else:
                base64.b64decode(v, validate=True)
        except (ValueError, binascii.Error):
            return v
    return values[0] if values else ""
