"""Every method against a computation written out by hand on a tiny model, and the theory identities.

The tiny model: features = ReLU(1×1 conv, 3 → 2 channels, no bias), so A has the input's 4×4
resolution; head = mean over pixels, then linear 2 → 2. Its numbers are small enough to write out.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from camlight.explain import METHODS, explain
from camlight.modules import Classifier

CONV = torch.tensor([[0.5, -1.0, 0.25], [-0.5, 0.75, 1.0]])  # (K=2, 3)
FC_W = torch.tensor([[1.5, -2.0], [-0.5, 1.0]])  # (C=2, K=2)
FC_B = torch.tensor([0.1, -0.2])


class GapHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():
            self.fc.weight.copy_(FC_W)
            self.fc.bias.copy_(FC_B)

    def forward(self, a):
        return self.fc(a.mean(dim=(2, 3)))


class Tiny(nn.Module):
    target_layer = "relu"  # with features() and head: the camlight split

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(CONV[:, :, None, None])
        self.relu = nn.ReLU()
        self.head = GapHead()

    def features(self, x):
        return self.relu(self.conv(x))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def x():
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 4, 4, generator=g)


def pre_relu(x):
    """z_k = Σ_ch CONV[k, ch] x[ch], (B,2,4,4), by hand."""
    return torch.stack([sum(CONV[k, ch] * x[:, ch] for ch in range(3)) for k in range(2)], dim=1)


def logit(x, c):
    a = pre_relu(x).clamp(min=0)
    return sum(FC_W[c, k] * a[:, k].mean(dim=(1, 2)) for k in range(2)) + FC_B[c]


def input_grad(x, c, gate):
    """Σ_k gate_k(z, g) · CONV[k, ch], with g = FC_W[c, k] / 16 the gradient at A."""
    z = pre_relu(x)
    out = torch.zeros_like(x)
    for k in range(2):
        g = FC_W[c, k] / 16
        passed = gate(z[:, k], torch.full_like(z[:, k], g))
        for ch in range(3):
            out[:, ch] += passed * CONV[k, ch]
    return out


TARGET = 0


def test_saliency(x):
    raw = explain(Tiny(), x, "saliency", targets=TARGET, raw=True)["saliency"]
    expected = input_grad(x, TARGET, lambda z, g: g * (z > 0))
    torch.testing.assert_close(raw, expected)
    norm = explain(Tiny(), x, "saliency", targets=TARGET)["saliency"]
    m = expected.abs().amax(1)
    lo, hi = m.flatten(1).min(1).values[:, None, None], m.flatten(1).max(1).values[:, None, None]
    torch.testing.assert_close(norm, (m - lo) / (hi - lo))


def test_guided_backprop_and_deconvnet(x):
    maps = explain(Tiny(), x, ["guided_backprop", "deconvnet"], targets=TARGET, raw=True)
    torch.testing.assert_close(maps["guided_backprop"], input_grad(x, TARGET, lambda z, g: g.clamp(min=0) * (z > 0)))
    torch.testing.assert_close(maps["deconvnet"], input_grad(x, TARGET, lambda z, g: g.clamp(min=0)))


def test_deconvnet_differs_from_guided_backprop_exactly_where_forward_inputs_are_negative(x):
    maps = explain(Tiny(), x, ["guided_backprop", "deconvnet"], targets=TARGET, raw=True)
    differ = (maps["guided_backprop"] != maps["deconvnet"]).any(1)
    # Only channel k=0 has a positive weight for class 0 (FC_W[0] = [1.5, -2]): deconv passes it everywhere,
    # guided only where its forward input z_0 was positive.
    negative = pre_relu(x)[:, 0] <= 0
    assert negative.any() and torch.equal(differ, negative)


def test_cam_gradcam_and_gradcam_pp(x):
    a = pre_relu(x).clamp(min=0)
    maps = explain(Tiny(), x, ["cam", "gradcam", "gradcam_pp", "guided_gradcam"], targets=TARGET, raw=True)
    cam = FC_W[0, 0] * a[:, 0] + FC_W[0, 1] * a[:, 1]
    torch.testing.assert_close(maps["cam"], cam)
    torch.testing.assert_close(maps["gradcam"], (cam / 16).clamp(min=0))
    # Grad-CAM++: g = W_k/16 everywhere; alpha = g²/(2g² + ΣA·g³ + 1e-6) where g != 0; w_k = Σ_ij alpha·ReLU(g).
    weights = []
    for k in range(2):
        g = FC_W[0, k] / 16
        alpha = g**2 / (2 * g**2 + a[:, k].sum(dim=(1, 2)) * g**3 + 1e-6)
        weights.append(16 * alpha * max(float(g), 0.0))
    expected = (weights[0][:, None, None] * a[:, 0] + weights[1][:, None, None] * a[:, 1]).clamp(min=0)
    torch.testing.assert_close(maps["gradcam_pp"], expected)
    guided = input_grad(x, TARGET, lambda z, g: g.clamp(min=0) * (z > 0))
    torch.testing.assert_close(maps["guided_gradcam"], guided * (cam / 16).clamp(min=0)[:, None])


def test_ablation_cam(x):
    a = pre_relu(x).clamp(min=0)
    signs = set()
    for target in (0, 1):
        y = logit(x, target)
        signs |= {bool(v) for v in y > 0}
        # Zeroing channel k removes FC_W[c,k]·mean(A_k) from the logit; we divide by |y_c| (docs/explain.md).
        w = [(FC_W[target, k] * a[:, k].mean(dim=(1, 2))) / y.abs() for k in range(2)]
        expected = (w[0][:, None, None] * a[:, 0] + w[1][:, None, None] * a[:, 1]).clamp(min=0)
        raw = explain(Tiny(), x, "ablation_cam", targets=target, raw=True, ablation_cam=dict(batch_size=4))
        torch.testing.assert_close(raw["ablation_cam"], expected)
    assert signs == {True, False}  # positive and negative scores both exercised


def test_score_cam(x):
    model = Tiny()
    a = pre_relu(x).clamp(min=0)
    weights = torch.zeros(2, 2)
    for b in range(2):
        for k in range(2):
            m = a[b, k]
            if m.max() > m.min():
                mask = (m - m.min()) / (m.max() - m.min())
                weights[b, k] = F.softmax(model(x[b : b + 1] * mask), dim=1)[0, TARGET]
    expected = (weights[:, 0, None, None] * a[:, 0] + weights[:, 1, None, None] * a[:, 1]).clamp(min=0)
    raw = explain(model, x, "score_cam", targets=TARGET, raw=True, score_cam=dict(batch_size=3))
    torch.testing.assert_close(raw["score_cam"], expected)


def test_occlusion_hand_and_whole_image_window(x):
    model = Tiny()
    raw = explain(model, x, "occlusion", targets=TARGET, raw=True, occlusion=dict(window=2, stride=2, baseline=0.5))
    expected = torch.zeros(2, 4, 4)
    for y0 in (0, 2):
        for x0 in (0, 2):
            occluded = x.clone()
            occluded[:, :, y0 : y0 + 2, x0 : x0 + 2] = 0.5
            expected[:, y0 : y0 + 2, x0 : x0 + 2] = (logit(x, 0) - logit(occluded, 0))[:, None, None]
    torch.testing.assert_close(raw["occlusion"], expected)
    # One window over the whole image: every pixel holds y_c(x) − y_c(baseline).
    whole = explain(model, x, "occlusion", targets=1, raw=True, occlusion=dict(window=4, baseline=-1.0))["occlusion"]
    drop = logit(x, 1) - logit(torch.full_like(x, -1.0), 1)
    torch.testing.assert_close(whole, drop[:, None, None].expand(2, 4, 4))


def test_occlusion_averages_over_covering_windows(x):
    model = Tiny()
    raw = explain(model, x, "occlusion", targets=TARGET, raw=True, occlusion=dict(window=3, stride=1))["occlusion"]
    drops = {}
    for y0 in (0, 1):
        for x0 in (0, 1):
            occluded = x.clone()
            occluded[:, :, y0 : y0 + 3, x0 : x0 + 3] = 0
            drops[y0, x0] = logit(x, 0) - logit(occluded, 0)
    torch.testing.assert_close(raw[:, 1, 1], sum(drops.values()) / 4)  # covered by all four windows
    torch.testing.assert_close(raw[:, 0, 0], drops[0, 0])  # by one
    torch.testing.assert_close(raw[:, 0, 1], (drops[0, 0] + drops[0, 1]) / 2)  # by two


def test_integrated_gradients_completeness():
    torch.manual_seed(0)
    model = Classifier("simple_cnn", "gap", width=4).eval()
    x = torch.randn(3, 3, 32, 32)
    attr = explain(model, x, "integrated_gradients", targets=1, raw=True, integrated_gradients=dict(steps=300))
    with torch.no_grad():
        gap = model(x)[:, 1] - model(torch.zeros_like(x))[:, 1]
    total = attr["integrated_gradients"].sum(dim=(1, 2, 3))
    assert ((total - gap).abs() <= 0.01 * gap.abs()).all(), (total, gap)


def test_integrated_gradients_of_a_linear_model_is_exact(x):
    lin = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    attr = explain(
        lin, x, "integrated_gradients", targets=1, raw=True, integrated_gradients=dict(steps=2, baseline=0.25)
    )
    w = lin[1].weight[1].view(3, 4, 4)
    torch.testing.assert_close(attr["integrated_gradients"], (x - 0.25) * w)


def test_smoothgrad_of_a_linear_model_is_its_gradient(x):
    lin = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    attr = explain(lin, x, "smoothgrad", targets=0, raw=True, smoothgrad=dict(n_samples=4, noise=0.3))["smoothgrad"]
    torch.testing.assert_close(attr, lin[1].weight[0].view(3, 4, 4).expand_as(x))


def test_smoothgrad_averages_noisy_saliency(x):
    model = Tiny()
    attr = explain(model, x, "smoothgrad", targets=0, raw=True, smoothgrad=dict(n_samples=3, noise=0.2, seed=5))
    g = torch.Generator().manual_seed(5)
    sigma = 0.2 * (x.flatten(1).amax(1) - x.flatten(1).amin(1))[:, None, None, None]
    expected = (
        sum(input_grad(x + sigma * torch.randn(x.shape, generator=g), 0, lambda z, gr: gr * (z > 0)) for _ in range(3))
        / 3
    )
    torch.testing.assert_close(attr["smoothgrad"], expected)


def test_cam_equals_gradcam_on_a_gap_head():
    torch.manual_seed(0)
    model = Classifier("simple_cnn", "gap", width=8).eval()
    x = torch.randn(6, 3, 64, 64)
    for target in (0, 1, None):
        maps = explain(model, x, ["cam", "gradcam"], targets=target)
        assert (maps["cam"] - maps["gradcam"]).abs().max() < 1e-5


def test_every_map_is_in_0_1_at_input_resolution():
    torch.manual_seed(0)
    model = Classifier("simple_cnn", "gap", width=4).eval()
    x = torch.randn(2, 3, 40, 48)
    maps = explain(model, x, list(METHODS))
    for key, m in maps.items():
        assert m.shape == (2, 40, 48) and m.dtype == torch.float32, key
        assert m.min() == 0 and m.max() == 1, key


def test_a_constant_map_becomes_zeros_not_nan():
    model = Tiny()
    with torch.no_grad():
        model.conv.weight.zero_()
    maps = explain(model, torch.randn(1, 3, 4, 4), ["cam", "gradcam", "saliency", "score_cam"])
    for key, m in maps.items():
        assert torch.equal(m, torch.zeros(1, 4, 4)), key


def test_targets_per_image_are_all_used(x):
    per_image = explain(Tiny(), x, "gradcam", targets=torch.tensor([0, 1]), raw=True)["gradcam"]
    assert torch.equal(per_image[0], explain(Tiny(), x, "gradcam", targets=0, raw=True)["gradcam"][0])
    assert torch.equal(per_image[1], explain(Tiny(), x, "gradcam", targets=1, raw=True)["gradcam"][1])
    predicted = Tiny()(x).argmax(1)
    assert torch.equal(
        explain(Tiny(), x, "gradcam", raw=True)["gradcam"],
        explain(Tiny(), x, "gradcam", targets=predicted, raw=True)["gradcam"],
    )


def test_methods_asked_together_give_the_same_maps_as_alone():
    torch.manual_seed(0)
    model = Classifier("simple_cnn", "gap", width=4).eval()
    x = torch.randn(3, 3, 32, 32)
    together = explain(model, x, list(METHODS))
    for key in METHODS:
        alone = explain(model, x, [key])[key]
        torch.testing.assert_close(together[key], alone, msg=key)


def test_eigen_smooth_of_cam_is_the_first_component_of_the_weighted_channels():
    """CAM's raw map with eigen_smooth: the first principal component (positions as samples,
    channels centred) of w^c_k A^k, sign flipped when |min| > |max|, computed here with numpy."""
    import numpy as np

    from camlight.modules import Classifier

    torch.manual_seed(0)
    model = Classifier("simple_cnn", "gap", image_size=32, width=4).eval()
    x = torch.randn(2, 3, 32, 32)
    got = explain(model, x, ["cam"], targets=1, raw=True, cam=dict(eigen_smooth=True))["cam"]
    with torch.no_grad():
        weighted = (model.head.fc.weight[1][None, :, None, None] * model.features(x)).numpy().astype(np.float64)
    for i in range(2):
        k, h, w = weighted[i].shape
        rows = weighted[i].reshape(k, -1).T
        rows = rows - rows.mean(0)
        _, _, vt = np.linalg.svd(rows, full_matrices=False)
        proj = (rows @ vt[0]).reshape(h, w)
        if abs(proj.min()) > abs(proj.max()):
            proj = -proj
        np.testing.assert_allclose(got[i].numpy(), proj, atol=1e-5)
    for method in ("ablation_cam", "score_cam"):  # the option reaches the perturbation CAMs too
        smooth = explain(model, x, [method], targets=1, **{method: dict(eigen_smooth=True)})[method]
        assert not torch.allclose(smooth, explain(model, x, [method], targets=1)[method])


class _RegionModel(torch.nn.Module):
    """Two classes: logit 1 is 8 × the mean of the input's first channel over rows 0-15 and
    columns 0-15 (the region R), logit 0 is 0; everything else is ignored."""

    def forward(self, x):
        s = x[:, 0, :16, :16].mean(dim=(1, 2))
        return torch.stack([torch.zeros_like(s), 8 * s], dim=1)


def test_rise_is_the_mask_weighted_mean_probability():
    """RISE's estimator by hand: Σ_i P(c | x ⊙ M_i) M_i / (N p) over the same seeded masks; a
    pixel of the region the class depends on scores higher than one outside it; batching does
    not change the map, and the global RNG is untouched."""
    from camlight.explain.perturbation import rise_masks

    model, x = _RegionModel(), torch.ones(2, 3, 32, 32)
    state = torch.get_rng_state()
    got = explain(model, x, ["rise"], targets=1, raw=True, rise=dict(n_masks=300, cells=4))["rise"]
    assert torch.equal(torch.get_rng_state(), state)
    masks = rise_masks(300, 4, 0.5, (32, 32), torch.Generator().manual_seed(0))
    with torch.no_grad():
        p1 = torch.stack([model(x * m).softmax(1)[:, 1] for m in masks])  # (N,B)
    expected = torch.einsum("nb,nhw->bhw", p1, masks) / (300 * 0.5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    inside, outside = got[:, :16, :16].mean(), got[:, 16:, 16:].mean()
    assert inside > outside + 0.05, (float(inside), float(outside))
    batched = explain(model, x, ["rise"], targets=1, raw=True, rise=dict(n_masks=300, cells=4, batch_size=14))["rise"]
    torch.testing.assert_close(batched, got, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="0 < p < 1"):
        explain(model, x, ["rise"], rise=dict(p=1.0))
