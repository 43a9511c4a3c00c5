"""Plots: localization against epoch, the randomization curves, agreement, embeddings."""

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
            baseline = method == "center_baseline"  # a map that ignores the image: the level to beat
            style = {"color": "grey", "linestyle": "--", "marker": None} if baseline else {"marker": "o"}
            if points:
                ax.plot(*zip(*points, strict=True), label=method, **style)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def randomization_plot(curves: dict[str, dict], path: str | Path) -> None:
    """Adebayo et al.'s figure: similarity to the trained network's maps against the blocks
    re-initialised (from the logits down), a line per method (the mean over images) with a band
    from the 25th to the 75th percentile; a row per mode, a panel per similarity measure.

    `curves`: {mode: {"blocks": [names, top first], "scores": {method: {measure: (steps, B)
    array}}}}; the first point, "trained", is the maps' similarity to themselves (1).
    """
    import numpy as np
    from matplotlib.figure import Figure

    modes = list(curves)
    measures = list(dict.fromkeys(m for c in curves.values() for s in c["scores"].values() for m in s))
    fig = Figure(figsize=(4.4 * max(len(measures), 1), 3.6 * max(len(modes), 1)))
    axes = fig.subplots(max(len(modes), 1), max(len(measures), 1), squeeze=False)
    for row, mode in zip(axes, modes, strict=False):
        blocks = curves[mode]["blocks"]
        x = np.arange(len(blocks) + 1)
        for ax, measure in zip(row, measures, strict=False):
            for method, scores in curves[mode]["scores"].items():
                if measure not in scores:
                    continue
                v = np.asarray(scores[measure], dtype=float)
                if v.size == 0 or np.isnan(v).all(axis=1).any():
                    continue
                ones = np.ones((1, v.shape[1]))
                v = np.concatenate([ones, v])
                mean = np.nanmean(v, axis=1)
                low, high = np.nanpercentile(v, 25, axis=1), np.nanpercentile(v, 75, axis=1)
                (line,) = ax.plot(x, mean, marker="o", ms=3, label=method)
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
            ax.set_title(f"{measure} ({mode})")
            ax.set_xticks(x)
            ax.set_xticklabels(["trained", *blocks], rotation=70, ha="right", fontsize=7)
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_ylim(-0.3 if measure.startswith("spearman") else -0.1, 1.05)
            ax.grid(alpha=0.3)
        row[0].set_ylabel("similarity to the trained maps")
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def agreement_plot(agreement: dict[str, dict[str, float]], path: str | Path) -> None:
    """A heatmap of how alike the methods' maps are: {method: {method: mean Spearman}}."""
    import numpy as np
    from matplotlib.figure import Figure

    methods = list(agreement)
    values = np.array([[agreement[a].get(b, np.nan) for b in methods] for a in methods], dtype=float)
    fig = Figure(figsize=(1.2 * len(methods) + 2, 1.1 * len(methods) + 1.2))
    ax = fig.subplots()
    image = ax.imshow(values, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right")
    ax.set_yticks(range(len(methods)), methods)
    for i in range(len(methods)):
        for j in range(len(methods)):
            text = "n/a" if np.isnan(values[i, j]) else f"{values[i, j]:.2f}"
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
    ax.set_title("agreement: mean Spearman over probe images")
    fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def embedding_plot(coords, labels, class_names, path: str | Path, title: str = "") -> None:
    """A 2-D embedding (N,2) as a scatter, a colour per class (tab10/tab20), with a legend."""
    import numpy as np
    from matplotlib.figure import Figure

    coords, labels = np.asarray(coords), np.asarray(labels)
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.subplots()
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(class_names) <= 10 else "tab20"]
    for c in sorted(set(labels.tolist())):
        sel = labels == c
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.7, label=name, color=palette(c % palette.N))
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(class_names) <= 20:
        ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
