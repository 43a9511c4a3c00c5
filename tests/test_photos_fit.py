"""End to end on photo fixtures: `camlight.fit.run` with the explanation callback on OxfordPets and
ImageFolder, then `explain.py split=val` on the checkpoint, and the command-line answers to bad data."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest

from camlight import fit, offline
from camlight.config import OfflineConfig, load_config
from camlight.modules import load_classifier
from tests.conftest import REPO
from tests.photo_fixtures import make_image_folder, make_oxford, truncate


def _argv(tmp_path, name: str, *extra: str) -> list[str]:
    return [
        f"out_dir={tmp_path / 'outputs'}",
        f"name={name}",
        "data.image_size=32",
        "data.batch_size=8",
        "model.width=4",
        "model.fc_hidden=8",
        "model.head=gap",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "explain.probe_size=4",
        "explain.methods=[gradcam,cam]",
        "explain.metrics=[pointing_game,energy_pointing_game,mask_iou,pxap]",
        "wandb.mode=disabled",
        *extra,
    ]


def _explain_val(checkpoint: str, out) -> list[dict]:
    """`explain.py checkpoint=... split=val methods=[gradcam]`: the rows of results.csv."""
    cfg = load_config(
        [f"checkpoint={checkpoint}", "split=val", f"out={out}", "methods=[gradcam]"],
        schema=OfflineConfig,
        defaults="explain.yaml",
    )
    assert offline.run(cfg, progress=False) == offline.EXIT_OK
    return list(csv.DictReader(open(out / "results.csv")))


def test_oxford_pets_trains_explains_and_scores_localization(tmp_path):
    make_oxford(tmp_path / "pets", per_breed=8, test_per_breed=1)
    truncate(tmp_path / "pets/oxford-iiit-pet/images/beagle_3.jpg")
    cfg = load_config(
        _argv(tmp_path, "pets", "data.name=oxford_pets", f"data.root={tmp_path / 'pets'}", "data.val_fraction=0.25")
    )
    summary = fit.run(cfg)
    run = summary["runs"][0]
    for method in ("gradcam", "cam"):
        scores = run["localization"][method]
        for metric in ("pointing_game", "energy_pointing_game", "mask_iou", "pxap"):
            assert 0.0 <= scores[metric] <= 1.0, (method, metric, scores)
    assert run["skipped_files"] == 1
    assert list(summary["skipped_files"]) == [str(tmp_path / "pets/oxford-iiit-pet/images/beagle_3.jpg")]
    assert "truncated" in next(iter(summary["skipped_files"].values()))
    assert json.loads((tmp_path / "outputs/pets/summary.json").read_text())["skipped_files"]
    run_dir = tmp_path / "outputs/pets/simple_cnn-gap"
    rows = list(csv.DictReader(open(run_dir / "explanations/metrics.csv")))
    assert rows and rows[0]["explain/gradcam/pointing_game"] != ""
    assert (run_dir / "explanations/epoch_000.png").is_file()
    # the checkpoint records the photo preprocessing, and explain.py rebuilds the split from it
    model = load_classifier(run["best_checkpoint"])
    assert model.preprocessing["eval_resize"] == round(32 * 8 / 7)
    assert model.preprocessing["mean"] == (0.485, 0.456, 0.406)
    results = _explain_val(run["best_checkpoint"], tmp_path / "explained")
    assert len(results) == 8
    assert all(r["label"] in ("cat", "dog") and r["gradcam/pointing_game"] in ("0", "1") for r in results)


def test_image_folder_with_loc_boxes_trains_explains_and_scores(tmp_path):
    make_image_folder(tmp_path / "inet", per_class=16, val_per_class=4, boxes="loc")
    cfg = load_config(
        _argv(tmp_path, "inet", "data.name=image_folder", f"data.root={tmp_path / 'inet'}", "model.head=both")
    )
    summary = fit.run(cfg)
    assert [r["head"] for r in summary["runs"]] == ["gap", "fc"]
    gap, fc = summary["runs"]
    assert 0.0 <= gap["localization"]["gradcam"]["pointing_game"] <= 1.0
    assert "cam" in gap["localization"] and "cam" not in fc["localization"]  # no CAM on an FC head
    assert 0.0 <= fc["localization"]["gradcam"]["energy_pointing_game"] <= 1.0
    assert load_classifier(gap["best_checkpoint"]).class_names == ("tench", "English springer")


def test_image_folder_without_boxes_logs_explanations_without_localization(tmp_path):
    make_image_folder(tmp_path / "kaggle", classes=("cat", "dog"), val_per_class=0, boxes=None)
    argv = _argv(
        tmp_path,
        "kaggle",
        "data.name=image_folder",
        f"data.root={tmp_path / 'kaggle'}",
        "explain.metrics=[pointing_game,deletion_auc]",
        "data.val_fraction=0.25",
    )
    with pytest.warns(UserWarning, match="no ground-truth masks or boxes, so pointing_game cannot be scored"):
        summary = fit.run(load_config(argv))
    scores = summary["runs"][0]["localization"]["gradcam"]
    # scores that need no ground truth remain: deletion AUC, and the default job's sanity check
    assert list(scores) == ["deletion_auc", "sanity_spearman"] and 0.0 <= scores["deletion_auc"] <= 1.0
    assert (tmp_path / "outputs/kaggle/simple_cnn-gap/explanations/epoch_000.png").is_file()
    # explain.py on the same split: no ground truth, so no localization columns (not misses)
    results = _explain_val(summary["runs"][0]["best_checkpoint"], tmp_path / "explained")
    assert len(results) == 6 and not any(k.endswith("pointing_game") for k in results[0])


def test_batches_of_only_unreadable_files_do_not_stop_training(tmp_path):
    make_image_folder(tmp_path / "bad", classes=("cat", "dog"), per_class=8, val_per_class=4, boxes=None)
    train = sorted((tmp_path / "bad/train").rglob("*.JPEG"))
    for path in train:
        truncate(path)
    argv = _argv(tmp_path, "bad", "data.name=image_folder", f"data.root={tmp_path / 'bad'}", "explain.enabled=false")
    with pytest.warns(UserWarning, match="16 of the 24 photos under .* could not be used"):
        summary = fit.run(load_config(argv))
    assert summary["runs"][0]["skipped_files"] == 16 and summary["runs"][0]["val_acc"] is not None


def _train(tmp_path, *argv):
    return subprocess.run(
        [sys.executable, str(REPO / "train.py"), f"out_dir={tmp_path / 'outputs'}", *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


def test_bad_data_settings_get_one_line_and_exit_code_2(tmp_path):
    make_image_folder(tmp_path / "d", classes=("cat", "dog"), boxes=None)
    (tmp_path / "d/train/empty").mkdir()
    cases = [
        (["data.name=image_folder"], "data.root is required with data.name=image_folder"),
        (["data.name=image_folder", f"data.root={tmp_path / 'nope'}"], "it should hold root/train/<class>/*.jpg"),
        (["data.name=oxford_pets", f"data.root={tmp_path / 'd'}"], "oxford-iiit-pet/images not found"),
        (["data.name=image_folder", f"data.root={tmp_path / 'd'}"], "train/empty holds no images"),
        (
            [
                "data.name=image_folder",
                f"data.root={tmp_path / 'd'}",
                "data.classes=[cat,dog]",
                "explain.probe_size=99",
            ],
            "explain.probe_size=99 is larger than the 8 validation images",
        ),
        (
            ["data.name=image_folder", f"data.root={tmp_path / 'd'}", "data.classes=[cat,dog]", "data.boxes=loc"],
            "data.boxes=loc but neither",
        ),
    ]
    for argv, message in cases:
        out = _train(tmp_path, *argv)
        assert out.returncode == 2, (argv, out.stderr[-500:])
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (argv, out.stderr[-500:])
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


@pytest.mark.parametrize("preset", ["pets_gap_vs_fc", "imagenette"])
def test_presets_run_and_say_whether_they_start_from_imagenet_weights(tmp_path, preset):
    if preset == "pets_gap_vs_fc":
        make_oxford(tmp_path / "data", per_breed=4, test_per_breed=1)
        root = tmp_path / "data"
    else:
        root = tmp_path / "data/imagenette2-320"
        make_image_folder(root, per_class=4, val_per_class=2, boxes=None)
    shrink = [
        f"experiment={preset}",
        "data.image_size=64",
        "data.resize=64",
        "data.batch_size=4",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.enable_progress_bar=false",
        "explain.probe_size=2",
        "explain.methods=[gradcam]",
        "wandb.mode=disabled",
        "name=preset",
    ]
    env = {**__import__("os").environ, "TORCH_HOME": str(tmp_path / "torch")}  # an empty weights cache
    out = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *shrink],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the presets read ./data
        env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    log = out.stdout + out.stderr
    assert "resnet18: trained from scratch (cannot download the resnet18 weights (IMAGENET1K_V1)" in log
    assert "(CAMLIGHT_OFFLINE is set); put the file at" in log  # a warning line: the preset wanted them
    assert str(root) in log  # the dataset line says what was found where
    summary = json.loads((tmp_path / "outputs/preset/summary.json").read_text())
    assert [r["head"] for r in summary["runs"]] == ["gap", "fc"]
    assert all(r["pretrained"] is False for r in summary["runs"])


def test_pretrained_auto_uses_cached_weights_when_they_are_there(tmp_path, monkeypatch):
    import torch
    from torchvision.models import resnet18

    from camlight.modules import weights_of

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = load_config(["model.backbone=resnet18", "model.pretrained=auto", f"out_dir={tmp_path}"])
    used, line = fit.resolve_pretrained(cfg)
    assert not used and line.startswith("resnet18: trained from scratch (cannot download the resnet18 weights")
    path = weights_of("resnet18").path
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    weights = resnet18().state_dict()
    torch.save(weights, path)
    used, line = fit.resolve_pretrained(cfg)
    assert used and line == f"resnet18: starting from ImageNet weights IMAGENET1K_V1 ({path})"
    from camlight.datamodules import SyntheticPets

    model = fit.build_model(cfg, "gap", SyntheticPets(train_size=1, val_size=1, test_size=0), pretrained=True)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, weights["layer4.1.conv2.weight"])
    assert fit.resolve_pretrained(load_config(["model.backbone=simple_cnn", "model.pretrained=auto"]))[0] is False


@pytest.mark.slow
def test_ddp_on_photos_counts_the_bad_files_of_every_rank(tmp_path):
    """Each rank reads its own share of the files; the summary lists the bad ones of both."""
    make_image_folder(tmp_path / "inet", per_class=16, val_per_class=4, boxes="loc")
    bad = [tmp_path / f"inet/train/n01440764/n01440764_{n}.JPEG" for n in range(0, 16, 2)]
    for path in bad:  # 8 of 32: with a random half of the files each, both ranks meet some
        truncate(path)
    argv = _argv(
        tmp_path,
        "ddp",
        "data.name=image_folder",
        f"data.root={tmp_path / 'inet'}",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.strategy=ddp",
    )
    out = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *argv], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "outputs/ddp/summary.json").read_text())
    assert sorted(summary["skipped_files"]) == sorted(map(str, bad))
    assert summary["runs"][0]["skipped_files"] == len(bad)
    assert 0.0 <= summary["runs"][0]["localization"]["gradcam"]["pointing_game"] <= 1.0
