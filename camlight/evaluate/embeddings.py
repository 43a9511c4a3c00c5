"""`explain.py embeddings`: a split's final-layer features in 2-D (PCA and t-SNE), through the same
Lightning predict loop as `explain.py evaluate` (each process collects its share; they are
gathered when the pass ends). Writes `embeddings.csv` (per image: label, prediction, each 2-D
position), `features.npy`, `<method>.png` (a scatter coloured by class) and
`thumbnails_<method>.png` (each image at its place), and with `wandb.mode` offline or online a
W&B table `embeddings/table` whose `embedding` column W&B's projector reads. The folder appears
whole at the end, or not at all.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric

from camlight.config import ConfigError
from camlight.evaluate.command import image_namer, label_map, split_pass, split_predict
from camlight.evaluate.loop import SplitPass
from camlight.evaluate.outputs import wandb_run
from camlight.inspect.embeddings import REDUCERS, features, last_linear, reduce, thumbnail_map
from camlight.viz import denormalize, embedding_plot, save_png, whole_folder, write_csv

log = logging.getLogger(__name__)


class Collect(Metric):
    """Per-image tensors gathered from every process (list states, concatenated on compute)."""

    full_state_update = False

    def __init__(self, names, **kwargs):
        super().__init__(**kwargs)
        self.names = list(names)
        for name in self.names:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, **values: torch.Tensor) -> None:
        for name in self.names:
            getattr(self, name).append(values[name])

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self.names:
            parts = getattr(self, name)
            out[name] = torch.cat(parts) if isinstance(parts, list) else parts
        return out


class FeatureCollect(SplitPass):
    """`predict_step` keeps each image's features, label, prediction, index and a small uint8
    thumbnail; after the pass `result` holds them for the whole split, in image order."""

    def __init__(self, model: torch.nn.Module, mean, std, thumb: int):
        super().__init__(model)
        self.mean, self.std, self.thumb = mean, std, thumb
        self.collected = Collect(["features", "labels", "predicted", "index", "thumbs"])
        self.result: dict | None = None

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        if not self.usable(batch):
            return
        x = batch["image"]
        feats, logits = features(self.model, x)
        small = F.interpolate(
            denormalize(x.float(), self.mean, self.std), size=(self.thumb, self.thumb), antialias=True, mode="bilinear"
        )
        self.collected.update(
            features=feats.float(),
            labels=batch["label"].long(),
            predicted=logits.argmax(1),
            index=batch["index"].long(),
            thumbs=(small.clamp(0, 1) * 255).round().to(torch.uint8),
        )

    def on_predict_epoch_end(self) -> None:
        got = self.collected.compute()
        order = got["index"].argsort()
        self.result = {k: v[order].cpu() for k, v in got.items()}


def run(cfg, progress: bool = True) -> int:
    """Collect, reduce, draw and write `cfg.out` on rank 0; return the exit code (0)."""
    methods = list(cfg.methods)
    bad = [m for m in methods if m not in REDUCERS]
    if bad or not methods:
        raise ConfigError(f"unknown methods {bad or '[]'}; choose from {', '.join(REDUCERS)}")
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise ConfigError("embeddings need scikit-learn: pip install 'camlight[inspect]'") from None
    loaded, model, dm = split_pass(cfg, minimum=3, what="images to embed")
    try:
        last_linear(model)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    pre = loaded.preprocessing
    collect = FeatureCollect(model, pre.mean, pre.std, int(cfg.thumb))
    labels = label_map(dm.class_names, loaded.class_names)  # the data's labels as the model's classes
    with split_predict(cfg, collect, dm, labels, progress) as trainer:
        if trainer.is_global_zero:
            _finish(Path(cfg.out), cfg, collect.result, dm, loaded, methods)
    return 0


def _finish(out: Path, cfg, got: dict, dm, loaded, methods: list[str]) -> None:
    names = list(loaded.class_names)
    feats = got["features"].numpy()
    if len(feats) < 3:
        raise ConfigError(f"only {len(feats)} images of the {cfg.split} split could be read; 3 at least are needed")
    coords, seconds = {}, {}
    for m in methods:
        start = time.perf_counter()
        coords[m] = reduce(feats, m, seed=int(cfg.seed), perplexity=float(cfg.perplexity))
        seconds[m] = round(time.perf_counter() - start, 3)
        log.info("%s of %d images x %d features: %.1f s", m, len(feats), feats.shape[1], seconds[m])
    namer = image_namer(dm.dataset(cfg.split), cfg.split, dm.root)
    index, labels, predicted = got["index"].tolist(), got["labels"].tolist(), got["predicted"].tolist()
    rows = []
    for k, i in enumerate(index):
        row = {"index": i, "image": namer(i), "label": names[labels[k]], "predicted": names[predicted[k]]}
        for m in methods:
            row[f"{m}_x"], row[f"{m}_y"] = round(float(coords[m][k, 0]), 5), round(float(coords[m][k, 1]), 5)
        rows.append(row)
    with whole_folder(out) as partial:
        write_csv(partial / "embeddings.csv", rows)
        np.save(partial / "features.npy", feats)
        thumbs = got["thumbs"].float() / 255
        for m in methods:
            title = f"{loaded.name}: {m.upper()} of {len(feats)} {cfg.split} images' final-layer features"
            embedding_plot(coords[m], labels, names, partial / f"{m}.png", title)
            save_png(thumbnail_map(thumbs, coords[m], int(cfg.map_side)), partial / f"thumbnails_{m}.png")
        about = {"model": loaded.name, "split": cfg.split, "images": len(feats), "features": int(feats.shape[1])}
        (partial / "run.json").write_text(json.dumps({**about, "seconds": seconds}, indent=2) + "\n")
        if cfg.wandb.mode != "disabled":
            _to_wandb(partial, cfg, rows, feats, about)
    log.info("embeddings of %d images in %s", len(feats), out)


def _to_wandb(folder: Path, cfg, rows, feats: np.ndarray, about: dict) -> None:
    """A W&B table with an `embedding` column (the features), which W&B's projector reads."""
    import wandb

    with wandb_run(cfg, folder, "embeddings", about) as run:
        columns = ["image", "label", "predicted", "embedding"]
        data = [[r["image"], r["label"], r["predicted"], f.tolist()] for r, f in zip(rows, feats, strict=True)]
        run.log({"embeddings/table": wandb.Table(columns=columns, data=data)})
