import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from camlight import fit
from camlight.config import ConfigError, load_config
from camlight.modules import checkpoint_config, load_classifier
from camlight.summary import format_summary


def _wandb_summary(run_dir: Path) -> dict:
    """What reached W&B, read back from the offline run itself by W&B's own tool."""
    wandb = Path(sys.executable).with_name("wandb")
    out = subprocess.run(
        [str(wandb), "leet", "inspect", str(run_dir), "--summary", "--json"], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_a_short_run_writes_checkpoints_metrics_summary_and_wandb_runs(tmp_path, tiny_argv):
    cfg = load_config(tiny_argv)
    summary = fit.run(cfg)
    group_dir = tmp_path / "outputs" / "tiny"
    assert json.loads((group_dir / "summary.json").read_text()) == summary
    assert [r["head"] for r in summary["runs"]] == ["gap", "fc"]
    # the findings, from the group's own numbers, in their file and in the report
    findings = (group_dir / "findings.md").read_text()
    assert "## Accuracy" in findings and "## Localization, GAP head" in findings and "centre baseline" in findings
    assert (
        "<h2>Findings</h2>" in (group_dir / "report.html").read_text()
        and "<h3>Accuracy</h3>" in (group_dir / "report.html").read_text()
    )
    for row in summary["runs"]:
        run_dir = group_dir / f"simple_cnn-{row['head']}"
        # Checkpoint: the best on val/acc, rebuilt from the file alone, with the resolved config inside.
        best = Path(row["best_checkpoint"])
        assert best.is_file() and best.parent == run_dir / "checkpoints"
        model = load_classifier(best)
        assert model.hparams.head == row["head"] and model.class_names == ("cat", "dog")
        assert checkpoint_config(best)["model"]["head"] == row["head"]
        assert (run_dir / "config.yaml").is_file()
        assert 0.0 <= row["val_acc"] <= 1.0
        # CSV metrics: one validation row per epoch.
        with open(row["csv_metrics"]) as f:
            rows = [r for r in csv.DictReader(f) if r.get("val/acc")]
        assert len(rows) == 1 and abs(float(rows[0]["val/acc"]) - row["last_val_acc"]) < 1e-6
        # W&B offline run: a directory of its own, holding what was logged.
        wandb_dir = Path(row["wandb_run_dir"])
        assert wandb_dir.parent == run_dir / "wandb" and wandb_dir.name.startswith("offline-run-")
        assert list(wandb_dir.glob("*.wandb"))
        assert row["wandb_sync"] == f"wandb sync {wandb_dir}"
        logged = _wandb_summary(wandb_dir)
        assert logged["state"] == "finished" and logged["name"] == f"simple_cnn-{row['head']}"
        assert logged["project"] == "camlight"
        assert abs(logged["summary"]["val/acc"] - row["last_val_acc"]) < 1e-6
        assert "train/loss_epoch" in logged["summary"] and "val/loss" in logged["summary"]
        assert logged["config"]["model"]["head"] == row["head"] and logged["config"]["name"] == "tiny"
    table = format_summary(summary)
    assert "gap" in table and "fc" in table and "wandb sync" in table


def test_a_group_directory_is_never_overwritten(tmp_path, tiny_argv):
    cfg = load_config([*tiny_argv, "model.head=gap", "wandb.mode=disabled"])
    first = fit.run(cfg)
    assert first["runs"][0]["wandb_run_dir"] is None
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ConfigError, match="already holds a run group"):
        fit.run(cfg)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_the_same_seed_trains_the_same_weights(tmp_path, tiny_argv):
    weights = []
    for name in ("a", "b"):
        cfg = load_config([*tiny_argv, f"name={name}", "model.head=gap", "wandb.mode=disabled"])
        best = fit.run(cfg)["runs"][0]["last_checkpoint"]
        weights.append(torch.load(best, weights_only=True)["state_dict"])
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


@pytest.mark.parametrize("name", ["../x", "../../x", "a/b", "/abs", ".", "..", "x/"])
def test_a_name_that_would_write_outside_out_dir_is_refused_before_any_work(tmp_path, tiny_argv, name):
    before = sorted(tmp_path.parent.rglob("*"))
    with pytest.raises(ConfigError, match="must be one folder name inside out_dir"):
        fit.run(load_config([*tiny_argv, f"name={name}"]))
    assert sorted(tmp_path.parent.rglob("*")) == before
    fit.check_name("group-2 (cats)")  # any single folder name is fine


def test_last_ckpt_holds_the_final_weights_also_when_val_acc_stops_improving(tmp_path, tiny_argv, monkeypatch):
    """With a learning rate too small to change val/acc, the best checkpoint stays at epoch 0; last.ckpt
    (and the summary's last_checkpoint) must still be the final epoch's state, weights included."""
    trainers = []
    build = fit.build_trainer
    monkeypatch.setattr(fit, "build_trainer", lambda *a, **k: trainers.append(build(*a, **k)) or trainers[-1])
    argv = [*tiny_argv, "model.head=gap", "wandb.mode=disabled", "explain.enabled=false", "trainer.max_epochs=3"]
    run = fit.run(load_config([*argv, "optim.lr=1e-9"]))["runs"][0]
    last, best = (torch.load(run[k], weights_only=True) for k in ("last_checkpoint", "best_checkpoint"))
    assert Path(run["last_checkpoint"]).name == "last.ckpt"
    assert best["epoch"] == 0 and last["epoch"] == 2 and last["global_step"] == trainers[-1].global_step
    final = trainers[-1].lightning_module.state_dict()
    assert final.keys() == last["state_dict"].keys()
    for key, value in final.items():
        assert torch.equal(value, last["state_dict"][key]), key
    assert any(not torch.equal(best["state_dict"][k], final[k]) for k in final)  # training moved the weights


@pytest.mark.slow
def test_train_py_under_two_process_ddp_writes_one_group(tmp_path, tiny_argv):
    """Lightning's DDP launcher re-runs train.py for rank 1: both ranks must agree on the group,
    and only rank zero may own W&B runs, write the summary and print it."""
    args = [a for a in tiny_argv if not a.startswith("name=")]  # the group name comes from the clock
    args += [
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "explain.probe_size=8",
        "trainer.max_epochs=2",
    ]
    script = Path(__file__).resolve().parent.parent / "train.py"
    out = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    groups = list((tmp_path / "outputs").iterdir())
    assert len(groups) == 1
    summary = json.loads((groups[0] / "summary.json").read_text())
    assert [r["head"] for r in summary["runs"]] == ["gap", "fc"]
    assert all(r["wandb_run_dir"] and Path(r["wandb_run_dir"]).is_dir() for r in summary["runs"])
    assert len(list(groups[0].rglob("*.wandb"))) == 2  # one W&B run per head, none from rank 1
    assert out.stdout.count("summary: ") == 1
    for head in ("gap", "fc"):
        pngs = sorted(p.name for p in (groups[0] / f"simple_cnn-{head}" / "explanations").glob("epoch_*.png"))
        assert pngs == ["epoch_000.png", "epoch_001.png"]


def test_the_trainer_section_reaches_pl_trainer_whole(tmp_path):
    import inspect

    import pytorch_lightning as pl

    from camlight.config import TrainerConfig, fields

    keys = [k for k, _, _ in fields(TrainerConfig)]
    accepted = inspect.signature(pl.Trainer.__init__).parameters
    assert all(k in accepted for k in keys), [k for k in keys if k not in accepted]
    assert not set(keys) & set(fit.SET_BY_CAMLIGHT)
    cfg = load_config(
        [
            "trainer.max_epochs=3",
            "trainer.limit_val_batches=2",
            "trainer.log_every_n_steps=7",
            "trainer.deterministic=false",
        ]
    )
    trainer = fit.build_trainer(cfg.trainer, default_root_dir=str(tmp_path), logger=False)
    assert (trainer.max_epochs, trainer.limit_val_batches, trainer.log_every_n_steps) == (3, 2, 7)
    with pytest.raises(
        TypeError, match="build_trainer sets only logger, callbacks, default_root_dir, plugins, not max_epochs"
    ):
        fit.build_trainer(cfg.trainer, max_epochs=1)


@pytest.mark.slow
def test_a_zoo_backbone_trains_both_heads_and_is_explained(tmp_path, tiny_argv):
    cfg = load_config([*tiny_argv, "model.backbone=mobilenet_v3_small", "data.image_size=64", "wandb.mode=disabled"])
    summary = fit.run(cfg)
    assert [r["head"] for r in summary["runs"]] == ["gap", "fc"]
    for run in summary["runs"]:
        model = load_classifier(run["best_checkpoint"])
        assert model.hparams.backbone == "mobilenet_v3_small" and model.target_layer == "backbone"
        assert set(run["localization"]) >= {"saliency", "guided_backprop", "gradcam"}
        assert 0.0 <= run["localization"]["gradcam"]["pointing_game"] <= 1.0
    assert "cam" in summary["runs"][0]["localization"]  # the GAP head takes the trunk's map: CAM applies
