"""``--field NAME=$.a.b``: every requested JSON path pulled from a value in one pass.

Why: evaluating each path with Polars' ``str.json_path_match`` parses every value once per
path (~2 us a path and record, most of a ``sample --field`` run, docs/benchmarks.md).  The
decoder kernel (``ks_json`` in :mod:`.decoder`) instead walks each value once, for every
simple path (``$.a``, ``$.a.b``: dotted names only), while the value's bytes are in the
fetched buffer, and writes each field's text straight into Arrow string buffers.

Exactness: the result must be what ``json_path_match`` returns (serde_json + jsonpath), so
the fast path takes only what it is sure of and says *fallback* otherwise; those values alone
are copied and handed to Polars.  :func:`extract` below is the pure-Python statement of the
kernel's rules (tests/test_sampling_jsonfields.py checks kernel == reference and reference ==
Polars, exhaustively on small documents and by property on random ones):

* a value that is null, not UTF-8, or not valid JSON -> null for every field;
* a backslash anywhere (escapes in keys or strings), nesting deeper than :data:`MAX_DEPTH`,
  or a number with an exponent anywhere (serde_json fails on ``1e400``) -> fallback;
* at the path: a string without escapes -> its bytes; ``true``/``false`` -> the literal;
  ``null`` or missing -> null; an integer of at most 18 digits (not ``-0``) -> its text;
  a decimal fraction of at most 15 significant digits ending in a non-zero digit and not
  below 0.001 -> its text (``ryu`` prints such a double back the same); any other number,
  an object or an array -> fallback (Polars re-serialises them);
* a path step that meets an array, a root that is an array, or a key repeated where the
  path goes (serde_json keeps the last) -> fallback.
"""

from __future__ import annotations

import re

MAX_DEPTH = 64  # the kernel's stack; serde_json refuses past 128
MAX_NATIVE_FIELDS = 64  # fields per value the kernel tracks (bit masks in an i64)
_SIMPLE = re.compile(r"^\$((?:\.[A-Za-z_][A-Za-z0-9_]*)+)$")

NULL, OK, FALLBACK = 0, 1, 2  # per field and record, as the kernel writes them


def simple_path(path: str) -> tuple[bytes, ...] | None:
    """The keys of a dotted path (``$.a.b`` -> (b"a", b"b")), or None when the kernel does not take it."""
    m = _SIMPLE.match(path)
    if not m:
        return None
    return tuple(s.encode("ascii") for s in m.group(1)[1:].split("."))


class _Fallback(Exception):
    pass


class _Invalid(Exception):
    pass


_WS = b" \t\n\r"


def extract(value: bytes | None, paths: list[tuple[bytes, ...]]) -> list[tuple[int, bytes | None]]:
    """Per path: (OK, text), (NULL, None) or (FALLBACK, None), by the rules of the module doc."""
    nulls = [(NULL, None)] * len(paths)
    if value is None:
        return nulls
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return nulls
    try:
        got, fb = _walk(value, paths)
    except _Invalid:
        return nulls
    except _Fallback:
        return [(FALLBACK, None)] * len(paths)
    return [(FALLBACK, None) if i in fb else (OK, got[i]) if i in got else (NULL, None) for i in range(len(paths))]


def _walk(v: bytes, paths):
    n = len(v)
    got: dict[int, bytes] = {}
    fb: set[int] = set()
    i = 0

    def ws(i):
        while i < n and v[i] in _WS:
            i += 1
        return i

    def string(i):  # v[i] == '"'; returns (content, index after the closing quote)
        j = i + 1
        while True:
            if j >= n:
                raise _Invalid
            c = v[j]
            if c == 0x22:
                return v[i + 1 : j], j + 1
            if c == 0x5C:
                raise _Fallback
            if c < 0x20:
                raise _Invalid
            j += 1

    def digits(j):
        k = j
        while k < n and 0x30 <= v[k] <= 0x39:
            k += 1
        return k

    def number(i):  # -> (text, fast)
        j = i
        if v[j] == 0x2D:
            j += 1
        if j >= n or not (0x30 <= v[j] <= 0x39):
            raise _Invalid
        k = j + 1 if v[j] == 0x30 else digits(j)
        int_digits = k - j
        frac = b""
        if k < n and v[k] == 0x2E:
            e = digits(k + 1)
            if e == k + 1:
                raise _Invalid
            frac = v[k + 1 : e]
            k = e
        if k < n and v[k] in b"eE":
            raise _Fallback
        text = v[i:k]
        negative = v[i] == 0x2D
        if not frac:
            fast = int_digits <= 18 and not (negative and int_digits == 1 and v[j] == 0x30)
        else:
            whole = v[j : j + int_digits]
            sig = (whole + frac).lstrip(b"0")
            fast = frac[-1] != 0x30 and len(sig) <= 15 and (whole != b"0" or frac[:2] != b"00")
        return text, fast, k

    # stack frames: [is_object, alive (set of path indexes whose steps so far matched), seen]
    stack: list[list] = []
    term: set[int] = set()
    nxt: set[int] = set(range(len(paths)))
    i = ws(0)
    expect = "value"
    while True:
        if expect == "value":
            if i >= n:
                raise _Invalid
            c = v[i]
            if c == 0x7B:  # {
                if len(stack) >= MAX_DEPTH:
                    raise _Fallback
                fb |= term
                stack.append([True, set(nxt), set()])
                i = ws(i + 1)
                if i < n and v[i] == 0x7D:
                    stack.pop()
                    i += 1
                    expect = "after"
                else:
                    expect = "key"
                continue
            if c == 0x5B:  # [
                if len(stack) >= MAX_DEPTH:
                    raise _Fallback
                fb |= term | nxt
                stack.append([False, set(), set()])
                i = ws(i + 1)
                if i < n and v[i] == 0x5D:
                    stack.pop()
                    i += 1
                    expect = "after"
                else:
                    term, nxt = set(), set()
                continue
            if c == 0x22:
                s, i = string(i)
                for f in term:
                    got[f] = s
            elif c in b"tfn":
                for lit in (b"true", b"false", b"null"):
                    if v.startswith(lit, i):
                        break
                else:
                    raise _Invalid
                i += len(lit)
                if lit != b"null":
                    for f in term:
                        got[f] = lit
            elif c == 0x2D or 0x30 <= c <= 0x39:
                text, fast, i = number(i)
                for f in term:
                    if fast:
                        got[f] = text
                    else:
                        fb.add(f)
            else:
                raise _Invalid
            expect = "after"
            continue
        if expect == "after":
            i = ws(i)
            if not stack:
                if i != n:
                    raise _Invalid
                return got, fb
            if i >= n:
                raise _Invalid
            c = v[i]
            top = stack[-1]
            if c == 0x2C:  # ,
                i = ws(i + 1)
                if top[0]:
                    expect = "key"
                else:
                    term, nxt = set(), set()
                    expect = "value"
                continue
            if (c == 0x7D and top[0]) or (c == 0x5D and not top[0]):
                stack.pop()
                i += 1
                continue
            raise _Invalid
        # expect == "key": at a '"' after '{' or ','
        if i >= n or v[i] != 0x22:
            raise _Invalid
        key, i = string(i)
        top = stack[-1]
        depth = len(stack)
        term, nxt = set(), set()
        for f in top[1]:
            if paths[f][depth - 1] == key:
                if f in top[2]:
                    fb.add(f)
                top[2].add(f)
                (term if len(paths[f]) == depth else nxt).add(f)
        i = ws(i)
        if i >= n or v[i] != 0x3A:
            raise _Invalid
        i = ws(i + 1)
        expect = "value"
