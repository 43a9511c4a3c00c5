"""Fooling images and FGSM: hand-computed steps, the budget, and the two commands."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from torch import nn

import explain as explain_cli
from camlight.inspect.adversarial import fgsm, fool
from camlight.modules import Classifier

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)


def _linear():
    """Two classes on the flattened 3×2×2 input: class 1's score minus class 0's is w·x."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 2, bias=False))
    with torch.no_grad():
        w = torch.linspace(-1, 1, 12)
        model[1].weight.copy_(torch.stack([-w, w]))
    return model


def test_fgsm_moves_each_pixel_by_eps_along_the_loss_gradients_sign_within_the_range():
    model = _linear().train()
    x = torch.zeros(2, 3, 2, 2)
    x[1, 2] = 6.95  # channel 2 of image 1 sits just below the top of its valid range, (1 − 0.3)/0.1 = 7
    labels = torch.tensor([1, 1])
    adv = fgsm(model, x, labels, 4, MEAN, STD)
    unit = torch.tensor([1 / (255 * s) for s in STD])[:, None, None]
    # The loss of class 1 falls along +w, so FGSM steps along −w: sign(−w) per pixel.
    sign = -torch.linspace(-1, 1, 12).sign().reshape(3, 2, 2)
    expected = x[0] + 4 * unit * sign
    torch.testing.assert_close(adv[0], expected)
    top = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD, strict=True)])[:, None, None]
    up = sign[2] > 0
    assert torch.equal(adv[1, 2][up], top[2].expand(2, 2)[up])  # clamped at the top, not 6.95 + 0.157
    assert torch.equal(fgsm(model, x, labels, 0, MEAN, STD), x)
    assert model.training and model[1].weight.grad is None


def test_fool_reaches_the_target_within_the_budget_and_reports_the_eps_it_needed():
    torch.manual_seed(0)
    model = _linear()
    x = torch.randn(4, 3, 2, 2) * 0.1
    with torch.no_grad():
        predicted = model(x).argmax(1)
    target = 1 - predicted
    got = fool(model, x, target, MEAN, STD, max_eps=64, step=0.5)
    unit = torch.tensor([1 / (255 * s) for s in STD])[:, None, None]
    assert got["success"].all()
    with torch.no_grad():
        assert torch.equal(model(got["adversarial"]).argmax(1), target)
    size = ((got["adversarial"] - x) / unit).abs().flatten(1).amax(1)
    torch.testing.assert_close(got["eps_needed"], size)
    assert (size <= 64 + 1e-4).all() and (size > 0).all()
    # One step less of budget than the first image needed: it cannot be fooled, and says so.
    tight = fool(model, x[:1], target[:1], MEAN, STD, max_eps=float(size[0]) - 0.5, step=0.5)
    assert not tight["success"][0] and torch.isnan(tight["eps_needed"][0])


@pytest.fixture(scope="module")
def trained(tiny_checkpoint):
    return tiny_checkpoint


def test_fool_command_writes_the_table_and_the_pictures(trained, tmp_path, capsys):
    out = tmp_path / "f"
    assert explain_cli.main(["fool", f"checkpoint={trained}", "images=6", "max_images=2", f"out={out}"]) == 0
    with open(out / "fooling.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and len(list(out.glob("fooling_*.png"))) == 2
    for r in rows:
        assert r["target"] != r["predicted"]
        if r["success"] == "True":
            assert r["predicted_after"] == r["target"] and 0 < float(r["eps_needed"]) <= 16
    never = tmp_path / "never"
    capsys.readouterr()
    for extra, says in ((["class=horse"], "unknown class 'horse'"), (["max_eps=0"], "max_eps")):
        assert explain_cli.main(["fool", f"checkpoint={trained}", *extra, f"out={never}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not never.exists()


def test_robustness_command_counts_what_a_hand_written_fgsm_counts(trained, tmp_path, capsys):
    from camlight.datamodules import SyntheticPets

    out = tmp_path / "r"
    args = ["robustness", f"checkpoint={trained}", f"out={out}", "eps=[0,2,8]", "batch_size=5"]
    assert explain_cli.main([*args, "trainer.enable_progress_bar=false"]) == 0
    with open(out / "robustness.csv") as f:
        rows = {float(r["eps"]): float(r["accuracy"]) for r in csv.DictReader(f)}
    model = Classifier.load_from_checkpoint(trained, map_location="cpu").eval()
    mean, std = model.hparams.mean, model.hparams.std
    dm = SyntheticPets(image_size=48, train_size=64, val_size=32, test_size=0, mean=mean, std=std)
    x = torch.stack([dm.dataset("val")[i]["image"] for i in range(32)]).requires_grad_(True)
    y = torch.stack([dm.dataset("val")[i]["label"] for i in range(32)])
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y, reduction="sum"), x)
    lo = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)])[:, None, None]
    hi = torch.tensor([(1 - m) / s for m, s in zip(mean, std, strict=True)])[:, None, None]
    for eps in (0.0, 2.0, 8.0):
        step = eps / 255 / torch.tensor(std)[:, None, None]
        adv = torch.maximum(torch.minimum(x.detach() + step * g.sign(), hi), lo)
        with torch.no_grad():
            expected = float((model(adv).argmax(1) == y).float().mean())
        assert rows[eps] == pytest.approx(expected, abs=1e-6), eps
    assert json.loads((out / "run.json").read_text())["images"] == 32
    never = tmp_path / "never"
    for extra, says in (
        (["eps=[-1]"], "sizes >= 0"),
        (["data.val_size=1", "trainer.devices=2", "trainer.strategy=ddp"], "1 images for 2 processes"),
        (["trainer.precision=16-true"], "half precision"),
    ):
        capsys.readouterr()
        assert explain_cli.main(["robustness", f"checkpoint={trained}", *extra, f"out={never}"]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not never.exists()
