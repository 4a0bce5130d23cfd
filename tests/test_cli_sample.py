"""`keyscope sample` and `keyscope info` as a user runs them, against the real embedded broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from keyscope.kafka.broker import EmbeddedBroker
from keyscope.cli import cli
from keyscope.sample import read_sample

from .conftest import create_topic
from .ptys import drain, open_pty, read_until

# The sampler is the code most exposed to broker differences: real Kafka and Tansu both.
pytestmark = pytest.mark.tansu


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def fill(bootstrap: str, topic: str, n: int, partitions: int = 3, value: bytes | None = None) -> None:
    create_topic(bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "partitioner": "murmur2_random"})
    for i in range(n):
        v = value if value is not None else json.dumps({"tenant": f"t{i % 4}"}).encode()
        p.produce(topic, key=b"user-%d" % (i % 101), value=v, headers=[("src", b"web")] if i % 2 else None)
        if i % 50_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def test_sample_writes_a_file_and_reports(broker, topic_name, tmp_path):
    fill(broker.bootstrap_server, topic_name, 900)
    out = tmp_path / "s.parquet"
    r = run("sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out), "--from", "earliest",
            "--field", "tenant=$.tenant", "--field", "src=header:src")
    assert r.exit_code == 0, r.output
    s = read_sample(out)
    assert len(s) == 900 and s.field_names == ["tenant", "src"] and s.meta.field_misses == {"tenant": 0, "src": 450}
    assert "records     900" in r.stdout and "stopped by  end of range" in r.stdout
    assert "tenant  $.tenant" in r.stdout and "src     header:src" in r.stdout
    assert r.stderr == ""  # no progress when stderr is not a terminal


def test_a_timeout_over_nine_minutes_is_usable(broker, topic_name, tmp_path):
    """kafka-python refused request_timeout_ms >= connections_max_idle_ms (540 s): --timeout 900 exited 4."""
    fill(broker.bootstrap_server, topic_name, 30)
    out = tmp_path / "s.parquet"
    r = run("sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out), "--timeout", "900")
    assert r.exit_code == 0, r.output
    assert len(read_sample(out)) == 30


def test_sample_json_report_and_env_bootstrap(broker, topic_name, tmp_path):
    fill(broker.bootstrap_server, topic_name, 300)
    out = tmp_path / "s.parquet"
    r = run("sample", "-t", topic_name, "-o", str(out), "--per-partition", "7", "--format", "json",
            env={"KEYSCOPE_BOOTSTRAP_SERVER": broker.bootstrap_server})
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["output"] == str(out) and doc["summary"]["records"] == 21
    assert doc["meta"]["how"]["per_partition"] == 7 and doc["meta"]["how"]["stopped_by"] == "record limit"
    assert [p["records"] for p in doc["summary"]["partitions"]] == [7, 7, 7]


def test_default_output_name_and_no_silent_overwrite(broker, topic_name, tmp_path, monkeypatch):
    fill(broker.bootstrap_server, topic_name, 50)
    monkeypatch.chdir(tmp_path)
    assert run("sample", "-b", broker.bootstrap_server, "-t", topic_name).exit_code == 0
    target = tmp_path / f"{topic_name}.parquet"
    before = target.read_bytes()
    r = run("sample", "-b", broker.bootstrap_server, "-t", topic_name)
    assert r.exit_code == 2 and "exists; pass --force" in r.stderr and target.read_bytes() == before
    assert run("sample", "-b", broker.bootstrap_server, "-t", topic_name, "--force", "--per-partition", "1").exit_code == 0
    assert len(read_sample(target)) == 3


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--from", "earliest", "--from-time", "2h"], 2, "give --from or --from-time, not both"),
        (["--field", "nopath"], 2, "--field expects NAME=PATH"),
        (["--field", "x=tenant"], 2, "must be a JSON path starting with $"),
        (["--field", "key=$.a"], 2, "taken by a sample column"),
        (["--max-bytes", "lots"], 2, "--max-bytes expects a size"),
        (["--from-time", "yesterday"], 2, "expected ISO-8601"),
        (["--partitions", "0,x"], 2, "--partitions expects numbers"),
        (["--partitions", "7"], 4, "has partitions 0-2; --partitions asked for 7"),
        (["--per-partition", "0"], 2, "0"),
        (["--timeout", "0"], 2, "--timeout must be positive"),
    ],
)
def test_bad_options_one_line_and_exit_code(broker, topic_name, tmp_path, args, code, message):
    create_topic(broker.bootstrap_server, topic_name, 3)
    out = tmp_path / "s.parquet"
    r = run("sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out), *args)
    assert r.exit_code == code, r.output
    assert message in r.stderr
    assert "Traceback" not in r.output and not out.exists()
    if code != 2 or "Usage:" not in r.stderr:
        assert len(r.stderr.strip().splitlines()) == 1


def test_unknown_topic_exit_4(broker, topic_name, tmp_path):
    create_topic(broker.bootstrap_server, topic_name, 1)
    r = run("sample", "-b", broker.bootstrap_server, "-t", topic_name + "-typo", "-o", str(tmp_path / "s.parquet"))
    assert r.exit_code == 4
    assert r.stderr.strip() == f"keyscope: error: topic '{topic_name}-typo' does not exist; did you mean {topic_name}?"


def test_unreachable_broker_exit_4_within_timeout(tmp_path):
    t = time.monotonic()
    r = run("sample", "-b", "127.0.0.1:1", "-t", "x", "-o", str(tmp_path / "s.parquet"), "--timeout", "2")
    assert r.exit_code == 4 and "cannot reach a Kafka broker at 127.0.0.1:1 within 2s" in r.stderr
    assert time.monotonic() - t < 20


def test_output_directory_must_exist_before_sampling(broker, topic_name, tmp_path):
    create_topic(broker.bootstrap_server, topic_name, 1)
    r = run("sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(tmp_path / "no" / "s.parquet"))
    assert r.exit_code == 3 and "does not exist" in r.stderr


def test_secrets_stay_out_of_output(broker, topic_name, tmp_path):
    fill(broker.bootstrap_server, topic_name, 20)
    props = tmp_path / "client.properties"
    props.write_text(
        "sasl.mechanism=PLAIN\n"
        'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="pa55-secret";\n'
    )
    out = tmp_path / "s.parquet"
    r = run("sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out), "--command-config", str(props),
            "--format", "json")
    assert r.exit_code == 0, r.output
    info = run("info", str(out), "--format", "json")
    for text in (r.output, info.output, out.read_bytes().decode("latin-1")):
        assert "pa55-secret" not in text
    assert json.loads(info.stdout)["meta"]["how"]["connection"]["sasl_plain_password"] == "***"


def test_info_formats(broker, topic_name, tmp_path):
    fill(broker.bootstrap_server, topic_name, 120)
    out = tmp_path / "s.parquet"
    assert run("sample", "-b", broker.bootstrap_server, "-t", topic_name, "-o", str(out), "--from", "earliest",
               "--field", "tenant=$.tenant").exit_code == 0
    table = run("info", str(out))
    assert table.exit_code == 0
    assert "source      kafka" in table.stdout and "3 sampled of 3" in table.stdout and "101 distinct" in table.stdout
    md = run("info", str(out), "--format", "markdown")
    assert md.stdout.startswith(f"### Sample {out}") and "| partition | low | high |" in md.stdout
    doc = json.loads(run("info", str(out), "--format", "json").stdout)
    assert doc["summary"]["records"] == 120 and doc["meta"]["topic"] == topic_name
    assert doc["meta"] == read_sample(out).meta.to_dict()


@pytest.mark.parametrize("content, message", [
    (b"", "the file is empty"),
    (b"PAR1 not really", "not a readable Parquet file"),
    (b"hello world\n", "not a sample keyscope can read"),
])
def test_info_bad_files(tmp_path, content, message):
    p = tmp_path / "f.dat"
    p.write_bytes(content)
    r = run("info", str(p))
    assert r.exit_code == 3 and message in r.stderr and str(p) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run("info", str(tmp_path / "missing.parquet"))
    assert r.exit_code == 3 and "no such file" in r.stderr


# ------------------------------------------------------------ Ctrl-C, progress on a terminal


def test_ctrl_c_writes_partial_sample_and_exits_6(tmp_path):
    """A real process on a pseudo-terminal: progress appears on stderr, SIGINT mid-read keeps the records."""
    with EmbeddedBroker() as b:
        topic = "big"
        fill(b.bootstrap_server, topic, 400_000, partitions=4, value=b'{"tenant":"t1","pad":"%s"}' % (b"x" * 150))
        out = tmp_path / "partial.parquet"
        master, slave = open_pty()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [sys.executable, "-m", "keyscope", "sample", "-b", b.bootstrap_server, "-t", topic, "-o", str(out),
             "--from", "earliest", "--max-records", "400000", "--field", "tenant=$.tenant"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env,
        )
        os.close(slave)
        try:
            seen = read_until(master, b"sampling big:")
            assert b"sampling big:" in seen, seen  # progress, because stderr is a terminal
            proc.send_signal(signal.SIGINT)
            stdout, _ = proc.communicate(timeout=60)
            seen = drain(master, seen)
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(master)
        assert proc.returncode == 6, (proc.returncode, seen)
        assert b"keyscope: error: sample is partial (interrupted (Ctrl-C))" in seen
        assert b" records, " in seen and b"partitions done" in seen  # the whole progress line fits
        s = read_sample(out)
        assert s.meta.partial and 0 < len(s) < 400_000
        assert b"PARTIAL" in stdout
