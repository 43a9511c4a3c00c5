"""The callback's scores of the probe set beyond the metrics registry: class discrimination on the
pair probe, the shortcut canary's energy on the mark, drift between epochs, agreement between
methods, and the sanity check against a randomized copy of the model.

Each takes the LightningModule (for its device) and returns {method: value}; every value is a
mean that reduces across DDP ranks, so every rank must call each function, also one whose share of
the probe set is empty.
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from camlight.explain import explain
from camlight.metrics.sanity import fully_randomized, spearman


def _means(module, methods) -> dict[str, MeanMetric]:
    return {m: MeanMetric(nan_strategy="ignore").to(module.device) for m in methods}


def _values(means: dict[str, MeanMetric]) -> dict[str, float]:
    return {m: float(metric.compute()) for m, metric in means.items()}


def kept(maps: dict, methods) -> dict[str, torch.Tensor]:
    """This epoch's probe maps on the CPU, kept for the next epoch's drift (empty where none)."""
    return {m: maps[m].detach().cpu() if m in maps else torch.zeros(0) for m in methods}


def drift(module, previous: dict, current: dict, methods) -> dict[str, float]:
    """{method: mean Spearman correlation between each probe image's map at the last explained
    epoch and now}; empty the first time (no previous maps)."""
    if not previous:
        return {}
    means = _means(module, methods)
    for m, metric in means.items():
        if len(current[m]):
            metric.update(spearman(previous[m], current[m]).float().to(module.device))
    return _values(means)


def agreement(module, maps: dict, methods) -> dict[str, dict[str, float]]:
    """{method: {method: mean Spearman correlation of their maps of the same probe images}}."""
    methods = [m for m in methods if m in maps]
    out = {m: {} for m in methods}
    for i, a in enumerate(methods):
        out[a][a] = 1.0
        for b in methods[i + 1 :]:
            metric = _means(module, [a])[a]
            if len(maps[a]):
                metric.update(spearman(maps[a], maps[b]).float().to(module.device))
            out[a][b] = out[b][a] = float(metric.compute())
    return out


def sanity_spearman(module, batch: dict, maps: dict, methods) -> dict[str, float]:
    """{method: mean Spearman correlation between the model's probe maps and those of a copy with
    every block re-initialised} (images whose maps are constant left out; NaN when all are)."""
    means = _means(module, methods)
    if len(batch["image"]):
        random = fully_randomized(module)
        found = explain(random, batch["image"], list(methods), targets=batch["label"])
        del random
        for m in methods:
            means[m].update(spearman(maps[m], found[m]).float())
    return _values(means)


def shortcut_energy(module, batch: dict, maps: dict, methods, shortcut_class: int) -> dict[str, float]:
    """{method: mean share of the map's energy on the shortcut mark, over the probe images of the
    mark's class that carry it (their labelled class's maps: where does the network look for a
    dog?)} (NaN when there is none)."""
    means = _means(module, methods)
    mark = batch["shortcut_mask"].flatten(1).float()
    marked = mark.any(1) & (batch["label"] == shortcut_class)
    for m, metric in means.items():
        if m in maps and marked.any():
            energy = maps[m].clamp(min=0).flatten(1).float()
            total = energy.sum(1)
            share = torch.where(total > 0, (energy * mark).sum(1) / total.clamp(min=1e-12), torch.zeros_like(total))
            metric.update(share[marked])
    return _values(means)


def class_discrimination(module, pair: dict, methods) -> dict[str, dict[str, float]]:
    """{method: {"class_discrimination": share of (image, class) pairs whose map for that class is
    denser (mean value) on that class's animal than on any other animal in the image — 0.5 is
    chance with two classes; "class_energy": the mean share of the class map's energy on that
    class's animal out of its energy on all the animals — 0.5 is no preference}} on the pair probe
    (`image` on the module's device and dtype, `class_masks` (N,C,H,W))."""
    masks = pair["class_masks"].float()
    area = masks.flatten(2).sum(2).clamp(min=1)  # (N,C)
    denser, energy = _means(module, methods), _means(module, methods)
    if len(pair["image"]):
        for c in range(masks.shape[1]):
            maps = explain(module, pair["image"], list(methods), targets=c)
            for m in methods:
                on = (maps[m].clamp(min=0)[:, None] * masks).flatten(2).sum(2)  # (N,C) energy on each animal
                density = on / area
                others = torch.cat([density[:, :c], density[:, c + 1 :]], dim=1)
                denser[m].update((density[:, c] > others.amax(1)).float())
                total = on.sum(1)
                share = torch.where(total > 0, on[:, c] / total.clamp(min=1e-12), torch.full_like(total, float("nan")))
                energy[m].update(share)
    return {
        m: {"class_discrimination": d, "class_energy": e}
        for (m, d), e in zip(_values(denser).items(), _values(energy).values(), strict=True)
    }
