"""A matrix of bad input: each case is one command line (or one hostile file) with the
documented exit code (docs/exit-codes.md), a fragment of the one-line message, and no
traceback.  Run as subprocesses under a memory and time limit, so that a case which
used to run until memory was gone fails instead of taking the machine down.

No broker is needed: sample options are checked before connecting, so the cases point
at a closed port (a case that reaches the network fails on the wrong code).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import stat
import subprocess
import sys

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from keyscope.sample import PartitionInfo, Sample

NOWHERE = ["-b", "127.0.0.1:9", "--timeout", "3"]  # closed port: reaching it means validation came too late
MEMORY_LIMIT = 3 << 30


def _limits():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


# root reads any file: drop the capabilities that let it, so a mode-000 file is unreadable to us
NO_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]


def ks(*args, stdin=None, unprivileged=False, timeout=60):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    prefix = NO_DAC if unprivileged and os.geteuid() == 0 else []
    try:
        return subprocess.run(
            [*prefix, sys.executable, "-m", "keyscope", *args], input=stdin, capture_output=True, timeout=timeout,
            preexec_fn=_limits, env=env,
        )
    except subprocess.TimeoutExpired:
        return None


def _good_frame(n=600, partitions=3):
    rng = np.random.default_rng(1)
    keys = [f"user-{i}".encode() for i in rng.integers(0, 50, n)]
    return pl.DataFrame({
        "partition": np.arange(n, dtype=np.int32) % partitions,
        "offset": np.arange(n, dtype=np.int64) // partitions,
        "key": pl.Series(keys, dtype=pl.Binary),
        "tenant": [f"t{i % 7}" for i in range(n)],
    })


def _write_with_meta(path, df, meta_text):
    table = df.to_arrow().replace_schema_metadata({b"keyscope": meta_text.encode()})
    pq.write_table(table, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    os.chmod(d, 0o755)
    f = {"dir": str(d)}
    good = Sample.from_frame(_good_frame(), topic="orders", partition_count=3)
    good.meta.partitions = {p: PartitionInfo(p, low=0, high=200, first=0, last=199, records=200) for p in range(3)}
    good.meta.source = "kafka"
    good.write(d / "good.parquet")
    f["good"] = str(d / "good.parquet")
    meta = good.meta.to_dict()

    def damaged(name, **changes):
        m = json.loads(json.dumps(meta))
        m.update(changes)
        _write_with_meta(d / name, good.df, json.dumps(m))
        f[name.split(".")[0]] = str(d / name)

    damaged("meta_partitions_oops.parquet", partitions="oops")
    damaged("meta_partitions_list.parquet", partitions=[1, 2])
    damaged("meta_low_text.parquet", partitions={"0": {"partition": 0, "low": "abc", "high": 10, "records": 200}})
    damaged("meta_count_huge.parquet", partition_count=10**12)
    damaged("meta_count_text.parquet", partition_count="many")
    damaged("meta_how_text.parquet", how="fast")
    damaged("meta_fields_list.parquet", fields=["a"])
    damaged("meta_pid_huge.parquet", partitions={"99999999999": {"partition": 99999999999, "records": 1}})
    damaged("meta_topic_number.parquet", topic=12)
    damaged("meta_partial_text.parquet", partial="yes", partial_reason=["x"])
    _write_with_meta(d / "meta_list.parquet", good.df, "[1, 2, 3]")
    f["meta_list"] = str(d / "meta_list.parquet")
    _write_with_meta(d / "meta_number.parquet", good.df, "42")
    f["meta_number"] = str(d / "meta_number.parquet")
    # a record on partition 2^31-1 (Kafka's largest partition id): the arrays must not follow it
    far = _good_frame(30).with_columns(pl.lit(2**31 - 1, dtype=pl.Int32).alias("partition"))
    pq.write_table(far.to_arrow(), d / "far_partition.parquet")
    f["far_partition"] = str(d / "far_partition.parquet")
    (d / "far.csv").write_text("partition,key\n0,a\n2147483647,b\n")
    f["far_csv"] = str(d / "far.csv")
    (d / "far.jsonl").write_text('{"partition": 2000000, "key": "a"}\n')
    f["far_jsonl"] = str(d / "far.jsonl")
    (d / "neg.csv").write_text("partition,key\n-1,a\n")
    f["neg_csv"] = str(d / "neg.csv")
    (d / "text_partition.csv").write_text("partition,key\nzero,a\n")
    f["text_partition_csv"] = str(d / "text_partition.csv")
    (d / "nokey.csv").write_text("partition,value\n0,a\n")
    f["nokey_csv"] = str(d / "nokey.csv")
    (d / "truncated.jsonl").write_text('{"partition": 0, "key": "a"}\n{"partition": 1, "ke')
    f["truncated_jsonl"] = str(d / "truncated.jsonl")
    (d / "array.jsonl").write_text("[1, 2]\n")
    f["array_jsonl"] = str(d / "array.jsonl")
    (d / "empty.parquet").write_bytes(b"")
    f["empty"] = str(d / "empty.parquet")
    (d / "garbage.parquet").write_bytes(b"PAR1\x00garbage")
    f["garbage"] = str(d / "garbage.parquet")
    (d / "bad_ts.csv").write_text("partition,key,timestamp\n0,a,yesterday\n")
    f["bad_ts_csv"] = str(d / "bad_ts.csv")
    os.mkfifo(d / "fifo.parquet")
    f["fifo"] = str(d / "fifo.parquet")
    (d / "secret.parquet").write_bytes((d / "good.parquet").read_bytes())
    os.chmod(d / "secret.parquet", 0)
    f["secret"] = str(d / "secret.parquet")
    (d / "subdir").mkdir()
    f["subdir"] = str(d / "subdir")
    (d / "exists.parquet").write_bytes(b"keep me")
    f["exists"] = str(d / "exists.parquet")
    return f


# (id, argv with {file} placeholders, expected exit code, fragment of the one-line message[, options])
CASES = [
    # --- sample files: missing, not regular, unreadable, damaged
    ("info-missing", ["info", "{dir}/nope.parquet"], 3, "no such file"),
    ("analyze-missing", ["analyze", "{dir}/nope.parquet"], 3, "no such file"),
    ("whatif-missing", ["whatif", "{dir}/nope.parquet", "-p", "6"], 3, "no such file"),
    ("recommend-missing", ["recommend", "{dir}/nope.parquet"], 3, "no such file"),
    ("info-fifo", ["info", "{fifo}"], 3, "not a regular file"),
    ("analyze-fifo", ["analyze", "{fifo}"], 3, "not a regular file"),
    ("whatif-fifo", ["whatif", "{fifo}", "-p", "6"], 3, "not a regular file"),
    ("info-unreadable", ["info", "{secret}"], 3, "permission denied", {"unprivileged": True}),
    ("analyze-unreadable", ["analyze", "{secret}"], 3, "permission denied", {"unprivileged": True}),
    ("recommend-unreadable", ["recommend", "{secret}"], 3, "permission denied", {"unprivileged": True}),
    ("info-directory", ["info", "{subdir}"], 3, "directory"),
    ("analyze-dev-null", ["analyze", "/dev/null"], 3, "not a regular file"),
    ("info-empty", ["info", "{empty}"], 3, "empty"),
    ("analyze-garbage", ["analyze", "{garbage}"], 3, "not a readable Parquet"),
    ("info-meta-partitions-oops", ["info", "{meta_partitions_oops}"], 3, "metadata is damaged"),
    ("analyze-meta-partitions-oops", ["analyze", "{meta_partitions_oops}"], 3, "metadata is damaged"),
    ("info-meta-partitions-list", ["info", "{meta_partitions_list}"], 3, "metadata is damaged"),
    ("analyze-meta-low-text", ["analyze", "{meta_low_text}"], 3, "metadata is damaged"),
    ("whatif-meta-low-text", ["whatif", "{meta_low_text}", "-p", "6"], 3, "metadata is damaged"),
    ("info-meta-count-huge", ["info", "{meta_count_huge}"], 3, "partition count"),
    ("analyze-meta-count-huge", ["analyze", "{meta_count_huge}"], 3, "partition count"),
    ("whatif-meta-count-huge", ["whatif", "{meta_count_huge}", "-p", "6"], 3, "partition count"),
    ("info-meta-count-text", ["info", "{meta_count_text}"], 3, "metadata is damaged"),
    ("info-meta-how-text", ["info", "{meta_how_text}"], 3, "metadata is damaged"),
    ("analyze-meta-fields-list", ["analyze", "{meta_fields_list}"], 3, "metadata is damaged"),
    ("info-meta-pid-huge", ["info", "{meta_pid_huge}"], 3, "partition"),
    ("info-meta-topic-number", ["info", "{meta_topic_number}"], 3, "metadata is damaged"),
    ("info-meta-partial-text", ["info", "{meta_partial_text}"], 3, "metadata is damaged"),
    ("info-meta-list", ["info", "{meta_list}"], 3, "metadata is damaged"),
    ("analyze-meta-number", ["analyze", "{meta_number}"], 3, "metadata is damaged"),
    ("analyze-far-partition", ["analyze", "{far_partition}"], 3, "partition 2147483647"),
    ("whatif-far-partition", ["whatif", "{far_partition}", "-p", "6"], 3, "partition 2147483647"),
    ("info-far-csv", ["info", "{far_csv}"], 3, "partition 2147483647"),
    ("analyze-far-jsonl", ["analyze", "{far_jsonl}"], 3, "partition 2000000"),
    ("info-negative-partition", ["info", "{neg_csv}"], 3, "non-negative integer"),
    ("info-text-partition", ["info", "{text_partition_csv}"], 3, "non-negative integer"),
    ("info-csv-no-key", ["info", "{nokey_csv}"], 3, "missing required column"),
    ("info-truncated-jsonl", ["info", "{truncated_jsonl}"], 3, "truncated"),
    ("info-array-jsonl", ["info", "{array_jsonl}"], 3, "not a JSON object"),
    ("info-bad-timestamp", ["info", "{bad_ts_csv}"], 3, "timestamp must be"),
    # --- option values: bounds (Kafka's where it has them), NaN, nonsense
    ("whatif-p-huge", ["whatif", "{good}", "-p", "99999999"], 2, "at most 100,000"),
    ("whatif-p-zero", ["whatif", "{good}", "-p", "0"], 2, "must be at least 1"),
    ("whatif-p-text", ["whatif", "{good}", "-p", "six"], 2, "not a whole number"),
    ("whatif-p-empty-item", ["whatif", "{good}", "-p", "4,,6"], 2, "empty item"),
    ("whatif-salt-buckets-huge", ["whatif", "{good}", "--salt-hot", "1:99999999"], 2, "at most 1,024"),
    ("whatif-salt-top-huge", ["whatif", "{good}", "--salt-hot", "99999999:2"], 2, "at most 10,000"),
    ("whatif-salt-one-bucket", ["whatif", "{good}", "--salt-hot", "1:1"], 2, "at least 2"),
    ("whatif-salt-share-over", ["whatif", "{good}", "--salt-hot", "150%"], 2, "(0, 100%]"),
    ("whatif-salt-text", ["whatif", "{good}", "--salt-hot", "hot"], 2, "expected K[:D]"),
    ("whatif-consumers-huge", ["whatif", "{good}", "--consumers", "99999999"], 2, "at most 100,000"),
    ("whatif-unknown-field", ["whatif", "{good}", "--key-by", "key,nosuch"], 2, "nosuch"),
    ("whatif-unknown-partitioner", ["whatif", "{good}", "--partitioner", "crc99"], 2, "crc99"),
    ("whatif-no-scenario", ["whatif", "{good}"], 2, "give at least one scenario"),
    ("whatif-fail-on-skew-nan", ["whatif", "{good}", "-p", "6", "--fail-on-skew", "nan"], 2, "fail-on-skew"),
    ("analyze-fail-on-skew-nan", ["analyze", "{good}", "--fail-on-skew", "nan"], 2, "fail-on-skew"),
    ("analyze-fail-on-skew-inf", ["analyze", "{good}", "--fail-on-skew", "inf"], 2, "fail-on-skew"),
    ("lag-fail-on-skew-nan", ["lag", *NOWHERE, "-g", "g", "-t", "t", "--fail-on-skew", "nan"], 2, "fail-on-skew"),
    ("analyze-both-sources", ["analyze", "{good}", "-t", "orders"], 2, "not both"),
    ("analyze-neither-source", ["analyze"], 2, "SAMPLE"),
    ("analyze-by-unknown", ["analyze", "{good}", "--by", "weight"], 2, "weight"),
    ("analyze-top-negative", ["analyze", "{good}", "--top", "-1"], 2, "-1"),
    ("analyze-topic-timeout-nan", ["analyze", *NOWHERE[:2], "-t", "orders", "--timeout", "nan"], 2, "timeout"),
    ("recommend-max-partitions-huge", ["recommend", "{good}", "--max-partitions", "1000000"], 2, "at most 100,000"),
    ("recommend-max-partitions-below", ["recommend", "{good}", "--max-partitions", "2"], 2, "below today"),
    ("recommend-consumers-huge", ["recommend", "{good}", "--consumers", "99999999"], 2, "at most 100,000"),
    ("recommend-target-below-one", ["recommend", "{good}", "--target-skew", "0.5"], 2, "0.5"),
    ("recommend-unknown-order-field", ["recommend", "{good}", "--keep-order-by", "nosuch"], 2, "nosuch"),
    ("partition-p-zero", ["partition", "-p", "0", "k"], 2, "positive integer"),
    ("partition-p-huge", ["partition", "-p", "99999999", "--summary", "k"], 2, "at most 100,000"),
    ("partition-bad-hex", ["partition", "-p", "3", "--key-encoding", "hex", "zz"], 3, "not valid hex"),
    ("partition-unknown-partitioner", ["partition", "-p", "3", "--partitioner", "crc99", "k"], 2, "crc99"),
    # --- sample: everything checked before connecting
    ("sample-partitions-huge", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--partitions", "0-99999999"],
     2, "at most 100,000"),
    ("sample-partitions-id-huge", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--partitions", "2147483648"],
     2, "at most 100,000"),
    ("sample-partitions-backwards", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--partitions", "5-3"],
     2, "runs backwards"),
    ("sample-partitions-text", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--partitions", "all"],
     2, "numbers and ranges"),
    ("sample-from-time-1960", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--from-time", "1960-01-01"],
     2, "1970"),
    ("sample-from-time-span-before-1970", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--from-time",
                                           "30000d"], 2, "1970"),
    ("sample-from-time-garbage", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--from-time", "soon"],
     2, "ISO-8601"),
    ("sample-from-and-from-time", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--from", "earliest",
                                   "--from-time", "1h"], 2, "not both"),
    ("sample-timeout-nan", ["sample", "-b", "127.0.0.1:9", "-t", "t", "-o", "{dir}/o1.parquet", "--timeout", "nan"],
     2, "timeout"),
    ("sample-timeout-zero", ["sample", "-b", "127.0.0.1:9", "-t", "t", "-o", "{dir}/o1.parquet", "--timeout", "0"],
     2, "timeout"),
    ("sample-max-bytes-zero", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--max-bytes", "0"],
     2, "max-bytes"),
    ("sample-max-bytes-unit", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--max-bytes", "3XB"],
     2, "max-bytes"),
    ("sample-field-no-path", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--field", "tenant"],
     2, "NAME=PATH"),
    ("sample-field-reserved", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/o1.parquet", "--field", "key=$.k"],
     2, "taken"),
    ("sample-output-exists", ["sample", *NOWHERE, "-t", "t", "-o", "{exists}"], 2, "exists"),
    ("sample-output-dev-null", ["sample", *NOWHERE, "-t", "t", "-o", "/dev/null", "--force"], 3, "not a regular file"),
    ("sample-output-fifo", ["sample", *NOWHERE, "-t", "t", "-o", "{fifo}", "--force"], 3, "not a regular file"),
    ("sample-output-directory", ["sample", *NOWHERE, "-t", "t", "-o", "{subdir}", "--force"], 3, "directory"),
    ("sample-output-no-dir", ["sample", *NOWHERE, "-t", "t", "-o", "{dir}/no/such/o.parquet"], 3, "does not exist"),
    ("rules-bad-duration", ["rules", "-g", "g", "-t", "t", "--for", "soon"], 2, "soon"),
    ("rules-threshold-nan", ["rules", "-g", "g", "-t", "t", "--threshold", "nan"], 2, "threshold"),
]


def _fill(arg, files):
    return arg.format(**files) if "{" in arg else arg


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, files):
    name, argv, code, fragment, *opts = case
    opts = opts[0] if opts else {}
    if opts.get("unprivileged") and os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to read as root without CAP_DAC_OVERRIDE")
    r = ks(*[_fill(a, files) for a in argv], unprivileged=opts.get("unprivileged", False))
    assert r is not None, f"{name}: still running after 60 s"
    err = r.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err, err[-2000:]
    assert r.returncode == code, (r.returncode, err[-800:])
    assert fragment.lower() in err.lower(), err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("Usage:", "Try "))]
    assert len(lines) == 1, err
    # nothing was replaced or left behind
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert open(files["exists"], "rb").read() == b"keep me"
    assert not any(n.startswith(".") and n.endswith(".tmp") for n in os.listdir(files["dir"]))


def test_matrix_is_large_enough():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


def test_recommend_with_a_large_max_partitions_stays_bounded(files):
    """--max-partitions 100,000 is allowed: the counts tried stay few, within the memory limit."""
    r = ks("recommend", files["good"], "--max-partitions", "100000", "--format", "json", timeout=300)
    assert r is not None and r.returncode == 0, r and r.stderr.decode()[-800:]
    doc = json.loads(r.stdout)
    assert doc["constraints"]["max_partitions"] == 100_000 and doc["evaluated"] < 400
