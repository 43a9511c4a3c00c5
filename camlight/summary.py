"""The group summary as text: the tables `train.py` prints when a group of runs is done."""

from __future__ import annotations

from pathlib import Path


def _localization_table(runs: list[dict]) -> list[str]:
    """Last epoch's localization: a row per (head, method), a column per metric."""
    rows = [(r["head"], method, scores) for r in runs for method, scores in (r.get("localization") or {}).items()]
    if not rows:
        return []
    metrics = list(dict.fromkeys(k for _, _, scores in rows for k in scores))
    header = ("head", "method", *metrics)
    body = [(head, method, *(_fmt(scores.get(k)) for k in metrics)) for head, method, scores in rows]
    return ["", "localization on the probe set, last epoch:", *_table(header, body)]


def _table(header: tuple, rows: list[tuple]) -> list[str]:
    """Left-aligned columns with a dashed rule under the header."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=True)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _fmt(value) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def format_summary(summary: dict) -> str:
    """The summary as a table, followed by where it was written."""
    header = ("head", "backbone", "val acc", "best checkpoint", "W&B run dir")
    rows = [
        (
            r["head"],
            r["backbone"],
            "n/a" if r["val_acc"] is None else f"{100 * r['val_acc']:.2f}%",
            r["best_checkpoint"] or "-",
            r["wandb_run_dir"] or "-",
        )
        for r in summary["runs"]
    ]
    lines = _table(header, rows)
    lines += _localization_table(summary["runs"])
    syncs = [r["wandb_sync"] for r in summary["runs"] if r["wandb_sync"]]
    if syncs:
        lines += ["", "upload to W&B later with:", *(f"  {s}" for s in syncs)]
    skipped = summary.get("skipped_files") or {}
    if skipped:
        lines += [
            "",
            f"{len(skipped)} unreadable files were skipped (listed in summary.json), e.g. {next(iter(skipped))}",
        ]
    lines += ["", f"summary: {Path(summary['group_dir']) / 'summary.json'}"]
    return "\n".join(lines)
