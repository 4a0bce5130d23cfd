"""`keyscope partition` has two paths that must print the same bytes: plain
Python for a handful of KEY arguments (fast start, no Polars), and the
columnar path for bulk keys.  Also: strict key decoding, streaming writers
identical to the in-memory ones, and a closed pipe is not an error."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keyscope.model import keys as keyio
from keyscope.report import format as render
from keyscope.errors import InputError
from keyscope.partitioners import KEYED, SMALL_COLUMN, partition_counts, partition_frame, partition_for, partition_records

# Keys that stress display: non-UTF-8, control chars, JSON/Markdown specials,
# wide and combining characters, the empty key, and nulls.
tricky = st.one_of(
    st.binary(max_size=40),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30).map(str.encode),
    st.sampled_from([b"", b'"quoted"', b"back\\slash", b"a|b", b"\x7f", b"tab\t", b"\xe2\x80\xa8", b"\xc2\x85x",
                     "é🎉漢字".encode(), b"trailing  ", b"  leading", b"0x00", b"-", b"random"]),
)
key_lists = st.lists(st.one_of(tricky, st.none()), min_size=1, max_size=25)


def columnar(keys, partitions, partitioner, fmt):
    out = io.StringIO()
    render.partition_rows(partition_frame(keys, partitions, partitioner), partitions, fmt, out)
    return out.getvalue()


def small(keys, partitions, partitioner, fmt):
    out = io.StringIO()
    render.partition_rows_small(partition_records(keys, partitions, partitioner), partitions, fmt, out)
    return out.getvalue()


@settings(max_examples=80, deadline=None)
@given(key_lists, st.integers(1, 12), st.sampled_from(["all", "murmur2", "consistent", "fnv1a", "sarama,java"]),
       st.sampled_from(["table", "json", "markdown"]))
def test_small_path_prints_exactly_what_the_columnar_path_prints(keys, partitions, partitioner, fmt):
    assert small(keys, partitions, partitioner, fmt) == columnar(keys, partitions, partitioner, fmt)


EVERY_TRICKY_KEY = [None, b"", b'"quoted"', b"back\\slash", b"a|b", b"\x7f", b"\x00", b"\x1f", b"tab\t", b"nl\n",
                    b"cr\r", b"\xe2\x80\xa8", b"\xc2\x85x", "é🎉漢字".encode(), "e\u0301".encode(), b"trailing  ",
                    b"  leading", "\u3000".encode(), b"0x00", b"-", b"random", b"\xff\xfe",
                    b"\xed\xa0\x80", b"twelve bytes", b"thirteen byte", b"x" * 200]


@pytest.mark.parametrize("fmt", ["table", "json", "markdown"])
@pytest.mark.parametrize("partitioner", ["all", "consistent"])
def test_small_and_columnar_paths_on_every_tricky_key(fmt, partitioner):
    assert small(EVERY_TRICKY_KEY, 6, partitioner, fmt) == columnar(EVERY_TRICKY_KEY, 6, partitioner, fmt)


@settings(max_examples=60, deadline=None)
@given(key_lists, st.integers(1, 12))
def test_columnar_json_is_byte_identical_to_polars_write_json(keys, partitions):
    # partition_rows builds JSON lines itself for speed; Polars' writer is the reference.
    df = partition_frame(keys, partitions)
    shown, enc = render.key_display(df["key"])
    view = df.select("partitioner", "hash", "partition").with_columns(shown, enc).select(
        "key", "key_encoding", "partitioner", "hash", "partition"
    )
    assert columnar(keys, partitions, "all", "json") == view.write_json() + "\n"
    rows = json.loads(columnar(keys, partitions, "all", "json"))
    assert [r["partition"] for r in rows] == [partition_for(k, partitions, r["partitioner"]) for k, r in
                                              zip([k for k in keys for _ in KEYED], rows)]


frames = st.lists(
    st.tuples(st.one_of(st.none(), st.text(max_size=12)), st.one_of(st.none(), st.integers(-5, 10**6)),
              st.one_of(st.none(), st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8))),
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(frames, st.sampled_from(["lrl", "rrr", "llr", "lll"]), st.booleans())
def test_write_frame_table_equals_frame_table(rows, align, markdown):
    df = pl.DataFrame(rows, schema={"a": pl.String, "num": pl.Int64, "tail": pl.String}, orient="row")
    expected = render.frame_table(df, align, markdown=markdown) + "\n"
    text_out = io.StringIO()
    render.write_frame_table(df, text_out, align, markdown=markdown)
    raw = io.BytesIO()
    binary_out = io.TextIOWrapper(raw, encoding="utf-8", newline="")
    render.write_frame_table(df, binary_out, align, markdown=markdown)  # Polars writes the body bytes
    binary_out.flush()
    assert text_out.getvalue() == expected
    assert raw.getvalue().decode("utf-8") == expected


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(tricky, st.none()), max_size=40), st.integers(1, 9))
def test_counts_small_and_columnar_agree(keys, partitions):
    small_counts = partition_counts(keys, partitions)
    big = partition_counts(pl.Series("key", keys, dtype=pl.Binary), partitions)
    assert small_counts == big
    for name, c in small_counts.items():
        assert sum(c["records_per_partition"]) + c["unhashed"] == len(keys)


HEX_AND_BASE64_CASES = [
    ("hex", s) for s in ["00ff10", "00FF10", " 00ff ", "\t0a\n", "\u30000a", "0a\x85", "0", "00 ff", "zz", "0x00",
                         "", "\x1c0a", "ａ0"]
] + [
    ("base64", s) for s in ["AP8Q", "AP8", "AP8=", "AP8Q====", "AP8Q=", "", " AP8Q ", "AP-_", "A P8Q", "YQ", "YQ==",
                            "YQ=", "YR==", "YWJ=", "YWI=", "====", "YQ==YQ==", "\x1cAP8Q", "\x0bAP8Q", "\u3000YQ=="]
]


@pytest.mark.parametrize("encoding,text", HEX_AND_BASE64_CASES)
def test_pure_python_decoding_is_as_strict_as_polars(encoding, text):
    try:
        expected = keyio.decode_keys(pl.Series([text]), encoding).to_list()[0]
    except InputError:
        expected = InputError
    try:
        got = keyio.decode_key(text, encoding)
    except InputError:
        got = InputError
    assert got == expected


def run(*args, stdin: bytes | None = None):
    return subprocess.run([sys.executable, "-m", "keyscope", *args], input=stdin, capture_output=True, timeout=120)


def test_a_handful_of_keys_never_imports_polars_numpy_or_llvm():
    code = (
        "import sys\n"
        "from keyscope.cli import cli\n"
        "for fmt in ('table', 'json', 'markdown'):\n"
        "    cli.main(['partition', 'abc', 'order-42', '-p', '3', '--format', fmt], standalone_mode=False)\n"
        "cli.main(['partition', 'AP8Q', '-p', '3', '--key-encoding', 'base64', '--summary'], standalone_mode=False)\n"
        "print(sorted(m for m in ('polars', 'numpy', 'pyarrow', 'llvmlite', 'numba') if m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_args_beyond_the_small_limit_take_the_columnar_path_and_agree():
    keys = [f"user-{i}" for i in range(SMALL_COLUMN + 10)]
    many = run("partition", *keys, "-p", "7", "--format", "json")
    piped = run("partition", "-p", "7", "--format", "json", stdin="\n".join(keys).encode())
    assert many.returncode == 0, many.stderr
    assert many.stdout == piped.stdout
    few = run("partition", *keys[:5], "-p", "7", "--format", "json")
    assert json.loads(few.stdout) == json.loads(many.stdout)[: 5 * len(KEYED)]


def test_invalid_utf8_argument_is_hashed_as_the_bytes_given():
    # The shell passes bytes; Python sees surrogate escapes.  Before, this was a traceback.
    r = subprocess.run([sys.executable, "-m", "keyscope", "partition", b"\xffk\xfe", "-p", "5", "--format", "json"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows[0]["key"] == "ff6bfe" and rows[0]["key_encoding"] == "hex"
    assert [row["partition"] for row in rows] == [partition_for(b"\xffk\xfe", 5, p) for p in KEYED]
    piped = run("partition", "-p", "5", "--format", "json", stdin=b"\xffk\xfe\n")
    assert json.loads(piped.stdout) == rows


def test_bad_hex_argument_names_the_key():
    r = run("partition", "00ff", "0g", "-p", "3", "--key-encoding", "hex")
    assert r.returncode == 3
    assert r.stderr.decode().strip() == "keyscope: error: key '0g' is not valid hex"


def test_closed_pipe_is_not_an_error():
    lines = b"".join(f"tenant-{i}\n".encode() for i in range(200_000))
    for fmt in ("table", "json", "markdown"):
        p = subprocess.Popen([sys.executable, "-m", "keyscope", "partition", "-p", "6", "--format", fmt],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdin.write(lines)
        p.stdin.close()
        p.stdout.read(100)
        p.stdout.close()  # like `| head -c 100`
        err = p.stderr.read().decode()
        assert p.wait(timeout=120) == 0, err
        assert "Traceback" not in err
