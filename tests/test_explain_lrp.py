"""LRP (`camlight.explain.lrp`): parity with captum's LRP, a case computed by hand, conservation,
refusal of layers without a rule, and the model left as it was.

captum's rules are set per layer (`layer.rule = ...`) to the same choice as ours. Where its
conventions differ (camlight/explain/lrp.py lists them) the parity cases stay where both agree:
γ layers with biases ≤ 0 (captum keeps the bias, the paper adds γ·b⁺), z⁺ on non-negative inputs
(captum's Alpha1_Beta0_Rule uses a·w⁺ whatever the input's sign) with `set_bias_to_zero=True`.
captum has no rule for nn.Flatten; its ε-rule passes relevance through an identity layer, so the
Flatten modules get one. Peers run on deep copies (captum sets attributes on the layers).
"""

import copy
import math

import pytest
import torch
import torchvision
from torch import nn

from camlight.explain import explain, unsupported
from camlight.explain.engine import normalise
from camlight.explain.lrp import relevance_rules

captum = pytest.importorskip("captum.attr", reason="parity tests need the 'parity' extra (make test installs it)")
from captum.attr._utils.custom_modules import Addition_Module  # noqa: E402
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule  # noqa: E402

TOL = 1e-4
TARGETS = torch.tensor([3, 7])


def vgg_like() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(64, 32),
        nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Linear(32, 10),
    ).eval()


def bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.AvgPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()
    _random_batchnorm(net)
    return net


def _random_batchnorm(net: nn.Module) -> None:
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)


def _non_positive_biases(net: nn.Module) -> nn.Module:
    """The same net with every conv/linear bias b replaced by -0.1·|b|: where captum's γ-rule
    (bias kept) and the paper's (b + γ·b⁺) agree."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
                m.bias.copy_(-0.1 * m.bias.abs())
    return net


def _layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if type(m) in (nn.Conv2d, nn.Linear)]


def composite_rule(index: int, total: int) -> str:
    """The composite rule as documented: the first layer z⁺, layers 2…⌈L/2⌉ γ, the rest ε."""
    return "zplus" if index == 0 else "gamma" if index < math.ceil(total / 2) else "epsilon"


def captum_lrp(net: nn.Module, x: torch.Tensor, rule: str, epsilon: float = 1e-9, gamma: float = 0.25) -> torch.Tensor:
    net = copy.deepcopy(net)
    layers = _layers(net)  # registration order: the forward order in these Sequentials
    for i, m in enumerate(layers):
        which = composite_rule(i, len(layers)) if rule == "composite" else rule
        if which == "epsilon":
            m.rule = EpsilonRule(epsilon=epsilon)
        elif which == "gamma":
            m.rule = GammaRule(gamma=gamma)
        else:
            m.rule = Alpha1_Beta0_Rule(set_bias_to_zero=True)
    for m in net.modules():
        if isinstance(m, nn.Flatten):
            m.rule = EpsilonRule()
    return captum.LRP(net).attribute(x, target=TARGETS)


def _ours(net, x, **options) -> torch.Tensor:
    return explain(net, x, ["lrp"], targets=TARGETS, raw=True, lrp=options)["lrp"]


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    theirs = theirs.detach()
    scale = theirs.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * scale)
    size = ours.shape[-2:]
    diff = (normalise("pixel", ours, size) - normalise("pixel", theirs, size)).abs().max().item()
    assert diff <= TOL, diff


def _signed(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("net", "options", "positive_input"),
    [
        (vgg_like, dict(rule="epsilon"), False),
        (vgg_like, dict(rule="epsilon", epsilon=0.1), False),
        (vgg_like, dict(rule="gamma"), False),
        (vgg_like, dict(rule="gamma", gamma=1.0), False),
        (vgg_like, dict(rule="zplus"), True),
        (vgg_like, dict(rule="composite", epsilon=0.01), True),
        (bn_net, dict(rule="epsilon"), False),
        (bn_net, dict(rule="gamma"), False),
        (bn_net, dict(rule="composite"), True),
    ],
)
def test_matches_captum(net, options, positive_input):
    model = _non_positive_biases(net()) if options["rule"] in ("gamma", "composite") else net()
    x = _signed().abs() if positive_input else _signed()
    ours = _ours(model, x, **options)
    _assert_same(ours, captum_lrp(model, x, **options))


def test_residual_additions_split_in_proportion_as_captums_addition_module():
    """A residual block written `u + x` here, and with captum's Addition_Module there (its ε-rule on
    the sum: R_u = u/s·R_s): the same maps. Written `u + x` for captum, the whole R_s reaches both
    summands and relevance is no longer conserved."""

    class Block(nn.Module):
        def __init__(self, add: nn.Module | None):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
            self.relu = nn.ReLU()  # called twice, as in torchvision's BasicBlock
            self.add = add

        def forward(self, x):
            u = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
            return self.relu(self.add(u, x) if self.add is not None else u + x)

    def net(add: bool) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            Block(Addition_Module() if add else None),
            Block(Addition_Module() if add else None),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 10),
        ).eval()

    torch.manual_seed(0)
    ours_net = net(add=False)
    _random_batchnorm(ours_net)
    theirs_net = net(add=True)
    theirs_net.load_state_dict(ours_net.state_dict())
    x = _signed()[..., :16, :16]
    ours = _ours(ours_net, x)
    _assert_same(ours, captum_lrp(theirs_net, x, "epsilon"))
    plain = captum_lrp(ours_net, x, "epsilon")
    assert (plain - ours).abs().max() > 10 * ours.abs().max()


class TwoLayers(nn.Module):
    """(1,3,1,1) → Flatten → Linear(3,2) → ReLU → Linear(2,2), weights chosen for hand computation."""

    def __init__(self):
        super().__init__()
        self.flat, self.fc1, self.relu, self.fc2 = nn.Flatten(), nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [-1.0, 1.0, 1.0]]))
            self.fc1.bias.copy_(torch.tensor([0.5, 1.0]))
            self.fc2.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 0.5]]))
            self.fc2.bias.copy_(torch.tensor([0.0, 1.0]))

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.flat(x))))


def _hand(x: list[float], **options) -> torch.Tensor:
    image = torch.tensor(x, dtype=torch.float64).view(1, 3, 1, 1)
    model = TwoLayers().double().eval()
    return explain(model, image, ["lrp"], targets=0, raw=True, lrp=options)["lrp"].double().flatten()


def test_hand_computed_two_layer_net():
    # x = (1, 1, 2): z¹ = (1+2+0+0.5, −1+1+2+1) = (3.5, 3) = a; y₀ = 3.5 − 3 + 0 = 0.5.
    # ε (→ 0): R¹ = a ⊙ w²₀ · y₀/y₀ = (3.5, −3); R¹/z¹ = (1, −1); R⁰ = x ⊙ W¹ᵀ(1, −1) = (2, 1, −2).
    # (Σ R⁰ = 1 = y₀ minus what the biases absorb: 0.5·1 + 1·(−1).)
    expected = torch.tensor([2.0, 1.0, -2.0], dtype=torch.float64)
    torch.testing.assert_close(_hand([1, 1, 2]), expected, rtol=1e-6, atol=1e-6)
    # γ = 0.5 on both layers, weights and biases p + γp⁺: W²' row 0 = (1.5, −1), b²'₀ = 0:
    # z²'₀ = 1.5·3.5 − 3 = 2.25; R¹ = (3.5·1.5, −3)·0.5/2.25 = (7/6, −2/3).
    # W¹' = ((1.5, 3, 0), (−1, 1.5, 1.5)), b¹' = (0.75, 1.5): z¹' = (5.25, 5); R¹/z¹' = (2/9, −2/15);
    # R⁰ = x ⊙ W¹'ᵀ(2/9, −2/15) = (1/3 + 2/15, 2/3 − 1/5, 2·(−1/5)) = (7/15, 7/15, −2/5).
    expected = torch.tensor([7 / 15, 7 / 15, -2 / 5], dtype=torch.float64)
    torch.testing.assert_close(_hand([1, 1, 2], rule="gamma", gamma=0.5), expected, rtol=1e-6, atol=1e-6)
    # Composite on two layers: z⁺ below, ε on top. x = (1, −0.5, 2): z¹ = (0.5, 1.5) = a;
    # y₀ = 0.5 − 1.5 = −1; R¹ = a ⊙ w²₀ = (0.5, −1.5). z⁺ on the signed input: (x_i w_ki)⁺ =
    # ((1, 0, 0), (0, 0, 2)), sums (1, 2); R⁰ = (1/1·0.5, 0, 2/2·(−1.5)) = (0.5, 0, −1.5), Σ = y₀.
    # (captum's a·w⁺ would divide by 1 − 1 + 0 = 0 in the first neuron.)
    expected = torch.tensor([0.5, 0.0, -1.5], dtype=torch.float64)
    torch.testing.assert_close(_hand([1, -0.5, 2], rule="composite"), expected, rtol=1e-6, atol=1e-6)


def test_composite_numbers_layers_in_the_order_the_forward_pass_calls_them():
    """A head registered before the convolution: the convolution, called first, still gets z⁺."""

    class HeadFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.conv, self.relu = nn.Linear(8, 10), nn.Conv2d(3, 8, 3), nn.ReLU()

        def forward(self, x):
            return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    head_first = HeadFirst().eval()
    in_order = nn.Sequential(head_first.conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), head_first.fc)
    x = _signed()
    ours = _ours(head_first, x, rule="composite")
    torch.testing.assert_close(ours, _ours(in_order, x, rule="composite"), rtol=1e-4, atol=1e-7)
    assert (ours - _ours(in_order, x, rule="epsilon")).abs().max() > 1e-2 * ours.abs().max()  # the rules differ


def _bias_free_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # an affine map without offset: s·a
                m.running_mean.zero_()
                m.bias.zero_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
        model.fc.bias.zero_()
    return model


@pytest.mark.parametrize("rule", ["epsilon", "gamma", "zplus", "composite"])
def test_relevance_is_conserved_on_a_bias_free_network(rule):
    """Σ R⁰ = y_t for ε = 0, and for γ and z⁺ (whose denominators are the sums of what they
    redistribute) when no layer has an offset."""
    model = vgg_like()
    with torch.no_grad():
        for m in _layers(model):
            m.bias.zero_()
    x = _signed()
    with torch.no_grad():
        y = model(x).gather(1, TARGETS[:, None])[:, 0]
    total = _ours(model, x, rule=rule, epsilon=0.0).sum(dim=(1, 2, 3))
    torch.testing.assert_close(total, y, rtol=1e-5, atol=1e-6 * y.abs().max().item())


@pytest.mark.parametrize("rule", ["epsilon", "zplus", "composite"])
def test_relevance_is_conserved_on_resnet18(rule):
    """The same on torchvision's ResNet-18 made bias-free (batch-norm without offset, fc without bias),
    whose residual additions split relevance in proportion and whose ReLU modules run twice per block.
    (γ on every layer is not tested here: before a residual addition a convolution's output z can be
    negative and still carry relevance, and its γ denominator z + γ·Σa w⁺ then passes through 0,
    where the rule is ill-conditioned, in float64 too; zennit has a rule of its own for that case.)"""
    model = _bias_free_resnet().double()
    x = _signed().double()
    with torch.no_grad():
        y = model(x).gather(1, TARGETS[:, None])[:, 0]
    total = _ours(model, x, rule=rule, epsilon=0.0).double().sum(dim=(1, 2, 3))
    torch.testing.assert_close(total, y, rtol=1e-5, atol=1e-6 * y.abs().max().item())


def test_captum_does_not_conserve_on_resnet18_residual_additions():
    """What captum does on torchvision's ResNet-18 (`out += identity`, no Addition_Module): it runs,
    but each block hands the whole relevance to both summands, so the input relevance is nowhere
    near y_t on the same bias-free network on which ours conserves it."""
    model = _bias_free_resnet()
    x = _signed()
    with torch.no_grad():
        y = model(x).gather(1, TARGETS[:, None])[:, 0]
    theirs = captum.LRP(copy.deepcopy(model)).attribute(x, target=TARGETS).sum(dim=(1, 2, 3))
    assert ((theirs - y).abs() > 10 * y.abs()).all()


class Square(nn.Module):
    def forward(self, x):
        return x * x


class Scaled(nn.Module):
    """A container with a parameter of its own, used in its forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3)) * self.scale


class MyConv(nn.Conv2d):
    pass


@pytest.mark.parametrize(
    ("model", "names"),
    [
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LayerNorm(4 * 6 * 6), nn.Linear(144, 2)), "LayerNorm (2)"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), Square(), nn.AdaptiveAvgPool2d(1), nn.Flatten()), "Square (1)"),
        (nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()), "GELU (1)"),
        (nn.Sequential(MyConv(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), "MyConv (0)"),
        (Scaled(), "the parameters Scaled (the model itself) uses"),
    ],
)
def test_layers_without_a_rule_are_refused_by_declaration(model, names):
    x = torch.randn(1, 3, 8, 8)
    calls = []
    model.register_forward_pre_hook(lambda m, i: calls.append(1))
    why = unsupported(model, x, ["lrp", "saliency"])
    assert set(why) == {"lrp"}
    assert why["lrp"].startswith("lrp has no rule for ") and names in why["lrp"]
    assert "use gradcam or integrated_gradients" in why["lrp"]
    assert not calls  # decided from the module types, without running the model
    with pytest.raises(ValueError, match="lrp has no rule for") as raised:
        explain(model, x, ["lrp"])
    assert str(raised.value) == why["lrp"]


def test_supported_models_are_not_refused():
    from camlight.modules import Classifier

    x = torch.randn(1, 3, 32, 32)
    for model in (vgg_like(), bn_net(), torchvision.models.resnet18(num_classes=10), Classifier("simple_cnn", "gap")):
        assert unsupported(model, x, ["lrp"]) == {}


def test_options_are_checked():
    x = _signed()
    with pytest.raises(ValueError, match="lrp rule must be one of epsilon, gamma, zplus, composite"):
        explain(vgg_like(), x, ["lrp"], lrp=dict(rule="alpha_beta"))
    with pytest.raises(ValueError, match="lrp epsilon must be a number >= 0"):
        explain(vgg_like(), x, ["lrp"], lrp=dict(epsilon=-1.0))
    with pytest.raises(ValueError, match="lrp gamma must be a number >= 0"):
        explain(vgg_like(), x, ["lrp"], lrp=dict(gamma=-0.5))


def _state(model: nn.Module):
    return (
        [p.detach().clone() for p in model.parameters()],
        [p.grad for p in model.parameters()],
        [p.requires_grad for p in model.parameters()],
        [(m.training, dict(m.__dict__).get("forward"), *map(dict, _hooks(m))) for m in model.modules()],
    )


def _hooks(m: nn.Module):
    return (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)


def _assert_state(model: nn.Module, before) -> None:
    params, grads, flags, modules = before
    for p, saved, grad, flag in zip(model.parameters(), params, grads, flags, strict=True):
        assert torch.equal(p, saved) and p.grad is grad and p.requires_grad == flag
    assert [(m.training, dict(m.__dict__).get("forward"), *map(dict, _hooks(m))) for m in model.modules()] == modules


def test_model_untouched():
    model = vgg_like().train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[3].bias.requires_grad_(False)
    before = _state(model)
    explain(model, _signed(), ["lrp"], lrp=dict(rule="composite"))
    _assert_state(model, before)
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_forwards_restored_when_the_forward_raises():
    class Fails(nn.Sequential):
        def forward(self, x):
            super().forward(x)
            raise RuntimeError("boom")

    model = Fails(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)).eval()
    own = model[4].forward = model[4].forward  # an instance attribute of its own, kept as it was
    before = _state(model)
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, _signed(), ["lrp"])
    _assert_state(model, before)
    assert model[4].__dict__["forward"] is own and "forward" not in model[0].__dict__
    with relevance_rules(model[:4]):  # and the context manager alone, on a part of the model
        assert "forward" in model[0].__dict__
    assert "forward" not in model[0].__dict__
