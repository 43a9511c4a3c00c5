"""Occlusion by incremental inference equals occlusion by full forward passes, and captum's.

Each test computes the raw occlusion map twice, with `incremental=True` (crops recomputed inside
the patch's projective field, `camlight.explain._incremental`) and `incremental=False` (one full
forward pass per occluded copy, as captum does), and asserts they agree to 1e-5 in float32. The
models have random weights and random batch-norm statistics, in eval mode.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from camlight.explain import _incremental, explain
from camlight.explain.perturbation import _starts
from camlight.modules import Classifier

TOL = dict(rtol=1e-5, atol=1e-5)


def _random_statistics(model: nn.Module) -> nn.Module:
    """Batch norms with random running statistics and affine parameters, so that they matter."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _images(n: int, side: int) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(1))


def _both(model, x, **options):
    """(incremental, full-forward) raw occlusion maps, (B,H,W)."""
    maps = [
        explain(model, x, ["occlusion"], raw=True, occlusion=dict(options, incremental=flag))["occlusion"]
        for flag in (True, False)
    ]
    assert maps[1].abs().max() > 1e-4  # a real map, not an empty one
    return maps


def _plan(model, x, window, stride):
    """The incremental plan `occlusion` builds, or None where it falls back to full forwards."""
    h, w = x.shape[-2:]
    boxes = [
        (y, x0, min(y + window, h), min(x0 + window, w))
        for y in _starts(h, window, stride)
        for x0 in _starts(w, window, stride)
    ]
    with torch.no_grad():
        return _incremental.prepare(model.eval(), x, boxes, (window, window), 0.0, model(x))


def _kinds(plan) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for step in plan.steps.values():
        kinds[step.kind] = kinds.get(step.kind, 0) + 1
    return kinds


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return _random_statistics(torchvision.models.resnet18(num_classes=10))


def test_resnet18_equals_full_forwards_with_cut_windows(resnet):
    # 64 px, window 12, stride 10: 7 windows a side, the last one cut at the border (60 + 12 > 64).
    x = _images(2, 64)
    assert _starts(64, 12, 10)[-1] + 12 > 64
    ours, full = _both(resnet, x, window=12, stride=10)
    torch.testing.assert_close(ours, full, **TOL)
    kinds = _kinds(_plan(resnet, x, 12, 10))
    assert kinds["window"] >= 5 and kinds["merge"] >= 1  # convs, the max-pool and residual sums on crops


def test_simple_cnn_equals_full_forwards():
    torch.manual_seed(0)
    model = _random_statistics(Classifier("simple_cnn", "gap", image_size=64))
    x = _images(2, 64)
    ours, full = _both(model, x, window=8, stride=4)
    torch.testing.assert_close(ours, full, **TOL)
    plan = _plan(model, x, 8, 4)
    assert _kinds(plan)["window"] == 7  # 4 convs, 3 max-pools; the head (mean, linear) on whole maps
    conv = plan.steps[next(n for n in plan.steps if n.name == "backbone_block1_0")]
    assert conv.size == (10, 10)  # 8 + 2 (3×3 kernel): the projective field, not the 64×64 map


class Branchy(nn.Module):
    """In-place ReLUs (module and functional), max-pool with padding, stride-2 and dilated and
    grouped convs, a residual sum with a projection, a concatenation along channels, average
    pooling counting its padding, a per-channel scale and an elementwise product of two maps."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.b = nn.Conv2d(8, 8, 1)
        self.down = nn.Conv2d(16, 12, 3, stride=2, padding=1)
        self.proj = nn.Conv2d(16, 12, 1, stride=2)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1)
        self.scale = nn.Parameter(torch.rand(1, 12, 1, 1) + 0.5)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.pool(self.stem(x))
        y = torch.cat([F.relu(self.a(x), inplace=True), torch.sigmoid(self.b(x))], dim=1)
        z = self.down(y) + self.proj(y)
        z = self.avg(F.relu(z, inplace=True)) * self.scale
        z = z * torch.tanh(z)
        return self.fc(z.mean(dim=(2, 3)))


def test_inplace_relus_padded_pools_and_branches_equal_full_forwards():
    torch.manual_seed(0)
    model = _random_statistics(Branchy())
    x = _images(3, 96)
    ours, full = _both(model, x, window=8, stride=6)
    torch.testing.assert_close(ours, full, **TOL)
    kinds = _kinds(_plan(model, x, 8, 6))
    assert kinds["window"] == 7 and kinds["merge"] == 3  # every conv and pool, the cat, + and ×, on crops


def test_windows_cut_at_the_border_and_small_batches():
    torch.manual_seed(0)
    model = _random_statistics(Branchy())
    x = _images(2, 30)
    # Stride 5 does not divide 30 − 7: windows start at 0, 5, ..., 25, the last one cut to 5 px.
    assert _starts(30, 7, 5) == [0, 5, 10, 15, 20, 25]
    ours, full = _both(model, x, window=7, stride=5, batch_size=3)  # one position per pass
    torch.testing.assert_close(ours, full, **TOL)


def test_per_channel_baseline_equals_full_forwards():
    torch.manual_seed(0)
    model = _random_statistics(Branchy())
    x = _images(2, 32)
    baseline = torch.tensor([0.5, -1.0, 2.0])[:, None, None]
    ours, full = _both(model, x, window=8, stride=6, baseline=baseline)
    torch.testing.assert_close(ours, full, **TOL)


class Untraceable(nn.Module):
    """Control flow on the input's values: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = self.conv(x)
        if a.mean() > 100:  # never true; only tracing trips on it
            a = -a
        return self.fc(a.relu().mean(dim=(2, 3)))


def test_untraceable_model_falls_back_and_is_equal():
    torch.manual_seed(0)
    model = Untraceable().eval()
    x = _images(2, 16)
    assert _plan(model, x, 4, 2) is None
    ours, full = _both(model, x, window=4, stride=2)
    torch.testing.assert_close(ours, full, rtol=0, atol=0)


def test_hooked_model_falls_back_and_is_equal():
    torch.manual_seed(0)
    model = _random_statistics(Branchy())
    handle = model.a.register_forward_hook(lambda m, i, o: o * 2)  # changes the output: must run
    try:
        x = _images(2, 24)
        assert _plan(model, x, 6, 3) is None
        ours, full = _both(model, x, window=6, stride=3)
        torch.testing.assert_close(ours, full, rtol=0, atol=0)
    finally:
        handle.remove()


def test_neuron_target_falls_back_and_is_equal(resnet):
    x = _images(1, 48)
    maps = [
        explain(resnet, x, ["occlusion"], targets="layer2:5", raw=True, occlusion=dict(window=8, incremental=flag))
        for flag in (True, False)
    ]
    torch.testing.assert_close(maps[0]["occlusion"], maps[1]["occlusion"], **TOL)


def test_equals_captum_occlusion():
    captum = pytest.importorskip("captum.attr", reason="parity tests need the 'parity' extra")
    torch.manual_seed(0)
    model = _random_statistics(Classifier("simple_cnn", "gap", image_size=64))
    x = _images(2, 64)
    targets = torch.tensor([0, 1])
    ours = explain(model, x, ["occlusion"], targets=targets, raw=True, occlusion=dict(window=12, stride=8))
    theirs = captum.Occlusion(copy.deepcopy(model)).attribute(
        x, target=targets, sliding_window_shapes=(3, 12, 12), strides=8, baselines=0.0, perturbations_per_eval=16
    )
    torch.testing.assert_close(ours["occlusion"], theirs[:, 0], **TOL)  # captum repeats the map over channels


def test_model_left_as_it_was():
    torch.manual_seed(0)
    model = Branchy().train()
    relu = model.stem[2]
    x = _images(2, 24)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explain(model, x, ["occlusion"], occlusion=dict(window=6, stride=3))
    assert model.training and relu.inplace
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


class Strided(nn.Module):
    """A 1×1 conv with stride 2 first: a one-pixel patch on an odd row or column changes nothing."""

    def __init__(self):
        super().__init__()
        self.skip = nn.Conv2d(3, 4, 1, stride=2)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.conv(self.skip(x).relu()).mean(dim=(2, 3)))


def test_patches_that_change_nothing_downstream():
    torch.manual_seed(0)
    model = Strided().eval()
    x = _images(2, 8)
    ours, full = _both(model, x, window=1, stride=1)
    torch.testing.assert_close(ours, full, **TOL)
    assert (full[:, 1::2, :] == 0).all() and (full[:, :, 1::2] == 0).all()  # never seen by the strided conv
    assert _kinds(_plan(model, x, 1, 1))["window"] == 2
