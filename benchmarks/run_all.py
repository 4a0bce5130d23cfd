"""Every benchmark in one go, then ONE table of ratios against the goals (issues 14 and 16).

Runs, in this order: ``bench_cold.py`` (every command cold from the shell;
all its options pass through), ``bench_partitioners.py`` (the column hashes
against gcc -O3: all three key shapes, in this process, once -- bench_cold's
own ``hashes`` section is left to it), then ``bench_exporter.py``.  Each prints
its own detailed tables as it goes; the last table gathers every ratio with
the goal it is held to.

``--quick`` goes to all three (CI; the hashes add a few seconds).
``--json OUT`` writes bench_cold's results to OUT, the others next to it
(``OUT`` with ``-partitioners`` / ``-exporter`` / ``-all`` before the suffix;
``-all`` is the summary table).  ``--no-exporter`` / ``--no-hashes`` leave
those out; ``--only`` (bench_cold's sections) also selects ``hashes``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_cold, bench_exporter, bench_partitioners  # noqa: E402
from benchmarks.common import print_table, write_json  # noqa: E402

HASH_NAME = {"consistent": "crc32", "fnv1a": "fnv1a", "murmur2": "murmur2"}


def _take(argv: list[str], flag: str, value: bool = False):
    """Remove ``flag`` (and its value) from ``argv``; return the value, True/False, or None."""
    if flag not in argv:
        return None if value else False
    i = argv.index(flag)
    if value:
        if i + 1 >= len(argv):
            raise SystemExit(f"run_all: {flag} needs a value")
        v = argv[i + 1]
        del argv[i : i + 2]
        return v
    del argv[i]
    return True


def _beside(out: Path, tag: str) -> Path:
    return out.with_name(f"{out.stem}-{tag}{out.suffix}")


def goal_rows(cold: list[dict], hashes: list[dict], exporter: list[dict]) -> list[dict]:
    """Every measured ratio with the goal it is held to and whether it meets it (None: no goal to check)."""
    out = []
    for r in cold:
        what, ratio, group = r["what"], r.get("ratio"), r["group"]
        goal, met = "-", None
        if group == "sampling":
            goal, met = ">= 2x kcat", ratio is not None and ratio >= 2
        elif group == "offline":
            limit = {"analyze": 1.0, "whatif": 2.0, "recommend": 3.0}.get(r.get("command", ""))
            goal = "within 2x the Polars script (ratio >= 0.5)"
            met = ratio is not None and ratio >= 0.5
            if limit is not None and r.get("records") == 10_000_000:
                goal += f"; < {limit:g} s"
                met = met and r["keyscope_s"] < limit
        elif group == "startup":
            goal_s = r.get("goal_s")
            if goal_s:
                goal, met = f"< {goal_s:g} s", r["keyscope_s"] < goal_s
        elif group == "hashes":  # only when bench_cold ran its own hashes section
            goal, met = ">= 1x gcc -O3", ratio is not None and ratio >= 1
        value = (f"{r['keyscope_keys_per_s'] / 1e6:.1f}M keys/s" if group == "hashes"
                 else f"{r['keyscope_s']:.3f} s")
        out.append({"group": group, "what": what, "keyscope": value, "peer": r.get("peer") or "-",
                    "ratio": ratio, "goal": goal, "met": met})
    for r in hashes:
        ratio = r["ratio_keyscope_1t_vs_c"]
        out.append({"group": "hashes",
                    "what": f"{HASH_NAME[r['hash']]} column hash, {r['keys']:,} {r['shape']} keys "
                            f"({r['mean_key_bytes']:.0f} B), 1 thread",
                    "keyscope": f"{r['keyscope_1t_keys_per_s'] / 1e6:.1f}M keys/s",
                    "peer": "gcc -O3 -march=native, 1 thread" if ratio is not None else "no C compiler",
                    "ratio": ratio, "goal": ">= 1x gcc -O3", "met": None if ratio is None else ratio >= 1})
    for r in exporter:
        step = {"paced": f"paced {r.get('target_rate') or 0:,}/s", "unpaced": "unpaced producer",
                "catch-up": "catch-up (backlog)"}.get(r["step"], r["step"])
        kept = r["step"] != "catch-up"
        out.append({"group": "exporter", "what": f"exporter on one core, {step}",
                    "keyscope": f"{r['read_rate']:,.0f} rec/s read", "peer": f"{r['produce_rate']:,.0f} rec/s produced",
                    "ratio": r["ratio"], "goal": "keeps up (reads all within 2 s)" if kept else "-",
                    "met": bool(r["kept_up"]) if kept else None})
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    quick = "--quick" in argv
    no_exporter = _take(argv, "--no-exporter")
    no_hashes = _take(argv, "--no-hashes")
    json_out = _take(argv, "--json", value=True)
    only = _take(argv, "--only", value=True)
    sections = set(only.split(",")) if only else set(bench_cold.SECTIONS)
    want_hashes = "hashes" in sections and not no_hashes
    cold_sections = [s for s in bench_cold.SECTIONS if s in sections and s != "hashes"]
    unknown = sections - set(bench_cold.SECTIONS)
    if unknown:
        raise SystemExit(f"run_all: --only takes {', '.join(bench_cold.SECTIONS)}")
    repeat = _take(argv, "--repeat", value=True)

    rc = 0
    with tempfile.TemporaryDirectory(prefix="keyscope-run-all-") as d:
        base = Path(json_out) if json_out else Path(d) / "cold.json"
        cold, hashes, exporter = [], [], []
        if cold_sections:
            cold_argv = argv + ["--only", ",".join(cold_sections), "--json", str(base)]
            rc = bench_cold.main(cold_argv + (["--repeat", repeat] if repeat else []))
            cold = json.loads(base.read_text())["results"]
        if want_hashes:
            part = ["--quick"] if quick else ["--repeat", "5"]
            hashes = bench_partitioners.run(part + ["--json", str(_beside(base, "partitioners"))])["results"]
        if not no_exporter:
            ex_json = _beside(base, "exporter")
            rc = rc or bench_exporter.main((["--quick"] if quick else []) + ["--json", str(ex_json)])
            exporter = json.loads(ex_json.read_text())["results"]
        rows = goal_rows(cold, hashes, exporter)
        print_table(f"All goals in one table ({'--quick: proves the run, not the speed; ' if quick else ''}"
                    "ratio = peer time / keyscope time; hashes: keyscope rate / C rate; exporter: read / produced)",
                    ["what", "keyscope", "peer", "ratio", "goal", "met"],
                    [[r["what"], r["keyscope"], r["peer"], "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
                      r["goal"], {True: "yes", False: "NO", None: "-"}[r["met"]]] for r in rows])
        if hasattr(os, "getloadavg"):
            print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}")
        if json_out:
            write_json(str(_beside(base, "all")), "all", rows, quick=quick)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
