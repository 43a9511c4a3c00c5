"""Neuron targets: explaining one unit of an intermediate layer (target="layer:channel[:row:col]"),
against captum's neuron attributions, the receptive field, and hand-computed gradients."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision

from camlight.explain import explain
from camlight.explain.neuron import Neuron, parse_neuron
from camlight.inspect.receptive import receptive_field
from camlight.modules import Classifier

captum_attr = pytest.importorskip("captum.attr", reason="parity tests need the 'parity' extra")


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def _x(n=2, size=64, seed=1):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_a_single_neurons_saliency_is_captums_neuron_gradient(resnet):
    x = _x()
    ours = explain(resnet, x, ["saliency"], targets="layer2:5:3:4", raw=True)["saliency"]
    theirs = captum_attr.NeuronGradient(resnet, resnet.layer2).attribute(x, neuron_selector=(5, 3, 4))
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_guided_backprop_and_deconvnet_of_a_neuron_match_captums(resnet):
    x = _x()
    for method, cls in (("guided_backprop", "NeuronGuidedBackprop"), ("deconvnet", "NeuronDeconvolution")):
        ours = explain(resnet, x, [method], targets=Neuron("layer3", 7, 1, 2), raw=True)[method]
        theirs = getattr(captum_attr, cls)(resnet, resnet.layer3).attribute(x, neuron_selector=(7, 1, 2))
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5, msg=method)


def test_a_neurons_gradient_lives_in_its_receptive_field(resnet):
    """Zeiler & Fergus's projection of one neuron reaches only the pixels it sees: every non-zero
    gradient lies in the receptive field computed from the graph."""
    x = _x(1, 96)
    grad = explain(resnet, x, ["saliency"], targets="layer2:3:2:9", raw=True)["saliency"][0].abs().sum(0)
    y0, y1, x0, x1 = receptive_field(resnet, "layer2").box(2, 9, 96, 96)
    outside = grad.clone()
    outside[y0:y1, x0:x1] = 0
    assert grad[y0:y1, x0:x1].sum() > 0 and outside.sum() == 0


def test_channel_targets_sum_or_take_the_max_over_space():
    torch.manual_seed(0)
    model = Classifier(backbone="simple_cnn", head="gap", image_size=32, width=4).eval()
    x = _x(2, 32).requires_grad_(True)
    a = model.backbone.block2(model.backbone.block1(x))
    for spec, value in (("backbone.block2:3", a[:, 3].sum((1, 2))), ("backbone.block2:3:max", a[:, 3].amax((1, 2)))):
        (expected,) = torch.autograd.grad(value.sum(), x, retain_graph=True)
        got = explain(model, x.detach(), ["saliency"], targets=spec, raw=True)["saliency"]
        torch.testing.assert_close(got, expected, msg=spec)


def test_gradcam_of_a_neuron_at_an_earlier_layer_named_as_in_the_model(resnet):
    """layer= names the model's own modules (the wrapper that cuts at the neuron is invisible):
    Grad-CAM at layer2 of a layer3 neuron equals the hand-computed α-weighted activations."""
    x = _x(1)
    got = explain(resnet, x, ["gradcam"], targets="layer3:4:2:1", layer="layer2", raw=True)["gradcam"]
    seen = {}
    hooks = [
        getattr(resnet, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
        for n in ("layer2", "layer3")
    ]
    try:
        resnet(x)
    finally:
        for h in hooks:
            h.remove()
    (grad,) = torch.autograd.grad(seen["layer3"][0, 4, 2, 1], seen["layer2"])
    expected = (grad.mean((2, 3), keepdim=True) * seen["layer2"]).sum(1).relu().detach()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    for method in ("score_cam", "rise"):
        with pytest.raises(ValueError, match=f"{method} weighs by a softmax over classes"):
            explain(resnet, x, [method], targets="layer3:4")


def test_the_model_is_left_as_it_was_and_mistakes_are_named(resnet):
    model = torchvision.models.resnet18().train()
    x = _x()
    explain(model, x, ["saliency", "gradcam"], targets="layer1:0")
    assert model.training and all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    for spec, says in (
        ("layer9:1", "not a module of this model"),
        ("layer2:500", "out of range: layer2 has 128 channels"),
        ("layer2:1:40:0", "outside layer2's 8x8 map"),
        ("layer2:x", "bad neuron target"),
        ("fc:1", "not (B,C,h,w) maps"),
    ):
        with pytest.raises(ValueError, match=re.escape(says)):
            explain(model, x, ["saliency"], targets=spec)
        assert all(not m._forward_hooks for m in model.modules()) and model.training
    with pytest.raises(ValueError, match="cam reads a class's weights in the GAP head"):
        explain(
            Classifier("simple_cnn", "gap", image_size=32, width=4), _x(1, 32), ["cam"], targets="backbone.block2:0"
        )
    assert str(parse_neuron("layer4:12:max")) == "layer4:12:max" and parse_neuron("a.b:1:2:3") == Neuron("a.b", 1, 2, 3)


def test_explain_py_takes_a_neuron_target(tiny_checkpoint, tmp_path, capsys):
    """`explain.py target=layer:channel` explains the unit; results.csv names it; mistakes exit 2
    with one line and write nothing."""
    import csv

    import explain as explain_cli

    ckpt, out = tiny_checkpoint, tmp_path / "n"
    args = [f"checkpoint={ckpt}", "split=val", "probe_size=4", "methods=[saliency,gradcam]"]
    assert explain_cli.main([*args, "target=backbone.block2:1", "metrics=[pointing_game]", f"out={out}"]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["target"] for r in rows] == ["backbone.block2:1"] * 4 and all(r["target_probability"] == "" for r in rows)
    never = tmp_path / "never"
    capsys.readouterr()  # the run's progress bar
    for target, extra, says in (
        ("backbone.block2:99", [], "out of range"),
        ("nope:1", [], "not a module of this model"),
        ("backbone.block2:1", ["metrics=[deletion_auc]"], "re-score a class"),
        ("backbone.block2:1", ["methods=[cam]"], "cam reads a class's weights"),
    ):
        assert explain_cli.main([*args, f"target={target}", *extra, f"out={never}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], err
        assert not never.exists()
