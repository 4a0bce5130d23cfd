"""Every benchmark of issue 14 in one go: an alias of bench_cold.py (same options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_cold import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
