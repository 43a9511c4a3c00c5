"""Run groups on disk: claiming a group folder, each run's state, and what `resume=` continues.

A group folder holds the group's resolved config (`config.yaml`, written before the first run
starts) and one folder per run, each with a `state.json`:

    {"status": "running" | "interrupted" | "finished", "epochs": completed epochs,
     "wandb_id": the W&B run id (resumed into), "wandb_dirs": [local W&B run folders], "row": {...}}

`row` is the run's summary row once it has finished. Every file here is written whole or not at
all (a temporary name, then a rename), so a killed process never leaves one that looks complete.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from camlight.config import ConfigError, heads
from camlight.config.checks import validate
from camlight.config.schema import Config

STATE = "state.json"
GROUP_CONFIG = "config.yaml"
# What a resumed group may change: where and how it runs, never what it trains.
RESUME_MAY_CHANGE = (
    "trainer.accelerator",
    "trainer.devices",
    "trainer.strategy",
    "trainer.num_nodes",
    "trainer.enable_progress_bar",
    "data.num_workers",
    "data.pin_memory",
    "data.root",
    "wandb.mode",
    "wandb.init_timeout",
)


def write_json(path: Path, data: dict) -> None:
    """`path` written whole: a temporary sibling, then renamed onto it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def slurm_job() -> str | None:
    """The SLURM job (array jobs: `<job>_<task>`) this process belongs to, or None."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID")


def requeued() -> bool:
    """True in a SLURM job that was requeued (Lightning's auto-requeue, or preemption)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def preset_name(cfg: DictConfig) -> str | None:
    """The group name the experiment preset sets, if any (a rerun of it gets a fresh folder)."""
    from camlight.config.load import CONFIG_DIR

    if not cfg.experiment:
        return None
    path = CONFIG_DIR / "experiment" / f"{cfg.experiment}.yaml"
    return OmegaConf.load(path).get("name") if path.is_file() else None


def claim_group(out_dir: Path, name: str | None, fresh_suffix: bool) -> Path:
    """Create and return a new, empty group folder under `out_dir`.

    `name` given by the user (`fresh_suffix` False): exactly that folder, refused when it holds a
    group. Otherwise (`name` from an experiment preset, or a timestamp when None) the first free of
    `name`, `name-2`, `name-3`, ...: claimed by `mkdir`, which only one process can win, so two runs
    started in the same second get different folders.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base = name or datetime.now().strftime("%Y%m%d-%H%M%S")
    if not fresh_suffix:
        group_dir = out_dir / base
        if group_dir.exists() and any(group_dir.iterdir()):
            raise ConfigError(
                f"{group_dir} already holds a run group; continue it with resume={group_dir}, "
                "or choose another name= or out_dir="
            )
        group_dir.mkdir(exist_ok=True)
        return group_dir
    for i in range(1, 10_000):
        group_dir = out_dir / (base if i == 1 else f"{base}-{i}")
        try:
            group_dir.mkdir()
            return group_dir
        except FileExistsError:
            continue
    raise ConfigError(f"{out_dir} holds 10,000 groups named {base}-*; choose another name= or out_dir=")


def write_state(run_dir: Path, **changes) -> dict:
    """Update the run's state.json with `changes`; return the new state."""
    state = read_state(run_dir)
    state.update(changes)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / STATE, state)
    return state


def read_state(run_dir: Path) -> dict:
    return read_json(run_dir / STATE) or {}


@dataclass
class Resume:
    """What `resume=` continues: the group, its config, and which of its runs."""

    group_dir: Path
    config: DictConfig
    only: str | None = None  # a run folder's name when a run (or its checkpoint) was given
    checkpoint: Path | None = None  # a checkpoint given by the user


def plan(path: str | Path, overrides: dict) -> Resume:
    """The group behind `path` (a group folder, a run folder or a checkpoint inside one), with its
    own config and the `overrides` (dotted key → value) that a resume may change.

    Raises:
        ConfigError: not a camlight group, or an override that would change what is trained.
    """
    path = Path(path).resolve()
    only = checkpoint = None
    if path.is_file():
        if path.suffix != ".ckpt" or path.parent.name != "checkpoints":
            raise ConfigError(f"resume={path}: give a group folder, a run folder, or a run's checkpoints/*.ckpt")
        checkpoint, path = path, path.parent.parent
    if not path.is_dir():
        raise ConfigError(f"resume={path} not found; give the group folder train.py wrote (outputs/<group>)")
    if not (path / GROUP_CONFIG).is_file() and (path.parent / GROUP_CONFIG).is_file():
        only, path = path.name, path.parent  # a run folder
    if not (path / GROUP_CONFIG).is_file():
        raise ConfigError(
            f"resume={path}: no {GROUP_CONFIG} here or in the folder above; give a group folder written by train.py"
        )
    refused = sorted(k for k in overrides if k not in RESUME_MAY_CHANGE)
    if refused:
        raise ConfigError(
            f"resume= continues the group as it was configured; {', '.join(refused)} cannot change "
            f"(a resume may set {', '.join(RESUME_MAY_CHANGE)})"
        )
    saved = OmegaConf.load(path / GROUP_CONFIG)
    cfg = OmegaConf.merge(OmegaConf.structured(Config), saved)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    validate(cfg, Config)
    if only is not None and only not in [run_name(cfg, h) for h in heads(cfg)]:
        raise ConfigError(f"resume={path / only}: not a run of group {path.name}")
    OmegaConf.set_readonly(cfg, True)
    return Resume(path, cfg, only, checkpoint)


def run_name(cfg: DictConfig, head: str) -> str:
    return f"{cfg.model.backbone.replace(':', '-')}-{head}"


def overrides(cfg: DictConfig, base: DictConfig) -> dict:
    """Dotted key → value of every leaf where `cfg` differs from `base` (what the user changed)."""
    flat = lambda c: _flatten(OmegaConf.to_container(c, resolve=True))  # noqa: E731
    a, b = flat(cfg), flat(base)
    return {k: v for k, v in a.items() if b.get(k) != v and k != "resume"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def keep_rows_before(path: Path, epoch: int) -> list[dict]:
    """The rows of a metrics CSV logged before `epoch` (a resumed run logs that epoch again)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return []
    return [r for r in rows if r.get("epoch") not in (None, "") and int(float(r["epoch"])) < epoch]


def prepend_rows(path: Path, earlier: list[dict]) -> None:
    """Put `earlier` rows (from before a resume) in front of the rows now in `path`, the columns
    united, the file replaced whole."""
    if not earlier:
        return
    try:
        with open(path, newline="") as f:
            now = list(csv.DictReader(f))
    except OSError:
        now = []
    rows = earlier + now
    columns = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def atomic_checkpoint_io():
    """Lightning's `TorchCheckpointIO`, writing each local checkpoint to a temporary sibling and
    renaming it into place (Lightning's own goes through a temporary file in the system's temp
    folder, which is a copy, not a rename, when that is another file system): a process killed
    while saving leaves the previous checkpoint, never a truncated one."""
    import torch
    from lightning_fabric.plugins import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            if storage_options is not None or "://" in str(path):
                return super().save_checkpoint(checkpoint, path, storage_options)
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            try:
                with open(tmp, "wb") as f:
                    torch.save(checkpoint, f)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

    return AtomicCheckpointIO()


def write_text(path: Path, text: str) -> None:
    """`path` written whole: a temporary sibling, then renamed onto it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
