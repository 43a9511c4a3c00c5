"""ExplanationCallback: what it logs and writes, that it never changes training, and DDP."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from camlight import fit
from camlight.callbacks import ExplanationCallback
from camlight.config import ConfigError, load_config
from camlight.datamodules import SyntheticPets
from camlight.modules import Classifier, load_classifier
from camlight.viz import colorize, draw_contour, overlay


def _dm(**kw):
    return SyntheticPets(**{"train_size": 64, "val_size": 32, "test_size": 0, "batch_size": 16, **kw})


def _trainer(tmp_path, callbacks, epochs=2, logger=False, **kw):
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        deterministic=True,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


# -- overlays ---------------------------------------------------------------------------------


def test_overlay_colours_and_contour_pixels():
    images = torch.zeros(1, 3, 6, 6)
    maps = torch.zeros(1, 6, 6)
    maps[0, 2, 3] = 1.0
    out = overlay(images, maps, alpha=0.5)
    jet_top, jet_bottom = colorize(torch.ones(1, 1, 1))[0, :, 0, 0], colorize(torch.zeros(1, 1, 1))[0, :, 0, 0]
    torch.testing.assert_close(jet_top, torch.tensor([0.5, 0.0, 0.0]), atol=0.01, rtol=0)  # jet: dark red at 1
    torch.testing.assert_close(jet_bottom, torch.tensor([0.0, 0.0, 0.5]), atol=0.01, rtol=0)  # dark blue at 0
    torch.testing.assert_close(out[0, :, 2, 3], 0.5 * jet_top)
    torch.testing.assert_close(out[0, :, 0, 0], 0.5 * jet_bottom)
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, 1:5, 1:5] = True
    grey = torch.full((1, 3, 6, 6), 0.5)
    drawn = draw_contour(grey, mask)
    green = torch.tensor([0.0, 1.0, 0.0])
    border = mask.clone()
    border[0, 2:4, 2:4] = False  # the 4×4 square's outline: its 12 edge pixels
    for y in range(6):
        for x in range(6):
            expected = green if border[0, y, x] else torch.tensor([0.5, 0.5, 0.5])
            torch.testing.assert_close(drawn[0, :, y, x], expected, msg=f"{y},{x}")


# -- setup and warnings -------------------------------------------------------------------------


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="unknown method 'gradcm'; choose from saliency"):
        ExplanationCallback(["gradcm"])
    with pytest.raises(ValueError, match="unknown metric 'iou'; choose from pointing_game"):
        ExplanationCallback(metrics=["iou"])
    with pytest.raises(ValueError, match="every_n_epochs must be an integer >= 1"):
        ExplanationCallback(every_n_epochs=0)


def test_cam_on_an_fc_head_is_skipped_with_one_warning(tmp_path):
    model = Classifier("simple_cnn", "fc", width=4)
    callback = ExplanationCallback(["cam", "gradcam"], probe_size=8, pair_probe=False, log_images=False)
    with pytest.warns(
        UserWarning, match="skipping cam: cam needs the target layer to feed a global-average-pooling head"
    ) as record:
        _trainer(tmp_path, [callback], epochs=1, limit_train_batches=1).fit(model, datamodule=_dm())
    assert len([w for w in record if "skipping" in str(w.message)]) == 1
    assert callback.active == ["gradcam"] and set(callback.last) == {"gradcam"}


# -- training is untouched -----------------------------------------------------------------------


def _train(tmp_path, with_callback):
    pl.seed_everything(0, workers=True, verbose=False)
    model = Classifier("simple_cnn", "gap", width=4)
    callbacks = [ExplanationCallback(probe_size=8, max_images=4)] if with_callback else []
    _trainer(tmp_path, callbacks, epochs=3).fit(model, datamodule=_dm())
    return model.state_dict(), torch.get_rng_state()


def test_training_with_the_callback_gives_the_same_weights_bit_for_bit(tmp_path):
    without, rng_without = _train(tmp_path / "a", False)
    with_cb, rng_with = _train(tmp_path / "b", True)
    for key in without:
        assert torch.equal(without[key], with_cb[key]), key
    assert torch.equal(rng_without, rng_with)
    assert len(list((tmp_path / "b" / "explanations").glob("epoch_*.png"))) == 3


# -- what reaches the loggers and the disk ---------------------------------------------------------


def test_scores_reach_the_csv_logger_and_the_run_directory(tmp_path):
    model = Classifier("simple_cnn", "gap", width=4)
    callback = ExplanationCallback(
        ["saliency", "gradcam"], probe_size=8, metrics=["pointing_game", "mask_iou"], every_n_epochs=2
    )
    logger = CSVLogger(tmp_path, name="csv", version="")
    _trainer(tmp_path, [callback], epochs=3, logger=logger).fit(model, datamodule=_dm())
    with open(tmp_path / "csv" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("explain/gradcam/pointing_game")]
    assert [int(r["epoch"]) for r in logged] == [1, 2]  # every 2nd epoch, and the last
    with open(tmp_path / "explanations" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r, row_logged in zip(rows, logged, strict=True):
        for key in (
            "explain/gradcam/pointing_game",
            "explain/saliency/mask_iou",
            "explain/gradcam/class_discrimination",
        ):
            assert float(r[key]) == pytest.approx(float(row_logged[key]))
    assert sorted(p.name for p in (tmp_path / "explanations").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
        "localization.png",
        "metrics.csv",
    ]
    assert set(callback.last["gradcam"]) == {
        "pointing_game",
        "pointing_game_class_mean",
        "mask_iou",
        "class_discrimination",
    }


def test_scores_match_a_fresh_evaluation_of_the_final_model(tmp_path):
    from camlight import metrics as M
    from camlight.explain import explain

    model = Classifier("simple_cnn", "gap", width=4)
    dm = _dm()
    callback = ExplanationCallback(
        ["gradcam"], probe_size=8, metrics=["pointing_game", "energy_pointing_game"], log_images=False
    )
    _trainer(tmp_path, [callback], epochs=1).fit(model, datamodule=dm)
    probe = dm.probe_batch(8)
    maps = explain(model, probe["image"], ["gradcam"], targets=probe["label"])["gradcam"]
    assert callback.last["gradcam"]["pointing_game"] == pytest.approx(
        M.pointing_game(maps, probe["mask"]).float().mean().item()
    )
    assert callback.last["gradcam"]["energy_pointing_game"] == pytest.approx(
        M.energy_pointing_game(maps, probe["box"]).mean().item()
    )


@pytest.mark.slow
def test_fit_run_logs_maps_table_and_scores_to_wandb_and_the_summary(tmp_path, tiny_argv):
    cfg = load_config(
        [*tiny_argv, "model.head=gap", "trainer.max_epochs=2", "explain.probe_size=8", "explain.max_images=4"]
    )
    summary = fit.run(cfg)
    run = summary["runs"][0]
    assert set(run["localization"]) == {"saliency", "guided_backprop", "cam", "gradcam"}
    assert 0 <= run["localization"]["gradcam"]["pointing_game"] <= 1
    on_disk = json.loads((tmp_path / "outputs" / "tiny" / "summary.json").read_text())
    assert on_disk["runs"][0]["localization"] == run["localization"]
    wandb_dir = Path(run["wandb_run_dir"])
    media = wandb_dir / "files" / "media"
    assert len(list((media / "images" / "explain").glob("maps_*.png"))) == 2  # one grid per epoch
    assert len(list((media / "table" / "explain").glob("probe_*.table.json"))) == 2
    out = subprocess.run(
        [str(Path(sys.executable).with_name("wandb")), "leet", "inspect", str(wandb_dir), "--summary", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    logged = json.loads(out.stdout)["summary"]
    assert logged["explain/gradcam/pointing_game"] == pytest.approx(run["localization"]["gradcam"]["pointing_game"])
    assert "localization on the probe set" in fit.format_summary(summary)


def test_every_metric_can_be_scored_by_the_callback():
    from camlight.callbacks import METRICS

    model = Classifier("simple_cnn", "gap", width=4).eval()
    callback = ExplanationCallback(["gradcam", "saliency"], probe_size=4, metrics=list(METRICS))
    callback.prepare(_dm(), model)
    scores, _, _ = callback.evaluate(model)
    for method in ("gradcam", "saliency"):
        for name in METRICS:
            value = scores[f"explain/{method}/{name}"]
            assert isinstance(value, float) and 0.0 <= value <= 1.0, (method, name, value)


def test_explain_config_mistakes_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="explain: unknown method 'gradcm'"):
        fit.check(load_config([f"out_dir={tmp_path}", "explain.methods=[gradcm]"]))
    with pytest.raises(ConfigError, match="explain.probe_size=64 is larger than data.val_size=32"):
        fit.check(load_config([f"out_dir={tmp_path}", "explain.probe_size=64", "data.val_size=32"]))


# -- DDP ------------------------------------------------------------------------------------------


class RecordingCallback(ExplanationCallback):
    """Leaves a marker file for every grid a rank renders (each rank runs its own copy)."""

    def _log_images(self, trainer, pl_module, batch, maps):
        (self.out_dir.parent / f"grid_rank{trainer.global_rank}_epoch{trainer.current_epoch}").touch()
        super()._log_images(trainer, pl_module, batch, maps)


@pytest.mark.slow
def test_two_process_ddp_logs_each_image_once_and_reduces_metrics(tmp_path):
    model = Classifier("simple_cnn", "gap", width=4)
    callback = RecordingCallback(
        ["gradcam", "saliency"], probe_size=7, metrics=["pointing_game", "mask_iou"], pair_probe=True, max_images=8
    )
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        deterministic=True,
        logger=False,
        callbacks=[callback, ckpt],
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=_dm())
    pngs = sorted(p.name for p in (tmp_path / "explanations").glob("epoch_*.png"))
    assert pngs == ["epoch_000.png", "epoch_001.png"]
    assert sorted(p.name for p in tmp_path.glob("grid_rank*")) == ["grid_rank0_epoch0", "grid_rank0_epoch1"]
    with open(tmp_path / "explanations" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1]  # one row per epoch: written once
    # The reduced scores equal one process scoring the whole probe set with the final weights.
    final = load_classifier(tmp_path / "ckpt" / "last.ckpt")
    single = ExplanationCallback(
        ["gradcam", "saliency"], probe_size=7, metrics=["pointing_game", "mask_iou"], pair_probe=True
    )
    single.prepare(_dm(), final)
    scores, _, _ = single.evaluate(final)
    for key in ("explain/gradcam/pointing_game", "explain/saliency/mask_iou", "explain/gradcam/class_discrimination"):
        assert float(rows[-1][key]) == pytest.approx(scores[key], abs=1e-6), key
