"""Run configuration: dataclass schemas merged with OmegaConf.

Order of precedence, lowest first: the schema defaults here ← `configs/train.yaml` ←
`configs/experiment/NAME.yaml` (from `experiment=NAME`) ← `key=value` overrides on the command
line. Unknown keys, wrong types and impossible values fail in `load_config`, before anything runs,
with a `ConfigError` naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A user's mistake in the configuration; the message is one line saying what to do."""


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
        "dataset: synthetic (embedded), oxford_pets (Oxford-IIIT Pet), image_folder (root/{train,val}/<class>/)",
        choices=("synthetic", "oxford_pets", "image_folder"),
    )
    root: str | None = _f(None, "dataset folder (oxford_pets: holds oxford-iiit-pet/; image_folder: holds train/)")
    download: bool = _f(False, "oxford_pets: download with torchvision when missing (needs network)")
    target: str = _f(
        "binary", "oxford_pets: binary (cat vs dog, species column) or breed (37)", choices=("binary", "breed")
    )
    classes: list = _f([], "image_folder: class subset by folder name, wnid or readable name ([] = all)")
    boxes: str = _f(
        "auto",
        "image_folder ground truth: loc (LOC_*_solution.csv), xml, auto or none",
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


@dataclass
class ModelConfig:
    backbone: str = _f("simple_cnn", "feature extractor", choices=("simple_cnn", "resnet18", "vgg16"))
    head: str = _f(
        "both", "classifier head; 'both' trains a GAP and an FC model in one group", choices=("gap", "fc", "both")
    )
    width: int = _f(32, "base channel count of simple_cnn (blocks have w, 2w, 4w, 4w)", minimum=1)
    fc_hidden: int = _f(256, "hidden units of the fc head", minimum=1)
    dropout: float = _f(0.5, "dropout rate of the fc head", minimum=0.0)
    pretrained: Any = _f(
        False,
        "torchvision ImageNet weights from the local torch hub cache: true, false, or auto (when the file is there)",
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
    mode: str = _f(
        "offline",
        "offline writes runs to disk (upload later with `wandb sync`); online needs an account",
        choices=("offline", "online", "disabled"),
    )
    project: str = _f("camlight", "W&B project")
    entity: str | None = _f(None, "W&B entity (team or user); null = your default")
    tags: list = _f([], "W&B tags")


@dataclass
class ExplainConfig:
    enabled: bool = _f(True, "explain the probe set during training (ExplanationCallback)")
    methods: list = _f(["saliency", "guided_backprop", "cam", "gradcam"], "explanation methods (camlight.explain keys)")
    metrics: list = _f(["pointing_game", "energy_pointing_game", "box_accuracy", "mask_iou"], "scores of the maps")
    every_n_epochs: int = _f(1, "explain after every n-th validation epoch (and the last)", minimum=1)
    probe_size: int = _f(32, "validation images in the fixed probe set", minimum=1)
    pair_probe: bool = _f(True, "score class discrimination on cat-and-dog images")
    log_images: bool = _f(True, "log and write the probe grid every time")
    max_images: int = _f(16, "rows of the probe grid", minimum=0)


@dataclass
class Config:
    experiment: str | None = _f(None, "preset from configs/experiment/NAME.yaml, applied before overrides")
    name: str | None = _f(None, "group name: runs go to out_dir/name/ (null = a timestamp)")
    out_dir: str = _f("outputs", "where run groups are written")
    seed: int = _f(0, "training seed (weights, shuffling)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)


@dataclass
class OfflineConfig:
    """`explain.py`: explain a checkpoint on images, offline."""

    checkpoint: str | None = _f(None, "checkpoint (.ckpt) of a camlight run (required)")
    input: str | None = _f(None, "an image file or a folder of images, searched recursively")
    split: str | None = _f(
        None, "instead of input: the checkpoint's own data split, with ground truth", choices=(None, "val", "test")
    )
    probe_size: int | None = _f(
        None, "with split=val: explain the training probe set of this size instead of the whole split", minimum=1
    )
    methods: list = _f(["gradcam", "saliency"], "explanation methods (camlight.explain keys)")
    target: str = _f("top1", "top1, topk (with k), label (needs ground truth), or a class name or index")
    k: int = _f(3, "classes per image with target=topk", minimum=1)
    out: str = _f("explained", "output folder (created; must not hold an earlier result)")
    batch_size: int = _f(32, "images per batch", minimum=1)
    device: str = _f("cpu", "cpu, cuda, or auto (cuda when available)")


@dataclass
class VisualizeConfig:
    """`explain.py visualize-class`: the image a checkpoint finds most class-like."""

    checkpoint: str | None = _f(None, "checkpoint (.ckpt) of a camlight run (required)")
    target: str | None = _f(None, "the class, by name or index (also accepted as class=)")
    steps: int = _f(200, "gradient-ascent steps", minimum=1)
    lr: float = _f(0.1, "step size (on the mean-normalised gradient)", minimum=0.0)
    l2: float = _f(0.01, "L2 regularisation: the image decays by this fraction every step", minimum=0.0)
    jitter: int = _f(2, "random shift in pixels before each step (0 = none)", minimum=0)
    blur_every: int = _f(10, "Gaussian blur every n steps (0 = never)", minimum=0)
    out: str = _f("class_model", "output folder")
    device: str = _f("cpu", "cpu, cuda, or auto")


def _fields(schema: type, prefix: str = ""):
    """(dotted key, dataclass field, default) for every leaf of the schema, in order."""
    instance = schema()
    for f in dataclasses.fields(schema):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            yield from _fields(type(value), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f, value


def help_text(schema: type | None = None, usage: str = "python train.py [experiment=NAME] [key=value ...]") -> str:
    """Every key with its default and meaning, as `train.py --help` (or `explain.py --help`) prints it."""
    schema = schema or Config
    entries = []
    for key, f, default in _fields(schema):
        choices = f.metadata.get("choices")
        extra = f" [{'|'.join(str(c) for c in choices if c is not None)}]" if choices else ""
        shown = (
            f"[{','.join(map(str, default))}]"
            if isinstance(default, list)
            else OmegaConf.to_yaml({"v": default}).strip()[3:]
        )
        entries.append((f"{key}={shown}", f"{f.metadata['help']}{extra}"))
    width = max(len(k) for k, _ in entries)
    lines = [f"usage: {usage}", "", "keys (key=default  meaning):"]
    lines += [f"  {k.ljust(width)}  {h}" for k, h in entries]
    if schema is Config:
        names = ", ".join(experiments()) or "none"
        lines += ["", f"experiments: {names}", "example: python train.py model.head=gap trainer.max_epochs=3"]
    return "\n".join(lines)


def experiments(config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))


def _unknown_key_message(key: str, schema: type) -> str:
    keys = [k for k, _, _ in _fields(schema)]
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    siblings = (
        [k for k in keys if k.startswith(parent) and "." not in k[len(parent) :]]
        if parent
        else [k for k in keys if "." not in k] + sorted({k.split(".")[0] + ".*" for k in keys if "." in k})
    )
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    return f"unknown config key {key!r}; {hint}valid keys here: {', '.join(siblings)} (see --help)"


def _parse_overrides(argv: list[str]) -> tuple[str | None, list[str]]:
    experiment, dotlist = None, []
    for arg in argv:
        if "=" not in arg or arg.startswith("="):
            raise ConfigError(f"cannot parse argument {arg!r}; write key=value, e.g. model.head=gap (see --help)")
        key, value = arg.split("=", 1)
        if key == "experiment":
            experiment = value or None
        else:
            dotlist.append(arg)
    return experiment, dotlist


def _merge(schema: type, *sources) -> DictConfig:
    try:
        return OmegaConf.merge(*sources)
    except ConfigKeyError as e:
        raise ConfigError(_unknown_key_message(e.full_key, schema)) from None
    except ValidationError as e:
        raise ConfigError(_type_message(e, schema)) from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"invalid config: {str(e).splitlines()[0]}") from None


def _type_message(e: ValidationError, schema: type) -> str:
    types = {key: f.type for key, f, _ in _fields(schema)}
    expected = types.get(e.full_key, "another type")
    expected = getattr(expected, "__name__", expected)
    return f"invalid value {e.value!r} for {e.full_key}: expected {expected} (see --help)"


def _yaml(path: Path, what: str) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot read {what} {path}: {str(e).splitlines()[0]}") from None


def load_config(
    argv: list[str] | tuple[str, ...] = (),
    config_dir: Path | str = CONFIG_DIR,
    schema: type | None = None,
    defaults: str = "train.yaml",
) -> DictConfig:
    """Build and check a config from command-line style `key=value` arguments.

    Args:
        argv: `key=value` strings; `experiment=NAME` picks a preset (training config only).
        config_dir: folder holding the defaults file and `experiment/`.
        schema: the dataclass schema (default: the training `Config`).
        defaults: the YAML file in `config_dir` merged over the schema.

    Raises:
        ConfigError: unknown key, wrong type, impossible value or missing experiment.
    """
    schema = schema or Config
    config_dir = Path(config_dir)
    experiment, dotlist = _parse_overrides(list(argv)) if schema is Config else (None, list(argv))
    if schema is not Config:
        for arg in dotlist:
            if "=" not in arg or arg.startswith("="):
                raise ConfigError(f"cannot parse argument {arg!r}; write key=value (see --help)")
    sources = [OmegaConf.structured(schema)]
    if (config_dir / defaults).is_file():
        sources.append(_yaml(config_dir / defaults, "defaults"))
    base = _merge(schema, *sources)
    if schema is Config:
        experiment = experiment or base.experiment
        if experiment:
            path = config_dir / "experiment" / f"{experiment}.yaml"
            if not path.is_file():
                names = ", ".join(experiments(config_dir)) or "none"
                raise ConfigError(f"experiment {experiment!r} not found in {path.parent}; available: {names}")
            sources.append(_yaml(path, "experiment"))
    try:
        cli = OmegaConf.from_dotlist(dotlist)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides: {str(e).splitlines()[0]}") from None
    cfg = _merge(schema, *sources, cli)
    if schema is Config:
        cfg.experiment = experiment
    validate(cfg, schema)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def validate(cfg: DictConfig, schema: type | None = None) -> None:
    """Check choices, bounds and combinations; raise ConfigError on the first problem."""
    schema = schema or Config
    for key, f, _ in _fields(schema):
        value = OmegaConf.select(cfg, key)
        choices, minimum = f.metadata.get("choices"), f.metadata.get("minimum")
        if choices and value not in choices:
            raise ConfigError(
                f"invalid {key}={value!r}; choose one of {', '.join(str(c) for c in choices if c is not None)}"
            )
        if minimum is not None and value is not None and value < minimum:
            bound = "positive" if minimum == 1 else f">= {minimum}"
            raise ConfigError(f"invalid {key}={value}; it must be {bound}")
    if schema is Config:
        for key in ("trainer.limit_train_batches", "trainer.limit_val_batches"):
            _check_limit(key, OmegaConf.select(cfg, key))
        _check_data(cfg.data)
        _check_choice("model.pretrained", cfg.model.pretrained, (True, False, "auto"))
        _check_writable(Path(cfg.out_dir))


def _check_choice(key: str, value: Any, valid: tuple) -> None:
    if not any(value is v or value == v and type(value) is type(v) for v in valid):
        shown = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in valid)
        raise ConfigError(f"invalid {key}={value!r}; choose one of {shown}")


def _check_data(d: DictConfig) -> None:
    w = d.num_workers
    if not (w == "auto" or (isinstance(w, int) and not isinstance(w, bool) and w >= 0)):
        raise ConfigError(f"invalid data.num_workers={w!r}; use a count >= 0 or auto")
    _check_choice("data.pin_memory", d.pin_memory, (True, False, "auto"))
    if not 0.0 < d.val_fraction < 1.0:
        raise ConfigError(f"invalid data.val_fraction={d.val_fraction}; use a fraction between 0 and 1, e.g. 0.1")
    scale = list(d.train_scale)
    if len(scale) != 2 or not all(isinstance(v, (int, float)) for v in scale) or not 0 < scale[0] <= scale[1] <= 1:
        raise ConfigError(
            f"invalid data.train_scale={scale}; use [low, high] with 0 < low <= high <= 1, e.g. [0.35, 1.0]"
        )
    if d.resize is not None and d.resize < d.image_size:
        raise ConfigError(
            f"invalid data.resize={d.resize}; it must be at least data.image_size={d.image_size} (or null)"
        )
    if d.name != "synthetic" and not d.root:
        raise ConfigError(f"data.root is required with data.name={d.name}: the folder holding the dataset")


def num_workers(value: Any) -> int:
    """data.num_workers as a count: "auto" is the CPU cores this process may use, at most 8."""
    if value != "auto":
        return int(value)
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores)


def _check_limit(key: str, value: Any) -> None:
    ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or (
        isinstance(value, float) and 0.0 <= value <= 1.0
    )
    if not ok:
        raise ConfigError(f"invalid {key}={value!r}; use a fraction between 0.0 and 1.0 or a whole number of batches")


def heads(cfg: DictConfig) -> list[str]:
    """The heads a config trains, in order."""
    return ["gap", "fc"] if cfg.model.head == "both" else [cfg.model.head]


def _check_writable(out_dir: Path) -> None:
    probe = out_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"out_dir={out_dir} is not a directory ({probe} is a file); choose another out_dir")
    try:  # a real write: permission bits do not tell root, nor a read-only or virtual file system
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ConfigError(
            f"out_dir={out_dir} is not writable ({probe}: {e.strerror}); choose another out_dir"
        ) from None
