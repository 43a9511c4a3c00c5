"""Localization against epoch: one panel per metric, one line per method."""

from __future__ import annotations

from pathlib import Path


def localization_plot(history: list[tuple[int, dict[str, dict[str, float]]]], path: str | Path) -> None:
    """Write a PNG from `history`: (epoch, {method: {metric: value}}) pairs, one per explained epoch."""
    from matplotlib.figure import Figure  # no pyplot: the process's backend is left alone

    metrics = sorted({metric for _, scores in history for d in scores.values() for metric in d})
    methods = sorted({method for _, scores in history for method in scores})
    cols = min(3, max(len(metrics), 1))
    rows = -(-max(len(metrics), 1) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(metrics) :]:
        ax.axis("off")
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for method in methods:
            points = [(epoch, scores[method][metric]) for epoch, scores in history if metric in scores.get(method, {})]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=method)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
