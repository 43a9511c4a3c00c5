"""Everything a training run is built from, by its config: the checks run before any work, the
datamodule, the model, the explanation callback and the Lightning trainer."""

from __future__ import annotations

import logging
from pathlib import PurePath

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from camlight.callbacks import ExplanationCallback
from camlight.config import ConfigError, heads, num_workers
from camlight.datamodules import CamlightDataModule, DataError, from_config
from camlight.datamodules.transforms import IMAGENET_MEAN, IMAGENET_STD
from camlight.metrics.segmentation import check_available as check_grabcut
from camlight.modules import Classifier, WeightsUnavailable, check_architecture, weights_of
from camlight.modules.weights import multi_process_launch
from camlight.modules.zoo import check_backbone


def build_explanation_callback(cfg: DictConfig) -> ExplanationCallback | None:
    e = cfg.explain
    if not e.enabled:
        return None
    try:
        return ExplanationCallback(
            methods=list(e.methods),
            every_n_epochs=e.every_n_epochs,
            probe_size=e.probe_size,
            metrics=list(e.metrics),
            log_images=e.log_images,
            max_images=e.max_images,
            pair_probe=e.pair_probe,
            full_val_every_n_epochs=e.full_val_every_n_epochs,
            full_val_protocols=list(e.full_val_protocols),
            sanity_every_n_epochs=e.sanity_every_n_epochs,
        )
    except ValueError as err:
        raise ConfigError(f"explain: {err}") from None


def check(cfg: DictConfig) -> None:
    """Checks that need the model zoo: run before anything is written. Raises ConfigError."""
    check_name(cfg.name)
    build_explanation_callback(cfg)
    check_trainer(cfg)
    wants_grabcut = "grabcut_iou" in cfg.explain.metrics or (
        cfg.explain.full_val_every_n_epochs and "grabcut" in cfg.explain.full_val_protocols
    )
    if cfg.explain.enabled and wants_grabcut:
        try:
            check_grabcut()
        except ImportError as e:
            raise ConfigError(f"explain.metrics: {e}") from None
    try:
        check_backbone(cfg.model.backbone)
    except ValueError as e:
        raise ConfigError(f"model.backbone: {e}") from None
    for head in heads(cfg):
        try:
            check_architecture(cfg.model.backbone, head, cfg.data.image_size, cfg.model.width)
        except ValueError as e:
            raise ConfigError(str(e).replace("image_size", "data.image_size")) from None
    if cfg.model.pretrained is True and weights_of(cfg.model.backbone) is None:
        raise ConfigError(f"backbone {cfg.model.backbone} has no pretrained weights; set model.pretrained=false")


def check_trainer(cfg: DictConfig) -> None:
    """Lightning's own checks of the trainer section (accelerator, devices, strategy, precision),
    run by building a throwaway `pl.Trainer` before any data or model: ConfigError naming the key."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    quiet = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its device lines are printed by the real trainer
    try:
        build_trainer(cfg.trainer, logger=False, callbacks=[], default_root_dir=None)
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as e:
        message = " ".join(str(e).split())
        low = message.lower()
        key = next(
            (k for k, words in TRAINER_WORDS if any(w in low for w in words)),
            "accelerator",
        )
        value = cfg.trainer.get(key)
        raise ConfigError(f"trainer.{key}={value!r} does not work here: {message[:240]} (see --help)") from None
    finally:
        quiet.setLevel(level)


# Which trainer key a Lightning misconfiguration message is about (the first that matches).
TRAINER_WORDS = (
    ("precision", ("precision",)),
    ("strategy", ("strategy", "strategies")),
    ("devices", ("devices", "device ids")),
    ("num_nodes", ("num_nodes",)),
    ("accelerator", ("accelerator", "backend", "gpu", "cuda", "mps", "tpu")),
)


def check_name(name) -> None:
    """name= is one folder inside out_dir: a path ("../x", "a/b", "/abs") would write elsewhere."""
    if name is None:
        return
    path = PurePath(str(name))
    if str(name) != path.name or path.name in ("", ".", "..") or "\0" in str(name):
        raise ConfigError(
            f"name={name!r} must be one folder name inside out_dir (no '/', no '..'); use out_dir= to move it"
        )


def check_data(cfg: DictConfig, datamodule: CamlightDataModule) -> None:
    """Checks that need the data (photos indexed): run before anything is written. Raises ConfigError."""
    val = datamodule.split_size("val")
    if cfg.explain.enabled and cfg.explain.probe_size > val:
        where = f" under {datamodule.root}" if datamodule.root else ""
        raise ConfigError(
            f"explain.probe_size={cfg.explain.probe_size} is larger than the {val} validation images{where}; "
            "lower explain.probe_size"
        )


def resolve_pretrained(cfg: DictConfig) -> tuple[bool, str]:
    """model.pretrained as a bool, and a line saying what the run starts from.

    `true` and `auto` download missing weights into the cache (this process only: under a
    multi-process launch they must be there already). `true` without them raises ConfigError;
    `auto` then trains from scratch and says why.
    """
    backbone, wanted = cfg.model.backbone, cfg.model.pretrained
    weights = None if wanted is False else weights_of(backbone)
    if weights is None:
        note = "" if wanted is False else " (it has no pretrained weights)"
        return False, f"{backbone}: trained from scratch{note}"
    source = f"{backbone}: starting from ImageNet weights {weights.tag}"
    if weights.cached():
        return True, f"{source} ({weights.path})"
    if multi_process_launch():
        fetch = f"python -c \"from camlight.modules import weights_of; weights_of('{backbone}').state_dict()\""
        why = f"the {backbone} weights are not in the cache and this job runs several processes at once; download them first with one: {fetch}"
        if wanted is True:
            raise ConfigError(why)
        return False, f"{backbone}: trained from scratch ({why})"
    try:
        weights.state_dict()  # downloads into the cache, with a progress bar
    except WeightsUnavailable as e:
        if wanted is True:
            raise ConfigError(f"{e}; or set model.pretrained=auto or false") from None
        return False, f"{backbone}: trained from scratch ({e})"
    return True, f"{source} (downloaded from {weights.url})"


def data_preprocessing(cfg: DictConfig, pretrained: bool) -> dict:
    """How the data is normalised and evaluation images resized: the weights' own recipe when the run
    starts from pretrained weights, ImageNet's statistics for photos and zoo backbones, the
    dataset's own for the synthetic default."""
    weights = weights_of(cfg.model.backbone) if pretrained else None
    if weights is not None:
        pre = weights.preprocessing.scaled_to(cfg.data.image_size)
        return {
            "mean": pre.mean,
            "std": pre.std,
            "resize": cfg.data.resize or pre.resize,
            "interpolation": pre.interpolation,
        }
    if cfg.data.name != "synthetic" or cfg.model.backbone != "simple_cnn":
        return {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return {}


def _pin_memory(cfg: DictConfig) -> bool:
    if cfg.data.pin_memory != "auto":
        return bool(cfg.data.pin_memory)
    import torch

    accelerator = str(cfg.trainer.accelerator)
    return torch.cuda.is_available() and accelerator in ("auto", "gpu", "cuda")


def build_datamodule(cfg: DictConfig, pretrained: bool = False) -> CamlightDataModule:
    """The datamodule of `cfg.data`, prepared (rank zero: downloads where asked) and set up (photos
    are indexed here, their layout checked); normalised as `data_preprocessing` says.

    Raises:
        ConfigError: missing root, wrong layout, unreadable list or box files.
    """
    try:
        dm = from_config(
            cfg.data,
            pin_memory=_pin_memory(cfg),
            num_workers=num_workers(cfg.data.num_workers),
            **data_preprocessing(cfg, pretrained),
        )
        if rank_zero_only.rank == 0:
            dm.prepare_data()  # downloads only with data.download=true
        dm.setup()
    except (DataError, ValueError) as e:
        raise ConfigError(str(e)) from None
    return dm


def build_model(cfg: DictConfig, head: str, datamodule, pretrained: bool = False) -> Classifier:
    m, o = cfg.model, cfg.optim
    return Classifier(
        backbone=m.backbone,
        head=head,
        class_names=tuple(datamodule.class_names),
        image_size=cfg.data.image_size,
        mean=tuple(datamodule.mean),
        std=tuple(datamodule.std),
        width=m.width,
        fc_hidden=m.fc_hidden,
        dropout=m.dropout,
        pretrained=pretrained,
        eval_resize=datamodule.eval_resize,
        interpolation=datamodule.interpolation,
        lr=o.lr,
        weight_decay=o.weight_decay,
        schedule=o.schedule,
    )


# The `pl.Trainer` arguments camlight sets itself; every other one comes from the config's
# `trainer` section, whose keys are `pl.Trainer`'s own argument names.
SET_BY_CAMLIGHT = ("logger", "callbacks", "default_root_dir", "plugins")


def build_trainer(trainer_cfg: DictConfig, **camlight_args) -> pl.Trainer:
    """`pl.Trainer(**trainer_cfg, **camlight_args)`: the config's trainer section passed through
    whole, with the arguments of `SET_BY_CAMLIGHT` (and only those) added by camlight."""
    unexpected = set(camlight_args) - set(SET_BY_CAMLIGHT)
    if unexpected:
        raise TypeError(f"build_trainer sets only {', '.join(SET_BY_CAMLIGHT)}, not {', '.join(sorted(unexpected))}")
    return pl.Trainer(**OmegaConf.to_container(trainer_cfg, resolve=True), **camlight_args)
