"""A real Prometheus (Debian's package) for the tests: scrape targets every second, evaluate rule files.

Shared by the alert-stack tests (kafka_exporter + the deployed rules) and the
exporter's tests (`keyscope exporter` + its printed rules).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator

import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} not ready at {url} after {timeout:.0f}s")


def stop(proc: subprocess.Popen) -> None:
    """Our own child only, by its pid."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def apt_install(package: str) -> None:
    """Debian's package, as root, when missing (an `apt-get update` first if the lists are stale)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    if subprocess.run(cmd, capture_output=True, timeout=600, env=env).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600, env=env)
        subprocess.run(cmd, capture_output=True, timeout=600, env=env)


def prometheus_binary() -> str:
    from ..conftest import missing_peer

    path = shutil.which("prometheus")
    if path is None:
        apt_install("prometheus")
        path = shutil.which("prometheus")
    if path is None:
        missing_peer("prometheus is not installed (Debian: apt-get install prometheus)")
    return path


@contextlib.contextmanager
def prometheus(work: Path, job: str, targets: list[str], rule_files: list[Path]) -> Iterator[str]:
    """Prometheus scraping ``targets`` as ``job`` every second with ``rule_files``; yields its base URL."""
    binary = prometheus_binary()
    port = free_port()
    (work / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}],
    }))
    log = open(work / "prometheus.log", "w")
    proc = subprocess.Popen(
        [binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/-/ready", proc, "prometheus")
        yield base
    finally:
        stop(proc)
        log.close()


def query(base: str, expr: str) -> list:
    """An instant query's result vector (the API's ``data.result``)."""
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"{base}/api/v1/query?{q}", timeout=10) as r:
        doc = json.load(r)
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


def rule_groups_evaluated(base: str) -> dict[str, float]:
    """Each rule group's last evaluation (unix seconds), from /api/v1/rules.

    Rule groups evaluate independently, so a test that reads several groups'
    series must wait for each one, not only for the first it sees.
    """
    import calendar
    import re

    with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=10) as r:
        groups = json.load(r)["data"]["groups"]
    out = {}
    for g in groups:  # "2026-12-02T04:35:12.123456789Z"; "0001-01-01T00:00:00Z" before the first
        m = re.match(r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)(\.\d+)?Z$", g.get("lastEvaluation") or "")
        if m is None or m.group(1) == "0001":
            out[g["name"]] = 0.0
            continue
        whole = calendar.timegm(tuple(int(x) for x in m.groups()[:6]) + (0, 0, 0))
        out[g["name"]] = whole + float(m.group(7) or 0)
    return out

