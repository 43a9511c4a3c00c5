"""ExplanationCallback: explain a fixed probe set after every validation epoch, score it, log it."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from camlight import metrics as M
from camlight.callbacks import probe_scores as P
from camlight.explain import check_methods, explain, supported, untouched
from camlight.metrics import GROUND_TRUTH_METRICS, METRICS, boxes_of, check_metrics, has_ground_truth
from camlight.metrics.protocol_set import Protocols
from camlight.metrics.protocols import CENTER, center_map, check_protocols
from camlight.viz import agreement_plot, denormalize, draw_contour, localization_plot, overlay, probe_grid, write_csv

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("saliency", "guided_backprop", "cam", "gradcam")
DEFAULT_METRICS = ("pointing_game", "energy_pointing_game", "box_accuracy", "max_box_acc_v2", "mask_iou")
FULL_VAL_PROTOCOLS = ("cam_loc", "wsol", "pointing")

Scores = dict[str, dict[str, float]]  # method → metric → value


def log_key(method: str, metric: str) -> str:
    """The logging key of a score: `explain/<method>/<metric>` (scalars, CSV columns, W&B)."""
    return f"explain/{method}/{metric}"


def flatten(scores: Scores) -> dict[str, float]:
    """{method: {metric: v}} → {"explain/<method>/<metric>": v}, for loggers and CSV files."""
    return {log_key(method, metric): v for method, d in scores.items() for metric, v in d.items()}


class ExplanationCallback(pl.Callback):
    """Explain a fixed probe set after every `every_n_epochs` validation epochs, score and log it.

    Logs scalars `explain/<method>/<metric>` through every logger, one image `explain/maps` (a row
    per probe image: input with ground-truth outline, then an overlay per method titled with class,
    prediction and hit/miss), a W&B table `explain/probe` when a `WandbLogger` is attached, and
    writes `explanations/epoch_NNN.png`, `explanations/metrics.csv` and, at fit end,
    `explanations/localization.png` under the trainer's `default_root_dir`. With `pair_probe`, the
    datamodule's cat-and-dog images score `explain/<method>/class_discrimination`: how often the
    map for each class is denser on that class's animal than on the other (0.5 is chance). With
    a shortcut mark in the data (SyntheticPets' `data.shortcut`), `explain/<method>/shortcut_energy`
    is the share of the maps' energy on the mark over the marked probe images of the mark's class. Every
    ground-truth metric is also scored for the centre baseline, a centred Gaussian that ignores the
    image (`explain/center_baseline/<metric>`), so that each number can be read against it.

    Maps explain the labelled class. Methods the model cannot support (CAM on an FC head) are
    dropped with one warning at fit start. The callback never changes training: `explain` restores
    the model and the RNG, and the probe set is drawn from the datamodule's own seeded generator.
    Under DDP each rank explains its share of the probe set, metrics are reduced across ranks,
    and only rank zero writes and logs images.

    Args:
        methods: `camlight.explain` registry keys.
        every_n_epochs: explain after epochs n−1, 2n−1, ... (and always after the last).
        probe_size: validation images in the probe set (`datamodule.probe_batch(n)`).
        metrics: names from `camlight.metrics.METRICS`.
        log_images: log and write the probe grid.
        max_images: rows in the grid (and the table).
        pair_probe: also score class discrimination on `datamodule.probe_batch(n, mode="pair")`.
        full_val_every_n_epochs: every n-th validation epoch (and the last), also score the whole
            validation split in `full_val_protocols` (`camlight.metrics.protocols`), on the batches
            the validation loop loads anyway, logged as `explain/full/<method>/<score>` beside the
            centre baseline's `explain/full/center_baseline/<score>`; 0 turns it off. Under DDP,
            Lightning's validation sampler pads the split to a multiple of the processes, so up to
            world_size − 1 images count twice (`explain.py evaluate` scores each exactly once).
        full_val_protocols: protocol names for the whole-split scores.
        sanity_every_n_epochs: every n-th validation epoch (and the last), also explain the probe
            set on a copy of the model with every block re-initialised (the last step of Adebayo
            et al.'s cascading randomization, the same random weights every time) and log the mean
            Spearman correlation with the trained model's maps as `explain/<method>/sanity_spearman`:
            near 1 for a method that does not depend on the weights; 0 turns it off.

    Example::

        trainer = pl.Trainer(callbacks=[ExplanationCallback(["gradcam", "cam"], probe_size=16)])
    """

    def __init__(
        self,
        methods: Sequence[str] = DEFAULT_METHODS,
        every_n_epochs: int = 1,
        probe_size: int = 32,
        metrics: Sequence[str] = DEFAULT_METRICS,
        log_images: bool = True,
        max_images: int = 16,
        pair_probe: bool = True,
        full_val_every_n_epochs: int = 0,
        full_val_protocols: Sequence[str] = FULL_VAL_PROTOCOLS,
        sanity_every_n_epochs: int = 0,
    ):
        super().__init__()
        self.full_val_protocols = check_protocols(full_val_protocols)
        self.methods = check_methods(methods)
        self.metric_names = check_metrics(metrics)
        if not self.metric_names:
            raise ValueError(f"no metric given; choose from {', '.join(METRICS)}")
        self.scored = list(self.metric_names)  # those the probe set has ground truth for (see prepare)
        for name, value, low in (
            ("every_n_epochs", every_n_epochs, 1),
            ("probe_size", probe_size, 1),
            ("max_images", max_images, 0),
            ("full_val_every_n_epochs", full_val_every_n_epochs, 0),
            ("sanity_every_n_epochs", sanity_every_n_epochs, 0),
        ):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.every_n_epochs, self.probe_size, self.max_images = every_n_epochs, probe_size, max_images
        self.log_images, self.pair_probe = log_images, pair_probe
        self.full_val_every_n_epochs = full_val_every_n_epochs
        self.sanity_every_n_epochs = sanity_every_n_epochs
        self.full: Protocols | None = None  # the whole-split scores of the running validation epoch
        self.probe: dict | None = None
        self.pair: dict | None = None
        self.history: list[tuple[int, Scores]] = []  # (epoch, scores) of every explained epoch
        self.last: Scores = {}
        self._done_epoch: int | None = None

    # -- setup -----------------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.prepare(trainer.datamodule, pl_module, trainer.global_rank, trainer.world_size)
        self.out_dir = Path(trainer.default_root_dir) / "explanations"
        self._world_size = trainer.world_size
        restored, self._restored = getattr(self, "_restored", None), None
        if restored is not None:  # resumed from a checkpoint: the epochs before it continue
            self.history = [(int(e), s) for e, s in restored["history"]]
            self.last, self._done_epoch = restored["last"], restored["done_epoch"]
            # The last maps and per-item values are one process's share of the probe set (the
            # checkpoint holds rank zero's): kept only when one process saved and one resumes;
            # otherwise the next epoch measures no drift, and the items start again.
            if restored.get("world_size", 1) == 1 and trainer.world_size == 1:
                self._previous, self.items = restored["previous"], restored["items"]

    def state_dict(self) -> dict:
        """What a resumed run needs to continue: every explained epoch's scores (metrics.csv, the
        localization plot and the report cover them all), the latest per-item values, and the last
        maps (the next epoch's drift is measured from them)."""
        return {
            "history": [[epoch, scores] for epoch, scores in self.history],
            "last": self.last,
            "items": getattr(self, "items", {}),
            "done_epoch": self._done_epoch,
            "previous": getattr(self, "_previous", {}),
            "world_size": getattr(self, "_world_size", 1),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._restored = state_dict  # applied in on_fit_start, after the probe set is prepared

    def prepare(self, datamodule, pl_module, rank: int = 0, world_size: int = 1) -> None:
        """Fix the probe set (this rank's share of it) and find the methods the model supports."""
        dm = datamodule
        if dm is None or not callable(getattr(dm, "probe_batch", None)):
            raise ValueError("ExplanationCallback needs a datamodule with probe_batch(n); pass datamodule= to fit")
        probe = dm.probe_batch(self.probe_size)
        probe["id"] = torch.arange(self.probe_size)
        if "grabcut_iou" in self.metric_names:  # GrabCut segments the colours the model saw
            probe["rgb"] = denormalize(probe["image"].float(), tuple(dm.mean), tuple(dm.std))
        # Decided on the whole probe set, so every rank agrees (and runs the same collectives).
        self.active = supported(
            pl_module, self._on(pl_module, probe["image"][:1]), self.methods, who="ExplanationCallback: "
        )
        self.probe = {k: v[rank::world_size] for k, v in probe.items()}  # each rank its share
        self.scored = list(self.metric_names)
        if "mask" not in probe or not probe["mask"].any():  # decided on the whole probe set, like `active`
            self.scored = [m for m in self.metric_names if m not in GROUND_TRUTH_METRICS]
            dropped = [m for m in self.metric_names if m in GROUND_TRUTH_METRICS]
            if dropped and rank == 0:
                warnings.warn(
                    f"ExplanationCallback: the probe set has no ground-truth masks or boxes, so {', '.join(dropped)} "
                    "cannot be scored; explanations are still logged (faithfulness metrics such as deletion_auc "
                    "need no ground truth)",
                    stacklevel=2,
                )
        self.pair = None
        if self.pair_probe and "pair" in getattr(dm, "probe_modes", ()):
            pair = dm.probe_batch(max(self.probe_size // 2, 1), mode="pair")
            pair["id"] = torch.arange(len(pair["image"]))
            self.pair = {k: v[rank::world_size] for k, v in pair.items()}
        elif self.pair_probe:  # photos hold one labelled class: nothing to warn about
            log.info(
                "ExplanationCallback: %s draws no cat-and-dog pairs; class_discrimination skipped", type(dm).__name__
            )
        self.mean, self.std = tuple(dm.mean), tuple(dm.std)
        self.shortcut_class = getattr(dm, "shortcut_class", None)  # a shortcut canary's class (SyntheticPets)
        self.class_names = list(getattr(dm, "class_names", None) or [])
        if not self.class_names:  # a datamodule that does not name its classes: number them
            with untouched(pl_module), torch.no_grad():
                classes = pl_module(self._on(pl_module, probe["image"][:1])).shape[1]
            self.class_names = [str(i) for i in range(classes)]
        self.history, self.last = [], {}
        self._done_epoch = None
        self._previous: dict[str, torch.Tensor] = {}  # the last explained epoch's probe maps (drift, agreement)
        self._items: dict = {}  # this epoch's per-item values: {score: {method: (item ids, values)}}
        self.items: dict = {}  # the latest per-item values of every score (written at fit end)

    @staticmethod
    def _on(pl_module, images: torch.Tensor) -> torch.Tensor:
        """Images on the module's device, in its dtype (half-precision models included)."""
        return images.to(device=pl_module.device, dtype=next(pl_module.parameters()).dtype)

    # -- every epoch -----------------------------------------------------------------------

    @staticmethod
    def _due(trainer: pl.Trainer, every: int) -> bool:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch == trainer.max_epochs - 1
        return every > 0 and ((epoch + 1) % every == 0 or last)

    # -- the whole validation split, batch by batch ----------------------------------------------

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.full = None
        if trainer.sanity_checking or self.probe is None or not self.active:
            return
        if self._done_epoch == trainer.current_epoch or not self._due(trainer, self.full_val_every_n_epochs):
            return
        self.full = Protocols(self.full_val_protocols, self.active, len(self.class_names)).to(pl_module.device)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self.full is None or "image" not in batch or len(batch["image"]) == 0:
            return
        images, labels = self._on(pl_module, batch["image"]), batch["label"]
        logits = outputs["logits"] if isinstance(outputs, dict) and "logits" in outputs else None
        if logits is None:  # a module whose validation_step does not hand its logits on
            with untouched(pl_module), torch.no_grad():
                logits = pl_module(images)
        maps = explain(pl_module, images, self.active, targets=labels)
        batch = {**batch, "image": images}  # in the model's dtype, for the protocols that re-run it
        if "grabcut" in self.full_val_protocols:  # the colours GrabCut segments
            batch["rgb"] = denormalize(images.float(), self.mean, self.std)
        for method in self.active:
            self.full.update(method, maps[method], batch, logits, pl_module, seeds=batch.get("index"))
        self.full.update_center(batch, logits)

    def _full_scores(self) -> Scores:
        """{"full/<method>": scores} of the whole split (every rank calls it: the reduction is collective)."""
        if self.full is None:
            return {}
        scores = self.full.results()["scores"]
        self.full = None
        keep = lambda k: not k.startswith(("best_threshold@", "max_box_acc@"))  # noqa: E731 - kept in results
        return {f"full/{m}": {k: v for k, v in s.items() if keep(k)} for m, s in scores.items()}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.probe is None or not self.active:
            return
        if self._done_epoch == trainer.current_epoch:  # several validations per epoch: explain once
            return
        scores = self._full_scores()
        batch, maps, items = None, {}, {}
        if self._due(trainer, self.every_n_epochs):
            probe, batch, maps = self.evaluate(pl_module)
            scores, items = {**probe, **scores}, self._items
        if batch is not None:  # every rank, also one whose share of the probe is empty
            previous, self._previous = self._previous, P.kept(maps, self.active)
            self._add(pl_module, scores, items, "drift", P.drift(previous, self._previous, self.active), batch["id"])
        if self._due(trainer, self.sanity_every_n_epochs):
            if batch is None:
                batch, maps = self._probe_maps(pl_module)
            sanity = P.sanity_spearman(pl_module, batch, maps, self.active)
            self._add(pl_module, scores, items, "sanity_spearman", sanity, batch["id"])
        if items:
            self.items = {**self.items, **items}  # the latest per-item values of every score
        if not scores:
            return
        self._done_epoch = trainer.current_epoch
        for key, value in flatten(scores).items():
            pl_module.log(key, value, sync_dist=False)  # already reduced across ranks
        self.history.append((trainer.current_epoch, scores))
        self.last = {**self.last, **scores}
        if trainer.is_global_zero:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._write_history()
            if self.log_images and maps:
                self._log_images(trainer, pl_module, batch, maps)

    @staticmethod
    def _add(pl_module, scores: Scores, items: dict, name: str, values: dict, ids: torch.Tensor) -> None:
        """Put the means of per-item `values` ({method: (N,)}) into `scores` and the values, with
        their item ids, into `items` (collective under DDP; nothing for an empty `values`)."""
        for method, value in P.means(pl_module, values).items():
            scores.setdefault(method, {})[name] = value
        if values:
            items[name] = {m: (ids.cpu(), v) for m, v in values.items()}

    def _probe_maps(self, pl_module) -> tuple[dict, dict]:
        """(this rank's probe batch on the module's device, {method: maps} of its labelled class)."""
        device = pl_module.device
        batch = {k: v.to(device) for k, v in self.probe.items()}
        batch["image"] = self._on(pl_module, batch["image"])
        maps = explain(pl_module, batch["image"], self.active, targets=batch["label"]) if len(batch["image"]) else {}
        return batch, maps

    def evaluate(self, pl_module) -> tuple[Scores, dict, dict]:
        """Explain and score the probe set: ({method: {metric: value}}, batch, maps).

        Every rank must call it (the metrics reduce across ranks)."""
        batch, maps = self._probe_maps(pl_module)
        scores = self._score(pl_module, batch, maps)
        self._items = items = self._per_image(pl_module, batch, maps)
        if self.pair is not None:
            pair = {k: v.to(pl_module.device) for k, v in self.pair.items()}
            pair["image"] = self._on(pl_module, pair["image"])
            classes = pair["class_masks"].shape[1]
            ids = (pair["id"][:, None] * classes + torch.arange(classes, device=pair["id"].device)).flatten()
            for name, values in P.class_discrimination(pl_module, pair, self.active).items():
                self._add(pl_module, scores, items, name, values, ids)
        if "shortcut_mask" in batch and self.shortcut_class is not None:
            marked = batch["shortcut_mask"].flatten(1).any(1) & (batch["label"] == self.shortcut_class)
            energy = P.shortcut_energy(batch, maps, self.active, self.shortcut_class)
            self._add(pl_module, scores, items, "shortcut_energy", energy, batch["id"][marked])
        return scores, batch, maps

    def _per_image(self, pl_module, batch: dict, maps: dict) -> dict:
        """{metric: {method: (ids, values)}}: each probe image's value of every ground-truth metric
        that has one (NaN without ground truth), the centre baseline's too."""
        out: dict = {}
        if not maps:
            return out
        valid = has_ground_truth(batch).cpu()
        n, (h, w) = len(batch["image"]), batch["image"].shape[-2:]
        every = {**maps, CENTER: center_map(h, w, device=batch["image"].device).expand(n, h, w)}
        for name in self.scored:
            spec = METRICS[name]
            if spec.per_image is None or not spec.ground_truth:
                continue
            for method, m in every.items():
                value = spec.per_image(m, batch, pl_module, batch["label"]).detach().double().cpu()
                value[~valid] = float("nan")
                out.setdefault(name, {})[method] = (batch["id"].cpu(), value)
        return out

    def _score(self, pl_module, batch: dict, maps: dict) -> Scores:
        """{method: {metric: value}} of the probe maps, and the centre baseline's ground-truth
        scores beside them: a centred Gaussian that ignores the image, scored the same way."""
        scores: Scores = {
            method: self._score_maps(pl_module, batch, maps.get(method), self.scored) for method in self.active
        }
        grounded = [name for name in self.scored if name in GROUND_TRUTH_METRICS]
        if grounded:
            n, (h, w) = len(batch["image"]), batch["image"].shape[-2:]
            center = center_map(h, w, device=batch["image"].device).expand(n, h, w) if n else None
            scores[CENTER] = self._score_maps(pl_module, batch, center, grounded)
        return scores

    def _score_maps(self, pl_module, batch: dict, maps, names) -> dict[str, float]:
        out = {}
        for name in names:
            spec = METRICS[name]
            metric = spec.build(len(self.class_names)).to(pl_module.device)
            if maps is not None:
                spec.update(metric, maps, batch, pl_module, batch["label"])
            value = metric.compute()  # every rank calls it: the reduction is collective
            if isinstance(value, dict):  # the pointing game: overall and mean over classes
                out[name] = value["accuracy"]
                out[f"{name}_class_mean"] = value["mean_class_accuracy"]
            else:
                out[name] = value
        return out

    # -- images ----------------------------------------------------------------------------

    def _log_images(self, trainer, pl_module, batch, maps) -> None:
        n = min(self.max_images, len(batch["image"]))
        if n == 0:
            return
        with torch.no_grad():
            probs = pl_module(batch["image"][:n]).softmax(1)
        conf, pred = probs.max(1)
        images = denormalize(batch["image"][:n].float(), self.mean, self.std)
        inputs = draw_contour(images, batch["mask"][:n])
        overlays = {m: overlay(images, maps[m][:n]) for m in maps}
        hits = {m: M.pointing_game(maps[m][:n], batch["mask"][:n]) for m in maps}
        name = lambda i: self.class_names[int(i)]  # noqa: E731
        row_titles = [f"{name(batch['label'][i])}, pred {name(pred[i])} {conf[i]:.2f}" for i in range(n)]
        has_gt = batch["mask"][:n].flatten(1).any(1).tolist()
        cell_titles = {
            m: [
                ("hit" if h else "miss", bool(h)) if g else ("", None)
                for h, g in zip(hits[m].tolist(), has_gt, strict=True)
            ]
            for m in maps
        }
        grid = probe_grid(inputs, overlays, row_titles, cell_titles)
        epoch = trainer.current_epoch
        path = self.out_dir / f"epoch_{epoch:03d}.png"
        grid.save(path, compress_level=1)  # fast; a little larger
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # W&B takes the PNG as written (no second encoding)
                logger.log_image("explain/maps", [str(path)], step=trainer.global_step, caption=[f"epoch {epoch}"])
                self._log_table(logger, trainer, batch, n, pred, conf, overlays, hits, maps)

    def _log_table(self, logger, trainer, batch, n, pred, conf, overlays, hits, maps) -> None:
        import wandb

        from camlight.viz.grid import to_pil

        methods = list(overlays)
        epg = {m: M.energy_pointing_game(maps[m][:n], boxes_of(batch)[:n]) for m in methods}
        columns = ["epoch", "image_id", "label", "prediction", "probability"]
        columns += [c for m in methods for c in (m, f"{m}/pointing_game", f"{m}/energy_pointing_game")]
        data = []
        # Each overlay is encoded once, quickly, to a file that W&B copies when the table is logged.
        with tempfile.TemporaryDirectory(dir=self.out_dir) as tmp:
            for i in range(n):
                row = [
                    trainer.current_epoch,
                    int(batch["id"][i]),
                    self.class_names[int(batch["label"][i])],
                    self.class_names[int(pred[i])],
                    float(conf[i]),
                ]
                for m in methods:
                    png = Path(tmp) / f"{m}_{i}.png"
                    to_pil(overlays[m][i], 128).save(png, compress_level=1)
                    row += [wandb.Image(str(png)), bool(hits[m][i]), float(epg[m][i])]
                data.append(row)
            logger.log_table("explain/probe", columns=columns, data=data, step=trainer.global_step)

    def _gathered(self, trainer) -> dict:
        """The latest per-item values of every rank, joined (rank zero's result; a collective)."""
        if trainer.world_size <= 1:
            return self.items
        import torch.distributed as dist

        parts = [None] * trainer.world_size
        dist.all_gather_object(parts, self.items)
        out: dict = {}
        for part in parts:
            for score, per in (part or {}).items():
                for method, (ids, values) in per.items():
                    have = out.setdefault(score, {}).get(method)
                    out[score][method] = (
                        (ids, values)
                        if have is None
                        else (
                            torch.cat([have[0], ids]),
                            torch.cat([have[1], values]),
                        )
                    )
        return out

    def _write_history(self) -> None:
        """`explanations/metrics.csv`: a row per explained epoch, a column per logging key."""
        rows = [{"epoch": epoch, **flatten(scores)} for epoch, scores in self.history]
        columns = ["epoch", *sorted({k for row in rows for k in row if k != "epoch"})]
        write_csv(self.out_dir / "metrics.csv", rows, columns)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        agreement = P.agreement(pl_module, self._previous, self.active) if self._previous else {}  # every rank
        items = self._gathered(trainer)  # every rank
        if trainer.is_global_zero and items:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            rows = [
                {"score": score, "method": method, "item": int(i), "value": float(v)}
                for score, per in items.items()
                for method, (ids, values) in per.items()
                for i, v in zip(ids.tolist(), values.tolist(), strict=True)
            ]
            write_csv(self.out_dir / "probe_scores.csv", rows, ["score", "method", "item", "value"])
        if trainer.is_global_zero and self.history:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            localization_plot(self.history, self.out_dir / "localization.png")
        if trainer.is_global_zero and len(agreement) > 1:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            methods = list(agreement)
            rows = [{"method": a, **{b: agreement[a][b] for b in methods}} for a in methods]
            write_csv(self.out_dir / "agreement.csv", rows, ["method", *methods])
            agreement_plot(agreement, self.out_dir / "agreement.png")
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    from PIL import Image

                    logger.log_image("explain/agreement", [Image.open(self.out_dir / "agreement.png")])
                    data = [[a, *(agreement[a][b] for b in methods)] for a in methods]
                    logger.log_table("explain/agreement_table", columns=["method", *methods], data=data)
