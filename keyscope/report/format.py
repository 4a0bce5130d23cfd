"""Turning results into text: tables for people, JSON for machines, Markdown for incident docs.

The library returns data; only this module and the CLI decide how it looks.
Tables over many rows are built with Polars string expressions, so piping a
million keys through ``keyscope partition`` stays columnar.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Sequence

FORMATS = ("table", "json", "markdown")


# Keys and names are shown by one rule, kept in keyscope.model.keys (text or hex for keys,
# escapes for names); JSON output escapes the same characters.
from ..model.keys import display_name, json_safe, key_display, key_display_one, utf8_or_null  # noqa: E402,F401


def finite(x: float | int | None) -> float | int | None:
    """Never let NaN/Inf reach output: a bug should be visible, not printed."""
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"non-finite number in output: {x!r}")
    return x


def to_json(obj: Any) -> str:
    """Strict JSON: NaN/Inf raise instead of producing invalid output."""
    return json_safe(json.dumps(obj, indent=2, allow_nan=False, default=_json_default, ensure_ascii=False))


def _json_default(o):
    import datetime

    if isinstance(o, (datetime.datetime, datetime.date)):
        return o.isoformat()
    if isinstance(o, bytes):
        return o.hex()
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"cannot encode {type(o).__name__} as JSON")


def fmt_num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        finite(x)
        if x == int(x) and abs(x) < 1e15 and digits == 0:
            return f"{int(x):,}"
        return f"{x:,.{digits}f}"
    return str(x)


def fmt_pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * finite(x):.{digits}f}%"


def bar(fraction: float, width: int = 20) -> str:
    """A horizontal bar for a share in [0, 1] (eighth-block resolution)."""
    fraction = min(max(float(fraction), 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, rest = divmod(eighths, 8)
    return ("█" * full + ("▏▎▍▌▋▊▉"[rest - 1] if rest else "")).ljust(width)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A plain aligned table; ``align`` is one char per column, 'l' or 'r'."""
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    headers = list(headers)
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    align = align or "l" * len(headers)

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(c.rjust(widths[i]) if align[i] == "r" else c.ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    align = align or "l" * len(headers)
    esc = lambda c: ("" if c is None else str(c)).replace("|", "\\|")  # noqa: E731
    out = ["| " + " | ".join(esc(h) for h in headers) + " |"]
    out.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
    out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def frame_table(df, align: str | None = None, markdown: bool = False) -> str:
    """Render a Polars DataFrame of any size as an aligned (or Markdown) table, columnar."""
    import polars as pl

    cols = df.columns
    align = align or "l" * len(cols)
    s = df.select([pl.col(c).cast(pl.String).fill_null("-") for c in cols])
    if markdown:
        s = s.select([pl.col(c).str.replace_all("|", "\\|", literal=True) for c in cols])
        header = "| " + " | ".join(cols) + " |\n" + "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
        body = s.select(pl.concat_str([pl.lit("| ")] + [e for c in cols for e in (pl.col(c), pl.lit(" | "))][:-1] + [pl.lit(" |")]))
        lines = body.to_series().to_list()
        return "\n".join([header] + lines)
    widths = {c: max(len(c), int(s[c].str.len_chars().max() or 0)) for c in cols}
    exprs = []
    for i, c in enumerate(cols):
        e = pl.col(c).str.pad_start(widths[c]) if align[i] == "r" else pl.col(c).str.pad_end(widths[c])
        exprs.append(e)
        if i < len(cols) - 1:
            exprs.append(pl.lit("  "))
    body = s.select(pl.concat_str(exprs).str.strip_chars_end()).to_series()
    header = "  ".join(c.rjust(widths[c]) if align[i] == "r" else c.ljust(widths[c]) for i, c in enumerate(cols)).rstrip()
    sep = "  ".join("-" * widths[c] for c in cols)
    return "\n".join([header, sep]) + ("\n" + "\n".join(body.to_list()) if len(body) else "")


def table_key_expr():
    """For tables (no encoding column): hex keys as 0x..., the empty key as ""."""
    import polars as pl

    k, e = pl.col("key"), pl.col("key_encoding")
    return (
        pl.when(e == "hex").then(pl.concat_str(pl.lit("0x"), k))
        .when(k == "").then(pl.lit('""'))
        .otherwise(k).alias("key")
    )


_UNHASHED_NOTE = (
    "\n'random': null keys (and the empty key under librdkafka's default) are not hashed;\n"
    "the producer places them sticky or at random.\n"
)


def _partition_rules(partitions: int) -> dict[str, str]:
    from ..partitioners import PARTITIONERS

    return {name: p.formula.split("  (")[0].replace("% n", f"% {partitions}") for name, p in PARTITIONERS.items()}


def partition_rows(df, partitions: int, fmt: str, out) -> None:
    """Write ``keyscope partition`` rows (any number) to ``out``, columnar.

    A million keys make three million rows: the lines are built by Polars and
    written by Polars (``write_lines``), never as one Python string per row.
    """
    import polars as pl

    shown, enc = key_display(df["key"])
    view = df.select("partitioner", "hash", "partition").with_columns(shown, enc).select(
        "key", "key_encoding", "partitioner", "hash", "partition"
    )
    if fmt == "json":
        # Byte for byte what ``view.write_json()`` prints (checked by the tests),
        # faster.  Displayed keys hold no control characters (those are shown as
        # hex), so JSON escaping is just backslash and double quote.
        def quoted(e):
            return pl.concat_str(pl.lit('"'), e, pl.lit('"')).fill_null("null")

        key = pl.col("key").str.replace_all("\\", "\\\\", literal=True).str.replace_all('"', '\\"', literal=True)
        objects = view.select(
            pl.concat_str(
                pl.lit('{"key":'), quoted(key),
                pl.lit(',"key_encoding":'), quoted(pl.col("key_encoding")),
                pl.lit(',"partitioner":'), quoted(pl.col("partitioner")),
                pl.lit(',"hash":'), pl.col("hash").cast(pl.String).fill_null("null"),
                pl.lit(',"partition":'), pl.col("partition").cast(pl.String).fill_null("null"),
                pl.lit("}"),
            )
        ).to_series()
        out.write("[")
        write_lines(objects.head(len(objects) - 1), out, end=",")
        out.write("".join(objects.tail(1).to_list()) + "]\n")
        return
    table = view.select(
        table_key_expr(),
        "partitioner",
        pl.col("hash").cast(pl.String).fill_null("-"),
        pl.col("partition").cast(pl.String).fill_null("random"),
        pl.col("partitioner").replace_strict(_partition_rules(partitions)).alias("rule"),
    )
    write_frame_table(table, out, "llrrl", markdown=(fmt == "markdown"))
    if view["hash"].null_count():
        out.write(_UNHASHED_NOTE)


def write_lines(lines, out, end: str = "\n") -> None:
    """Write a Polars String Series to a text stream, each value followed by ``end``.

    Polars writes the bytes itself when ``out`` is a UTF-8 stream with a binary
    buffer (stdout), so a million lines never become Python strings.  Values
    must not contain newlines (they are written raw, unquoted).
    """
    import polars as pl

    frame = pl.DataFrame({"line": lines})
    binary = getattr(out, "buffer", None)
    encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
    if binary is not None and encoding == "utf8":
        out.flush()
        try:
            frame.write_csv(binary, include_header=False, quote_style="never", line_terminator=end)
        except OSError as e:
            # Polars reports a closed pipe (`keyscope ... | head`) as a bare OSError.
            if isinstance(e, BrokenPipeError) or "os error 32" in str(e) or "Broken pipe" in str(e):
                raise BrokenPipeError(32, "Broken pipe") from None
            raise
        binary.flush()
    else:
        out.write(frame.write_csv(include_header=False, quote_style="never", line_terminator=end))


def write_frame_table(df, out, align: str | None = None, markdown: bool = False) -> None:
    """Write ``frame_table(df, align, markdown) + "\\n"`` to ``out``, streaming the body with Polars."""
    import polars as pl

    cols = df.columns
    align = align or "l" * len(cols)
    s = df.select([pl.col(c).cast(pl.String).fill_null("-") for c in cols])
    if markdown:
        s = s.select([pl.col(c).str.replace_all("|", "\\|", literal=True) for c in cols])
        out.write("| " + " | ".join(cols) + " |\n" + "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|\n")
        body = s.select(
            pl.concat_str([pl.lit("| ")] + [e for c in cols for e in (pl.col(c), pl.lit(" | "))][:-1] + [pl.lit(" |")])
        ).to_series()
    else:
        widths = {c: max(len(c), int(s[c].str.len_chars().max() or 0)) for c in cols}
        exprs = []
        last = len(cols) - 1
        for i, c in enumerate(cols):
            if align[i] == "r":
                exprs.append(pl.col(c).str.pad_start(widths[c]))
            elif i == last:
                exprs.append(pl.col(c))  # its padding would be stripped below anyway
            else:
                exprs.append(pl.col(c).str.pad_end(widths[c]))
            if i < last:
                exprs.append(pl.lit("  "))
        body = s.select(pl.concat_str(exprs).str.strip_chars_end()).to_series()
        header = "  ".join(c.rjust(widths[c]) if align[i] == "r" else c.ljust(widths[c]) for i, c in enumerate(cols))
        out.write(header.rstrip() + "\n" + "  ".join("-" * widths[c] for c in cols) + "\n")
    write_lines(body, out)


def partition_rows_small(records: list[dict], partitions: int, fmt: str, out) -> None:
    """``partition_rows`` for ``partitioners.partition_records``: identical output, no Polars."""
    view = []
    for r in records:
        key, enc = key_display_one(r["key"])
        view.append({"key": key, "key_encoding": enc, "partitioner": r["partitioner"],
                     "hash": r["hash"], "partition": r["partition"]})
    if fmt == "json":
        out.write(json_safe(json.dumps(view, ensure_ascii=False, separators=(",", ":"), allow_nan=False)) + "\n")
        return
    rules = _partition_rules(partitions)
    rows = []
    for v in view:
        key = v["key"]
        if v["key_encoding"] == "hex":
            key = "0x" + key
        elif key == "":
            key = '""'
        rows.append([
            "-" if key is None else key,
            v["partitioner"],
            "-" if v["hash"] is None else str(v["hash"]),
            "random" if v["partition"] is None else str(v["partition"]),
            rules[v["partitioner"]],
        ])
    headers = ["key", "partitioner", "hash", "partition", "rule"]
    render = markdown_table if fmt == "markdown" else text_table
    out.write(render(headers, rows, "llrrl") + "\n")
    if any(v["hash"] is None for v in view):
        out.write(_UNHASHED_NOTE)


def partition_summary(counts: dict[str, dict], partitions: int, fmt: str) -> str:
    """Records per partition for each partitioner (``partitioners.partition_counts``)."""
    names = list(counts)
    if fmt == "json":
        return to_json({"partitions": partitions, "by_partitioner": counts})
    rows = [[str(p)] + [fmt_num(counts[n]["records_per_partition"][p]) for n in names] for p in range(partitions)]
    if any(c["unhashed"] for c in counts.values()):
        rows.append(["unhashed"] + [fmt_num(counts[n]["unhashed"]) for n in names])
    render = markdown_table if fmt == "markdown" else text_table
    return render(["partition"] + names, rows, "l" + "r" * len(names))
