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
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torchmetrics import Metric

from camlight.config import ConfigError
from camlight.evaluate.command import _datamodule, _leave_process_group, _loader, _trainer, image_namer
from camlight.inspect.embeddings import REDUCERS, features, last_linear, reduce, thumbnail_map
from camlight.offline.commands import check_out
from camlight.offline.inputs import load_model
from camlight.viz import denormalize, embedding_plot, save_png, write_csv

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


class FeatureCollect(pl.LightningModule):
    """`predict_step` keeps each image's features, label, prediction, index and a small uint8
    thumbnail; after the pass `result` holds them for the whole split, in image order."""

    def __init__(self, model: torch.nn.Module, mean, std, thumb: int):
        super().__init__()
        self.model, self.mean, self.std, self.thumb = model, mean, std, thumb
        self.collected = Collect(["features", "labels", "predicted", "index", "thumbs"])
        self.result: dict | None = None

    def forward(self, x):
        return self.model(x)

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        batch.pop("skipped", None)
        if "image" not in batch or not len(batch["image"]):
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
    out = Path(cfg.out)
    if rank_zero_only.rank == 0:
        check_out(out)
    loaded = load_model(cfg)
    model = loaded.model.eval()
    try:
        last_linear(model)
        import sklearn  # noqa: F401
    except (ValueError, ImportError) as e:
        msg = str(e) if isinstance(e, ValueError) else "embeddings need scikit-learn: pip install 'camlight[inspect]'"
        raise ConfigError(msg) from None
    dm = _datamodule(cfg, loaded)
    if dm.split_size(cfg.split) < 3:
        raise ConfigError(f"the {cfg.split} split of {dm.describe()} has fewer than 3 images to embed")
    pre = loaded.preprocessing
    trainer = _trainer(cfg, progress)
    in_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        collect = FeatureCollect(model, pre.mean, pre.std, int(cfg.thumb))
        trainer.predict(collect, _loader(dm, cfg.split, cfg, None), return_predictions=False)
        if trainer.is_global_zero:
            _finish(out, cfg, collect.result, dm, loaded, methods)
        return 0
    finally:
        if not in_group:
            _leave_process_group()


def _finish(out: Path, cfg, got: dict, dm, loaded, methods: list[str]) -> None:
    names = list(loaded.class_names)
    feats = got["features"].numpy()
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
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
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
        if out.exists():
            out.rmdir()
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("embeddings of %d images in %s", len(feats), out)


def _to_wandb(folder: Path, cfg, rows, feats: np.ndarray, about: dict) -> None:
    """A W&B table with an `embedding` column (the features), which W&B's projector reads."""
    import wandb

    run = wandb.init(
        project=cfg.wandb.project,
        entity=cfg.wandb.entity,
        mode=cfg.wandb.mode,
        dir=str(folder),
        job_type="embeddings",
        tags=list(cfg.wandb.tags),
        config=about,
    )
    try:
        columns = ["image", "label", "predicted", "embedding"]
        data = [[r["image"], r["label"], r["predicted"], f.tolist()] for r, f in zip(rows, feats, strict=True)]
        run.log({"embeddings/table": wandb.Table(columns=columns, data=data)})
    finally:
        run.finish()
