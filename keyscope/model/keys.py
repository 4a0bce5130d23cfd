"""Reading keys the way users write them (UTF-8, hex or base64, one per line), and
showing keys and names the one way every output format shares.

Columnar: stdin with millions of lines becomes one Arrow binary array without
a Python object per key (newline positions found with numpy).  Command-line
KEYs are few, so they are decoded in plain Python with the same strict rules
as the Polars decoders: ``keyscope partition KEY`` never imports Polars.
"""

from __future__ import annotations

import base64
import binascii
import re

from ..errors import InputError

ENCODINGS = ("utf8", "hex", "base64")

# What Polars' ``str.strip_chars()`` (Rust ``char::is_whitespace``) strips;
# Python's ``str.strip()`` would also strip \x1c-\x1f.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def decode_key(text: str, encoding: str) -> bytes:
    """One key as written on the command line -> its bytes (strict, like Polars' decoders).

    UTF-8 keys keep any bytes the shell passed that are not valid UTF-8 (Python
    hands them over as surrogate escapes).  Hex and base64 are stripped of
    surrounding whitespace, then must be canonical: even-length hex; base64 with
    exact padding and zero trailing bits.
    """
    if encoding == "utf8":
        return text.encode("utf-8", "surrogateescape")
    if encoding not in ENCODINGS:
        raise InputError(f"unknown key encoding {encoding!r}; use one of {', '.join(ENCODINGS)}")
    cleaned = text.strip(_WHITESPACE)
    try:
        if encoding == "hex":
            if _HEX.fullmatch(cleaned):
                return bytes.fromhex(cleaned)
        else:
            raw = base64.b64decode(cleaned, validate=True)
            if base64.b64encode(raw).decode("ascii") == cleaned:
                return raw
    except (ValueError, binascii.Error):
        pass
    raise InputError(f"key {cleaned!r} is not valid {encoding}")


def decode_key_args(keys, encoding: str = "utf8") -> list[bytes]:
    """Command-line KEY arguments -> bytes, in order."""
    return [decode_key(k, encoding) for k in keys]


def keys_from_args(keys, encoding: str = "utf8"):
    """A Binary Series from command-line KEY arguments."""
    import polars as pl

    return pl.Series("key", decode_key_args(keys, encoding), dtype=pl.Binary)


def keys_from_lines(data: bytes, encoding: str = "utf8"):
    """A Binary Series from newline-separated keys (the last newline is optional).

    Lines are taken byte for byte (a key may contain any byte but ``\\n``);
    a trailing ``\\r`` is kept, since it may be part of a key.
    """
    import numpy as np
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
    series = pl.Series("key", _ArrowStream(arr))
    if encoding == "utf8":
        return series
    return decode_keys(series.cast(pl.String, strict=False), encoding, lines=series)


class _ArrowStream:
    """Hands an Arrow array to Polars through the Arrow PyCapsule interface.

    Why: ``pl.Series(pyarrow_array)`` imports ``pyarrow.compute`` (0.1-0.2 s,
    more than reading a million keys); the capsule path does not.
    """

    def __init__(self, array):
        self.array = array

    def __arrow_c_stream__(self, requested_schema=None):
        import pyarrow as pa

        return pa.chunked_array([self.array]).__arrow_c_stream__(requested_schema)


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
    for v in values:
        if v is None:
            continue
        try:
            decode_key(v, encoding)
        except InputError:
            return v
    return values[0] if values else ""


# ---------------------------------------------------------------------------- display
#
# One rule for every key and name keyscope prints, in every format.  A key is
# shown as its UTF-8 text when it decodes and holds none of the characters
# below, else as lowercase hex (``key_encoding`` says which, in JSON).  A name
# (topic, field, anything from a file or a broker) keeps its text, with those
# characters escaped (\x1b, \u009b).  The characters: C0 and C1 controls and
# DEL (ESC/CSI/OSC/BEL/NEL drive terminals), and the invisible format
# characters that reorder or hide text (bidi overrides and isolates,
# zero-width, soft hyphen, line/paragraph separators, BOM).  Written so that
# Python's re and Polars' (Rust) regex read the class the same way.
HIDDEN = (
    "[\\x00-\\x1f\\x7f-\\x9f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u2028-\\u202e"
    "\\u2060-\\u206f\\ufeff\\ufff9-\\ufffb]"
)
_HIDDEN = re.compile(HIDDEN)
_HIDDEN_IN_TEXT = re.compile(HIDDEN.replace("\\x00-\\x1f", "\\x00-\\x09\\x0b-\\x1f"))  # newline is layout


def shows_as_text(text: str) -> bool:
    """Can this (decoded) key be printed as it is?"""
    return not _HIDDEN.search(text)


def display_name(text) -> str:
    """A name, message or whole report as printed: hidden characters escaped, newlines and the rest as is."""
    text = str(text)
    return _HIDDEN_IN_TEXT.sub(_escape, text) if _HIDDEN_IN_TEXT.search(text) else text


def _escape(m) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


_HIDDEN_IN_JSON = re.compile(HIDDEN.replace("\\x00-\\x1f", ""))  # json.dumps escapes C0 itself; raw ones are layout


def json_safe(text: str) -> str:
    """JSON text with hidden characters as \\u escapes: the same value, safe on a terminal."""
    return _HIDDEN_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def key_display_one(key: bytes | None) -> tuple[str | None, str | None]:
    """(shown, encoding) for one key: ``utf8`` text or ``hex``; (None, None) for a null key."""
    if key is None:
        return None, None
    try:
        text = bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and shows_as_text(text):
        return text, "utf8"
    return bytes(key).hex(), "hex"


LABEL_WIDTH = 60  # a key in a sentence is cut here, with an ellipsis and its size


def key_label(key: bytes, width: int = LABEL_WIDTH) -> str:
    """A key in a sentence: quoted text or 0x-hex, cut with an ellipsis and its size when long."""
    shown, enc = key_display_one(key)
    return shown_label(shown, enc, len(key), width)


def shown_label(shown: str, enc: str, size: int | None = None, width: int = LABEL_WIDTH, quote: bool = True) -> str:
    """:func:`key_label` for a key already shown (``key``/``key_encoding`` of a JSON document)."""
    text = f"0x{shown}" if enc == "hex" else shown
    q = repr if quote and enc == "utf8" else str
    if len(text) <= width:
        return q(text)
    if size is None:
        size = len(shown) // 2 if enc == "hex" else len(shown.encode("utf-8", "surrogateescape"))
    return f"{q(text[: width - 1] + '…')} ({byte_size(size)} key)"


def byte_size(n: int) -> str:
    """1,234 B, 300.0 KiB, 1.0 MiB."""
    if n < 1024:
        return f"{n:,} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:,.1f} {unit}"
    return f"{n:,.1f} GiB"


def utf8_or_null(keys):
    """A String Series: the key as text where it is valid UTF-8, else null.

    Polars cannot cast invalid UTF-8 non-strictly, so: one strict cast for the
    common all-text column, and a per-key decode only when that fails.
    """
    import polars as pl

    try:
        return keys.cast(pl.String)
    except pl.exceptions.PolarsError:
        def dec(b):
            try:
                return b.decode("utf-8")
            except UnicodeDecodeError:
                return None

        return pl.Series(keys.name, [None if b is None else dec(b) for b in keys.to_list()], dtype=pl.String)


def key_display(keys):
    """:func:`key_display_one` over a Binary Series, columnar: (shown, encoding) Series."""
    import polars as pl

    text = utf8_or_null(keys)
    frame = pl.DataFrame({"k": keys, "t": text})
    is_text = pl.col("t").is_not_null() & ~pl.col("t").str.contains(HIDDEN)
    out = frame.select(
        pl.when(is_text).then(pl.col("t")).otherwise(pl.col("k").bin.encode("hex")).alias("key"),
        pl.when(pl.col("k").is_null()).then(None).when(is_text).then(pl.lit("utf8"))
        .otherwise(pl.lit("hex")).alias("key_encoding"),
    )
    return out["key"], out["key_encoding"]


def keys_from_kcat(data: bytes):
    """A Binary Series from kcat's ``-f '%K:%k\\n'`` output: length, ``:``, the key's bytes, newline.

    Why: ``-f '%k\\n'`` prints a null key as an empty line, indistinguishable
    from the empty key (and a key holding ``\\n`` splits in two).  ``%K`` is
    the key's length, ``-1`` for a null key, so each record is read exactly:
    null keys stay null (never hashed as ``b""``), any byte may be in a key.
    """
    import polars as pl

    keys: list[bytes | None] = []
    pos, end = 0, len(data)
    find = data.find
    while pos < end:
        colon = find(b":", pos, pos + 12)
        try:
            length = int(data[pos:colon]) if colon > pos else None
        except ValueError:
            length = None
        if length is None or length < -1:
            line = data[pos : data.find(b"\n", pos) if b"\n" in data[pos:] else end][:40]
            raise InputError(
                f"record {len(keys) + 1}: {line!r} is not kcat -f '%K:%k\\n' output (length, ':', key, newline)"
            )
        start = colon + 1
        stop = start + max(length, 0)
        if stop > end:
            raise InputError(f"record {len(keys) + 1}: the key is cut short ({length} bytes announced)")
        keys.append(None if length == -1 else data[start:stop])
        if stop < end and data[stop : stop + 1] != b"\n":
            raise InputError(f"record {len(keys)}: no newline after its {max(length, 0)}-byte key")
        pos = stop + 1
    return pl.Series("key", keys, dtype=pl.Binary)
