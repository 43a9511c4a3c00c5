"""`train.py`'s configuration schemas: a dataclass per section, every field with its help text.

A field's metadata carries its help, its valid choices and its lower bound, which `--help` prints
and `validate` checks. `explain.py`'s commands have theirs in `camlight.config.commands`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, help: str, choices: tuple | None = None, minimum: float | None = None):
    """A schema field with its help text and, optionally, its valid choices or lower bound."""
    meta = {"help": help, "choices": choices, "minimum": minimum}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    name: str = _f(
        "synthetic",
        "dataset: synthetic (embedded), oxford_pets (Oxford-IIIT Pet), image_folder (root/{train,val}/<class>/), "
        "cub (CUB-200-2011)",
        choices=("synthetic", "oxford_pets", "image_folder", "cub"),
    )
    root: str | None = _f(
        None,
        "dataset folder (oxford_pets: holds oxford-iiit-pet/; image_folder: holds train/; "
        "cub: holds CUB_200_2011/, or is it)",
    )
    download: bool = _f(False, "oxford_pets: download with torchvision when missing (needs network)")
    target: str = _f(
        "binary", "oxford_pets: binary (cat vs dog, species column) or breed (37)", choices=("binary", "breed")
    )
    classes: list = _f([], "image_folder: class subset by folder name, wnid or readable name ([] = all)")
    boxes: str = _f(
        "auto",
        "image_folder ground truth: loc (LOC_*_solution.csv), xml, auto or none; oxford_pets: auto (the pet's "
        "box) or xml (the head boxes)",
        choices=("auto", "loc", "xml", "none"),
    )
    box_dir: str | None = _f(None, "image_folder: where LOC csv or XML box files are (null = root)")
    val_fraction: float = _f(
        0.1,
        "photos: share of the training images (Oxford: trainval.txt) held out for validation when there is no val/ folder",
    )
    image_size: int = _f(64, "side of the square input images in pixels", minimum=32)
    resize: int | None = _f(
        None, "photos: evaluation resize of the shorter side before the centre crop (null = 8/7 of image_size)"
    )
    train_scale: list = _f([0.35, 1.0], "photos: area range of the training random resized crop")
    train_size: int = _f(4000, "training samples (synthetic)", minimum=1)
    val_size: int = _f(1000, "validation samples (synthetic)", minimum=1)
    test_size: int = _f(1000, "test samples (synthetic)", minimum=0)
    batch_size: int = _f(64, "samples per batch", minimum=1)
    num_workers: Any = _f(0, "DataLoader worker processes: a count (0 = main process) or auto (CPU cores, at most 8)")
    pin_memory: Any = _f("auto", "DataLoader pinned memory: true, false or auto (on when training on a GPU)")
    seed: int = _f(0, "dataset seed: fixes every synthetic image and the held-out validation split of photos")
    cache: bool = _f(True, "keep drawn synthetic images in memory after the first epoch")
    layout: str = _f(
        "default",
        "synthetic: default, or small (animals of face radius 0.08-0.11 of the side, off the image centre, so that "
        "a map ignoring the image scores low)",
    )
    shortcut: bool = _f(
        False,
        "synthetic: a shortcut canary, a magenta square in the top-left corner on a share of the training dogs "
        "(data.shortcut_correlation) and on half of the validation images whatever their class",
    )
    shortcut_correlation: float = _f(1.0, "synthetic: the share of training dogs that carry the shortcut mark (0-1)")
    random_labels: bool = _f(
        False,
        "train on the training labels permuted once (seeded by data.seed): the reference network of the data "
        "randomization test (explain.py sanity reference=); validation keeps the true labels",
    )


@dataclass
class ModelConfig:
    backbone: str = _f(
        "simple_cnn", "feature extractor: a built-in, a torchvision classification model, or timm:<name>"
    )
    head: str = _f(
        "both", "classifier head; 'both' trains a GAP and an FC model in one group", choices=("gap", "fc", "both")
    )
    width: int = _f(32, "base channel count of simple_cnn (blocks have w, 2w, 4w, 4w)", minimum=1)
    fc_hidden: int = _f(256, "hidden units of the fc head", minimum=1)
    dropout: float = _f(0.5, "dropout rate of the fc head", minimum=0.0)
    pretrained: Any = _f(
        False,
        "start from the backbone's ImageNet weights (torchvision's or timm's, downloaded into their cache when "
        "missing; their preprocessing is used): true, false, or auto (when they can be had, else from scratch)",
    )


@dataclass
class OptimConfig:
    lr: float = _f(3e-3, "peak learning rate (AdamW)", minimum=0.0)
    weight_decay: float = _f(1e-4, "AdamW weight decay", minimum=0.0)
    schedule: str = _f("onecycle", "learning-rate schedule", choices=("onecycle", "constant"))


@dataclass
class TrainerConfig:
    max_epochs: int = _f(6, "training epochs", minimum=1)
    accelerator: str = _f("auto", "Lightning accelerator: auto, cpu, gpu, mps, ...")
    devices: Any = _f("auto", "Lightning devices: auto, a count, or a list of ids")
    strategy: str = _f("auto", "Lightning strategy: auto, ddp, ...")
    num_nodes: int = _f(1, "nodes for multi-node training", minimum=1)
    precision: str = _f("32-true", "Lightning precision: 32-true, 16-mixed, bf16-mixed, ...")
    deterministic: bool = _f(True, "deterministic algorithms (bit-for-bit repeatable runs)")
    limit_train_batches: Any = _f(1.0, "training batches per epoch: a fraction (float <= 1.0) or a count (int)")
    limit_val_batches: Any = _f(1.0, "validation batches per epoch: a fraction (float <= 1.0) or a count (int)")
    log_every_n_steps: int = _f(10, "how often training steps are logged", minimum=1)
    enable_progress_bar: bool = _f(True, "Lightning's progress bar")


@dataclass
class WandbConfig:
    mode: str | None = _f(
        None,
        "offline writes runs to disk (upload later with `wandb sync`); online needs an account; null = "
        "WANDB_MODE from the environment, else offline. W&B that cannot start never stops training: online "
        "falls back to offline, offline to the CSV log",
        choices=(None, "offline", "online", "disabled"),
    )
    project: str | None = _f(None, "W&B project (null = WANDB_PROJECT from the environment, else camlight)")
    entity: str | None = _f(None, "W&B entity (team or user); null = WANDB_ENTITY, else your default")
    tags: list = _f([], "W&B tags")
    init_timeout: float = _f(
        30.0,
        "seconds W&B may take to start a run before camlight falls back (W&B's own default, 90 s, "
        "loses about 100 s without network)",
        minimum=1,
    )


@dataclass
class ExplainConfig:
    enabled: bool = _f(True, "explain the probe set during training (ExplanationCallback)")
    methods: list = _f(["saliency", "guided_backprop", "cam", "gradcam"], "explanation methods (camlight.explain keys)")
    metrics: list = _f(
        ["pointing_game", "energy_pointing_game", "box_accuracy", "max_box_acc_v2", "mask_iou"], "scores of the maps"
    )
    every_n_epochs: int = _f(1, "explain after every n-th validation epoch (and the last)", minimum=1)
    probe_size: int = _f(32, "validation images in the fixed probe set", minimum=1)
    pair_probe: bool = _f(True, "score class discrimination on cat-and-dog images")
    log_images: bool = _f(True, "log and write the probe grid every time")
    max_images: int = _f(16, "rows of the probe grid", minimum=0)
    full_val_every_n_epochs: int = _f(
        0,
        "every n-th epoch (and the last) also score the whole validation split in full_val_protocols, "
        "logged as explain/full/<method>/<score> (0 = off)",
        minimum=0,
    )
    full_val_protocols: list = _f(["cam_loc", "wsol", "pointing"], "protocols of the whole-split scores")
    sanity_every_n_epochs: int = _f(
        0,
        "every n-th explained epoch (and the last) also explain the probe set on a copy of the model with every "
        "block re-initialised, logged as explain/<method>/sanity_spearman (Adebayo et al.; 0 = off)",
        minimum=0,
    )
    filters_every_n_epochs: int = _f(
        0,
        "draw the first convolution's filters every n training epochs (and before the first), as "
        "explanations/filters_*.png and W&B explain/filters (0 = off; independent of explain.enabled)",
        minimum=0,
    )


@dataclass
class ReportConfig:
    inline: bool = _f(
        False,
        "report.html with every image inside it (one file to send around, megabytes); false links the images beside it",
    )


@dataclass
class Config:
    experiment: str | None = _f(None, "preset from configs/experiment/NAME.yaml, applied before overrides")
    name: str | None = _f(
        None,
        "group name: runs go to out_dir/name/ (null = the experiment's name or a timestamp, made unique: "
        "smoke, smoke-2, ...)",
    )
    resume: str | None = _f(
        None,
        "continue a group: its folder (every unfinished run), a run folder, or a run's checkpoint; the "
        "group's own config is used",
    )
    out_dir: str = _f("outputs", "where run groups are written")
    seed: int = _f(0, "training seed (weights, shuffling)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


def fields(schema: type, prefix: str = ""):
    """(dotted key, dataclass field, default) for every leaf of the schema, in order."""
    instance = schema()
    for f in dataclasses.fields(schema):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            yield from fields(type(value), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value
