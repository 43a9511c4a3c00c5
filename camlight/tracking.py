"""The loggers of a training run, made so that nothing they do can stop or lose it.

- `wandb_settings(cfg)`: W&B's mode, project and entity: the config's key where the user set it,
  else W&B's own environment variable (`WANDB_MODE`, `WANDB_PROJECT`, `WANDB_ENTITY`,
  `WANDB_DISABLED`), else camlight's default (offline, project "camlight").
- `GuardedWandbLogger`: a `WandbLogger` whose start is bounded (`wandb.init_timeout`) and falls back
  (online → offline → none), and whose every call that raises is reported once, after which it goes
  quiet: training goes on with the CSV logger and the local files.
- `ResumedCSVLogger`: a `CSVLogger` that continues the run's `csv/metrics.csv` after a resume,
  keeping the rows of the epochs before it (Lightning's own deletes the file).
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import time
from pathlib import Path

from lightning_fabric.loggers.logger import _DummyExperiment, rank_zero_experiment
from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.utilities import rank_zero_warn

from camlight.viz.files import write_csv

log = logging.getLogger(__name__)

WANDB_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}


def wandb_settings(cfg: DictConfig) -> dict:
    """{"mode", "project", "entity"} for W&B: config key, else W&B's environment variable, else default."""
    mode = cfg.wandb.mode
    if mode is None:
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        disabled = os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes")
        mode = "disabled" if disabled else WANDB_MODES.get(env, "offline")
    return {
        "mode": mode,
        "project": cfg.wandb.project or os.environ.get("WANDB_PROJECT") or "camlight",
        "entity": cfg.wandb.entity or os.environ.get("WANDB_ENTITY") or None,
    }


def _release_wandb() -> None:
    import wandb

    try:
        wandb.teardown()
    except Exception:  # noqa: BLE001 - nothing more to release
        pass


def _guarded(method):
    """Run a logger method; if W&B raises, report it once and make the logger quiet."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if self.failure is not None:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - whatever W&B raises, training goes on
            self._fail(f"W&B stopped logging ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
            return None

    return call


class GuardedWandbLogger(WandbLogger):
    """A `WandbLogger` that never stops training.

    Its run starts at the first use, with `init_timeout` seconds for W&B to answer. Online mode
    that cannot start (no API key, no network, the service down) falls back to offline mode, whose
    folder `wandb sync` uploads later; when W&B cannot start at all, the logger is quiet. Any later
    call that raises is reported once and the logger goes quiet. `failure` and `note` say what
    happened; `lost_seconds` how long the failed starts took.
    """

    def __init__(self, *args, init_timeout: float = 30.0, **kwargs):
        import wandb

        kwargs.setdefault("settings", wandb.Settings(init_timeout=init_timeout, silent=True))
        super().__init__(*args, **kwargs)
        self.failure: str | None = None
        self.note: str | None = None
        self.lost_seconds = 0.0

    def _fail(self, message: str) -> None:
        """Report once, close the run that broke (its folder keeps what reached it; later runs must
        not find it still open), and go quiet."""
        self.failure = self.note = message
        run = self._experiment
        if run is not None and not isinstance(run, _DummyExperiment):
            self._failed_dir = _folder_of(run)
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001 - it is broken already
                pass
        self._experiment = _DummyExperiment()
        rank_zero_warn(f"{message}; training goes on, logged to csv/metrics.csv and the local files")

    def __getstate__(self):  # ddp_spawn pickles the logger: a quiet one stays quiet, with its own id
        if self.failure is None:
            return super().__getstate__()
        state = self.__dict__.copy()
        state["_experiment"] = None
        return state

    @property
    def version(self):
        return self._id if self.failure is not None else super().version

    @property
    def experiment(self):
        if self.failure is not None:
            if self._experiment is None:
                self._experiment = _DummyExperiment()
            return self._experiment
        if self._experiment is not None:
            return self._experiment
        start = time.perf_counter()
        try:
            return WandbLogger.experiment.fget(self)
        except Exception as e:  # noqa: BLE001 - no key, no network, unwritable folder, service crash
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            self.lost_seconds += time.perf_counter() - start
            self._experiment = None
        if self._wandb_init.get("mode") == "online":
            self._wandb_init["mode"] = "offline"
            _release_wandb()  # a timed-out start leaves its run id held by W&B's service
            start = time.perf_counter()
            try:
                run = WandbLogger.experiment.fget(self)
                self.note = (
                    f"W&B online could not start ({why}) after {self.lost_seconds:.0f} s; logged offline "
                    "instead: upload with the summary's wandb_sync command"
                )
                rank_zero_warn(self.note)
                return run
            except Exception as e:  # noqa: BLE001
                why = f"{why}; offline: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
                self.lost_seconds += time.perf_counter() - start
                self._experiment = None
        self._fail(f"W&B could not start ({why}) after {self.lost_seconds:.0f} s")
        self.note = self.failure
        return self._experiment

    log_metrics = _guarded(WandbLogger.log_metrics)
    log_hyperparams = _guarded(WandbLogger.log_hyperparams)
    log_image = _guarded(WandbLogger.log_image)
    log_table = _guarded(WandbLogger.log_table)
    log_text = _guarded(WandbLogger.log_text)
    after_save_checkpoint = _guarded(WandbLogger.after_save_checkpoint)
    finalize = _guarded(WandbLogger.finalize)
    save = _guarded(WandbLogger.save)

    def run_dir(self) -> Path | None:
        """The local folder of the W&B run (`.../wandb/offline-run-*`; also of a run that broke
        mid-way, which holds what reached it), or None when there is none."""
        if self.failure is not None:
            return getattr(self, "_failed_dir", None)
        if self._experiment is None:
            return None
        return _folder_of(self._experiment)

    def finish(self, exit_code: int = 0) -> None:
        if self.failure is None and self._experiment is not None:
            try:
                self._experiment.finish(exit_code=exit_code)
            except Exception as e:  # noqa: BLE001
                self._fail(f"W&B could not finish the run ({type(e).__name__}: {str(e)[:200]})")


def _folder_of(run) -> Path | None:
    try:
        return Path(run.dir).parent  # .../offline-run-*/files → the run's folder
    except Exception:  # noqa: BLE001 - a run without a folder
        return None


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, continuing an existing metrics.csv instead of deleting it."""

    def __init__(self, log_dir: str, keep_before_epoch: int):
        self.keep_before_epoch = keep_before_epoch
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [r for r in rows if r.get("epoch") and int(float(r["epoch"])) < self.keep_before_epoch]
        if not kept:
            path.unlink()
            return
        self.metrics_keys = sorted({k for r in kept for k in r})  # Lightning's order: sorted
        write_csv(path, kept, self.metrics_keys)


class ResumedCSVLogger(CSVLogger):
    """`CSVLogger` continuing `metrics.csv` after a resume at `start_epoch`: the rows of earlier
    epochs stay, those of `start_epoch` on (logged again by the resumed run) are dropped."""

    def __init__(self, *args, start_epoch: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_epoch = start_epoch

    @property
    @rank_zero_experiment  # as Lightning's: the other ranks hold a dummy and never touch the file
    def experiment(self):
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.log_dir, self.start_epoch)
        return self._experiment


def build_loggers(
    cfg: DictConfig, run_cfg: dict, group: str, name: str, run_dir: Path, wandb_id: str, start_epoch: int
) -> list[Logger]:
    """The CSV logger (continuing its file after a resume) and, unless W&B is disabled, a W&B logger
    that cannot stop training (see `camlight.tracking`), resuming the run `wandb_id`."""
    csv_args = {"save_dir": str(run_dir), "name": "csv", "version": ""}
    loggers: list[Logger] = [
        ResumedCSVLogger(**csv_args, start_epoch=start_epoch) if start_epoch else CSVLogger(**csv_args)
    ]
    w = wandb_settings(cfg)
    if w["mode"] != "disabled":
        loggers.append(
            GuardedWandbLogger(
                project=w["project"],
                entity=w["entity"],
                group=group,
                name=name,
                id=wandb_id,
                job_type="train",
                tags=list(cfg.wandb.tags),
                save_dir=str(run_dir),
                mode=w["mode"],
                config=run_cfg,
                init_timeout=cfg.wandb.init_timeout,
            )
        )
    return loggers
