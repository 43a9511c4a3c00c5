"""`explain.py robustness`: accuracy against one-shot untargeted FGSM (Goodfellow et al. 2015) at
several ε, over a whole split, through the same Lightning predict loop as `explain.py evaluate`
(counts are sums reduced across processes). Writes `robustness.csv` (ε in pixels of 255, accuracy,
images), `robustness.png` (the curve) and `run.json`; the folder appears whole, or not at all.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torchmetrics.aggregation import SumMetric

from camlight.config import ConfigError
from camlight.evaluate.command import label_map, split_pass, split_predict
from camlight.evaluate.loop import SplitPass
from camlight.inspect.adversarial import fgsm
from camlight.viz import whole_folder, write_csv

log = logging.getLogger(__name__)


class FGSMAccuracy(SplitPass):
    """Counts, per ε, the images still classified right after one FGSM step away from their label."""

    def __init__(self, model: torch.nn.Module, eps: list[float], mean, std):
        super().__init__(model)
        self.eps, self.mean, self.std = list(eps), mean, std
        self.correct = torch.nn.ModuleList([SumMetric() for _ in self.eps])
        self.count = SumMetric()
        self.accuracy: list[float] | None = None
        self.images = 0

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        if not self.usable(batch):
            return
        x, labels = batch["image"], batch["label"]
        for eps, correct in zip(self.eps, self.correct, strict=True):
            adv = fgsm(self.model, x, labels, eps, self.mean, self.std)
            with torch.no_grad():
                correct.update((self.model(adv).argmax(1) == labels).sum().float())
        self.count.update(torch.tensor(float(len(x)), device=x.device))

    def on_predict_epoch_end(self) -> None:
        self.images = int(self.count.compute())
        self.accuracy = [float(c.compute()) / max(self.images, 1) for c in self.correct]


def run(cfg, progress: bool = True) -> int:
    eps = [float(e) for e in cfg.eps]
    if not eps or any(e < 0 for e in eps):
        raise ConfigError(f"eps={list(cfg.eps)}: give one or more sizes >= 0, in pixels of 255 (e.g. [0,1,2,4,8])")
    loaded, model, dm = split_pass(cfg)
    labels = label_map(dm.class_names, loaded.class_names)
    pre = loaded.preprocessing
    scoring = FGSMAccuracy(model, eps, pre.mean, pre.std)
    with split_predict(cfg, scoring, dm, labels, progress) as trainer:
        if trainer.is_global_zero:
            rows = [
                {"eps": e, "accuracy": round(a, 6), "images": scoring.images}
                for e, a in zip(eps, scoring.accuracy, strict=True)
            ]
            with whole_folder(cfg.out) as folder:
                write_csv(folder / "robustness.csv", rows)
                _plot(rows, folder / "robustness.png", f"{loaded.name} on {scoring.images} {cfg.split} images")
                about = {"model": loaded.name, "split": cfg.split, "images": scoring.images, "attack": "FGSM"}
                (folder / "run.json").write_text(json.dumps(about, indent=2) + "\n")
            for r in rows:
                log.info("FGSM ε = %g/255: accuracy %.2f %%", r["eps"], 100 * r["accuracy"])
    return 0


def _plot(rows: list[dict], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    ax.plot([r["eps"] for r in rows], [100 * r["accuracy"] for r in rows], marker="o")
    ax.set_xlabel("FGSM ε (pixels of 255, L-inf)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
