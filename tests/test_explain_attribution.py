"""DeepLIFT (Rescale rule) and GradientSHAP: hand-computed cases, summation-to-delta, parity with captum.

captum's DeepLift is right on networks whose nonlinearities are distinct `nn` modules, none fed
directly by another (ResNet-18's stem happens to pass, see below); there our maps equal its to
1e-4. Where it is wrong (functional ReLUs, a module called twice, a ReLU module feeding a max-pool
module, overlapping max-pool windows sharing an argmax) the tests check ours against hand-computed
numbers and the summation-to-delta identity, and show that captum's differ.
"""

import copy
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from camlight.explain import attribution, explain
from camlight.explain.engine import normalise

captum = pytest.importorskip("captum.attr", reason="parity tests need the 'parity' extra (make test installs it)")

TOL = 1e-4
TARGETS = torch.tensor([3, 7])


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))


def _score(model, images, targets):
    with torch.no_grad():
        return model(images).gather(1, targets[:, None])[:, 0]


def _delta(model, images, base, targets):
    """y_t(x) − y_t(x'), per image."""
    return _score(model, images, targets) - _score(model, base.expand_as(images), targets)


def _close_normalised(ours, theirs, size):
    a, b = normalise("pixel", ours, size), normalise("pixel", theirs.detach(), size)
    assert (a - b).abs().max() <= TOL
    assert a.max() == 1


def _deeplift(model, images, targets, **options):
    return explain(model, images, ["deeplift"], targets=targets, raw=True, deeplift=options)["deeplift"]


# -- DeepLIFT: hand-computed -----------------------------------------------------------------


class TwoLayer(nn.Module):
    """y = W2 · relu(W1 x + b1), x the 3 channels of a 1×1 image; `functional`: F.relu in forward."""

    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.fc1, self.fc2, self.relu = nn.Linear(3, 2), nn.Linear(2, 2, bias=False), nn.ReLU()
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.5, 1.0, 1.0]]))
            self.fc1.bias.copy_(torch.tensor([0.5, -1.0]))
            self.fc2.weight.copy_(torch.tensor([[2.0, -1.0], [0.0, 1.0]]))

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        return self.fc2(F.relu(h) if self.functional else self.relu(h))


def test_deeplift_rescale_multipliers_by_hand_where_captum_misses_the_functional_relu():
    # x = (1, 2, −1), x' = (1, 0, 0), target 0.
    # h = W1 x + b1 = (1 − 2 − 0.5 + 0.5, 0.5 + 2 − 1 − 1) = (−1, 0.5); h' = (1 + 0.5, 0.5 − 1) = (1.5, −0.5)
    # relu: (0, 0.5) and (1.5, 0); multipliers m = ((0 − 1.5)/(−1 − 1.5), (0.5 − 0)/(0.5 + 0.5)) = (0.6, 0.5)
    # ∂y0/∂x under the rule: 2·0.6·W1[0] − 1·0.5·W1[1] = (1.2, −1.2, 0.6) − (0.25, 0.5, 0.5) = (0.95, −1.7, 0.1)
    # map = (x − x') ⊙ that = (0, 2, −1) ⊙ (0.95, −1.7, 0.1) = (0, −3.4, −0.1); Σ = −3.5
    # y0(x) = 2·0 − 0.5 = −0.5, y0(x') = 2·1.5 − 0 = 3: Δ = −3.5, the sum.
    x = torch.tensor([1.0, 2.0, -1.0]).view(1, 3, 1, 1)
    base = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    expected = torch.tensor([0.0, -3.4, -0.1]).view(1, 3, 1, 1)
    target = torch.tensor([0])
    for functional in (True, False):
        ours = _deeplift(TwoLayer(functional), x, target, baseline=base)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    theirs = captum.DeepLift(TwoLayer(functional=False)).attribute(x, baselines=base, target=target)
    torch.testing.assert_close(theirs, expected, rtol=0, atol=1e-6)  # captum sees the nn.ReLU
    # captum hooks nn.ReLU modules only: through F.relu the gradient at x passes, relu'(h) = (0, 1):
    # (x − x') ⊙ (−W1[1]) = (0, 2, −1) ⊙ (−0.5, −1, −1) = (0, −2, 1), Σ = −1 ≠ −3.5.
    blind = captum.DeepLift(TwoLayer(functional=True)).attribute(x, baselines=base, target=target)
    torch.testing.assert_close(blind, torch.tensor([0.0, -2.0, 1.0]).view(1, 3, 1, 1), rtol=0, atol=1e-6)


def test_deeplift_overlapping_max_pool_windows_add_up_where_captum_keeps_one():
    # One channel row (1, 0, 0, 0, 0), max-pool 1×3, stride 1, padding 1, then the sum of the
    # pooled row: windows 0 and 1 both take their maximum 1 at pixel 0, so y(x) − y(0) = 2 per
    # channel, all of it pixel 0's. captum's max_unpool writes one window's share over the other.
    model = nn.Sequential(nn.MaxPool2d((1, 3), 1, (0, 1)), nn.Flatten(), nn.Linear(15, 1))
    with torch.no_grad():
        model[2].weight.fill_(1.0)
        model[2].bias.zero_()
    x = torch.zeros(1, 3, 1, 5)
    x[..., 0] = 1.0
    expected = 2 * x
    ours = _deeplift(model, x, torch.tensor([0]))
    torch.testing.assert_close(ours, expected)
    theirs = captum.DeepLift(model).attribute(x, target=0)
    torch.testing.assert_close(theirs, x)  # half of it
    assert ours.sum() == _delta(model, x, torch.zeros(1), torch.tensor([0]))


# -- DeepLIFT: parity with captum where it is right ------------------------------------------


def _split_relu_forward(self, x):
    identity = x if self.downsample is None else self.downsample(x)
    out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return self.relu2(out + identity)


def _resnet_with_one_relu_per_call(model):
    """torchvision's BasicBlock calls its one nn.ReLU twice; captum's DeepLift raises on that. The
    same function with a second ReLU module for the second call."""
    model = copy.deepcopy(model)
    for block in model.modules():
        if isinstance(block, torchvision.models.resnet.BasicBlock):
            block.relu2 = nn.ReLU(inplace=True)
            block.forward = types.MethodType(_split_relu_forward, block)
    return model


def test_deeplift_matches_captum_on_resnet18(resnet, x):
    with pytest.raises(RuntimeError, match="used more than once"):
        captum.DeepLift(copy.deepcopy(resnet)).attribute(x, target=TARGETS)
    ours = _deeplift(resnet, x, TARGETS)
    theirs, delta = captum.DeepLift(_resnet_with_one_relu_per_call(resnet)).attribute(
        x, target=TARGETS, return_convergence_delta=True
    )
    # The stem's ReLU module feeds the max-pool module, where captum is wrong in general (next
    # test); with the zero baseline the reference's activations there are constant per channel
    # and its error vanishes.
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)
    _close_normalised(ours, theirs, x.shape[-2:])
    dy = _delta(resnet, x, torch.zeros(1), TARGETS)
    torch.testing.assert_close(ours.sum((1, 2, 3)), dy, rtol=1e-4, atol=1e-5)
    assert delta.abs().max() < 1e-4


class Copy(nn.Module):
    def forward(self, x):
        return x.clone()


def vgg(separate: bool = False, functional: bool = False) -> nn.Module:
    """A small VGG: conv-ReLU(inplace) pairs and 2×2 max-pools. `separate`: a copy between each ReLU
    and the max-pool after it (the same function); `functional`: every ReLU an inplace
    `torch.relu_` whose return value is ignored."""

    class Relu(nn.Module):
        def forward(self, t):
            torch.relu_(t)
            return t

    def relu():
        return Relu() if functional else nn.ReLU(inplace=True)

    def pool():
        return [Copy(), nn.MaxPool2d(2)] if separate else [nn.MaxPool2d(2)]

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), relu(), nn.Conv2d(8, 8, 3, padding=1), relu(), *pool()]
    layers += [nn.Conv2d(8, 16, 3, padding=1), relu(), *pool(), nn.Flatten(), nn.Linear(16 * 8 * 8, 32), relu()]
    return nn.Sequential(*layers, nn.Linear(32, 10)).eval()


@pytest.mark.parametrize("random_baseline", [False, True])
def test_deeplift_matches_captum_on_a_vgg_with_inplace_relus_and_max_pools(random_baseline):
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    base = torch.zeros(1, 3, 32, 32)
    if random_baseline:
        base = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    model = vgg()
    ours = _deeplift(model, images, TARGETS, baseline=base)
    dy = _delta(model, images, base, TARGETS)
    torch.testing.assert_close(ours.sum((1, 2, 3)), dy, rtol=1e-4, atol=1e-6)
    # A ReLU module feeding a max-pool module share one tensor: captum's hook that stores the ReLU's
    # output gradient runs before the max-pool's hook rewrites it, so the max-pool rule is lost and
    # summation-to-delta fails. With a copy between them, captum's maps are ours.
    theirs = captum.DeepLift(vgg(separate=True)).attribute(images, baselines=base.expand_as(images), target=TARGETS)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)
    _close_normalised(ours, theirs, images.shape[-2:])
    _, delta = captum.DeepLift(vgg()).attribute(
        images, baselines=base.expand_as(images), target=TARGETS, return_convergence_delta=True
    )
    assert delta.abs().max() > 1e-2 * dy.abs().max()
    # The same network with functional inplace ReLUs (return values ignored): the same map.
    torch.testing.assert_close(_deeplift(vgg(functional=True), images, TARGETS, baseline=base), ours)


class Smooth(nn.Module):
    """Every other elementwise nonlinearity the rule covers, functional and module, with average pooling."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 6, 6, 3, padding=1) for i in range(4))
        self.act = nn.ModuleList([nn.SiLU(), nn.GELU(), nn.Tanh(), nn.LeakyReLU(0.1)])
        self.fc = nn.Linear(6, 4)
        with torch.no_grad():
            self.fc.weight.mul_(100)  # Δy of order 0.1, not 1e-4: the tolerances below mean something

    def forward(self, x):
        x = self.act[0](self.convs[0](x))
        x = F.elu(self.act[1](self.convs[1](x)))
        x = F.avg_pool2d(torch.sigmoid(self.act[2](self.convs[2](x))), 2)
        x = F.hardswish(F.softplus(self.act[3](self.convs[3](x))))
        return self.fc(F.relu6(x).mean((2, 3)))


def test_deeplift_sums_to_delta_through_smooth_nonlinearities_and_where_input_equals_reference():
    model = Smooth().eval()
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    targets = torch.tensor([1, 2])
    ours = _deeplift(model, images, targets)
    torch.testing.assert_close(
        ours.sum((1, 2, 3)), _delta(model, images, torch.zeros(1), targets), rtol=1e-4, atol=1e-6
    )
    # A reference equal to the image on its left half: activations whose receptive field lies
    # there have z = z', and take the local derivative (the eps branch); the identity still holds.
    base = torch.zeros_like(images)
    base[..., :8] = images[..., :8]
    ours = _deeplift(model, images, targets, baseline=base)
    torch.testing.assert_close(ours.sum((1, 2, 3)), _delta(model, images, base, targets), rtol=1e-4, atol=1e-6)
    assert (ours[..., :4] == 0).all()
    # captum passes SiLU, GELU, ELU, ReLU6, Hardswish with their plain gradient: its sum misses Δ.
    _, delta = captum.DeepLift(model).attribute(images, baselines=base, target=targets, return_convergence_delta=True)
    assert (delta.abs() > 0.1 * _delta(model, images, base, targets).abs()).all()


def test_deeplift_in_chunks_equals_one_pass_and_predicts_the_clean_class():
    model, images = vgg(), torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    whole = explain(model, images, ["deeplift"], raw=True)["deeplift"]
    chunked = explain(model, images, ["deeplift"], raw=True, deeplift=dict(batch_size=2))["deeplift"]  # 1 image a pass
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-8)
    with torch.no_grad():
        predicted = model(images).argmax(1)
    torch.testing.assert_close(_deeplift(model, images, predicted), whole, rtol=0, atol=0)


def test_deeplift_warns_when_a_nonlinearity_does_not_hold_the_batch():
    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.gate, self.fc = nn.Conv2d(3, 4, 3), nn.Parameter(torch.ones(1, 4, 1, 1)), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc((torch.relu(self.conv(x)) * torch.sigmoid(self.gate)).mean((2, 3)))

    with pytest.warns(UserWarning, match="deeplift left sigmoid with its plain gradient"):
        explain(Gated(), torch.randn(2, 3, 8, 8), ["deeplift"])


# -- GradientSHAP ----------------------------------------------------------------------------


def _replay(images, n_samples, stdevs, seed, baselines=None):
    """The draws gradient_shap makes, replayed from the same seed in the same order."""
    generator = torch.Generator().manual_seed(seed)
    refs = attribution._references(baselines, images, generator)
    index, alpha = attribution._draws(refs.shape[0], n_samples, images, generator)
    noise = torch.stack([attribution._noise(images, stdevs, generator) for _ in range(n_samples)])
    return refs, index, alpha, noise if stdevs > 0 else torch.zeros_like(noise)


def _shap(model, images, targets, **options):
    return explain(model, images, ["gradient_shap"], targets=targets, raw=True, gradient_shap=options)["gradient_shap"]


def test_gradient_shap_on_a_linear_model_is_exact_for_every_draw():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    images, targets = torch.randn(2, 3, 4, 4), torch.tensor([2, 0])
    w = model[1].weight[targets].view(2, 3, 4, 4).detach()
    # One reference: (x − x') ⊙ w whatever α.
    base = torch.randn(3, 4, 4)
    torch.testing.assert_close(_shap(model, images, targets, baselines=base, n_samples=3), (images - base) * w)
    # Several references and noise: the mean over the draws of (x + ε − x'_k) ⊙ w.
    refs = torch.randn(4, 3, 4, 4)
    ours = _shap(model, images, targets, baselines=refs, n_samples=6, stdevs=0.5, seed=3, batch_size=4)
    _, index, _, noise = _replay(images, 6, 0.5, 3, refs)
    expected = ((images + noise - refs[index]) * w).mean(0)
    torch.testing.assert_close(ours, expected)


def test_gradient_shap_equals_captum_fed_the_same_draws(resnet, x, monkeypatch):
    # captum draws the reference indices with np.random.choice, the noise with torch.normal and α
    # with np.random.uniform (global RNGs), image-major (row = image · n + sample); ours come from
    # one seeded generator, sample-major. captum's three samplers are patched to return our draws.
    n, stdevs, seed = 4, 0.2, 7
    ours = _shap(resnet, x, TARGETS, n_samples=n, stdevs=stdevs, seed=seed, batch_size=4)  # two passes
    refs, index, alpha, noise = _replay(x, n, stdevs, seed)
    monkeypatch.setattr(np.random, "choice", lambda size, count: index.T.flatten().numpy())
    monkeypatch.setattr(np.random, "uniform", lambda low, high, count: alpha.T.flatten().double().numpy())
    monkeypatch.setattr(torch, "normal", lambda mean, std: noise.transpose(0, 1).flatten(0, 1))
    theirs = captum.GradientShap(copy.deepcopy(resnet)).attribute(
        x, baselines=refs, target=TARGETS, n_samples=n, stdevs=stdevs
    )
    monkeypatch.undo()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)
    _close_normalised(ours, theirs, x.shape[-2:])


def test_gradient_shap_converges_to_integrated_gradients_with_one_baseline():
    # With one reference and no noise, E_α[∂y/∂x(x' + α(x − x'))] ⊙ (x − x') is Integrated
    # Gradients' integral. Monte Carlo error ~ 1/√n: the relative L2 distance to IG (200 trapezoid
    # steps, itself within 1e-6 of 400) measured 0.002-0.005 with 4000 draws and 0.008-0.03 with
    # 100, over seeds 0-3; the bound 0.01 leaves twice the largest.
    model = Smooth().eval()
    images, targets = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4)), torch.tensor([1])
    ig = explain(
        model, images, ["integrated_gradients"], targets=targets, raw=True, integrated_gradients=dict(steps=200)
    )
    ig = ig["integrated_gradients"]

    def distance(n):
        return ((_shap(model, images, targets, baselines=0.0, n_samples=n) - ig).norm() / ig.norm()).item()

    few, many = distance(100), distance(4000)
    assert many < 0.01
    assert many < few


def test_gradient_shap_is_seeded_batched_and_ignores_the_global_rng():
    model, images = vgg(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(1)
    first = _shap(model, images, TARGETS, n_samples=3, stdevs=0.1)
    torch.manual_seed(2)
    np.random.seed(2)
    again = _shap(model, images, TARGETS, n_samples=3, stdevs=0.1, batch_size=1)  # one sample of each image a pass
    torch.testing.assert_close(again, first, rtol=1e-4, atol=1e-8)
    other = _shap(model, images, TARGETS, n_samples=3, stdevs=0.1, seed=1)
    assert not torch.allclose(other, first)


def _state(model):
    return (
        [m.training for m in model.modules()],
        [(p.requires_grad, None if p.grad is None else p.grad.clone()) for p in model.parameters()],
        [t.clone() for t in model.state_dict().values()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        [sorted(vars(m)) for m in model.modules()],  # no attribute left behind
    )


@pytest.mark.parametrize("method", ["deeplift", "gradient_shap"])
def test_the_model_is_left_untouched(method):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    model.train()
    model.conv1.weight.requires_grad_(False)
    model.fc.weight.grad = torch.ones_like(model.fc.weight)
    images = torch.randn(1, 3, 32, 32)
    before, rng = _state(model), torch.get_rng_state()
    with torch.no_grad():
        explain(model, images, [method], targets=1)
    after = _state(model)
    assert before[0] == after[0] and before[3] == after[3] and before[4] == after[4]
    for (flag, grad), (flag2, grad2) in zip(before[1], after[1], strict=True):
        assert flag == flag2 and (grad is None) == (grad2 is None) and (grad is None or torch.equal(grad, grad2))
    assert all(torch.equal(a, b) for a, b in zip(before[2], after[2], strict=True))
    assert torch.equal(torch.get_rng_state(), rng)
