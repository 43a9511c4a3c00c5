"""The explain contract: no side effects (also on error), grad-free contexts, and clear errors."""

import random

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from camlight.explain import METHODS, Explainer, GradCAM, Occlusion, explain
from camlight.modules import Classifier

FAST = {
    "smoothgrad": dict(n_samples=2),
    "integrated_gradients": dict(steps=4),
    "occlusion": dict(window=16, stride=16),
    "score_cam": dict(batch_size=64),
    "rise": dict(n_masks=50),
}


def _model(head="gap"):
    torch.manual_seed(0)
    model = Classifier("simple_cnn", head, width=4, image_size=32)
    model.train()  # explaining must not leave it in eval mode
    model.backbone.block1[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 0.5)
    model.head.register_forward_hook(lambda m, i, o: None)  # a user's hook stays, ours go
    return model


def _state(model):
    return {
        "modes": [m.training for m in model.modules()],
        "flags": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else (id(p.grad), p.grad.clone()) for p in model.parameters()],
        "buffers": [b.clone() for b in model.buffers()],
        "params": [p.detach().clone() for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "rng": torch.get_rng_state(),
    }


def _assert_same(before, after):
    for key in before:
        a, b = before[key], after[key]
        if key == "grads":
            assert [x if x is None else x[0] for x in a] == [x if x is None else x[0] for x in b]
            assert all(x is None or torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
        elif isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), key
        elif isinstance(a, torch.Tensor):
            assert torch.equal(a, b), key
        else:
            assert a == b, key


@pytest.mark.parametrize("method", METHODS)
def test_no_side_effects(method):
    model, x = _model(), torch.randn(2, 3, 32, 32)
    x_before = x.clone()
    before = _state(model)
    explain(model, x, [method], **{k: v for k, v in FAST.items() if k == method})
    _assert_same(before, _state(model))
    assert torch.equal(x, x_before) and not x.requires_grad and x.grad is None


@pytest.mark.parametrize("method", METHODS)
def test_no_side_effects_on_a_hooked_torchvision_model(method):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    model.train()
    x = torch.randn(1, 3, 64, 64)
    before = _state(model)
    explain(model, x, [method], layer="layer4", **{k: v for k, v in FAST.items() if k == method})
    _assert_same(before, _state(model))


def test_no_side_effects_when_a_method_raises_midway():
    model, x = _model("fc"), torch.randn(2, 3, 32, 32)
    before = _state(model)
    with pytest.raises(ValueError, match="cam needs the target layer to feed a global-average-pooling head"):
        explain(model, x, ["saliency", "gradcam", "cam"])  # after the shared pass
    _assert_same(before, _state(model))
    with pytest.raises(ValueError, match="target class 5 out of range"):
        explain(model, x, ["gradcam"], targets=5)  # after the forward
    _assert_same(before, _state(model))


def test_no_side_effects_when_the_model_raises_in_a_hooked_pass():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            self.conv(x)  # the hook on conv has run; then the model fails
            raise RuntimeError("boom")

    model, x = Boom().train(), torch.randn(1, 3, 8, 8)
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, x, ["gradcam"], layer="conv")
    _assert_same(before, _state(model))
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_works_under_no_grad_and_inference_mode(context):
    model = _model().eval()
    x = torch.randn(2, 3, 32, 32)
    expected = explain(model, x, METHODS, **FAST)
    with context():
        x_inner = x.clone()  # created inside: an inference tensor under inference_mode
        maps = explain(model, x_inner, METHODS, **FAST)
        assert not torch.is_grad_enabled()
    for key in METHODS:
        torch.testing.assert_close(maps[key], expected[key], msg=key)


def test_maps_come_back_on_the_input_device_as_float32():
    model = _model().eval().double()  # a float64 model on float64 images: the maps are still float32
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    maps = explain(model, x, ["gradcam", "saliency", "cam"])
    for key, m in maps.items():
        assert m.device == x.device and m.dtype == torch.float32 and m.shape == (2, 32, 32), key
    raw = explain(model, x, ["gradcam", "saliency"], raw=True)
    assert all(m.dtype == torch.float32 for m in raw.values())
    expected = explain(model.float(), x.float(), ["gradcam"])["gradcam"]
    torch.testing.assert_close(maps["gradcam"], expected, atol=1e-5, rtol=0)  # the same map, not just a dtype


class FunctionalReLU(nn.Module):
    """Same weights as ModuleReLU, but ReLU called as F.relu / torch.relu_ / Tensor.relu."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.c1, self.c2, self.fc = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = torch.relu_(self.c2(x))
        return self.fc(x.mean(dim=(2, 3)).relu())


class ModuleReLU(FunctionalReLU):
    def __init__(self, inplace):
        super().__init__()
        self.r1, self.r2, self.r3 = nn.ReLU(inplace), nn.ReLU(inplace), nn.ReLU(inplace)

    def forward(self, x):
        x = self.r1(self.c1(x))
        x = self.r2(self.c2(x))
        return self.fc(self.r3(x.mean(dim=(2, 3))))


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet", "guided_gradcam"])
def test_modified_relu_rules_see_functional_and_inplace_relu(method):
    x = torch.randn(2, 3, 12, 12)
    reference = explain(ModuleReLU(inplace=False), x, [method], targets=1, layer="c2", raw=True)[method]
    for model in (ModuleReLU(inplace=True), FunctionalReLU()):
        torch.testing.assert_close(explain(model, x, [method], targets=1, layer="c2", raw=True)[method], reference)
    # The rule really changes the gradient: plain saliency differs.
    assert not torch.allclose(reference, explain(FunctionalReLU(), x, ["saliency"], targets=1, raw=True)["saliency"])


def test_captum_misses_functional_relu_where_we_do_not():
    captum = pytest.importorskip("captum.attr")
    x = torch.randn(2, 3, 12, 12)
    ours = explain(FunctionalReLU(), x, ["guided_backprop"], targets=1, raw=True)["guided_backprop"]
    theirs_module = captum.GuidedBackprop(ModuleReLU(inplace=False)).attribute(x, target=1)
    theirs_functional = captum.GuidedBackprop(FunctionalReLU()).attribute(x, target=1)
    torch.testing.assert_close(ours, theirs_module)  # same numbers where captum sees the ReLUs
    assert not torch.allclose(theirs_functional, theirs_module)  # captum's functional case is plain gradient


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "kwargs", "error", "message"),
    [
        (
            torch.randn(3, 32, 32),
            {},
            ValueError,
            r"must be \(B,3,H,W\), got shape \(3, 32, 32\); add a batch dimension",
        ),
        (torch.randn(1, 1, 32, 32), {}, ValueError, "must have 3 colour channels, got 1"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), {}, TypeError, "must be float"),
        ("image.png", {}, TypeError, "images must be a torch.Tensor"),
        (torch.randn(2, 3, 32, 32), {"targets": torch.tensor([0, 1, 1])}, ValueError, "got 3 targets for 2 images"),
        (
            torch.randn(2, 3, 32, 32),
            {"targets": 2},
            ValueError,
            r"target class 2 out of range: the model has 2 classes \(0..1\)",
        ),
        (torch.randn(2, 3, 32, 32), {"targets": -1}, ValueError, "target class -1 out of range"),
        (torch.randn(2, 3, 32, 32), {"targets": torch.tensor([0.0, 1.0])}, TypeError, "class indices"),
        (
            torch.randn(2, 3, 32, 32),
            {"methods": ["grad_cam"]},
            ValueError,
            "unknown method 'grad_cam'; did you mean 'gradcam'.*choose from saliency, deconvnet",
        ),
        (
            torch.randn(2, 3, 32, 32),
            {"occlusion": dict(size=3), "methods": ["occlusion"]},
            TypeError,
            "unknown option.*size for occlusion; valid: window, stride, baseline",
        ),
        (torch.randn(2, 3, 32, 32), {"gradcm": dict()}, TypeError, "unexpected keyword 'gradcm'"),
        (
            torch.randn(2, 3, 32, 32),
            {"layer": "backbone.blok4"},
            ValueError,
            "layer 'backbone.blok4' not found in Classifier; closest: backbone.block4",
        ),
    ],
)
def test_bad_input_gets_a_helpful_error(images, kwargs, error, message):
    kwargs = dict(kwargs)
    methods = kwargs.pop("methods", ["gradcam"])
    with pytest.raises(error, match=message):
        explain(_model().eval(), images, methods, **kwargs)


def test_cam_on_an_fc_head_says_use_gradcam():
    with pytest.raises(
        ValueError, match="cam needs the target layer to feed a global-average-pooling head.*use gradcam"
    ):
        explain(_model("fc"), torch.randn(1, 3, 32, 32), ["cam"])


def test_the_target_layer_of_a_plain_model_is_found():
    torch.manual_seed(0)
    model, x = torchvision.models.resnet18().eval(), torch.randn(2, 3, 64, 64)
    found = explain(model, x, ["gradcam", "cam"], targets=3)
    given = explain(model, x, ["gradcam", "cam"], targets=3, layer="layer4")
    for key in found:
        torch.testing.assert_close(found[key], given[key])
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))  # nothing spatial to explain
    with pytest.raises(ValueError, match="gradcam needs a target layer: no module of Sequential outputs a spatial"):
        explain(mlp, torch.randn(1, 3, 8, 8), ["gradcam"])


def test_classes_check_options_when_built():
    with pytest.raises(TypeError, match="unknown option.*windw for occlusion"):
        Occlusion(_model(), windw=8)
    model = _model().eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(GradCAM(model)(x, targets=1), explain(model, x, ["gradcam"], targets=1)["gradcam"])
    torch.testing.assert_close(
        GradCAM(model, "backbone.block4")(x, 1), explain(model, x, ["gradcam"], targets=1)["gradcam"]
    )


# -- review findings: each pins a behaviour that once was wrong or untested --------------------


def test_explicit_targets_made_in_inference_mode_work_split_and_hooked():
    model = _model().eval()
    x = torch.randn(2, 3, 32, 32)
    methods = ["saliency", "cam", "gradcam", "guided_backprop", "integrated_gradients"]
    expected = explain(model, x, methods, targets=torch.tensor([1, 0]), integrated_gradients=dict(steps=4))
    hooked_expected = explain(model, x, ["gradcam"], targets=torch.tensor([1, 0]), layer="backbone.block4")
    with torch.inference_mode():
        labels = torch.tensor([1, 0])  # like batch["label"] in Lightning's validation loop
        maps = explain(model, x.clone(), methods, targets=labels, integrated_gradients=dict(steps=4))
        hooked = explain(model, x.clone(), ["gradcam"], targets=labels, layer="backbone.block4")
    for key in methods:
        torch.testing.assert_close(maps[key], expected[key], msg=key)
    torch.testing.assert_close(hooked["gradcam"], hooked_expected["gradcam"])


@pytest.mark.parametrize("seed", range(4))
def test_any_order_of_methods_gives_the_same_maps(seed):
    model = _model().eval()
    x = torch.randn(2, 3, 32, 32)
    order = list(METHODS)
    reference = explain(model, x, order, **FAST)
    random.Random(seed).shuffle(order)
    maps = explain(model, x, order, **FAST)
    for key in METHODS:
        torch.testing.assert_close(maps[key], reference[key], msg=key)
    alone = explain(model, x, ["guided_backprop", "occlusion"], occlusion=FAST["occlusion"])  # no plain pass
    torch.testing.assert_close(alone["occlusion"], reference["occlusion"])


def test_occlusion_covers_every_pixel_when_the_stride_does_not_divide():
    model = _model().eval()
    raw = explain(model, torch.randn(1, 3, 32, 32), ["occlusion"], raw=True, occlusion=dict(window=7, stride=5))
    assert torch.isfinite(raw["occlusion"]).all() and (raw["occlusion"][0, -1] != 0).all()


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("occlusion", dict(window=8, stride=4)),
        ("ablation_cam", {}),
        ("score_cam", {}),
        ("integrated_gradients", dict(steps=5)),
    ],
)
def test_batch_size_changes_speed_not_maps(method, options):
    model = _model().eval()
    x = torch.randn(3, 3, 32, 32)
    reference = explain(model, x, [method], raw=True, **{method: dict(options, batch_size=1)})[method]
    for batch_size in (2, 7, 1000):
        maps = explain(model, x, [method], raw=True, **{method: dict(options, batch_size=batch_size)})[method]
        torch.testing.assert_close(maps, reference, msg=f"batch_size={batch_size}")


@pytest.mark.parametrize("method", ["gradcam", "gradcam_pp", "cam", "ablation_cam", "score_cam"])
def test_split_and_hooked_access_give_the_same_maps(method):
    model = _model().eval()
    x = torch.randn(2, 3, 32, 32)
    split = explain(model, x, [method], raw=True)[method]
    hooked = explain(model, x, [method], layer=model.target_layer, raw=True)[method]
    torch.testing.assert_close(split, hooked)


def test_float64_models_are_explained_in_float64():
    model = _model().eval().double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    maps = explain(model, x, ["saliency", "gradcam", "occlusion", "score_cam"], occlusion=FAST["occlusion"])
    assert all(m.dtype == torch.float32 and m.max() == 1 for m in maps.values())
    raw = explain(model, x, ["saliency"], raw=True)["saliency"]
    expected = explain(model.float(), x.float(), ["saliency"], raw=True)["saliency"]
    torch.testing.assert_close(raw, expected, rtol=1e-4, atol=1e-6)


class InplaceHead(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.fc = nn.Linear(channels, 2)

    def forward(self, a):
        return self.fc(F.relu(a.sub_(0.1), inplace=False).mean(dim=(2, 3)))  # writes into its input


def test_an_in_place_head_cannot_change_the_activations():
    model = _model().eval()
    model.head = InplaceHead(16)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = model.features(x)
    raw = explain(model, x, ["gradcam", "saliency"], targets=0, raw=True)
    # The map is built from the features as computed, not from what the head wrote into them.
    a_req = a.clone().requires_grad_(True)
    score = model.head.fc(F.relu(a_req - 0.1).mean(dim=(2, 3)))[:, 0].sum()
    (g,) = torch.autograd.grad(score, a_req)
    expected = (g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1).clamp(min=0)
    torch.testing.assert_close(raw["gradcam"], expected)


class Noisy(nn.Module):
    """A model whose forward draws from the global RNG and bumps a buffer, even in eval mode."""

    target_layer = "conv"

    def __init__(self, fail=False):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(2))
        self.register_buffer("calls", torch.zeros(()))
        self.fail = fail

    def features(self, x):
        self.calls += 1
        a = self.conv(x) + 0.01 * torch.rand_like(x[:, :1])
        if self.fail:
            raise RuntimeError("failed midway")
        return a

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("fail", [False, True])
def test_global_rng_and_buffers_are_restored_even_when_the_model_draws_and_fails(fail):
    model = Noisy()
    model(torch.randn(1, 3, 8, 8))  # materialise the lazy layer
    model.fail = fail
    x = torch.randn(2, 3, 8, 8)
    before = _state(model)
    if fail:
        with pytest.raises(RuntimeError, match="failed midway"):
            explain(model, x, ["gradcam", "saliency"])
    else:
        explain(model, x, ["gradcam", "saliency", "smoothgrad"], smoothgrad=dict(n_samples=2))
    _assert_same(before, _state(model))


def test_grad_mode_stays_off_after_a_failing_call_under_no_grad():
    model = Noisy()
    model(torch.randn(1, 3, 8, 8))
    model.fail = True
    with torch.no_grad():
        with pytest.raises(RuntimeError):
            explain(model, torch.randn(1, 3, 8, 8), ["gradcam"], layer="conv")
        assert not torch.is_grad_enabled()
    with torch.inference_mode():
        with pytest.raises(RuntimeError):
            explain(model, torch.randn(1, 3, 8, 8), ["gradcam"])
        assert torch.is_inference_mode_enabled() and not torch.is_grad_enabled()


class Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.unused = nn.Conv2d(3, 3, 1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.conv(self.conv(x)).mean(dim=(2, 3)))


def test_hooked_layer_errors_say_what_is_wrong():
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(
        ValueError, match="layer 'conv' ran 2 times in one forward pass; name one call of it, e.g. 'conv@-1'"
    ):
        explain(Twice(), x, ["gradcam"], layer="conv")
    with pytest.raises(ValueError, match=r"layer .conv@2.: conv ran 2 time\(s\) in one forward pass"):
        explain(Twice(), x, ["gradcam"], layer="conv@2")
    with pytest.raises(ValueError, match="layer 'unused' did not run in the forward pass"):
        explain(Twice(), x, ["gradcam"], layer="unused")
    with pytest.raises(ValueError, match=r"layer 'fc' outputs shape \(1, 2\), not a spatial map for a 8×8 input"):
        explain(Twice(), x, ["gradcam"], layer="fc")


def test_a_model_with_features_and_head_but_more_between_is_not_taken_for_the_split():
    class SwinLike(nn.Module):  # torchvision's Swin: features → norm → permute → pool → head
        def __init__(self):
            super().__init__()
            self.features = nn.Conv2d(3, 4, 3, padding=1)
            self.norm = nn.BatchNorm2d(4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.norm(self.features(x)).mean(dim=(2, 3)))

    model = SwinLike().eval()
    x = torch.randn(2, 3, 8, 8)
    hooked = explain(model, x, ["gradcam"], layer="norm", targets=1, raw=True)["gradcam"]
    torch.testing.assert_close(explain(model, x, ["gradcam"], targets=1, raw=True)["gradcam"], hooked)  # found: norm
    a = model.norm(model.features(x)).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.head(a.mean(dim=(2, 3)))[:, 1].sum(), a)
    torch.testing.assert_close(hooked, (g.mean(dim=(2, 3))[:, :, None, None] * a).sum(1).clamp(min=0))


def test_an_in_place_relu_whose_result_is_ignored_still_applies():
    class IgnoresResult(FunctionalReLU):
        def forward(self, x):
            x = self.c1(x)
            x.relu_()  # the return value is dropped: the in-place write must happen
            x = torch.relu_(self.c2(x))
            return self.fc(x.mean(dim=(2, 3)).relu())

    x = torch.randn(2, 3, 12, 12)
    reference = explain(ModuleReLU(inplace=False), x, ["guided_backprop"], targets=1, raw=True)["guided_backprop"]
    torch.testing.assert_close(
        explain(IgnoresResult(), x, ["guided_backprop"], targets=1, raw=True)["guided_backprop"], reference
    )


def test_a_relu_rule_that_sees_no_relu_warns():
    scripted = torch.jit.script(ModuleReLU(inplace=False))
    with pytest.warns(
        UserWarning, match="the guided rule saw no rectifier .*scripted or compiled model hides them.*plain gradient"
    ):
        explain(scripted, torch.randn(1, 3, 12, 12), ["guided_backprop"])


class Rectified(nn.Module):
    """conv → activation → conv → activation (in place where the module allows) → sigmoid gate → mean → fc."""

    def __init__(self, act):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.a1, self.c2, self.a2, self.fc = (
            nn.Conv2d(3, 4, 3),
            act(),
            nn.Conv2d(4, 5, 3),
            act(),
            nn.Linear(5, 2),
        )

    def forward(self, x):
        h = self.a2(self.c2(self.a1(self.c1(x))))
        return self.fc((h * torch.sigmoid(h)).mean(dim=(2, 3)))  # the gate backpropagates plainly


def _by_hand(model, x, target, rule):
    """The rule written out: through each rectifier f, max(0, f'(z)·g) (guided) or max(0, g) (deconv)."""
    act = model.a1
    z1 = model.c1(x)
    h1 = act(z1.clone())
    z2 = model.c2(h1)
    h2 = act(z2.clone())
    score = model.fc((h2 * torch.sigmoid(h2)).mean(dim=(2, 3)))[:, target].sum()
    (g_h2,) = torch.autograd.grad(score, h2, retain_graph=True)

    def through(z, g):
        if rule == "deconv":
            return g.clamp(min=0)
        leaf = z.detach().requires_grad_(True)
        return torch.autograd.grad(act(leaf.clone()), leaf, g)[0].clamp(min=0)

    g_z2 = through(z2, g_h2)
    (g_h1,) = torch.autograd.grad(z2, h1, g_z2, retain_graph=True)
    g_z1 = through(z1, g_h1)
    return torch.autograd.grad(z1, x, g_z1)[0]


@pytest.mark.parametrize(
    "act",
    [
        nn.SiLU,
        nn.GELU,
        lambda: nn.Hardswish(inplace=True),
        lambda: nn.ReLU6(inplace=True),
        lambda: nn.LeakyReLU(0.1),
        nn.Mish,
        nn.ELU,
    ],
    ids=["silu", "gelu", "hardswish_inplace", "relu6_inplace", "leaky_relu", "mish", "elu"],
)
@pytest.mark.parametrize("rule", ["guided_backprop", "deconvnet"])
def test_every_rectifier_follows_the_stated_rule(act, rule):
    import warnings

    model, x = Rectified(act).eval(), torch.randn(2, 3, 10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rule reached every rectifier: nothing to warn about
        ours = explain(model, x, [rule, "saliency"], targets=1, raw=True)
    expected = _by_hand(model, x.clone().requires_grad_(True), 1, "deconv" if rule == "deconvnet" else "guided")
    torch.testing.assert_close(ours[rule], expected, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(ours[rule], ours["saliency"])  # not the plain gradient


def test_keyword_mistakes_are_named():
    model, x = _model().eval(), torch.randn(1, 3, 32, 32)
    with pytest.raises(TypeError, match="unexpected keyword 'target'; did you mean 'targets'"):
        explain(model, x, ["gradcam"], target=1)
    with pytest.raises(TypeError, match="options given for occlusion, which is not among the methods asked for"):
        explain(model, x, ["gradcam"], occlusion=dict(window=4))
    with pytest.raises(TypeError, match="Explainer is a base class"):
        Explainer(model)


# -- which methods a model supports --------------------------------------------------------------


def test_support_is_decided_from_declared_needs_with_at_most_one_forward_pass():
    from camlight.explain import supported, unsupported

    fc, gap = _model("fc"), _model("gap")  # in training mode: it must come back so
    x = torch.randn(1, 3, 32, 32)
    calls = []
    for model in (fc, gap):
        calls.clear()
        hooks = [m.register_forward_hook(lambda m, i, o: calls.append(1)) for m in (model.backbone, model.head)]
        before = _state(model)
        reasons = unsupported(model, x, ["score_cam", "ablation_cam", "occlusion", "gradcam", "cam", "saliency"])
        _assert_same(before, _state(model))
        for h in hooks:
            h.remove()
        # One pass of the trunk and one of the head (the GAP check); Score-CAM alone, if it were
        # run, would take a forward pass per channel.
        assert len(calls) == 2
        if model is fc:
            assert list(reasons) == ["cam"] and "global-average-pooling head" in reasons["cam"]
        else:
            assert reasons == {}
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    reasons = unsupported(mlp, torch.randn(1, 3, 8, 8), ["gradcam", "saliency", "cam"])
    assert set(reasons) == {"gradcam", "cam"} and "no module of Sequential outputs a spatial map" in reasons["gradcam"]
    plain = torchvision.models.resnet18(weights=None).eval()
    assert unsupported(plain, torch.randn(1, 3, 64, 64), ["gradcam", "cam"]) == {}  # layer4 found
    with pytest.warns(UserWarning, match="skipping cam: cam needs the target layer to feed a global-average"):
        assert supported(fc, x, ["cam", "gradcam"]) == ["gradcam"]


def test_a_bug_in_a_method_is_not_taken_for_missing_support(monkeypatch):
    from dataclasses import replace

    from camlight.explain import REGISTRY, supported

    def broken(ctx, **options):
        raise ValueError("a bug inside gradcam")

    monkeypatch.setitem(REGISTRY, "gradcam", replace(REGISTRY["gradcam"], compute=broken))
    model, x = _model("gap").eval(), torch.randn(1, 3, 32, 32)
    assert supported(model, x, ["gradcam", "cam"]) == ["gradcam", "cam"]  # not run, so not hidden
    with pytest.raises(ValueError, match="a bug inside gradcam"):
        explain(model, x, ["gradcam"])


def test_one_call_of_a_module_that_runs_twice_is_a_layer():
    torch.manual_seed(0)
    model, x = Twice().eval(), torch.randn(2, 3, 8, 8)
    maps = {c: explain(model, x, ["gradcam"], layer=f"conv@{c}", targets=1, raw=True)["gradcam"] for c in (0, 1, -1)}
    torch.testing.assert_close(maps[1], maps[-1])
    a1 = model.conv(x)
    a2 = model.conv(a1).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model.fc(a2.mean(dim=(2, 3)))[:, 1].sum(), a2)
    torch.testing.assert_close(maps[-1], (g.mean(dim=(2, 3))[:, :, None, None] * a2).sum(1).clamp(min=0))
    assert not torch.allclose(maps[0], maps[1])


@pytest.mark.parametrize("method", ["score_cam", "ablation_cam", "occlusion", "integrated_gradients"])
def test_perturbation_passes_stay_within_the_memory_budget(method):
    from camlight.explain.engine import forward_bytes

    model = torchvision.models.resnet18(num_classes=4).eval()  # hooked: every row is a full forward pass
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    per_row = forward_bytes(model, x)
    options = {method: dict(batch_size=64)}
    unbounded = explain(model, x, [method], targets=1, raw=True, memory=2**40, **options)[method]
    sizes = []  # rows reaching the classifier: every method's evaluations pass through it, ablated ones too
    handle = model.fc.register_forward_pre_hook(lambda m, inp: sizes.append(inp[0].shape[0]))
    try:
        bounded = explain(model, x, [method], targets=1, raw=True, memory=3 * per_row, **options)[method]
    finally:
        handle.remove()
    factor = 2 if method == "integrated_gradients" else 1  # kept for a backward pass: twice a forward
    largest = max(2, 3 // factor)  # a batch of the caller's 2 images is always allowed
    assert max(sizes) <= largest, sizes
    torch.testing.assert_close(bounded, unbounded, rtol=1e-4, atol=1e-6)


def test_by_default_perturbations_fill_the_memory_budget():
    from camlight.explain.engine import forward_bytes

    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sizes = []
    handle = model.fc.register_forward_pre_hook(lambda m, inp: sizes.append(inp[0].shape[0]))
    try:
        explain(model, x, ["score_cam"], targets=1, memory=40 * forward_bytes(model, x))
    finally:
        handle.remove()
    # The varying channels' masked images go in passes of the 40 rows the budget allows, not one by one.
    assert max(sizes) == 40 and sizes.count(40) >= 2


def test_occlusion_refuses_a_stride_that_would_leave_pixels_uncovered():
    with pytest.raises(ValueError, match="1 <= stride <= window"):
        explain(_model().eval(), torch.randn(1, 3, 32, 32), ["occlusion"], occlusion=dict(window=2, stride=5))


def test_tracing_for_incremental_occlusion_leaves_what_forward_stores_on_the_model():
    class Remembers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc, self.calls = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2), 0

        def forward(self, x):
            self.calls += 1
            self.features = torch.relu(self.conv(x))
            return self.fc(self.features.mean((2, 3)))

    model = Remembers().eval()
    x = torch.randn(1, 3, 16, 16)
    explain(model, x, ["occlusion"])
    # What the model's own forward pass (the clean scores) stored, never the trace's proxies.
    assert type(model.features) is torch.Tensor and model.calls == 1


def test_a_list_of_layers_is_refused_for_guided_gradcam():
    model = torchvision.models.resnet18(num_classes=4).eval()
    with pytest.raises(ValueError, match="guided_gradcam takes one layer, not a list"):
        explain(model, torch.randn(1, 3, 32, 32), ["guided_gradcam"], layer=["layer3", "layer4"])
