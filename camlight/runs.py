"""Run groups on disk: claiming a group folder, each run's state, and what `resume=` continues.

A group folder holds the group's resolved config (`group.yaml`, written before the first run
starts; paths made absolute) and one folder per run, each with a `state.json`:

    {"status": "running" | "interrupted" | "finished", "epochs": completed epochs,
     "wandb_id": the W&B run id (resumed into), "wandb_dirs": [local W&B run folders], "row": {...}}

`row` is the run's summary row once it has finished. Every file here is written whole or not at
all (a temporary name, then a rename), so a killed process never leaves one that looks complete.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from camlight.config import ConfigError, heads
from camlight.config.checks import validate
from camlight.config.schema import Config
from camlight.viz.files import atomic_file

STATE = "state.json"
GROUP_CONFIG = "group.yaml"  # not config.yaml: each run folder holds its own config.yaml
SLURM_JOB = "slurm_job"  # the SLURM job that made the group (a requeued job finds it again)
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
    write_text(path, json.dumps(data, indent=2) + "\n")


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
        try:
            group_dir.mkdir()  # only one process can make it
        except FileExistsError:
            if not group_dir.is_dir() or any(group_dir.iterdir()):
                raise ConfigError(
                    f"{group_dir} already holds a run group; continue it with resume={group_dir}, "
                    "or choose another name= or out_dir="
                ) from None
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


def plan(path: str | Path, given: dict) -> Resume:
    """The group behind `path` (a group folder, a run folder or a checkpoint inside one), with its
    own config and what the user gave beside `resume=` (`given`: dotted key → value).

    Keys of `RESUME_MAY_CHANGE` are applied; any other key is refused unless it equals the saved
    value (so repeating the original command with `resume=` added works).

    Raises:
        ConfigError: not a camlight group, or a key that would change what is trained.
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
    saved = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path / GROUP_CONFIG))
    changed = sorted(
        k
        for k, v in given.items()
        if k not in RESUME_MAY_CHANGE and k != "resume" and _plain(OmegaConf.select(saved, k)) != _plain(v)
    )
    if changed:
        raise ConfigError(
            f"resume= continues the group as it was configured; {', '.join(changed)} cannot change "
            f"(a resume may set {', '.join(RESUME_MAY_CHANGE)})"
        )
    cfg = saved
    for key, value in given.items():
        if key in RESUME_MAY_CHANGE:
            OmegaConf.update(cfg, key, value, merge=False)
    validate(cfg, Config)
    if only is not None and only not in [run_name(cfg, h) for h in heads(cfg)]:
        raise ConfigError(f"resume={path / only}: not a run of group {path.name}")
    OmegaConf.set_readonly(cfg, True)
    return Resume(path, cfg, only, checkpoint)


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def run_name(cfg: DictConfig, head: str) -> str:
    return f"{cfg.model.backbone.replace(':', '-')}-{head}"


def given_keys(cfg: DictConfig, argv: list[str] | None, base: DictConfig) -> dict:
    """Dotted key → value of what the user set: the `key=value` arguments when known (`experiment=`
    counts as its own key), else every leaf where `cfg` differs from `base`."""
    if argv is not None:
        keys = [a.split("=", 1)[0] for a in argv if "=" in a]
        return {k: (cfg.experiment if k == "experiment" else OmegaConf.select(cfg, k)) for k in keys}
    flat = lambda c: _flatten(OmegaConf.to_container(c, resolve=True))  # noqa: E731
    a, b = flat(cfg), flat(base)
    return {k: v for k, v in a.items() if b.get(k) != v}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def group_status(cfg: DictConfig, group_dir: Path) -> str:
    """ "finished" when every run of the group has finished, else "interrupted"."""
    done = all(read_state(group_dir / run_name(cfg, h)).get("status") == "finished" for h in heads(cfg))
    return "finished" if done else "interrupted"


def slurm_group(out_dir: Path, job: str) -> Path | None:
    """The group under `out_dir` that SLURM job `job` started (its `slurm_job` file), or None."""
    if not out_dir.is_dir():
        return None
    for group_dir in sorted(out_dir.iterdir()):
        marker = group_dir / SLURM_JOB
        if marker.is_file() and marker.read_text().strip() == job and (group_dir / GROUP_CONFIG).is_file():
            return group_dir
    return None


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
    with atomic_file(path, encoding="utf-8") as f:
        f.write(text)
