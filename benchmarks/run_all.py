"""Every benchmark in one go: bench_cold.py (issue 14, same options), then bench_exporter.py (issue 16).

``--quick`` goes to both; ``--json OUT`` writes bench_cold's results to OUT and the
exporter's next to it (``OUT`` with ``-exporter`` before the suffix).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_cold, bench_exporter  # noqa: E402


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    rc = bench_cold.main(argv)
    ex = ["--quick"] if "--quick" in argv else []
    if "--json" in argv and argv.index("--json") + 1 < len(argv):
        out = Path(argv[argv.index("--json") + 1])
        ex += ["--json", str(out.with_name(f"{out.stem}-exporter{out.suffix}"))]
    return rc or bench_exporter.main(ex)


if __name__ == "__main__":
    raise SystemExit(main())
