"""The cold-from-the-shell benchmark runs and its JSON has every row it promises.

Cheap slice only (start-up and one tiny offline sample, ~10-15 s); CI runs the
whole ``--quick`` (broker included) through .ci/run.  No timing is asserted.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_cold.py"


def test_quick_offline_and_startup_json_has_every_row(tmp_path):
    out = tmp_path / "cold.json"
    r = subprocess.run([sys.executable, str(BENCH), "--quick", "--only", "startup,offline", "--sizes", "20k",
                        "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "cold" and doc["quick"] is True and doc["offline_sizes"] == [20_000]
    whats = [x["what"] for x in doc["results"]]
    assert whats == ["keyscope --version", "keyscope partition KEY -p 6"] + [
        f"{c} {n:,}" for n in (20_000,) for c in ("analyze", "whatif", "recommend")]
    for x in doc["results"]:
        assert x["keyscope_s"] > 0 and x["keyscope_rss_mb"] > 0 and x["peer_s"] > 0
        assert math.isclose(x["ratio"], x["peer_s"] / x["keyscope_s"])
        if x["group"] == "offline":
            assert x["records"] == 20_000 and x["key_column_mb"] > 0
            assert math.isclose(x["ns_per_record"], x["keyscope_s"] / x["records"] * 1e9)
    assert doc["linearity"] == []  # one size: nothing to compare
    assert "Cold from the shell" in r.stdout and "ns/record" in r.stdout

    # Linearity across sizes, on these rows as if measured again at twice the records in twice the time.
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_cold import linearity

    off = [x for x in doc["results"] if x["group"] == "offline"]
    twice = [dict(x, records=40_000, keyscope_s=2 * x["keyscope_s"], peer_s=2 * x["peer_s"]) for x in off]
    lin = linearity(off + twice)
    assert [x["command"] for x in lin] == ["analyze", "whatif", "recommend"]
    for x, o in zip(lin, off):
        assert x["from_records"] == 20_000 and x["to_records"] == 40_000 and math.isclose(x["growth"], 1.0)
        assert math.isclose(x["marginal_ns_per_record"][0], o["keyscope_s"] / 20_000 * 1e9)
        assert math.isclose(x["polars_marginal_ns_per_record"][0], o["peer_s"] / 20_000 * 1e9)


def test_commands_restricts_the_offline_rows(tmp_path):
    out = tmp_path / "cold.json"
    r = subprocess.run([sys.executable, str(BENCH), "--quick", "--only", "offline", "--sizes", "20k",
                        "--commands", "analyze", "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert [x["what"] for x in json.loads(out.read_text())["results"]] == ["analyze 20,000"]
    bad = subprocess.run([sys.executable, str(BENCH), "--only", "offline", "--commands", "scan"],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert bad.returncode == 2 and "--commands takes" in bad.stderr
