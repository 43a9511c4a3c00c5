"""Every protocol for every method at once: `Protocols`, what `explain.py evaluate` and the
training callback's whole-split scores feed batch by batch.

Example::

    protocols = Protocols(["cam_loc", "wsol", "pointing"], ["gradcam"], num_classes=200)
    protocols.update("gradcam", maps, batch, logits)    # per batch, per method
    protocols.update_center(batch, logits)              # the centre baseline
    protocols.results()    # {"scores": {"gradcam": {"top1_loc_err": 0.46, ...}, ...}, "per_class": ..., ...}
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torchmetrics import Metric

from camlight.metrics import _components
from camlight.metrics import faithfulness as _f
from camlight.metrics import localization as _l
from camlight.metrics.classes import _has_box, _has_mask
from camlight.metrics.protocols import (
    CENTER,
    GROUND_TRUTH_PROTOCOLS,
    CamLocalization,
    Options,
    Pointing,
    Pxap,
    WsolBoxes,
    _hits_at,
    center_map,
    center_points,
    check_protocols,
    label_ranks,
    map_points,
    threshold_grid,
)
from camlight.metrics.segmentation import grabcut_iou


def _rows(t, keep):
    return None if t is None else t[keep]


class _Mean(Metric):
    """Mean of per-image values of one named score."""

    full_state_update = False

    def __init__(self, name: str, **kwargs):
        super().__init__(**kwargs)
        self.name = name
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.total += values.float().sum()
        self.count += values.numel()

    def compute(self) -> dict[str, float]:
        return self.values()

    def values(self) -> dict[str, float]:
        return {self.name: float(self.total / self.count)} if self.count > 0 else {}


class Protocols(nn.Module):
    """Every protocol's `Metric` for every method (and the centre baseline for the ground-truth
    protocols), kept as submodules so they move with a LightningModule and reduce across ranks.

    Args:
        protocols: names from `PROTOCOLS`.
        methods: the methods whose maps will be scored.
        num_classes: classes of the labels.
        options: `Options`.
        center: also score the centre baseline (a map that ignores the image).
        classes: the classes of the data (model indices) over which TorchRay's class mean runs
            (default every class of the model).
    """

    def __init__(
        self, protocols, methods, num_classes: int, options: Options | None = None, center: bool = True, classes=None
    ):
        super().__init__()
        self.options = options or Options()
        self.grid = threshold_grid(self.options.threshold_step)
        self.protocols = check_protocols(protocols, self.options.compat)
        self.num_classes, self.classes = num_classes, classes
        self.center = center and any(p in GROUND_TRUTH_PROTOCOLS for p in self.protocols)
        names = list(methods) + ([CENTER] if self.center else [])
        self.metrics = nn.ModuleDict({method: self._build(method) for method in names})

    def _build(self, method: str) -> nn.ModuleDict:
        o, grid = self.options, self.grid
        m = nn.ModuleDict()
        for p in self.protocols:
            if method == CENTER and p not in GROUND_TRUTH_PROTOCOLS:
                continue
            if p == "cam_loc":
                m[p] = CamLocalization(self.num_classes, o.cam_threshold, o.iou, o.topk)
            elif p == "wsol":
                m[p] = WsolBoxes(grid, o.wsol_ious, o.mode("wsol"))
                m["pxap"] = Pxap(grid)
            elif p == "pointing":
                m[p] = Pointing(self.num_classes, o.tolerance, o.mode("pointing"), self.classes)
            elif p == "causal":
                m["deletion"], m["insertion"] = _Mean("deletion_auc"), _Mean("insertion_auc")
            elif p == "aopc":
                m[p] = _Mean("aopc")
            elif p == "grabcut":
                m["grabcut"] = _Mean("grabcut_iou")
        return m

    def update(
        self, method: str, maps: torch.Tensor, batch: dict, logits: torch.Tensor, model=None, seeds=None
    ) -> dict[str, torch.Tensor]:
        """Score one batch of `method`'s maps (B,H,W) of the labelled class; returns the per-image
        values {name: (B,)} (NaN where an image has no ground truth for it)."""
        m, o = self.metrics[method], self.options
        labels = batch["label"]
        boxes, masks = batch.get("boxes", batch.get("box")), batch.get("mask")
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            best = predicted = None
            if self._boxes_at_once(m, boxes):  # CAM's box and MaxBoxAccV2's from one pass over the components
                level = self.grid.index(o.cam_threshold)
                best, predicted = _l.component_scores(maps, boxes, self.grid, level)
            if "cam_loc" in m and boxes is not None:
                ranks = label_ranks(logits, labels)
                topk = m["cam_loc"].topk
                scores = CamLocalization.per_image(maps, boxes, ranks, o.cam_threshold, o.iou, topk, predicted)
                m["cam_loc"].update(maps, boxes, labels, ranks, scores)
                has = _has_box(boxes)
                out.update({k: _blank(v.float(), has) for k, v in scores.items()})
            if "wsol" in m and boxes is not None:
                m["wsol"].update(maps, boxes, best)
            if "pxap" in m and masks is not None:
                m["pxap"].update(maps, masks, batch.get("ignore"))
            if "pointing" in m and masks is not None:
                points = (
                    center_points(len(maps), *maps.shape[-2:], o.mode("pointing"))
                    if method == CENTER
                    else map_points(maps)
                )
                hits = _hits_at(points, masks, m["pointing"].tolerance)
                m["pointing"].update(points, masks, labels, hits)
                out["pointing"] = _blank(hits.float(), _has_mask(masks))
        if "grabcut" in m and masks is not None:  # GrabCut from the map (Simonyan et al. §3.1), on `rgb`
            has = _has_mask(masks)
            iou = grabcut_iou(maps[has], batch["rgb"][has], masks[has], _rows(batch.get("ignore"), has))
            m["grabcut"].update(iou)
            values = torch.zeros(len(maps), device=maps.device)
            values[has] = iou.to(values.device)
            out["grabcut_iou"] = _blank(values, has)
        if "deletion" in m:
            targets = labels.to(maps.device)
            out["deletion_auc"] = _f.deletion_auc(model, batch["image"], maps, targets, o.causal_steps)
            out["insertion_auc"] = _f.insertion_auc(model, batch["image"], maps, targets, o.causal_steps)
            m["deletion"].update(out["deletion_auc"])
            m["insertion"].update(out["insertion_auc"])
        if "aopc" in m:
            out["aopc"] = _f.aopc(model, batch["image"], maps, labels, o.aopc_region, o.aopc_steps, seeds=seeds)
            m["aopc"].update(out["aopc"])
        return out

    def _boxes_at_once(self, m: nn.ModuleDict, boxes) -> bool:
        """Whether CAM's box comes from MaxBoxAccV2's pass: both protocols run (MaxBoxAccV2 in
        camlight's own definition), CAM's threshold is on the grid, and the pass is compiled."""
        return (
            boxes is not None
            and "cam_loc" in m
            and "wsol" in m
            and m["wsol"].compat == "paper"
            and self.options.cam_threshold in self.grid
            and _components.score_maps is not None
        )

    def update_center(self, batch: dict, logits: torch.Tensor) -> None:
        """Score the centre baseline on this batch (no model pass)."""
        if self.center:
            image = batch["image"]
            maps = center_map(*image.shape[-2:], device=image.device).expand(len(image), *image.shape[-2:])
            self.update(CENTER, maps, batch, logits)

    def methods(self) -> list[str]:
        return list(self.metrics)

    def compute(self, calibrated: dict[str, list[float]] | None = None) -> dict[str, dict[str, float]]:
        """{method: {score: value}}; `calibrated` ({method: thresholds per δ}) adds the frozen-threshold
        box accuracy. Under DDP every rank must call it (the states are reduced across ranks)."""
        return self.results(calibrated)["scores"]

    def results(self, calibrated: dict[str, list[float]] | None = None) -> dict:
        """{"scores": {method: {score: value}}, "per_class": {method: [...]}, "thresholds": {method:
        [τ per δ]}} from states reduced across ranks once (every rank must call it)."""
        with contextlib.ExitStack() as stack:
            for m in self.metrics.values():
                for metric in m.values():
                    stack.enter_context(metric.sync_context())
            scores = {}
            for method, m in self.metrics.items():
                scores[method] = {}
                for name, metric in m.items():
                    extra = {"calibrated": (calibrated or {}).get(method)} if name == "wsol" else {}
                    scores[method].update(metric.values(**extra))
            return {"scores": scores, "per_class": self.per_class(), "thresholds": self.best_thresholds()}

    def best_thresholds(self) -> dict[str, list[float]]:
        """{method: MaxBoxAccV2's best τ per δ} (after a calibration split)."""
        return {method: m["wsol"].best_thresholds() for method, m in self.metrics.items() if "wsol" in m}

    def per_class(self) -> dict[str, list[dict[str, float]]]:
        """{method: [per-class scores]} of the protocols kept per class (CAM's and the pointing game's)."""
        out = {}
        for method, m in self.metrics.items():
            rows = [{} for _ in range(self.num_classes)]
            for name in ("cam_loc", "pointing"):
                if name in m:
                    for row, scores in zip(rows, m[name].per_class(), strict=True):
                        row.update(scores)
            out[method] = rows
        return out

    def reset(self) -> None:
        for m in self.metrics.values():
            for metric in m.values():
                metric.reset()


def _blank(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return torch.where(valid.to(values.device), values, torch.full_like(values, float("nan")))
