"""Feature inversion and style transfer: the priors by hand, the losses they minimise, what deeper
layers lose, and the two commands."""

from __future__ import annotations

import csv

import pytest
import torch
from PIL import Image

import explain as explain_cli
from camlight.inspect.inversion import gram, invert, layer_features, stylize, total_variation
from camlight.modules import Classifier


def test_gram_and_total_variation_by_hand():
    f = torch.tensor([[[[1.0, 2.0]], [[0.0, 3.0]]]])  # (1, C=2, h=1, w=2)
    torch.testing.assert_close(gram(f), torch.tensor([[[5.0, 6.0], [6.0, 9.0]]]) / 4)
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])  # vertical diffs 2, 3; horizontal 1, 2
    torch.testing.assert_close(total_variation(x), torch.tensor((4 + 9) / 2 + (1 + 4) / 2))


def test_layer_features_stop_after_the_last_layer_and_leave_no_hook():
    model = Classifier("simple_cnn", "gap", image_size=32, width=4)
    calls = []
    model.head.register_forward_hook(lambda *_: calls.append(1))
    feats = layer_features(model, torch.randn(1, 3, 32, 32), ["backbone.block1", "backbone.block3"])
    assert set(feats) == {"backbone.block1", "backbone.block3"} and not calls  # the head never ran
    assert len(model.backbone.block1._forward_hooks) == 0
    with pytest.raises(ValueError, match="not a module"):
        layer_features(model, torch.randn(1, 3, 32, 32), ["layer9"])


@pytest.fixture(scope="module")
def trained(tiny_checkpoint):
    return tiny_checkpoint


def test_inversion_matches_the_features_and_deeper_layers_keep_less_of_the_image(trained):
    from camlight.datamodules import SyntheticPets

    model = Classifier.load_from_checkpoint(trained, map_location="cpu").train()
    dm = SyntheticPets(
        image_size=48, train_size=8, val_size=4, test_size=0, mean=model.hparams.mean, std=model.hparams.std
    )
    x = dm.dataset("val")[0]["image"]
    mse = {}
    for layer in ("backbone.block1", "backbone.block4"):
        rec, errors = invert(model, x, layer, steps=300)
        assert errors[-1] < 0.3 * errors[0], (layer, errors[0], errors[-1])
        mse[layer] = float((rec - x).pow(2).mean())
    # Measured: 0.69 against 1.46 (this test network's block1 has only 4 channels; the default
    # job's 32-channel block1 gives 0.11 against 1.43 for block4).
    assert mse["backbone.block1"] < 0.6 * mse["backbone.block4"], mse
    assert model.training and all(p.grad is None for p in model.parameters())


def test_style_transfer_moves_the_gram_matrices_toward_the_style(trained):
    model = Classifier.load_from_checkpoint(trained, map_location="cpu")
    g = torch.Generator().manual_seed(0)
    content, style = torch.randn(3, 48, 48, generator=g), torch.randn(3, 48, 48, generator=g).cumsum(2) / 8
    layers = ["backbone.block1", "backbone.block2"]
    result, losses = stylize(model, content, style, "backbone.block3", layers, steps=60)
    assert losses[-1] < 0.5 * losses[0]
    f = {k: layer_features(model.eval(), t[None], layers) for k, t in (("c", content), ("s", style), ("r", result))}
    for layer in layers:
        before = (gram(f["c"][layer]) - gram(f["s"][layer])).norm()
        after = (gram(f["r"][layer]) - gram(f["s"][layer])).norm()
        assert after < 0.5 * before, layer


def test_invert_and_style_commands(trained, tmp_path, capsys):
    out = tmp_path / "i"
    args = ["invert", f"checkpoint={trained}", "images=1", "steps=20", f"out={out}"]
    assert explain_cli.main(args) == 0
    with open(out / "inversion.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["layer"] for r in rows] == [f"backbone.block{i}" for i in range(1, 5)]
    assert len(list(out.glob("inversion_val_*.png"))) == 1
    Image.new("RGB", (50, 40), (10, 200, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (30, 60), (200, 20, 90)).save(tmp_path / "b.png")
    out = tmp_path / "s"
    style = ["style", f"checkpoint={trained}", "steps=5"]
    assert explain_cli.main([*style, f"content={tmp_path / 'a.png'}", f"style={tmp_path / 'b.png'}", f"out={out}"]) == 0
    assert Image.open(out / "result.png").size == (48, 48) and (out / "stylized.png").is_file()
    never = tmp_path / "never"
    capsys.readouterr()
    for command, extra, says in (
        (style, [f"content={tmp_path / 'a.png'}"], "style= must be an image file"),
        (["invert", f"checkpoint={trained}", "images=1"], ["layers=[layer9]"], "not a module"),
    ):
        assert explain_cli.main([*command, *extra, f"out={never}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not never.exists()
