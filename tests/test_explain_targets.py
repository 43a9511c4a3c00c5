"""Several targets per call: (B,T) targets and "topk" give (B,T,H,W) maps equal to T calls with one
target each, from shared passes (one forward for the CAM family, one set of perturbed forwards
for the perturbation methods)."""

import pytest
import torch
import torchvision

from camlight.explain import METHODS, explain
from camlight.modules import Classifier

LIGHT = {  # enough to be a real map, small enough for two cores
    "smoothgrad": dict(n_samples=2),
    "integrated_gradients": dict(steps=4),
    "occlusion": dict(window=8, stride=8),
    "rise": dict(n_masks=24, cells=4),
    "gradient_shap": dict(n_samples=2),
}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return Classifier("simple_cnn", "gap", class_names=tuple("abcdef"), image_size=32).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))


TABLE = torch.tensor([[1, 4, 0], [5, 2, 2]])


@pytest.mark.parametrize("method", METHODS)
def test_several_targets_equal_one_call_per_target(model, x, method):
    options = {method: LIGHT[method]} if method in LIGHT else {}
    for raw in (False, True):
        maps = explain(model, x, [method], targets=TABLE, raw=raw, **options)[method]
        for t in range(TABLE.shape[1]):
            one = explain(model, x, [method], targets=TABLE[:, t], raw=raw, **options)[method]
            assert maps.shape == (2, 3, *one.shape[1:])
            torch.testing.assert_close(maps[:, t], one, rtol=1e-5, atol=1e-6)


def test_top_k_are_the_highest_scoring_classes_best_first(model, x):
    with torch.no_grad():
        top = model(x).topk(3, dim=1).indices
    maps = explain(model, x, ["gradcam", "saliency"], targets="top3")
    expected = explain(model, x, ["gradcam", "saliency"], targets=top)
    for m in maps:
        assert maps[m].shape == (2, 3, 32, 32)
        torch.testing.assert_close(maps[m], expected[m])
    torch.testing.assert_close(maps["gradcam"][:, 0], explain(model, x, ["gradcam"])["gradcam"])  # top1: predicted


def test_one_target_column_keeps_the_target_dimension(model, x):
    maps = explain(model, x, ["gradcam"], targets=TABLE[:, :1])["gradcam"]
    assert maps.shape == (2, 1, 32, 32)
    assert explain(model, x, ["gradcam"], targets=TABLE[:, 0])["gradcam"].shape == (2, 32, 32)


def _forwards(module):
    count = [0]
    handle = module.register_forward_hook(lambda *args: count.__setitem__(0, count[0] + 1))
    return count, handle


@pytest.mark.parametrize("method", ["gradcam", "cam", "gradcam_pp", "layercam", "ablation_cam", "score_cam", "rise"])
def test_targets_share_the_forward_passes(model, x, method):
    """The backbone runs as often for five targets as for one."""
    options = {method: LIGHT[method]} if method in LIGHT else {}
    five = torch.tensor([[0, 1, 2, 3, 4], [5, 4, 3, 2, 1]])
    explain(model, x, [method], **options)  # measures the memory a copy takes, once per model
    runs = {}
    for name, targets in (("one", five[:, 0]), ("five", five)):
        count, handle = _forwards(model.backbone)
        try:
            explain(model, x, [method], targets=targets, **options)
        finally:
            handle.remove()
        runs[name] = count[0]
    assert runs["five"] == runs["one"] >= 1


def test_hooked_model_backpropagates_each_target_through_the_tail_only():
    """torchvision ResNet-18 hooked at layer4: one forward for five targets; the layers before the
    target layer run once and never in a backward pass."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=8).eval()
    x = torch.randn(2, 3, 64, 64)
    five = torch.tensor([[0, 1, 2, 3, 4], [7, 6, 5, 4, 3]])
    count, handle = _forwards(net.layer1)
    grads = []
    back = net.layer3.register_full_backward_hook(lambda *args: grads.append(1))
    try:
        maps = explain(net, x, ["gradcam", "hirescam"], targets=five, layer="layer4")
    finally:
        handle.remove()
        back.remove()
    assert count[0] == 1 and not grads
    for t in range(5):
        torch.testing.assert_close(
            maps["gradcam"][:, t], explain(net, x, ["gradcam"], targets=five[:, t], layer="layer4")["gradcam"]
        )


@pytest.mark.parametrize(
    ("targets", "error", "message"),
    [
        ("top0", ValueError, "give 'topk'"),
        ("best", ValueError, "give 'topk'"),
        ("top9", ValueError, "only 6 classes"),
        (torch.tensor([[1, 2]]), ValueError, r"targets of shape \(1, 2\) for 2 images"),
        (torch.zeros(2, 2, 2, dtype=torch.long), ValueError, "give \\(B,\\) or \\(B,T\\)"),
        (torch.tensor([[1, 9], [0, 0]]), ValueError, "target class 9 out of range"),
    ],
)
def test_bad_target_tables_are_refused_with_one_line(model, x, targets, error, message):
    with pytest.raises(error, match=message):
        explain(model, x, ["gradcam"], targets=targets)


def test_occlusion_scores_every_target_from_one_set_of_occluded_copies(model, x, monkeypatch):
    """Incremental occlusion prepares the clean pass and evaluates the occluded copies once for all
    targets; with full forwards the model runs as often for five targets as for one."""
    from camlight.explain import _incremental

    calls = {"prepare": 0, "logits": 0}
    prepare = _incremental.prepare

    def counted_prepare(*args, **kwargs):
        calls["prepare"] += 1
        inc = prepare(*args, **kwargs)
        assert inc is not None  # the simple_cnn traces: the incremental path is the one counted
        logits = inc.logits

        def counted_logits(*a, **k):
            calls["logits"] += 1
            return logits(*a, **k)

        inc.logits = counted_logits
        return inc

    monkeypatch.setattr(_incremental, "prepare", counted_prepare)
    five = torch.tensor([[0, 1, 2, 3, 4], [5, 4, 3, 2, 1]])
    counts = {}
    for name, targets in (("one", five[:, 0]), ("five", five)):
        calls.update(prepare=0, logits=0)
        explain(model, x, ["occlusion"], targets=targets, occlusion=LIGHT["occlusion"])
        counts[name] = dict(calls)
    assert counts["five"] == counts["one"] and counts["one"]["prepare"] == 1
    full = dict(LIGHT["occlusion"], incremental=False)
    explain(model, x, ["occlusion"], occlusion=full)  # measures the memory a copy takes, once per model
    runs = {}
    for name, targets in (("one", five[:, 0]), ("five", five)):
        count, handle = _forwards(model.backbone)
        try:
            explain(model, x, ["occlusion"], targets=targets, occlusion=full)
        finally:
            handle.remove()
        runs[name] = count[0]
    assert runs["five"] == runs["one"] > 1


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "gradient_shap", "occlusion", "rise"])
def test_top_k_are_the_clean_images_classes_for_methods_that_perturb_it(model, x, method):
    """ "top3" is fixed by the clean images' scores, also for the methods whose passes only see
    perturbed copies (a path point, a noisy copy, a sample), run alone."""
    options = {method: LIGHT[method]} if method in LIGHT else {}
    with torch.no_grad():
        top = model(x).topk(3, dim=1).indices
    torch.testing.assert_close(
        explain(model, x, [method], targets="top3", **options)[method],
        explain(model, x, [method], targets=top, **options)[method],
    )


def test_a_table_given_as_nested_lists_is_a_table(model, x):
    listed = explain(model, x, ["saliency", "occlusion"], targets=TABLE.tolist(), occlusion=LIGHT["occlusion"])
    tensor = explain(model, x, ["saliency", "occlusion"], targets=TABLE, occlusion=LIGHT["occlusion"])
    for m in listed:
        assert listed[m].shape == (2, 3, 32, 32)
        torch.testing.assert_close(listed[m], tensor[m])
