"""`explain.py evaluate`: load the model and the split, run the protocols through `Trainer.predict`
(with a calibration pass first when `calibrate_on=` is set), and write the results on rank 0."""

from __future__ import annotations

import itertools
import logging
import warnings
from contextlib import contextmanager
from dataclasses import field, make_dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader, Dataset

from camlight.config import ConfigError, DataConfig, num_workers, validate
from camlight.config.checks import check_data
from camlight.datamodules import DataError, Skipped, from_config
from camlight.evaluate.loop import Evaluation, ImagesPerSecond, Rows, merge_rows
from camlight.evaluate.outputs import write_results
from camlight.explain import REGISTRY, check_methods, drop_unsupported, target_layer, unsupported
from camlight.metrics.protocol_set import Protocols
from camlight.metrics.protocols import GROUND_TRUTH_PROTOCOLS, Options, check_protocols
from camlight.metrics.segmentation import check_available as check_grabcut
from camlight.offline.commands import check_out
from camlight.offline.inputs import load_model

log = logging.getLogger(__name__)


def options(cfg) -> Options:
    """The protocols' `Options` from an evaluate config."""
    return Options(
        cam_threshold=float(cfg.cam_threshold),
        topk=tuple(int(k) for k in cfg.topk),
        wsol_ious=tuple(float(d) for d in cfg.wsol_ious),
        threshold_step=float(cfg.threshold_step),
        tolerance=cfg.tolerance,
        causal_steps=int(cfg.causal_steps),
        aopc_region=int(cfg.aopc_region),
        aopc_steps=int(cfg.aopc_steps),
        compat=dict(cfg.compat),
    )


def data_config(cfg, run_config, image_size: int):
    """The data section: train.py's defaults ← the checkpoint's own ← `data.*` of the command line."""
    sources = [OmegaConf.structured(DataConfig)]
    if run_config and "data" in run_config:
        sources.append(OmegaConf.create(dict(run_config["data"])))
    elif not cfg.data.get("name"):
        raise ConfigError("this model carries no data config: give data.name= (and data.root=) to evaluate on")
    sources.append(OmegaConf.create(OmegaConf.to_container(cfg.data)))
    try:
        data = OmegaConf.merge(*sources)
    except Exception as e:  # an unknown data.* key
        keys = ", ".join(f.name for f in DataConfig.__dataclass_fields__.values())
        raise ConfigError(f"{str(e).splitlines()[0]}; data keys: {keys}") from None
    data.image_size, data.batch_size, data.cache = image_size, int(cfg.batch_size), False
    data.num_workers = cfg.num_workers
    validate(OmegaConf.create({"data": data}), _DataOnly)
    check_data(data)
    return data


# A schema holding only `data`, to check its choices and bounds with `validate`.
_DataOnly = make_dataclass("DataOnly", [("data", DataConfig, field(default_factory=DataConfig))])


class Indexed(Dataset):
    """A split's dataset whose samples carry their `index` (photos do; drawn data gets it here) and
    their label as the model's class index (`label_map[data label]`, when the two differ)."""

    def __init__(self, dataset, label_map: list[int] | None = None):
        self.dataset, self.label_map = dataset, label_map

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        item = self.dataset[i]
        if isinstance(item, Skipped):
            return item
        if "index" not in item:
            item["index"] = torch.tensor(i)
        if self.label_map is not None:
            item["label"] = torch.tensor(self.label_map[int(item["label"])])
        return item


def label_map(data_names, model_names) -> list[int] | None:
    """The model's class index of each of the data's classes, matched by name (case aside): None
    when they are the same classes in the same order. A subset works (Imagenette's 10 classes on an
    ImageNet model); a class the model does not know is a ConfigError."""
    data_names, model_names = list(data_names), list(model_names)
    if data_names == model_names:
        return None
    index = {str(n).lower(): i for i, n in enumerate(model_names)}
    missing = [n for n in data_names if str(n).lower() not in index]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise ConfigError(
            f"the data's classes {shown} are not among the model's {len(model_names)} classes; evaluate a model "
            "on data labelled with its own classes (matched by name)"
        )
    return [index[str(n).lower()] for n in data_names]


def image_namer(dataset, split: str, root=None):
    """index → the image's name in per_image.csv: its file path under the data root, or split_NNNNN."""
    records = getattr(dataset, "records", None)
    if records is None:
        return lambda i: f"{split}_{i:05d}"

    def name(i: int) -> str:
        path = Path(records[i].path)
        try:
            return str(path.relative_to(root)) if root else str(path)
        except ValueError:
            return str(path)

    return name


HALF_WEIGHTS = ("16-true", "bf16-true", "transformer-engine", "transformer-engine-float16")


def run(cfg, progress: bool = True) -> int:
    """Evaluate, write `cfg.out` (on rank 0), return the exit code (0; 3 when files were skipped).

    Raises:
        ConfigError: a usage mistake, before anything is written.
    """
    protocols, methods = _check(cfg)
    out = Path(cfg.out)
    rank0 = rank_zero_only.rank == 0
    if rank0:
        check_out(out)
    loaded = load_model(cfg)
    model, names = loaded.model, loaded.class_names
    dm = _datamodule(cfg, loaded)
    labels = label_map(dm.class_names, names)
    splits = [s for s in (cfg.calibrate_on, cfg.split) if s]
    for split in splits:
        if dm.split_size(split) == 0:
            raise ConfigError(f"the {split} split of {dm.describe()} is empty")
    protocols = _with_ground_truth(dm, cfg.split, protocols)
    methods, layer, layer_used = _supported(model, dm, cfg.split, methods, cfg.get("layer"))
    opts = options(cfg)
    trainer = _trainer(cfg, progress)
    limit = cfg.trainer.limit_predict_batches
    if isinstance(limit, float) and limit < 1.0 and trainer.world_size > 1:
        raise ConfigError(
            "trainer.limit_predict_batches as a fraction applies to each process's share and can leave one "
            "without batches; give a whole number of batches"
        )
    for split in splits:  # a process without batches would never join the reduction
        if dm.split_size(split) < trainer.world_size:
            raise ConfigError(
                f"the {split} split has {dm.split_size(split)} images for {trainer.world_size} processes; "
                "every process needs at least one"
            )
    data_classes = sorted(set(labels)) if labels else None  # the classes TorchRay's class mean runs over
    in_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    created = rank0 and not out.exists()
    try:
        calibrated, calibration = None, None
        if cfg.calibrate_on:
            calib_protocols = Protocols(["wsol"], methods, len(names), opts, cfg.center_baseline, data_classes)
            calib = Evaluation(model, methods, calib_protocols, layer)
            trainer.predict(calib, _loader(dm, cfg.calibrate_on, cfg, labels), return_predictions=False)
            calibrated, calibration = calib.results["thresholds"], calib.results["scores"]
        if rank0:
            out.mkdir(parents=True, exist_ok=True)
        namer = image_namer(dm.dataset(cfg.split), cfg.split, dm.root)
        rows = Rows(out / f"per_image.rank{trainer.global_rank}.csv", names, namer)
        scoring = Protocols(protocols, methods, len(names), opts, cfg.center_baseline, data_classes)
        rgb = (loaded.preprocessing.mean, loaded.preprocessing.std) if "grabcut" in protocols else None
        evaluation = Evaluation(model, methods, scoring, layer, rows, calibrated, rgb)
        trainer.predict(evaluation, _loader(dm, cfg.split, cfg, labels), return_predictions=False)
        if not trainer.is_global_zero:
            return 0
        merge_rows(sorted(out.glob("per_image.rank*.csv")), out / "per_image.csv")
        skipped = sorted(set(evaluation.skipped) | set(dm.bad_files().items()))
        about = {
            "model": loaded.name,
            "checkpoint": cfg.checkpoint,
            "data": dm.describe(),
            "split": cfg.split,
            "images": evaluation.images,
            "skipped": len(skipped),
            "methods": methods,
            "protocols": protocols,
            "target_layer": layer_used,
            "calibrate_on": cfg.calibrate_on,
            "calibrated_thresholds": calibrated,
            "calibration_scores": calibration,
            "world_size": trainer.world_size,
        }
        write_results(out, cfg, evaluation.results, names, about, skipped)
        return 3 if skipped else 0
    except BaseException:
        _remove_partial(out, trainer.global_rank, created)
        raise
    finally:
        if not in_group:
            _leave_process_group()


def split_pass(cfg, minimum: int = 1, what: str = "images"):
    """(the loaded model, the model in eval mode, the datamodule) of a command that passes over a
    whole split (`split=`): `out=` checked on rank 0, the split holding at least `minimum` images."""
    if rank_zero_only.rank == 0:
        check_out(Path(cfg.out))
    loaded = load_model(cfg)
    dm = _datamodule(cfg, loaded)
    size = dm.split_size(cfg.split)
    if size < minimum:
        raise ConfigError(f"the {cfg.split} split of {dm.describe()} has {size} {what}; {minimum} at least are needed")
    return loaded, loaded.model.eval(), dm


@contextmanager
def split_predict(cfg, module: pl.LightningModule, dm, labels=None, progress: bool = True):
    """Run `module`'s predict loop over `cfg.split` (one process, or each its share under DDP) and
    yield the trainer (rank 0 writes while the others wait); a process group this run started is
    closed after."""
    if str(cfg.trainer.precision) in HALF_WEIGHTS:
        raise ConfigError(
            f"trainer.precision={cfg.trainer.precision} turns the weights to half precision; use 16-mixed or "
            "bf16-mixed (autocast) or 32-true"
        )
    trainer = _trainer(cfg, progress)
    limit = cfg.trainer.limit_predict_batches
    if isinstance(limit, float) and limit < 1.0 and trainer.world_size > 1:
        raise ConfigError(
            "trainer.limit_predict_batches as a fraction can leave a process without batches; give a count"
        )
    if dm.split_size(cfg.split) < trainer.world_size:  # a process without batches would never join the reduction
        raise ConfigError(
            f"the {cfg.split} split has {dm.split_size(cfg.split)} images for {trainer.world_size} processes; "
            "every process needs at least one"
        )
    in_group = torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        trainer.predict(module, _loader(dm, cfg.split, cfg, labels), return_predictions=False)
        yield trainer
    finally:
        if not in_group:
            _leave_process_group()


def _check(cfg) -> tuple[list[str], list[str]]:
    """Mistakes the config alone shows: (protocols, methods), or ConfigError."""
    try:
        methods = check_methods(list(cfg.methods))
        protocols = check_protocols(list(cfg.protocols), dict(cfg.compat))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if "grabcut" in protocols:
        try:
            check_grabcut()
        except ImportError as e:
            raise ConfigError(str(e)) from None
    if not methods or not protocols:
        raise ConfigError(f"{'methods' if not methods else 'protocols'}= is empty; give at least one")
    if cfg.calibrate_on and "wsol" not in protocols:
        raise ConfigError("calibrate_on= chooses MaxBoxAccV2's thresholds: add wsol to protocols=")
    if cfg.calibrate_on == cfg.split:
        raise ConfigError(f"calibrate_on={cfg.calibrate_on} is the split being scored; choose a held-out split")
    if str(cfg.trainer.precision) in HALF_WEIGHTS:
        raise ConfigError(
            f"trainer.precision={cfg.trainer.precision} turns the weights to half precision, which the maps' "
            "gradients and thresholds do not survive; use 16-mixed or bf16-mixed (autocast) or 32-true"
        )
    return protocols, methods


def _datamodule(cfg, loaded):
    """The datamodule of the data config, set up; ConfigError when it cannot be loaded."""
    pre = loaded.preprocessing
    data = data_config(cfg, loaded.config, pre.image_size)
    try:
        dm = from_config(
            data,
            pre.mean,
            pre.std,
            num_workers=num_workers(data.num_workers),
            resize=pre.resize,
            interpolation=pre.interpolation,
        )
        dm.setup()
    except (DataError, ValueError) as e:
        raise ConfigError(f"cannot load the data: {e}") from None
    return dm


def _with_ground_truth(dm, split: str, protocols: list[str]) -> list[str]:
    """The protocols the split can score: ConfigError when none can (no box and no mask in its
    first images), a warning when only those without ground truth (causal, aopc) remain."""
    firsts = list(itertools.islice((s for _, s in dm.samples(split)), 16))
    has = any(s["mask"].any() or s.get("boxes", torch.zeros(0, 4)).numel() for s in firsts if "mask" in s)
    needing = [p for p in protocols if p in GROUND_TRUTH_PROTOCOLS]
    if has or not needing:
        return protocols
    rest = [p for p in protocols if p not in GROUND_TRUTH_PROTOCOLS]
    reason = f"the {split} split of {dm.describe()} has no ground-truth boxes or masks"
    if not rest:
        raise ConfigError(f"{reason}, which {', '.join(needing)} need; use data with boxes, or protocols=[causal,aopc]")
    log.warning("%s: scoring %s only (%s need ground truth)", reason, ", ".join(rest), ", ".join(needing))
    return rest


def _remove_partial(out: Path, rank: int, created: bool) -> None:
    """After a failure: this rank's part of per_image, and on rank 0 what it wrote (and `out/`
    itself when this run created it and it is left empty)."""
    Path(out, f"per_image.rank{rank}.csv").unlink(missing_ok=True)
    if rank != 0 or not out.is_dir():
        return
    for name in ("per_image.csv", "per_class.csv", "results.json", "index.html", "skipped.txt"):
        Path(out, name).unlink(missing_ok=True)
    if created and not any(out.iterdir()):
        out.rmdir()


def _leave_process_group() -> None:
    """Under DDP started by this run: wait until rank 0 has written, then close the process group
    (a gloo group left open aborts the interpreter at exit)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _supported(model, dm, split, methods, layer):
    """(methods this model supports, the others dropped with a warning; the `layer=` to pass on; the
    target layer found, described, for the report)."""
    first = next((s for _, s in dm.samples(split)), None)
    if first is None:
        raise ConfigError(f"no usable image in the {split} split")
    x = first["image"][None]
    try:
        reasons = unsupported(model, x, methods, layer)
        if len(reasons) == len(methods):
            raise ConfigError(f"this model supports none of the methods asked for: {'; '.join(reasons.values())}")
        methods = drop_unsupported(methods, reasons)
        needs_layer = any(REGISTRY[m].needs & {"layer", "layer_grad"} for m in methods)
        used = target_layer(model, x, layer) if needs_layer else None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if used:
        log.info("target layer: %s", used)
    return methods, layer, used


def _loader(dm, split: str, cfg, labels: list[int] | None) -> DataLoader:
    workers = num_workers(cfg.num_workers)
    return DataLoader(
        Indexed(dm.dataset(split), labels),
        batch_size=int(cfg.batch_size),
        shuffle=False,
        num_workers=workers,
        persistent_workers=False,
        collate_fn=dm.collate_fn,
    )


def _quiet() -> None:
    """Lightning's notices that say nothing to someone evaluating (a predict loop returning None
    is what this loop does; accelerator lines and tips)."""
    warnings.filterwarnings("ignore", message=".*predict returned None.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _trainer(cfg, progress: bool) -> pl.Trainer:
    """Lightning's Trainer for the predict loop; ConfigError for settings it refuses (an unknown
    accelerator, devices or precision, a GPU asked for where there is none)."""
    _quiet()
    t = cfg.trainer
    bar = [ImagesPerSecond()] if progress and t.enable_progress_bar else []
    try:
        return _lightning_trainer(t, bar)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as e:
        raise ConfigError(f"trainer: {str(e).strip().splitlines()[0]}") from None


def _lightning_trainer(t, bar) -> pl.Trainer:
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=t.precision,
        limit_predict_batches=t.limit_predict_batches,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=bool(bar),
        callbacks=bar,
        inference_mode=False,
        use_distributed_sampler=True,
    )
