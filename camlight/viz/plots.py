"""Localization against epoch: one panel per metric, one line per method."""

from __future__ import annotations

from pathlib import Path


def localization_plot(history: list[dict], path: str | Path) -> None:
    """Write a PNG from `history`: rows {"epoch": e, "explain/<method>/<metric>": value, ...}."""
    from matplotlib.figure import Figure  # no pyplot: the process's backend is left alone

    keys = sorted({k for row in history for k in row if k.startswith("explain/")})
    metrics = sorted({k.split("/")[2] for k in keys})
    methods = sorted({k.split("/")[1] for k in keys})
    cols = min(3, max(len(metrics), 1))
    rows = -(-max(len(metrics), 1) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for method in methods:
            points = [
                (row["epoch"], row[f"explain/{method}/{metric}"])
                for row in history
                if f"explain/{method}/{metric}" in row
            ]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=method)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
