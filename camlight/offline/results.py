"""What `explain.py` computes for each image: targets, predictions and per-image scores, as records.

A `Result` is one image explained for one target class; everything written (results.csv, the
overlays' names, maps.npz keys, the HTML report) is formatted from these records at the moment of
writing, so no key is ever parsed back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import nn

from camlight.config import ConfigError
from camlight.datamodules.base import collate_samples
from camlight.explain._targets import top_k
from camlight.metrics import METRICS, has_ground_truth
from camlight.offline.inputs import Item

Scores = dict[str, dict[str, float]]  # method → metric → value


def class_index(spec, class_names: tuple[str, ...], what: str = "target") -> int:
    """A class given by name or by index, as an index; ConfigError listing the classes otherwise."""
    t = str(spec)
    if t.isdigit() and int(t) < len(class_names):
        return int(t)
    if t in class_names:
        return class_names.index(t)
    raise ConfigError(
        f"unknown {what} {t!r}; choose one of {', '.join(class_names)} (or an index below {len(class_names)})"
    )


@dataclass
class Result:
    """One image explained for one target class."""

    name: str  # the image's key as text (`camlight.offline.names.shown`): results.csv's `file`
    predicted: int
    probability: float
    target: int
    target_probability: float
    label: int | None = None
    rank: int | None = None  # with target=topk: the target's rank among the classes (1 = top-1)
    methods: list[str] = field(default_factory=list)  # the methods whose maps explain it
    scores: Scores = field(default_factory=dict)  # per-image metrics, for images that have them
    neuron: str | None = None  # with target=layer:channel[...]: the unit explained instead of a class

    def target_name(self, class_names) -> str:
        """The target as results.csv and the index name it: a class (with its rank) or the neuron."""
        if self.neuron is not None:
            return self.neuron
        return class_names[self.target] + ("" if self.rank is None else f" top{self.rank}")

    @property
    def suffix(self) -> str:
        return "" if self.rank is None else f"_top{self.rank}"

    def column(self, method: str) -> str:
        """The name of this target's map of `method`: "gradcam", or "gradcam_top2" with target=topk."""
        return f"{method}{self.suffix}"

    def row(self, class_names) -> dict:
        """Its results.csv row: file, predicted, probability, target, target_probability, label,
        then a `<method>/<metric>` column per score."""
        row = {
            "file": self.name,
            "predicted": class_names[self.predicted],
            "probability": round(self.probability, 6),
            "target": self.target_name(class_names),
            "target_probability": "" if self.neuron is not None else round(self.target_probability, 6),
        }
        if self.label is not None:
            row["label"] = class_names[self.label]
        for method, scores in self.scores.items():
            for metric, value in scores.items():
                row[f"{method}/{metric}"] = round(value, 6)
        return row


def targets(
    cfg: DictConfig, class_names, logits: torch.Tensor, items: list[Item]
) -> list[tuple[int | None, torch.Tensor]]:
    """[(rank or None, targets (B,))]: one entry, or k for target=topk or "top3" (rank 1..k)."""
    t = str(cfg.target)
    if t == "top1":
        return [(None, logits.argmax(1))]
    k = cfg.k if t == "topk" else (top_k(t) if t not in class_names else None)
    if k is not None:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        return [(r + 1, top[:, r]) for r in range(top.shape[1])]
    if t == "label":
        return [(None, torch.tensor([it.label for it in items], device=logits.device))]
    if ":" in t:  # a neuron: explained as itself; the class column holds the prediction
        return [(None, logits.argmax(1))]
    return [(None, torch.full((len(items),), class_index(t, class_names), dtype=torch.long, device=logits.device))]


def ground_truth_batch(items: list[Item], device) -> tuple[dict, torch.Tensor]:
    """The camlight batch of `items` (ground truth where there is some) and (B,) which items have any."""
    batch = {k: v.to(device) for k, v in collate_samples([it.as_sample() for it in items]).items()}
    return batch, has_ground_truth(batch).cpu()


def per_image_scores(
    metrics: list[str], maps: dict[str, torch.Tensor], batch: dict, valid: torch.Tensor, model: nn.Module, targets
) -> list[Scores]:
    """Per image: {method: {metric: value}} for the per-image metrics of `metrics`; ground-truth
    metrics only for the images that have ground truth."""
    out: list[Scores] = [{m: {} for m in maps} for _ in range(len(valid))]
    for name in metrics:
        spec = METRICS[name]
        if spec.per_image is None or (spec.ground_truth and not valid.any()):
            continue
        for method, m in maps.items():
            values = spec.per_image(m, batch, model, targets).cpu()
            as_number = int if values.dtype == torch.bool else float  # hits stay 0/1
            for i in range(len(valid)):
                if valid[i] or not spec.ground_truth:
                    out[i][method][name] = as_number(values[i])
    return out


class SetScores:
    """The metrics defined only over a whole set (MaxBoxAccV2, PxAP), per map column: torchmetrics
    `Metric`s updated batch by batch (their states are bounded: counts and histograms). Per-image
    metrics are averaged by `ScoreMeans` instead."""

    def __init__(self, metrics: list[str], num_classes: int):
        self.metrics = [m for m in metrics if METRICS[m].per_image is None]
        self.num_classes = num_classes
        self.state: dict[tuple[str, str], object] = {}

    def update(self, column_of, maps: dict, batch: dict, valid: torch.Tensor, model: nn.Module, targets) -> None:
        """`column_of(method)` names the map column (e.g. "gradcam_top2")."""
        if not valid.any():  # both need ground truth
            return
        for name in self.metrics:
            spec = METRICS[name]
            for method, m in maps.items():
                key = (column_of(method), name)
                if key not in self.state:
                    self.state[key] = spec.build(self.num_classes).to(m.device)
                spec.update(self.state[key], m, batch, model, targets)

    def values(self) -> dict[tuple[str, str], float]:
        return {key: float(metric.compute()) for key, metric in self.state.items()}


class ScoreMeans:
    """The per-image scores' running sums per (map column, metric): scores.csv's means without
    keeping a record per image."""

    def __init__(self):
        self.sums: dict[tuple[str, str], list[float]] = {}  # (column, metric) → [total, images]

    def add(self, column: str, metric: str, value: float) -> None:
        total = self.sums.setdefault((column, metric), [0.0, 0])
        total[0] += value
        total[1] += 1


def summary_rows(means: ScoreMeans, set_scores: SetScores) -> list[dict]:
    """scores.csv rows (map, metric, value, images): the mean of each per-image score over the
    images that have it, and each set-level score."""
    rows = [
        {"map": column, "metric": metric, "value": round(total / n, 6), "images": n}
        for (column, metric), (total, n) in means.sums.items()
    ]
    rows += [
        {"map": column, "metric": metric, "value": round(v, 6), "images": ""}
        for (column, metric), v in set_scores.values().items()
    ]
    return rows
