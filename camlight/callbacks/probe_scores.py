"""The callback's scores of the probe set beyond the metrics registry: class discrimination on the
pair probe, the shortcut canary's energy on the mark, drift between epochs, agreement between
methods, and the sanity check against a randomized copy of the model.

Each takes the LightningModule and returns {method: (N,) float64 CPU tensor}: one value per probe
item of this rank (an image, or an (image, class) pair), NaN where it is undefined. `means` reduces
them across DDP ranks, so every rank must call it, also one whose share of the probe set is empty;
the callback keeps the per-item values of the last explained epoch for the findings' intervals.
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from camlight.explain import explain
from camlight.metrics.sanity import fully_randomized, spearman

PerItem = dict[str, torch.Tensor]


def means(module, values: PerItem) -> dict[str, float]:
    """{method: mean of its per-item values over every rank} (NaN left out; NaN when all are)."""
    out = {}
    for m, v in values.items():
        metric = MeanMetric(nan_strategy="ignore").to(module.device)
        if len(v):
            metric.update(v.to(module.device, torch.float32))
        out[m] = float(metric.compute())
    return out


def _none(methods) -> PerItem:
    return {m: torch.zeros(0, dtype=torch.float64) for m in methods}


def kept(maps: dict, methods) -> dict[str, torch.Tensor]:
    """This epoch's probe maps on the CPU, kept for the next epoch's drift (empty where none)."""
    return {m: maps[m].detach().cpu() if m in maps else torch.zeros(0) for m in methods}


def drift(previous: dict, current: dict, methods) -> PerItem:
    """{method: Spearman correlation between each probe image's map at the last explained epoch
    and now}; empty the first time (no previous maps)."""
    if not previous:
        return {}
    return {m: spearman(previous[m], current[m]).cpu() if len(current[m]) else _none([m])[m] for m in methods}


def agreement(module, maps: dict, methods) -> dict[str, dict[str, float]]:
    """{method: {method: mean Spearman correlation of their maps of the same probe images}}."""
    methods = [m for m in methods if m in maps]
    out = {m: {} for m in methods}
    for i, a in enumerate(methods):
        out[a][a] = 1.0
        for b in methods[i + 1 :]:
            pair = spearman(maps[a], maps[b]) if len(maps[a]) else _none([a])[a]
            out[a][b] = out[b][a] = means(module, {a: pair})[a]
    return out


def sanity_spearman(module, batch: dict, maps: dict, methods) -> PerItem:
    """{method: Spearman correlation between each probe image's map and its map from a copy of
    the model with every block re-initialised} (NaN where a map is constant)."""
    if not len(batch["image"]):
        return _none(methods)
    random = fully_randomized(module)
    found = explain(random, batch["image"], list(methods), targets=batch["label"])
    del random
    return {m: spearman(maps[m], found[m]).cpu() for m in methods}


def shortcut_energy(batch: dict, maps: dict, methods, shortcut_class: int) -> PerItem:
    """{method: the share of each map's energy (clipped at 0) on the shortcut mark, over the probe
    images of the mark's class that carry it (their labelled class's maps: where does the network
    look for a dog?)}."""
    mark = batch["shortcut_mask"].flatten(1).float()
    marked = mark.any(1) & (batch["label"] == shortcut_class)
    out = {}
    for m in methods:
        if m not in maps:
            out[m] = _none([m])[m]
            continue
        energy = maps[m].clamp(min=0).flatten(1).float()
        total = energy.sum(1)
        share = torch.where(total > 0, (energy * mark).sum(1) / total.clamp(min=1e-12), torch.zeros_like(total))
        out[m] = share[marked].double().cpu()
    return out


def class_discrimination(module, pair: dict, methods, targets=None) -> dict[str, PerItem]:
    """{"class_discrimination": {method: per (image, class) pair, 1 when the class's map is denser
    (mean value) on that class's animal than on any other animal in the image — 0.5 is chance with
    two classes}, "class_energy": {method: per pair, the share of the class map's energy on that
    class's animal out of its energy on all the animals — 0.5 is no preference}} on the pair
    probe (`image` on the module's device and dtype, `class_masks` (N,C,H,W)); pairs ordered
    image by image, class by class. `targets`: the target of each mask, an int or an (N,) tensor
    each (default: mask c is class c), e.g. ImageNet's class ids for a composite of real photos."""
    masks = pair["class_masks"].float()
    n, classes = masks.shape[:2]
    area = masks.flatten(2).sum(2).clamp(min=1)  # (N,C)
    denser = {m: torch.zeros(n, classes, dtype=torch.float64) for m in methods}
    energy = {m: torch.zeros(n, classes, dtype=torch.float64) for m in methods}
    if n:
        for c in range(classes):
            maps = explain(module, pair["image"], list(methods), targets=c if targets is None else targets[c])
            for m in methods:
                on = (maps[m].clamp(min=0)[:, None] * masks).flatten(2).sum(2)  # (N,C) energy on each animal
                density = on / area
                others = torch.cat([density[:, :c], density[:, c + 1 :]], dim=1)
                denser[m][:, c] = (density[:, c] > others.amax(1)).double().cpu()
                total = on.sum(1)
                share = torch.where(total > 0, on[:, c] / total.clamp(min=1e-12), torch.full_like(total, float("nan")))
                energy[m][:, c] = share.double().cpu()
    return {
        "class_discrimination": {m: v.flatten() for m, v in denser.items()},
        "class_energy": {m: v.flatten() for m, v in energy.items()},
    }
