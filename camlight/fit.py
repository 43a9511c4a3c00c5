"""Build everything a training run needs from a config, fit, and summarise the group.

`run(cfg)` trains one model per head in `heads(cfg)` ("both": GAP, then FC) in one W&B group and
writes, under `out_dir/<group>/`:

    summary.json                  per run: head, backbone, val accuracy, checkpoints, W&B run dir
    <backbone>-<head>/config.yaml the resolved config of that run
    <backbone>-<head>/checkpoints/ best (on val/acc), and last.ckpt: the last epoch's state
    <backbone>-<head>/csv/metrics.csv
    <backbone>-<head>/wandb/offline-run-*/   (W&B offline mode; `wandb sync` uploads it later)
    <backbone>-<head>/state.json  running / interrupted / finished, the W&B run id (see `camlight.runs`)

A group stopped by SIGTERM or SIGINT says so in summary.json; `resume=` continues it. What is built
from the config lives in `camlight.build`, the loggers in `camlight.tracking`.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from camlight import runs
from camlight.build import (  # noqa: F401 - also fit's public names, as before the split
    SET_BY_CAMLIGHT,
    build_datamodule,
    build_explanation_callback,
    build_model,
    build_trainer,
    check,
    check_data,
    check_name,
    check_trainer,
    data_preprocessing,
    resolve_pretrained,
)
from camlight.callbacks import FiltersCallback
from camlight.callbacks.state import RandomState
from camlight.config import ConfigError, heads
from camlight.datamodules import SPLITS, CamlightDataModule
from camlight.modules import weights_of
from camlight.tracking import GuardedWandbLogger, build_loggers

log = logging.getLogger(__name__)
GROUP_ENV = "CAMLIGHT_GROUP"


class Interrupted(Exception):
    """Training stopped by SIGTERM or SIGINT; the group's summary says so and how to resume (None:
    stopped before anything was written, and nothing is left)."""

    def __init__(self, summary: dict, signal_name: str):
        super().__init__(f"training interrupted by {signal_name}")
        self.summary, self.signal_name = summary, signal_name


class _Signals:
    """SIGTERM outside `trainer.fit` (indexing data, between two runs) raises `_Stopped`, as SIGINT
    raises KeyboardInterrupt; inside it, Lightning's own handler (which calls this one after its
    own) stops the fit at the next batch."""

    fitting = False

    def __init__(self):
        self.before = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self.before = signal.signal(signal.SIGTERM, self._raise)
        return self

    def __exit__(self, *exc):
        import signal

        if self.before is not None:
            signal.signal(signal.SIGTERM, self.before)

    @staticmethod
    def _raise(signum, frame):
        if not _Signals.fitting:
            raise _Stopped("SIGTERM")


class _Stopped(BaseException):
    def __init__(self, signal_name: str):
        self.signal_name = signal_name


class _RunInterrupted(Exception):
    def __init__(self, row: dict, signal_name: str, wandb: list):
        self.row, self.signal_name, self.wandb = row, signal_name, wandb


def _checkpoint_epoch(path: Path) -> int:
    """The first epoch a run resumed from checkpoint `path` trains (Lightning saves the epoch index)."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt.get("epoch", -1)) + 1


def fit_one(
    cfg: DictConfig,
    head: str,
    datamodule,
    group: str,
    group_dir: Path,
    pretrained: bool,
    ckpt_path: Path | None = None,
) -> dict:
    """Train one model (from `ckpt_path` when resuming); return its row of the summary.

    Raises:
        _RunInterrupted: SIGTERM or SIGINT stopped it (last.ckpt holds the last finished epoch).
    """
    name = runs.run_name(cfg, head)
    run_dir = group_dir / name
    run_cfg = OmegaConf.to_container(cfg, resolve=True)
    run_cfg["model"]["head"] = head
    run_cfg["model"]["pretrained"] = pretrained  # "auto" resolved: what this run really did
    run_cfg["data"].update(datamodule.paths())  # absolute, so explain.py split= works from anywhere
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg, head, datamodule, pretrained)
    model.run_config = run_cfg
    checkpoint = ModelCheckpoint(
        dirpath=str(run_dir / "checkpoints"),
        filename="epoch{epoch:03d}-acc{val/acc:.4f}",
        auto_insert_metric_name=False,
        monitor="val/acc",
        mode="max",
    )
    # Lightning's `save_last` writes last.ckpt only when a checkpoint file gets saved, i.e. when
    # val/acc improves. A second checkpoint without a monitor keeps the latest state, every epoch,
    # as last.ckpt (after the best one's, so that it holds that callback's state of the same epoch).
    last = ModelCheckpoint(dirpath=str(run_dir / "checkpoints"), filename="last", enable_version_counter=False)
    state = runs.read_state(run_dir)
    wandb_id = state.get("wandb_id") or _new_wandb_id()
    start_epoch = _checkpoint_epoch(ckpt_path) if ckpt_path else 0
    loggers = build_loggers(cfg, run_cfg, group, name, run_dir, wandb_id, start_epoch)
    explainer = build_explanation_callback(cfg)
    callbacks = [checkpoint, last, RandomState()] + ([explainer] if explainer else [])
    if cfg.explain.filters_every_n_epochs:
        callbacks.append(FiltersCallback(cfg.explain.filters_every_n_epochs))
    trainer = build_trainer(
        cfg.trainer,
        logger=loggers,
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        plugins=[runs.atomic_checkpoint_io()],  # a killed save leaves the previous checkpoint whole
    )
    _quiet_sigterm(trainer)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(run_cfg), run_dir / "config.yaml")
        runs.write_state(run_dir, status="running", wandb_id=wandb_id, epochs=start_epoch)
    start = time.perf_counter()
    interrupted = None
    _Signals.fitting = True  # Lightning's handlers stop the fit at the next batch
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    except (SystemExit, KeyboardInterrupt) as e:  # Lightning's answer to SIGTERM (and SIGINT: exit 1)
        if not trainer.interrupted:
            raise
        interrupted = "SIGTERM" if type(e).__name__ == "SIGTERMException" else "SIGINT"
    finally:
        _Signals.fitting = False
    seconds = time.perf_counter() - start
    if interrupted is None:
        _gather_skipped(datamodule)
        _warn_if_mostly_unreadable(datamodule)
    done = last.best_model_path or None
    row = {
        "name": name,
        "status": "interrupted" if interrupted else "finished",
        "backbone": cfg.model.backbone,
        "head": head,
        "val_acc": _float(checkpoint.best_model_score),
        "val_images": datamodule.split_size("val"),
        "last_val_acc": _float(trainer.callback_metrics.get("val/acc")),
        "epochs": _checkpoint_epoch(Path(done)) if interrupted and done else trainer.current_epoch,
        "pretrained": pretrained,
        "skipped_files": len(datamodule.bad_files()),
        "fit_seconds": round(seconds, 1),
        "best_checkpoint": checkpoint.best_model_path or None,
        "last_checkpoint": done,
        "config": str(run_dir / "config.yaml"),
        "csv_metrics": str(Path(loggers[0].log_dir) / "metrics.csv"),
        "wandb_run_dir": None,
        "wandb_sync": None,
        "wandb_note": None,
        "explanations": str(run_dir / "explanations") if explainer else None,
        "localization": _json_safe(explainer.last) if explainer else {},
    }
    wandb = [lg for lg in loggers if isinstance(lg, GuardedWandbLogger)] if trainer.is_global_zero else []
    for logger in wandb:  # other ranks hold a dummy run
        _wandb_row(row, logger, state, wandb_id)
    if trainer.is_global_zero:
        runs.write_state(
            run_dir,
            status=row["status"],
            epochs=row["epochs"],
            row=row if not interrupted else None,
            wandb_dirs=row.pop("_wandb_dirs", []),
        )
    if interrupted:  # W&B is finished once the state and the summary are written (an upload can take long)
        raise _RunInterrupted(row, interrupted, wandb)
    for logger in wandb:
        logger.finish(exit_code=0)
    return row


def _quiet_sigterm(trainer: pl.Trainer) -> None:
    """Lightning's SIGTERM handler broadcasts from inside the signal handler, which deadlocks when
    the signal lands while the ranks are in another collective (one waits in the broadcast, the
    other in, e.g., a metric's sync). Without that broadcast the handler only raises the flag (and
    stops the launcher's children); Lightning's training loop already reduces the flag across ranks
    after every batch, so every rank stops at the same batch."""
    connector = trainer._signal_connector

    def notify(signum, frame) -> None:
        if not connector.received_sigterm and trainer.strategy.launcher is not None:
            trainer.strategy.launcher.kill(signum)
        connector.received_sigterm = True

    connector._sigterm_notifier_fn = notify


def _new_wandb_id() -> str:
    import secrets

    return secrets.token_hex(4)  # W&B's own ids are 8 characters of [0-9a-z]


def _wandb_row(row: dict, logger: GuardedWandbLogger, state: dict, wandb_id: str) -> None:
    """The W&B columns of a run's row: its local folders (one per start: a resumed run adds one) and
    the command that uploads them as one run; what went wrong, if anything."""
    here = logger.run_dir()
    dirs = [d for d in state.get("wandb_dirs", []) if Path(d).is_dir()]
    if here is not None and str(here) not in dirs:
        dirs.append(str(here))
    row["_wandb_dirs"] = dirs
    row["wandb_note"] = logger.note
    if logger.lost_seconds:
        row["wandb_lost_seconds"] = round(logger.lost_seconds, 1)
    if dirs:
        row["wandb_run_dir"] = dirs[-1]
        offline = [d for d in dirs if Path(d).name.startswith("offline-run-")]
        if offline:
            many = f"--id {wandb_id} " if len(offline) > 1 else ""
            row["wandb_sync"] = f"wandb sync {many}{' '.join(offline)}"


def _close_process_group() -> None:
    """After the last fit, every rank (all run this) leaves the process group together: a rank that
    exits while its peers still hold gloo connections to it can abort their shutdown."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _gather_skipped(datamodule: CamlightDataModule) -> None:
    """Under DDP each rank saw its own bad files: every rank (all of them call this) learns all."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    everyone: list[dict] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(everyone, datamodule.bad_files())
    for bad in everyone:
        datamodule.add_bad_files(bad.items())


def _warn_if_mostly_unreadable(datamodule: CamlightDataModule) -> None:
    total = sum(datamodule.split_size(s) for s in SPLITS)
    bad = len(datamodule.bad_files())
    if total and bad * 2 > total:
        where = f" under {datamodule.root}" if datamodule.root else ""
        rank_zero_warn(
            f"{bad} of the {total} photos{where} could not be used (see summary.json); "
            "this run learned from the rest only: check the files"
        )


def _json_safe(scores: dict) -> dict:
    """NaN (no ground truth seen) becomes None: JSON has no NaN."""
    return {m: {k: (None if v != v else v) for k, v in d.items()} for m, d in scores.items()}


def _float(value) -> float | None:
    return None if value is None else round(float(value), 6)


def run(cfg: DictConfig, argv: list[str] | None = None) -> dict:
    """Train every head of `cfg` in one group (or continue the group of `cfg.resume`); write and
    return the group's summary. `argv`, the command's `key=value` arguments, tells what the user
    set (a name of their own is never changed; a resume applies exactly those keys); without it,
    what differs from the defaults counts.

    Raises:
        ConfigError: a problem found before anything was written (nothing is left behind).
        Interrupted: SIGTERM or SIGINT stopped training; the summary (written) says how to resume.
    """
    resume = _resume_plan(cfg, argv)
    if resume is not None:
        cfg = resume.config
    check(cfg)
    # Lightning's DDP launcher re-runs this script for the other ranks: they inherit the group
    # name through the environment, and only rank zero claims a folder.
    inherited = os.environ.get(GROUP_ENV)
    out_dir = Path(cfg.out_dir).resolve()
    made_out_dir = not out_dir.exists()
    if resume is not None:
        group_dir = resume.group_dir
    elif inherited or rank_zero_only.rank != 0:
        # Ranks started by torchrun or srun inherit nothing: they write nothing of the group
        # (checkpoints take rank zero's folder from Lightning), so their guess need not match.
        slurm = f"slurm-{runs.slurm_job()}" if runs.slurm_job() else None
        group_dir = out_dir / (inherited or cfg.name or slurm or datetime.now().strftime("%Y%m%d-%H%M%S"))
    else:
        typed = argv is not None and any(a.startswith("name=") for a in argv)
        fresh = cfg.name is None or (not typed if argv is not None else cfg.name == runs.preset_name(cfg))
        name = cfg.name
        if name is None and runs.slurm_job():
            name, fresh = f"slurm-{runs.slurm_job()}", False
        group_dir = runs.claim_group(out_dir, name, fresh)
        if runs.slurm_job():  # a requeued job finds its group by this, whatever its name
            runs.write_text(group_dir / runs.SLURM_JOB, runs.slurm_job() + "\n")
    group = group_dir.name
    os.environ[GROUP_ENV] = group
    done: list[dict] = []
    datamodule = None
    signals = _Signals().__enter__()  # left in the finally below
    try:
        pretrained, start = resolve_pretrained(cfg)  # downloads missing weights; nothing written yet
        datamodule = build_datamodule(cfg, pretrained)
        check_data(cfg, datamodule)
        rank_zero_info(datamodule.describe())
        fell_back = cfg.model.pretrained == "auto" and not pretrained and weights_of(cfg.model.backbone) is not None
        (rank_zero_warn if fell_back else rank_zero_info)(start)
        if rank_zero_only.rank == 0 and resume is None:  # what resume= continues, from anywhere
            saved = OmegaConf.to_container(cfg, resolve=True)
            saved["out_dir"] = str(out_dir)
            saved["data"].update(datamodule.paths())
            OmegaConf.save(OmegaConf.create(saved), group_dir / runs.GROUP_CONFIG)
        for head in heads(cfg):
            row = _fit_or_keep(cfg, head, datamodule, group, group_dir, pretrained, resume)
            if row is not None:
                done.append(row)
        _close_process_group()
    except ConfigError:
        if resume is None and rank_zero_only.rank == 0 and all(p.name == runs.SLURM_JOB for p in group_dir.iterdir()):
            (group_dir / runs.SLURM_JOB).unlink(missing_ok=True)
            group_dir.rmdir()  # claimed, nothing written: leave nothing behind
            if made_out_dir and not any(out_dir.iterdir()):
                out_dir.rmdir()
        raise
    except _RunInterrupted as stop:
        summary = _summary(cfg, group, group_dir, [*done, stop.row], datamodule, "interrupted")
        for logger in stop.wandb:
            logger.finish(exit_code=1)
        raise Interrupted(summary, stop.signal_name) from None
    except (_Stopped, KeyboardInterrupt) as e:  # outside trainer.fit: before, between or after the runs
        name = "SIGINT" if isinstance(e, KeyboardInterrupt) else e.signal_name
        raise Interrupted(_stopped_outside_fit(cfg, group_dir, datamodule, resume), name) from None
    finally:
        signals.__exit__()
        if inherited is None:
            os.environ.pop(GROUP_ENV, None)
    return _summary(cfg, group, group_dir, done, datamodule, runs.group_status(cfg, group_dir))


def _stopped_outside_fit(cfg, group_dir: Path, datamodule, resume) -> dict | None:
    """A stop outside `trainer.fit`: before anything was written, the claimed folder goes (None is
    returned); otherwise every run left "running" is marked interrupted and the summary says so."""
    if rank_zero_only.rank != 0:
        return None
    if resume is None and not (group_dir / runs.GROUP_CONFIG).is_file():
        for p in group_dir.iterdir():
            if p.name == runs.SLURM_JOB:
                p.unlink()
        if not any(group_dir.iterdir()):
            group_dir.rmdir()
        return None
    rows = []
    for head in heads(cfg):
        run_dir = group_dir / runs.run_name(cfg, head)
        state = runs.read_state(run_dir)
        if state.get("status") == "running":
            runs.write_state(run_dir, status="interrupted")
        if state.get("row"):  # a finished run's row, also one whose fit had returned when the signal came
            rows.append(state["row"])
    return _summary(cfg, group_dir.name, group_dir, rows, datamodule, "interrupted")


def _resume_plan(cfg: DictConfig, argv: list[str] | None) -> runs.Resume | None:
    """What to continue: `resume=` (with the keys the user set beside it), or, in a requeued SLURM
    job, the group it started before the requeue (found by its `slurm_job` file, whatever its name)."""
    if cfg.resume:
        from camlight.config import load_config

        base = load_config([f"resume={cfg.resume}"])
        return runs.plan(cfg.resume, runs.given_keys(cfg, argv, base))
    job = runs.slurm_job()
    if job and runs.requeued() and os.environ.get(GROUP_ENV) is None:
        group_dir = runs.slurm_group(Path(cfg.out_dir).resolve(), job)
        if group_dir is not None:
            rank_zero_info(f"SLURM job {job} was requeued: continuing {group_dir}")
            return runs.plan(group_dir, {})
    return None


def _fit_or_keep(cfg, head, datamodule, group, group_dir, pretrained, resume) -> dict | None:
    """Train the run of `head`; when resuming, continue it from its checkpoint, or keep its row if
    it had finished (None for a run the resume leaves alone)."""
    run_dir = group_dir / runs.run_name(cfg, head)
    ckpt = None
    if resume is not None:
        state = runs.read_state(run_dir)
        if resume.only is not None and run_dir.name != resume.only:
            return state.get("row")  # another run of the group: left as it is
        if state.get("status") == "finished" and state.get("row") and resume.checkpoint is None:
            rank_zero_info(f"{run_dir.name}: finished before, left as it is")
            return state["row"]
        ckpt = resume.checkpoint or (run_dir / "checkpoints" / "last.ckpt")
        if not ckpt.is_file():
            ckpt = None
            if rank_zero_only.rank == 0 and run_dir.is_dir():  # no epoch finished: a new start, a new W&B run
                for old in (run_dir / "checkpoints").glob("*.ckpt"):
                    old.unlink()
                runs.write_state(run_dir, wandb_id=None, wandb_dirs=[])
        rank_zero_info(
            f"{run_dir.name}: " + (f"continuing from {ckpt}" if ckpt else "no checkpoint yet; starting over")
        )
    return fit_one(cfg, head, datamodule, group, group_dir, pretrained, ckpt)


def _summary(cfg, group: str, group_dir: Path, rows: list[dict], datamodule, status: str) -> dict:
    """The group's summary, written (rank zero) with its findings and report."""
    summary = {
        "group": group,
        "group_dir": str(group_dir),
        "experiment": cfg.experiment,
        "status": status,
        "resume": f"python train.py resume={group_dir}" if status != "finished" else None,
        "runs": rows,
    }
    skipped = datamodule.bad_files() if datamodule is not None else {}
    if skipped:
        summary["skipped_files"] = dict(sorted(skipped.items()))
    if rank_zero_only.rank == 0:
        runs.write_json(group_dir / "summary.json", summary)
        from camlight.viz.findings import write_findings
        from camlight.viz.html import run_report

        if status == "finished":
            write_findings(group_dir, _shortcut_share(cfg))

        runs.write_text(group_dir / "report.html", run_report(group_dir, cfg.report.inline))
    return summary


def _shortcut_share(cfg: DictConfig) -> float | None:
    """The share of the image the shortcut mark covers (SyntheticPets' data.shortcut), or None."""
    if not cfg.data.get("shortcut"):
        return None
    from camlight.datamodules.synthetic import shortcut_square

    rows, cols = shortcut_square(cfg.data.image_size)
    return (rows.stop - rows.start) * (cols.stop - cols.start) / cfg.data.image_size**2
