"""benchmarks/run_all.py: one table of every goal's ratio, the partitioner hashes included.

Cheap slice only (start-up and the --quick hashes, ~15 s; no broker): CI runs the
whole ``--quick`` through .ci/run.  No timing is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.run_all import goal_rows  # noqa: E402


def test_quick_startup_and_hashes_print_one_table_with_every_hash_ratio(tmp_path):
    out = tmp_path / "all.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--only", "startup,hashes",
                        "--no-exporter", "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "all-all.json").read_text())
    cold = json.loads(out.read_text())
    part = json.loads((tmp_path / "all-partitioners.json").read_text())
    assert summary["benchmark"] == "all" and summary["quick"] is True
    assert not (tmp_path / "all-exporter.json").exists()
    # bench_cold ran start-up only: its own hashes section is left to run_all (measured once)
    assert [x["group"] for x in cold["results"]] == ["startup", "startup"]
    rows = summary["results"]
    assert [x["what"] for x in rows[:2]] == ["keyscope --version", "keyscope partition KEY -p 6"]
    hashes = rows[2:]
    assert len(hashes) == 9 and all(x["group"] == "hashes" for x in hashes)
    for name in ("murmur2", "crc32", "fnv1a"):
        for shape in ("uuid", "short", "composite"):
            assert sum(1 for x in hashes if x["what"].startswith(f"{name} column hash") and f" {shape} keys" in x["what"]) == 1
    by_what = {x["what"]: x for x in hashes}
    for p in part["results"]:
        name = {"consistent": "crc32"}.get(p["hash"], p["hash"])
        (row,) = [x for w, x in by_what.items() if w.startswith(f"{name} column hash") and f" {p['shape']} keys" in w]
        assert row["ratio"] == p["ratio_keyscope_1t_vs_c"]
        if row["ratio"] is not None:
            assert math.isfinite(row["ratio"]) and row["ratio"] > 0 and row["met"] == (row["ratio"] >= 1)
    # the one table is printed last, after the detailed ones
    tail = r.stdout[r.stdout.index("All goals in one table"):]
    assert "crc32 column hash" in tail and "fnv1a column hash" in tail and "murmur2 column hash" in tail
    assert ">= 1x gcc -O3" in tail and "keyscope --version" in tail


def test_goals_are_checked_against_the_issue_targets():
    cold = [
        {"group": "sampling", "what": "sample 5M", "ratio": 2.5, "keyscope_s": 1.0, "peer": "kcat"},
        {"group": "sampling", "what": "on-call", "ratio": 1.5, "keyscope_s": 1.0, "peer": "kcat | sort"},
        {"group": "offline", "what": "analyze 10M", "command": "analyze", "records": 10_000_000, "ratio": 0.6,
         "keyscope_s": 1.4, "peer": "Polars script"},
        {"group": "offline", "what": "whatif 1M", "command": "whatif", "records": 1_000_000, "ratio": 0.6,
         "keyscope_s": 5.0, "peer": "Polars script"},
        {"group": "startup", "what": "keyscope --version", "ratio": 0.3, "keyscope_s": 0.12, "goal_s": 0.15,
         "peer": "python -c pass"},
    ]
    hashes = [{"hash": "consistent", "shape": "uuid", "keys": 10, "mean_key_bytes": 36.0, "keyscope_1t_keys_per_s": 2e8,
               "ratio_keyscope_1t_vs_c": 1.9},
              {"hash": "fnv1a", "shape": "short", "keys": 10, "mean_key_bytes": 12.0, "keyscope_1t_keys_per_s": 1e8,
               "ratio_keyscope_1t_vs_c": None}]
    exporter = [{"step": "paced", "target_rate": 50_000, "read_rate": 5e4, "produce_rate": 5e4, "ratio": 1.0, "kept_up": True},
                {"step": "catch-up", "read_rate": 9e5, "produce_rate": 1e5, "ratio": 9.0, "kept_up": False}]
    rows = goal_rows(cold, hashes, exporter)
    assert [x["met"] for x in rows] == [True, False, False, True, True, True, None, True, None]
    assert rows[2]["goal"].endswith("< 1 s") and rows[3]["goal"] == "within 2x the Polars script (ratio >= 0.5)"
    assert rows[5]["what"] == "crc32 column hash, 10 uuid keys (36 B), 1 thread"
    assert rows[6]["peer"] == "no C compiler" and rows[6]["ratio"] is None
