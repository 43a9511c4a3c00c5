"""The Lightning side of `explain.py evaluate`: a LightningModule whose `predict_step` explains a
batch for its labelled classes and feeds the protocols, a per-rank writer of per-image rows, and a
progress bar in images per second.

`Trainer.predict` gives the scaling: `trainer.devices`, `strategy=ddp` and `num_nodes` split the
split across processes (Lightning's unrepeated distributed sampler: no image is scored twice), the
protocols' states are sums reduced across ranks when the epoch ends, and every rank streams its
rows to its own file, merged in image order by rank 0 afterwards. Nothing grows with the split.
"""

from __future__ import annotations

import csv
import heapq
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from torch import nn
from torchmetrics.aggregation import SumMetric

from camlight.explain import explain, untouched
from camlight.metrics.protocol_set import Protocols

ROW_FIELDS = ("index", "image", "label", "predicted", "label_probability", "method")


class Rows:
    """per_image rows of one rank, streamed to `<out>/per_image.rank<r>.csv`."""

    def __init__(self, path: Path, class_names, image_names):
        self.path, self.class_names, self.image_names = Path(path), class_names, image_names
        self._file, self._writer = None, None

    def add(self, index, labels, logits, values: dict[str, dict[str, torch.Tensor]]) -> None:
        """One row per image and method: its scores `values[method][name]` (B,)."""
        probs = logits.softmax(1)
        predicted = probs.argmax(1).tolist()
        label_prob = probs.gather(1, labels[:, None].long())[:, 0].tolist()
        columns = {m: {k: v.tolist() for k, v in scores.items()} for m, scores in values.items()}
        names = sorted({k for scores in values.values() for k in scores})
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow([*ROW_FIELDS, *names])
            self.names = names
        for i, (idx, label) in enumerate(zip(index.tolist(), labels.tolist(), strict=True)):
            common = [idx, self.image_names(idx), self.class_names[label], self.class_names[predicted[i]]]
            common.append(round(label_prob[i], 6))
            for method, scores in columns.items():
                cells = [_cell(scores[n][i]) if n in scores else "" for n in self.names]
                self._writer.writerow([*common, method, *cells])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._writer = None, None


def _cell(value: float) -> str | float:
    return "" if value != value else round(value, 6)  # NaN: no ground truth for this score


def merge_rows(parts: list[Path], out: Path) -> int:
    """Merge per-rank row files (each in image order) into `out` in image order; delete the parts;
    return the number of rows."""
    files = [p.open(newline="") for p in parts if p.is_file()]
    try:
        readers = [csv.reader(f) for f in files]
        headers = [next(r, None) for r in readers]
        header = next((h for h in headers if h), list(ROW_FIELDS))
        n = 0
        with out.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for row in heapq.merge(*readers, key=lambda r: int(r[0])):
                writer.writerow(row)
                n += 1
    finally:
        for f in files:
            f.close()
    for p in parts:
        p.unlink(missing_ok=True)
    return n


class SplitPass(pl.LightningModule):
    """The base of the modules whose predict loop passes `model` over a split: `forward` is the
    model's, and `usable(batch)` keeps the batch's unreadable files in `skipped` and says whether
    any image is left."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.skipped: list[tuple[str, str]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def usable(self, batch: dict) -> bool:
        self.skipped += batch.pop("skipped", [])
        return "image" in batch and len(batch["image"]) > 0  # else every file of the batch was unreadable


class Evaluation(SplitPass):
    """Explains each batch for its labels with `methods` and scores the maps in `protocols`.

    After `Trainer.predict`, `results` holds the reduced scores (`Protocols.results`), `images` the
    number of images scored on all ranks, and `skipped` the unusable files met on this rank.

    Args:
        model: the classifier (left unchanged: `camlight.explain` restores everything).
        methods: explanation methods.
        protocols: a `Protocols` for these methods.
        layer: the target layer for the CAM family (None: found).
        rows: a per-rank `Rows` writer, or None.
        calibrated: {method: τ per δ} frozen MaxBoxAccV2 thresholds, or None.
        rgb: (mean, std) of the input normalisation, to give the grabcut protocol the images'
            colours; None when it does not run.
    """

    def __init__(
        self, model: nn.Module, methods, protocols: Protocols, layer=None, rows=None, calibrated=None, rgb=None
    ):
        super().__init__(model)
        self.protocols, self.rgb = protocols, rgb
        self.methods, self.layer, self.rows, self.calibrated = list(methods), layer, rows, calibrated
        self.count = SumMetric()
        self.results: dict | None = None
        self.images = 0

    def predict_step(self, batch: dict, batch_idx: int) -> None:
        if not self.usable(batch):
            return
        x, labels = batch["image"], batch["label"]
        if self.rgb is not None:  # the colours GrabCut segments: the normalisation undone
            mean, std = (torch.tensor(v, device=x.device)[:, None, None] for v in self.rgb)
            batch["rgb"] = (x.float() * std + mean).clamp(0, 1)
        with untouched(self.model), torch.no_grad():  # eval mode, whatever mode it came in
            logits = self.model(x)
        maps = explain(self.model, x, self.methods, targets=labels, layer=self.layer) if self.methods else {}
        index = batch["index"]
        values = {m: self.protocols.update(m, maps[m], batch, logits, self.model, seeds=index) for m in self.methods}
        self.protocols.update_center(batch, logits)
        self.count.update(torch.tensor(float(len(x)), device=x.device))
        if self.rows is not None:
            self.rows.add(index.cpu(), labels.cpu(), logits.float().cpu(), {m: _cpu(v) for m, v in values.items()})

    def on_predict_epoch_end(self) -> None:
        if self.rows is not None:
            self.rows.close()  # before the collectives below: rank 0 merges the files after them
        self.results = self.protocols.results(self.calibrated)
        self.images = int(self.count.compute())
        self.skipped = _gather(self.skipped)


def _cpu(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu() for k, v in values.items()}


def _gather(items: list) -> list:
    """Every rank's list, concatenated (the list itself outside DDP)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return list(items)
    everyone = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, list(items))
    return sorted({tuple(x) for part in everyone for x in part})


class ImagesPerSecond(TQDMProgressBar):
    """Lightning's bar, with the images per second of all processes (this one's rate × their number)."""

    def on_predict_epoch_start(self, trainer, pl_module) -> None:
        super().on_predict_epoch_start(trainer, pl_module)
        self._start, self._seen = time.perf_counter(), 0

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._seen += len(batch.get("image", ()))  # a batch of only unreadable files has none
        rate = self._seen * trainer.world_size / max(time.perf_counter() - self._start, 1e-9)
        self.predict_progress_bar.set_postfix({"img/s": f"{rate:.1f}"}, refresh=False)
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
