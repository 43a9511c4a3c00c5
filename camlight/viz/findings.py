"""What a training group found, in sentences generated from its own numbers: `findings.md`.

Every claim carries its number and a 95 % bootstrap interval over the probe items (images, or
(image, class) pairs), and a comparison is stated only when the interval of the *paired*
difference (the same probe images, resampled together) leaves out zero; otherwise the sentence
says "no clear difference". Accuracies carry Wilson intervals over the validation images.

Input: the group's `summary.json` and each run's `explanations/probe_scores.csv` (the callback's
per-item values of the last explained epoch).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

from camlight.viz.files import atomic_file

LOCALIZATION = ("pointing_game", "energy_pointing_game", "box_accuracy", "mask_iou")
NAMES = {
    "pointing_game": "pointing game",
    "energy_pointing_game": "energy pointing game",
    "box_accuracy": "box accuracy (τ = 0.2)",
    "mask_iou": "mask IoU",
    "class_discrimination": "class discrimination (denser on the right animal)",
    "class_energy": "energy share on the right animal",
    "sanity_spearman": "Spearman correlation with a fully randomized copy",
    "drift": "Spearman correlation with the previous epoch's maps",
    "shortcut_energy": "energy share on the shortcut mark",
}
CENTER = "center_baseline"
RESAMPLES = 2000

Items = dict[int, float]  # probe item → value


def bootstrap(values, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean, 2.5th, 97.5th percentile of the resampled means, n) of `values`, NaN left out."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan, 0
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(RESAMPLES, len(v)))].mean(1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)), len(v)


def paired(a: Items, b: Items) -> tuple[float, float, float, int]:
    """bootstrap() of a − b over the items both have (defined in both)."""
    common = sorted(i for i in a.keys() & b.keys() if a[i] == a[i] and b[i] == b[i])
    return bootstrap([a[i] - b[i] for i in common])


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion p over n trials."""
    if n <= 0:
        return math.nan, math.nan
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _ci(stat) -> str:
    mean, lo, hi, n = stat
    return f"{mean:.3f} [{lo:.3f}, {hi:.3f}] (n = {n})"


def _diff(stat) -> str:
    mean, lo, hi, _ = stat
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _sign(stat) -> int:
    """+1 when the interval lies above zero, −1 below, 0 when it holds zero (or is empty)."""
    _, lo, hi, n = stat
    if n == 0:
        return 0
    return 1 if lo > 0 else (-1 if hi < 0 else 0)


def load_runs(group_dir: Path) -> list[dict]:
    """Per run: head, backbone, val_acc, val_images, run name and its per-item scores
    {score: {method: {item: value}}} from `explanations/probe_scores.csv`."""
    summary = json.loads((Path(group_dir) / "summary.json").read_text())
    runs = []
    for r in summary["runs"]:
        scores: dict = {}
        path = Path(r["explanations"] or "") / "probe_scores.csv" if r.get("explanations") else None
        if path is not None and path.is_file():
            with open(path) as f:
                for row in csv.DictReader(f):
                    scores.setdefault(row["score"], {}).setdefault(row["method"], {})[int(row["item"])] = float(
                        row["value"]
                    )
        runs.append({**r, "scores": scores})
    return runs


def findings(runs: list[dict], shortcut_share: float | None = None) -> str:
    """The findings as Markdown (see the module docstring). `shortcut_share`: the share of the
    image the shortcut mark covers (what a map that ignores it puts there), when there is one."""
    lines = ["# Findings", ""]
    lines += [
        "Generated from this group's numbers: means over the probe set with 95 % bootstrap intervals "
        f"({RESAMPLES} resamples of the probe items); a difference is claimed only where the interval of "
        "the paired difference leaves out zero.",
        "",
    ]
    lines += _heads(runs)
    for run in runs:
        lines += _localization(run)
    lines += _head_comparison(runs)
    lines += _discrimination(runs)
    lines += _sanity(runs)
    lines += _drift(runs)
    if shortcut_share is not None:
        lines += _canary(runs, shortcut_share)
    return "\n".join(lines).rstrip() + "\n"


def _heads(runs: list[dict]) -> list[str]:
    out = ["## Accuracy", ""]
    stats = []
    for r in runs:
        if r.get("val_acc") is None:
            continue
        n = int(r.get("val_images") or 0)
        lo, hi = wilson(r["val_acc"], n)
        stats.append((r, lo, hi))
        out.append(
            f"- {r['head'].upper()} head ({r['backbone']}): validation accuracy {100 * r['val_acc']:.2f} % "
            f"[{100 * lo:.2f}, {100 * hi:.2f}] over {n} images."
        )
    if len(stats) == 2:
        (a, alo, ahi), (b, blo, bhi) = stats
        if alo > bhi or blo > ahi:
            top, low = (a, b) if alo > bhi else (b, a)
            out.append(
                f"- The {top['head'].upper()} head is more accurate than the {low['head'].upper()} head "
                "(the intervals do not overlap)."
            )
        else:
            out.append("- Accuracy: no clear difference between the heads (the intervals overlap).")
    return out + [""]


def _localization(run: dict) -> list[str]:
    s = run["scores"]
    metrics = [m for m in LOCALIZATION if m in s]
    if not metrics:
        return []
    out = [f"## Localization, {run['head'].upper()} head (probe set, last epoch)", ""]
    for metric in metrics:
        per = s[metric]
        methods = [m for m in per if m != CENTER]
        for m in methods:
            line = f"- {NAMES[metric]}, {m}: {_ci(bootstrap(per[m].values()))}"
            if CENTER in per:
                d = paired(per[m], per[CENTER])
                verdict = {
                    1: "beats the centre baseline",
                    -1: "is below the centre baseline",
                    0: "no clear difference from the centre baseline",
                }[_sign(d)]
                line += f"; centre baseline {bootstrap(per[CENTER].values())[0]:.3f}: {verdict} ({_diff(d)})"
            out.append(line + ".")
        if len(methods) > 1:
            ranked = sorted(methods, key=lambda m: -bootstrap(per[m].values())[0])
            best, runner = ranked[0], ranked[1]
            d = paired(per[best], per[runner])
            if _sign(d) > 0:
                out.append(f"- Best on {NAMES[metric]}: {best}, ahead of {runner} by {_diff(d)}.")
            else:
                out.append(f"- Best on {NAMES[metric]}: no clear difference between {best} and {runner} ({_diff(d)}).")
    return out + [""]


def _head_comparison(runs: list[dict]) -> list[str]:
    heads = {r["head"]: r for r in runs}
    if not {"gap", "fc"} <= heads.keys():
        return []
    gap, fc = heads["gap"]["scores"], heads["fc"]["scores"]
    out = ["## GAP head against FC head (the same probe images)", ""]
    for metric in (*LOCALIZATION, "class_energy", "class_discrimination"):
        for m in sorted(gap.get(metric, {}).keys() & fc.get(metric, {}).keys() - {CENTER}):
            d = paired(gap[metric][m], fc[metric][m])
            a, b = bootstrap(gap[metric][m].values())[0], bootstrap(fc[metric][m].values())[0]
            verdict = {1: "the GAP head scores higher", -1: "the FC head scores higher", 0: "no clear difference"}[
                _sign(d)
            ]
            out.append(f"- {NAMES[metric]}, {m}: GAP {a:.3f}, FC {b:.3f}: {verdict} ({_diff(d)}).")
    return out + [""] if len(out) > 2 else []


def _versus(stat, level: float, above: str, below: str, neither: str) -> str:
    _, lo, hi, n = stat
    if n == 0:
        return "undefined"
    return above if lo > level else (below if hi < level else neither)


def _discrimination(runs: list[dict]) -> list[str]:
    out = []
    for r in runs:
        per = r["scores"].get("class_energy", {})
        for m, items in per.items():
            stat = bootstrap(items.values())
            verdict = _versus(stat, 0.5, "prefers the right animal", "prefers the wrong animal", "no clear preference")
            out.append(f"- {r['head'].upper()} head, {m}: {NAMES['class_energy']} {_ci(stat)}: {verdict} (0.5: none).")
    return ["## Class discrimination (pair probe: a cat and a dog in every image)", "", *out, ""] if out else []


def _sanity(runs: list[dict]) -> list[str]:
    out = []
    for r in runs:
        per = r["scores"].get("sanity_spearman", {})
        for m, items in sorted(per.items(), key=lambda kv: -bootstrap(kv[1].values())[0]):
            stat = bootstrap(items.values())
            verdict = _versus(
                stat,
                0.5,
                "its maps barely depend on the learned weights",
                "its maps depend on the learned weights",
                "its maps partly depend on the weights",
            )
            out.append(f"- {r['head'].upper()} head, {m}: {NAMES['sanity_spearman']} {_ci(stat)}: {verdict}.")
    return ["## Sanity check (Adebayo et al. 2018)", "", *out, ""] if out else []


def _drift(runs: list[dict]) -> list[str]:
    out = []
    for r in runs:
        for m, items in r["scores"].get("drift", {}).items():
            stat = bootstrap(items.values())
            verdict = _versus(stat, 0.9, "settled", "still changing", "nearly settled")
            out.append(
                f"- {r['head'].upper()} head, {m}: {NAMES['drift']} {_ci(stat)}: {verdict} (settled: above 0.9)."
            )
    return ["## Drift (last epoch against the one before)", "", *out, ""] if out else []


def _canary(runs: list[dict], share: float) -> list[str]:
    out = []
    for r in runs:
        for m, items in r["scores"].get("shortcut_energy", {}).items():
            stat = bootstrap(items.values())
            verdict = _versus(stat, 2 * share, "looks at the mark", "does not look at the mark", "no clear verdict")
            out.append(
                f"- {r['head'].upper()} head, {m}: {NAMES['shortcut_energy']} {_ci(stat)}: {verdict} "
                f"(a map that ignores the mark puts {share:.3f} there; the verdict's line is twice that)."
            )
    return ["## Shortcut canary", "", *out, ""] if out else []


def write_findings(group_dir: Path, shortcut_share: float | None = None) -> Path:
    """Write `group_dir/findings.md` from the group's files; returns its path."""
    path = Path(group_dir) / "findings.md"
    text = findings(load_runs(group_dir), shortcut_share)
    with atomic_file(path) as f:
        f.write(text)
    return path
