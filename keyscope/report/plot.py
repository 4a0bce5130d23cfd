"""``keyscope whatif --plot``: before/after bars, matplotlib imported only when asked for."""

from __future__ import annotations

from ..errors import UsageError


def matplotlib():
    try:
        import matplotlib as mpl

        mpl.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib, which is not installed: pip install 'keyscope[plot]'") from None
    return plt


def write_plot(path: str, today, results) -> None:
    """Before/after bars per partition, one panel per scenario."""
    plt = matplotlib()
    import numpy as np

    fig, axes = plt.subplots(len(results), 1, figsize=(8, 2.6 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        n = max(today.partitions, r.partitions)
        x = np.arange(n)
        before = np.zeros(n)
        before[: today.partitions] = today.records
        after = np.zeros(n)
        after[: r.partitions] = r.records
        ax.bar(x - 0.2, before, 0.4, label=f"today (skew {today.skew:.2f})", color="#999999")
        ax.bar(x + 0.2, after, 0.4, label=f"predicted (skew {r.skew:.2f})", color="#d95f02")
        ax.set_title(r.name, fontsize=10)
        ax.set_xticks(x)
        ax.set_xlabel("partition")
        ax.set_ylabel("records")
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise UsageError(f"--plot {path}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)
