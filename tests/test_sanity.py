"""The randomization test's similarity measures against SciPy's and scikit-image's, and its
randomization: the right blocks, on copies, with nothing of the model or the RNG changed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from camlight.metrics import sanity as S
from camlight.modules import Classifier

stats = pytest.importorskip("scipy.stats")
skimage_metrics = pytest.importorskip("skimage.metrics", reason="the 'real' extra (make test installs it)")
skimage_feature = pytest.importorskip("skimage.feature")


def maps_pair(h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(4, h, w, generator=g)
    b = a + 0.4 * torch.rand(4, h, w, generator=g)
    a[1] = (a[1] * 4).round() / 4  # heavy ties
    b[2, :10] = 0.5  # a tied band
    a[3] = torch.nn.functional.avg_pool2d(a[3][None, None], 9, 1, 4)[0, 0]  # smooth
    return a, b


def test_spearman_equals_scipy_with_ties_and_is_nan_for_a_constant_map():
    a, b = maps_pair()
    expected = [stats.spearmanr(x.flatten(), y.flatten()).statistic for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    assert np.allclose(S.spearman(a, b).numpy(), expected, rtol=0, atol=1e-12)
    assert torch.isnan(S.spearman(torch.zeros(1, 8, 8), a[:1, :8, :8])).all()
    assert S.spearman(a, a).sub(1).abs().max() < 1e-12


@pytest.mark.parametrize("shape", [(40, 48), (7, 7), (31, 20)])
def test_ssim_equals_scikit_image(shape):
    a, b = maps_pair(*shape)
    expected = [
        skimage_metrics.structural_similarity(x, y, data_range=1.0)
        for x, y in zip(a.double().numpy(), b.double().numpy(), strict=True)
    ]
    assert np.allclose(S.ssim(a, b).numpy(), expected, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="7×7"):
        S.ssim(a[:, :6], b[:, :6])


def test_hog_and_its_similarity_equal_scikit_image_and_scipy():
    a, b = maps_pair(50, 61)
    expected = np.stack([skimage_feature.hog(x) for x in a.double().numpy()])
    found = S.hog(a).numpy()
    assert found.shape == expected.shape
    assert np.abs(found - expected).max() < 1e-6  # scikit-image sums each cell in float32
    ref = [
        stats.pearsonr(skimage_feature.hog(x), skimage_feature.hog(y)).statistic
        for x, y in zip(a.double().numpy(), b.double().numpy(), strict=True)
    ]
    assert np.allclose(S.hog_similarity(a, b).numpy(), ref, atol=1e-6)
    with pytest.raises(ValueError, match="24×24"):
        S.hog(a[:, :20, :20])


def resnet(size=64):
    torch.manual_seed(0)
    return Classifier("resnet18", "gap", class_names=["cat", "dog"], image_size=size).eval()


def test_blocks_are_the_stem_the_residual_blocks_and_the_head():
    names = [name for name, _ in S.blocks(resnet())]
    stages = [f"backbone.layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    assert names == ["backbone.conv1", "backbone.bn1", *stages, "head"]


def _differing(a: torch.nn.Module, b: torch.nn.Module, names: list[str]) -> set[str]:
    sa, sb = a.state_dict(), b.state_dict()
    return {n for n in names if any(not torch.equal(v, sb[k]) for k, v in sa.items() if k.startswith(n + "."))}


@pytest.mark.parametrize("mode", ["cascading", "independent"])
def test_randomization_changes_the_right_blocks_of_copies_only(mode):
    model = resnet()
    with torch.no_grad():  # trained-looking BatchNorm, so that re-initialising it changes it
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.weight.uniform_(0.5, 1.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    names = [n for n, _ in S.blocks(model)][::-1]
    first_draw = {}
    for k, (name, net) in enumerate(S.randomized(model, mode, seed=3)):
        assert net is not model and name == names[k]
        expected = set(names[: k + 1]) if mode == "cascading" else {name}
        assert _differing(model, net, names) == expected
        first_draw[name] = {
            key: v.clone()
            for key, v in net.state_dict().items()
            if key.startswith(name + ".") and v.is_floating_point()
        }
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(torch.get_rng_state(), rng)
    # the same block draws the same weights in both modes
    other = "independent" if mode == "cascading" else "cascading"
    for name, net in S.randomized(model, other, seed=3):
        for key, v in first_draw[name].items():
            assert torch.equal(net.state_dict()[key], v), key


def test_a_randomization_that_changes_nothing_scores_one_and_the_head_changes_cam():
    """An untrained network's BatchNorm re-initialised is the same network: every similarity is
    exactly 1 there. Re-initialising a GAP head's weights changes CAM's maps."""
    model = resnet(64)
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    result = S.model_randomization(model, images, ["cam", "saliency"], mode="independent", keep_maps=True)
    assert result["blocks"][0] == "head" and result["blocks"][-1] == "backbone.conv1"
    at_bn = result["blocks"].index("backbone.bn1")
    for method in ("cam", "saliency"):
        scores = result["scores"][method]
        assert set(scores) == {"spearman", "spearman_signed", "ssim", "hog"}
        assert all(v.shape == (len(result["blocks"]), 3) for v in scores.values())
        for measure in ("spearman", "spearman_signed", "ssim", "hog"):
            assert torch.allclose(scores[measure][at_bn], torch.ones(3, dtype=torch.float64)), (method, measure)
        assert len(result["maps"][method]) == len(result["blocks"]) + 1
    assert (result["scores"]["cam"]["spearman"][0] < 0.999).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items()) and not model.training


def test_unknown_mode_and_a_model_without_parameters():
    with pytest.raises(ValueError, match="cascading, independent"):
        next(S.randomized(resnet(), "shuffled"))
    with pytest.raises(ValueError, match="no parameters"):
        next(S.randomized(torch.nn.Identity()))


def test_fully_randomized_is_the_last_cascading_step():
    model = resnet()
    *_, (_, last) = S.randomized(model, "cascading", seed=2)
    full = S.fully_randomized(model, seed=2)
    assert all(torch.equal(v, last.state_dict()[k]) for k, v in full.state_dict().items())
    assert _differing(model, full, [n for n, _ in S.blocks(model)]) == {n for n, _ in S.blocks(model)} - {
        "backbone.bn1"
    }
