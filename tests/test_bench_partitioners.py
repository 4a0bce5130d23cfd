"""The partitioner benchmark runs (as CI runs it: --quick) and writes the JSON
it promises.  It checks its own results against kafka-python, zlib and the C
reference, so a run that completes also proves the hashes it timed."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_partitioners.py"
RESULT_KEYS = {
    "shape", "hash", "keys", "mean_key_bytes", "keyscope_1t_keys_per_s", "kernel_1t_keys_per_s", "keyscope_auto_keys_per_s",
    "keyscope_threads", "c_1t_keys_per_s", "peer", "peer_keys_timed", "peer_keys_per_s",
    "ratio_keyscope_1t_vs_c", "ratio_kernel_1t_vs_c", "ratio_keyscope_auto_vs_c", "ratio_keyscope_1t_vs_peer",
    "table_kernel_1t_keys_per_s", "ratio_table_kernel_1t_vs_c",
}


def run_quick(tmp_path, env=None):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out)], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout, json.loads(out.read_text())


def test_quick_json_has_every_shape_hash_and_finite_rates(tmp_path):
    stdout, doc = run_quick(tmp_path)
    assert doc["benchmark"] == "partitioners" and doc["quick"] is True
    assert doc["machine"]["cpu_count"] >= 1
    assert 0 < doc["warmup_s"] < 60 and 0 < doc["cold_compile_s"] < 60
    assert isinstance(doc["warmup_from_cache"], bool)
    results = doc["results"]
    assert {(r["shape"], r["hash"]) for r in results} == {
        (s, h) for s in ("uuid", "short", "composite") for h in ("murmur2", "consistent", "fnv1a")
    }
    for r in results:
        assert set(r) == RESULT_KEYS
        for k in ("keyscope_1t_keys_per_s", "kernel_1t_keys_per_s", "keyscope_auto_keys_per_s", "peer_keys_per_s",
                  "ratio_keyscope_1t_vs_peer"):
            assert isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0
        assert r["peer_keys_timed"] <= r["keys"]
    uuid = next(r for r in results if r["shape"] == "uuid")
    assert uuid["mean_key_bytes"] == 36.0
    if doc["c_available"]:
        assert all(r["c_1t_keys_per_s"] > 0 and r["ratio_keyscope_1t_vs_c"] > 0 for r in results)
    assert "keyscope 1T" in stdout and "warm-up" in stdout
    # CRC-32's table kernel is timed beside the carry-less one (where that runs), never for the other hashes
    clmul = "carry-less multiply" in doc["kernel_build"]
    for r in results:
        has_table = r["hash"] == "consistent" and clmul
        assert (r["table_kernel_1t_keys_per_s"] is not None) == has_table
        if has_table:
            assert math.isfinite(r["table_kernel_1t_keys_per_s"]) and r["table_kernel_1t_keys_per_s"] > 0
    assert ("table kernel/C" in stdout) == (clmul and doc["c_available"])


@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no compiler: covered above")
def test_without_a_compiler_the_c_column_is_skipped_with_a_note(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no gcc/cc on PATH
    stdout, doc = run_quick(tmp_path, env=env)
    assert doc["c_available"] is False
    assert "no C compiler" in doc["c_reference"] and "no C compiler" in stdout
    assert all(r["c_1t_keys_per_s"] is None and r["ratio_keyscope_1t_vs_c"] is None and r["ratio_kernel_1t_vs_c"] is None
               for r in doc["results"])
