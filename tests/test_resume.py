"""Runs stopped by SIGTERM or SIGINT, and resumed: nothing lost, nothing logged twice, and the same
weights as a run that was never stopped."""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from camlight import fit, runs
from camlight.config import ConfigError, load_config
from camlight.modules import load_classifier

from .conftest import tiny_args

ROOT = Path(__file__).resolve().parent.parent


class Stop(pl.Callback):
    """Sends this process `signum` after training batch `batch` of epoch `epoch` (batch None: at the
    end of the epoch, after its validation and checkpoints)."""

    def __init__(self, epoch: int, batch: int | None = None, signum=signal.SIGTERM):
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            signal.raise_signal(self.signum)

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch and self.batch is None:
            signal.raise_signal(self.signum)


@pytest.fixture
def stop_at(monkeypatch):
    """stop_at(epoch, batch, signum): the next fit_one's trainer gets a `Stop` callback."""

    def arm(*args, **kwargs):
        build = fit.build_trainer

        def with_stop(trainer_cfg, callbacks, **rest):
            if rest.get("logger") is False:  # fit.check_trainer's throwaway trainer
                return build(trainer_cfg, callbacks=callbacks, **rest)
            monkeypatch.setattr(fit, "build_trainer", build)  # this trainer only
            return build(trainer_cfg, callbacks=[*callbacks, Stop(*args, **kwargs)], **rest)

        monkeypatch.setattr(fit, "build_trainer", with_stop)

    return arm


def _argv(tmp_path, name, *extra):
    """The tiny job, GAP head, 4 epochs, every explanation hook on (later keys win)."""
    return [
        *tiny_args(tmp_path / "outputs", name),
        "model.head=gap",
        "trainer.max_epochs=4",
        "explain.probe_size=8",
        "explain.sanity_every_n_epochs=2",
        "explain.filters_every_n_epochs=1",
        *extra,
    ]


def _weights(path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")["state_dict"]


def _epochs(path: Path, column: str = "epoch") -> list[int]:
    with open(path) as f:
        return [int(float(r[column])) for r in csv.DictReader(f) if r.get(column)]


@pytest.mark.parametrize("batch", [None, 1], ids=["at-epoch-end", "mid-epoch"])
def test_a_run_stopped_by_sigterm_and_resumed_ends_bit_identical_to_one_never_stopped(tmp_path, stop_at, batch):
    whole = fit.run(load_config(_argv(tmp_path, "whole", "wandb.mode=disabled")))["runs"][0]
    # Stopped after two epochs (at the end of epoch 1, or after batch 1 of epoch 2: last.ckpt
    # then holds epoch 1, and the part of epoch 2 is trained again).
    stop_at(1 if batch is None else 2, batch)
    with pytest.raises(fit.Interrupted) as stopped:
        fit.run(load_config(_argv(tmp_path, "stopped", "wandb.mode=disabled")))
    group = tmp_path / "outputs" / "stopped"
    summary = json.loads((group / "summary.json").read_text())
    assert stopped.value.signal_name == "SIGTERM" and summary == stopped.value.summary
    assert summary["status"] == "interrupted" and summary["resume"] == f"python train.py resume={group}"
    row = summary["runs"][0]
    assert row["status"] == "interrupted" and row["epochs"] == 2
    assert torch.load(row["last_checkpoint"], weights_only=True)["epoch"] == 1
    load_classifier(row["last_checkpoint"])  # loadable as it is
    assert runs.read_state(group / "simple_cnn-gap")["status"] == "interrupted"

    resumed = fit.run(load_config([f"resume={group}"]))
    assert resumed["status"] == "finished" and resumed["resume"] is None
    row = resumed["runs"][0]
    assert row["status"] == "finished" and row["epochs"] == 4
    a, b = _weights(whole["last_checkpoint"]), _weights(row["last_checkpoint"])
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert row["val_acc"] == whole["val_acc"] and row["localization"] == whole["localization"]
    # Every epoch logged once, in order, in Lightning's CSV and in the explanation history.
    run_dir = group / "simple_cnn-gap"
    assert [int(float(r["epoch"])) for r in _csv(run_dir / "csv/metrics.csv") if r.get("val/acc")] == [0, 1, 2, 3]
    steps = [int(r["step"]) for r in _csv(run_dir / "csv/metrics.csv") if r.get("train/loss_step")]
    assert steps == sorted(set(steps))  # no step twice
    assert _epochs(run_dir / "explanations/metrics.csv") == [0, 1, 2, 3]
    whole_history = _csv(tmp_path / "outputs/whole/simple_cnn-gap/explanations/metrics.csv")
    assert _csv(run_dir / "explanations/metrics.csv") == whole_history
    report = (group / "report.html").read_text()
    assert all(f"epoch_{e:03d}" in report for e in range(4))
    filters = sorted(p.name for p in (run_dir / "explanations").glob("filters_*.png"))
    assert filters == [f"filters_epoch_{e:03d}.png" for e in range(4)] + ["filters_start.png"]


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_sigint_stops_cleanly_and_a_finished_run_is_left_alone_on_resume(tmp_path, stop_at):
    argv = _argv(tmp_path, "g", "model.head=both", "trainer.max_epochs=2", "wandb.mode=disabled")
    stop_at(0, 1, signal.SIGINT)  # Ctrl-C during the first run's first epoch
    with pytest.raises(fit.Interrupted) as stopped:
        fit.run(load_config(argv))
    assert stopped.value.signal_name == "SIGINT"
    group = tmp_path / "outputs" / "g"
    summary = json.loads((group / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["interrupted"]
    assert summary["runs"][0]["last_checkpoint"] is None  # no epoch finished: the resume starts over
    first = fit.run(load_config([f"resume={group}"]))
    assert [(r["head"], r["status"], r["epochs"]) for r in first["runs"]] == [
        ("gap", "finished", 2),
        ("fc", "finished", 2),
    ]
    gap = group / "simple_cnn-gap" / "checkpoints" / "last.ckpt"
    before = gap.stat().st_mtime_ns
    again = fit.run(load_config([f"resume={group}"]))  # nothing left to do: both kept as they are
    assert again["runs"] == first["runs"] and gap.stat().st_mtime_ns == before


def test_resume_refuses_what_would_change_the_training_and_what_is_not_a_group(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        fit.run(load_config([f"resume={tmp_path / 'nope'}"]))
    with pytest.raises(ConfigError, match="no group.yaml here or in the folder above"):
        fit.run(load_config([f"resume={tmp_path}"]))
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "group.yaml").write_text("seed: 0\n")
    with pytest.raises(ConfigError, match=r"optim.lr cannot change \(a resume may set trainer.accelerator"):
        fit.run(load_config([f"resume={tmp_path / 'g'}", "optim.lr=0.5"]))
    with pytest.raises(ConfigError, match="experiment cannot change"):
        argv = [f"resume={tmp_path / 'g'}", "experiment=smoke"]
        fit.run(load_config(argv), argv)


def test_experiment_reruns_and_same_second_starts_get_folders_of_their_own(tmp_path):
    claimed = []
    threads = [
        threading.Thread(target=lambda: claimed.append(runs.claim_group(tmp_path, None, True))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 8  # all in the same second, or nearly: each its own folder
    assert runs.claim_group(tmp_path, "smoke", True).name == "smoke"
    assert runs.claim_group(tmp_path, "smoke", True).name == "smoke-2"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "x").touch()
    with pytest.raises(ConfigError, match="already holds a run group; continue it with resume="):
        runs.claim_group(tmp_path, "mine", False)


@pytest.mark.slow
@pytest.mark.parametrize("ddp", [False, True], ids=["one-process", "two-process-ddp"])
def test_train_py_killed_by_sigterm_exits_143_and_resume_finishes(tmp_path, ddp):
    """The real thing: a SIGTERM from outside (what SLURM sends) while train.py trains; under DDP
    to the first process, which passes it to the other rank."""
    out = tmp_path / "outputs"
    argv = [*_argv(tmp_path, "k", "trainer.max_epochs=8", "data.train_size=128", "wandb.mode=offline")]
    if ddp:
        argv += ["trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu", "data.num_workers=0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *argv], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    last = out / "k" / "simple_cnn-gap" / "checkpoints" / "last.ckpt"
    for _ in range(600):  # until the first epoch is saved
        if last.is_file() or proc.poll() is not None:
            break
        threading.Event().wait(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert f"continue with: python train.py resume={out / 'k'}" in err
    summary = json.loads((out / "k" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["runs"][0]["epochs"] >= 1
    load_classifier(last)
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"resume={out / 'k'}", "trainer.max_epochs=9"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "trainer.max_epochs cannot change" in done.stderr
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"resume={out / 'k'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((out / "k" / "summary.json").read_text())
    row = summary["runs"][0]
    assert summary["status"] == "finished" and row["epochs"] == 8
    csv_rows = list(csv.DictReader(open(out / "k" / "simple_cnn-gap" / "csv" / "metrics.csv")))
    assert [int(float(r["epoch"])) for r in csv_rows if r.get("val/acc")] == list(range(8))  # each epoch once
    # One W&B run, in two local folders (before and after the stop), uploaded together.
    state = runs.read_state(out / "k" / "simple_cnn-gap")
    assert len(state["wandb_dirs"]) == 2 and all(state["wandb_id"] in d for d in state["wandb_dirs"])
    assert row["wandb_sync"] == f"wandb sync --id {state['wandb_id']} {' '.join(state['wandb_dirs'])}"


def test_a_checkpoint_save_that_fails_midway_leaves_the_previous_one_whole(tmp_path):
    io = runs.atomic_checkpoint_io()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - whatever pickling a lambda raises
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000), "bad": lambda: 0}, path)
    assert path.read_bytes() == before and sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_a_requeued_slurm_job_continues_its_own_group(tmp_path, stop_at, monkeypatch):
    """SLURM requeues a preempted job with the same command and SLURM_RESTART_COUNT > 0: the group
    is named after the job, and the requeued run continues it."""
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    argv = [a for a in _argv(tmp_path, "x", "trainer.max_epochs=2", "wandb.mode=disabled") if not a.startswith("name=")]
    stop_at(0)
    with pytest.raises(fit.Interrupted):
        fit.run(load_config(argv))
    group = tmp_path / "outputs" / "slurm-4242"
    assert json.loads((group / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    summary = fit.run(load_config(argv))
    assert summary["group_dir"] == str(group) and summary["status"] == "finished"
    assert summary["runs"][0]["epochs"] == 2
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["slurm-4242"]


def test_a_rerun_of_a_named_experiment_gets_a_fresh_folder(tmp_path):
    argv = ["experiment=smoke", *[a for a in _argv(tmp_path, "x", "trainer.max_epochs=1") if not a.startswith("name=")]]
    argv += ["wandb.mode=disabled", "explain.enabled=false", "explain.filters_every_n_epochs=0"]
    first, second = (fit.run(load_config(argv)) for _ in range(2))
    assert (first["group"], second["group"]) == ("smoke", "smoke-2")
    fit.run(load_config([*argv, "name=mine"]))
    with pytest.raises(ConfigError, match="already holds a run group; continue it with resume="):
        fit.run(load_config([*argv, "name=mine"]))  # a name of the user's own is never changed


def test_resume_a_run_folder_or_a_checkpoint_continues_that_run_only(tmp_path, stop_at):
    argv = _argv(tmp_path, "g", "model.head=both", "trainer.max_epochs=2", "wandb.mode=disabled")
    stop_at(0)  # the GAP run stops after its first epoch; the FC run never starts
    with pytest.raises(fit.Interrupted):
        fit.run(load_config(argv), argv)
    group = tmp_path / "outputs" / "g"
    gap, fc = group / "simple_cnn-gap", group / "simple_cnn-fc"
    summary = fit.run(load_config([f"resume={gap}"]), [f"resume={gap}"])  # the run folder: that run only
    assert [(r["head"], r["status"], r["epochs"]) for r in summary["runs"]] == [("gap", "finished", 2)]
    assert summary["status"] == "interrupted" and summary["resume"] == f"python train.py resume={group}"
    assert not fc.exists() and sorted(p.name for p in group.iterdir() if p.is_dir()) == ["simple_cnn-gap"]
    # A checkpoint: that run again, from that checkpoint (here the finished run's epoch-0 best, if any).
    ckpt = next(iter(sorted((gap / "checkpoints").glob("epoch*.ckpt"))))
    again = fit.run(load_config([f"resume={ckpt}"]))
    assert [(r["head"], r["status"]) for r in again["runs"]] == [("gap", "finished")]
    done = fit.run(load_config([f"resume={group}"]))  # the group: the FC run is what is left
    assert [(r["head"], r["status"]) for r in done["runs"]] == [("gap", "finished"), ("fc", "finished")]
    assert done["status"] == "finished" and done["resume"] is None


def test_a_resume_applies_exactly_the_keys_given_and_accepts_the_original_command_again(tmp_path, stop_at):
    argv = _argv(tmp_path, "g", "trainer.max_epochs=2", "wandb.mode=disabled", "data.num_workers=0")
    stop_at(0)
    with pytest.raises(fit.Interrupted):
        fit.run(load_config(argv), argv)
    group = tmp_path / "outputs" / "g"
    # The original command with resume= added: every key equals the group's, so nothing changes.
    # data.num_workers=auto equals the schema's default, and is still applied (it is allowed).
    again = [*argv, f"resume={group}", "data.num_workers=auto"]
    plan = runs.plan(group, runs.given_keys(load_config(again), again, None))
    assert plan.config.data.num_workers == "auto" and plan.config.trainer.max_epochs == 2
    with pytest.raises(ConfigError, match="trainer.max_epochs cannot change"):
        fit.run(load_config([f"resume={group}", "trainer.max_epochs=3"]), [f"resume={group}", "trainer.max_epochs=3"])
    summary = fit.run(load_config(again), again)
    assert summary["status"] == "finished" and summary["runs"][0]["epochs"] == 2
    saved = (group / "group.yaml").read_text()
    assert f"out_dir: {tmp_path / 'outputs'}" in saved  # absolute: a resume works from any folder


def test_a_requeued_slurm_job_finds_its_group_whatever_its_name(tmp_path, stop_at, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    argv = _argv(tmp_path, "mine", "trainer.max_epochs=2", "wandb.mode=disabled")
    stop_at(0)
    with pytest.raises(fit.Interrupted):
        fit.run(load_config(argv), argv)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    summary = fit.run(load_config(argv), argv)  # the same command, requeued
    assert summary["group"] == "mine" and summary["status"] == "finished"


def test_sigterm_only_raises_the_flag_no_collective_inside_the_signal_handler(tmp_path, monkeypatch):
    """Lightning's own handler broadcasts from inside the handler, which deadlocks when the signal
    lands while the ranks are in another collective; camlight's raises the flag, and Lightning's
    loop reduces it across ranks after the batch."""
    import torch.distributed as dist

    from camlight.fit import _quiet_sigterm

    trainer = fit.build_trainer(load_config(_argv(tmp_path, "t")).trainer, logger=False, callbacks=[])
    _quiet_sigterm(trainer)
    monkeypatch.setattr(dist, "broadcast", lambda *a, **k: pytest.fail("a collective in the signal handler"))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(type(trainer), "world_size", property(lambda self: 2))  # as if under DDP
    trainer._signal_connector._sigterm_notifier_fn(signal.SIGTERM, None)
    assert trainer.received_sigterm


def test_a_mistake_found_after_the_folder_was_claimed_leaves_nothing_also_under_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    argv = [a for a in _argv(tmp_path, "x", "explain.probe_size=64") if not a.startswith("name=")]
    with pytest.raises(ConfigError, match="explain.probe_size=64 is larger than the 32 validation images"):
        fit.run(load_config(argv), argv)  # found once the data is indexed, after slurm-9 was claimed
    assert not (tmp_path / "outputs").exists()


def test_only_rank_zero_continues_the_csv_log(tmp_path, monkeypatch):
    """Every rank builds the loggers; as with Lightning's CSVLogger, only rank zero's touches the
    file (two ranks pruning it at once raced on its temporary file)."""
    from pytorch_lightning.utilities import rank_zero_only

    from camlight.tracking import ResumedCSVLogger

    log = tmp_path / "csv" / "metrics.csv"
    log.parent.mkdir()
    log.write_text("epoch,step,val/acc\n0,3,0.5\n1,7,0.6\n2,11,0.7\n")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    ResumedCSVLogger(save_dir=str(tmp_path), name="csv", version="", start_epoch=2).experiment.log_metrics({"a": 1})
    assert log.read_text() == "epoch,step,val/acc\n0,3,0.5\n1,7,0.6\n2,11,0.7\n"
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert ResumedCSVLogger(save_dir=str(tmp_path), name="csv", version="", start_epoch=2).experiment is not None
    assert _csv(log) == [{"epoch": "0", "step": "3", "val/acc": "0.5"}, {"epoch": "1", "step": "7", "val/acc": "0.6"}]


def test_sigterm_between_two_runs_and_ctrl_c_before_training_are_clean_stops_too(tmp_path, monkeypatch):
    argv = _argv(tmp_path, "g", "model.head=both", "trainer.max_epochs=1", "wandb.mode=disabled")
    fit_one = fit.fit_one

    def then_term(*args, **kwargs):  # SIGTERM right after the GAP run, outside any trainer.fit
        row = fit_one(*args, **kwargs)
        monkeypatch.setattr(fit, "fit_one", fit_one)
        signal.raise_signal(signal.SIGTERM)
        return row

    monkeypatch.setattr(fit, "fit_one", then_term)
    with pytest.raises(fit.Interrupted) as stopped:
        fit.run(load_config(argv), argv)
    group = tmp_path / "outputs" / "g"
    summary = json.loads((group / "summary.json").read_text())
    assert stopped.value.signal_name == "SIGTERM" and summary["status"] == "interrupted"
    assert [(r["head"], r["status"]) for r in summary["runs"]] == [("gap", "finished")]
    done = fit.run(load_config([f"resume={group}"]))
    assert [(r["head"], r["status"]) for r in done["runs"]] == [("gap", "finished"), ("fc", "finished")]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is put back

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "build_datamodule", ctrl_c)  # Ctrl-C while the photos are indexed
    argv = _argv(tmp_path, "h", "wandb.mode=disabled")
    with pytest.raises(fit.Interrupted) as stopped:
        fit.run(load_config(argv), argv)
    assert stopped.value.summary is None and stopped.value.signal_name == "SIGINT"
    assert not (tmp_path / "outputs" / "h").exists()  # nothing was written: nothing is left
