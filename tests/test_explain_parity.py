"""Same numbers as captum and pytorch-grad-cam, on torchvision's ResNet-18 (random init, fixed seed).

Both sides go through the same normalisation before comparing (DESIGN.md): pixel-space maps take
max |.| over channels, CAM maps ReLU → bilinear upsample; then per-image min-max. Each convention
difference is stated where the test compensates for it. The peers run on deep copies: both change
the model they are given (pytorch-grad-cam calls eval() and fills .grad).
"""

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision

from camlight.explain import explain
from camlight.explain.engine import normalise

captum = pytest.importorskip("captum.attr", reason="parity tests need the 'parity' extra (make test installs it)")
gradcam_lib = pytest.importorskip("pytorch_grad_cam", reason="parity tests need the 'parity' extra")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))


TARGETS = torch.tensor([3, 7])


def _close(ours, theirs, kind, size):
    a = normalise(kind, ours, size)
    b = normalise(kind, theirs.detach(), size)
    diff = (a - b).abs().max().item()
    assert diff <= TOL, diff
    assert a.max() == 1  # a real map, not an empty one


@pytest.mark.parametrize(
    ("method", "peer", "kwargs"),
    [
        ("saliency", "Saliency", dict(abs=False)),
        ("deconvnet", "Deconvolution", {}),
        ("guided_backprop", "GuidedBackprop", {}),
    ],
)
def test_gradient_methods_match_captum(model, x, method, peer, kwargs):
    ours = explain(model, x, [method], targets=TARGETS, raw=True)[method]
    theirs = getattr(captum, peer)(copy.deepcopy(model)).attribute(x, target=TARGETS, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    _close(ours, theirs, "pixel", x.shape[-2:])


def test_integrated_gradients_matches_captum(model, x):
    steps = 16
    ours = explain(
        model, x, ["integrated_gradients"], targets=TARGETS, raw=True, integrated_gradients=dict(steps=steps)
    )
    theirs = captum.IntegratedGradients(copy.deepcopy(model)).attribute(
        x, target=TARGETS, n_steps=steps, method="riemann_trapezoid"
    )
    # captum's trapezoid rule uses step 1/n instead of 1/(n-1): its weights sum to (n-1)/n, not 1,
    # so its attributions are ours times (n-1)/n (and miss completeness by 1/n).
    scaled = ours["integrated_gradients"] * (steps - 1) / steps
    torch.testing.assert_close(scaled, theirs, rtol=1e-4, atol=1e-7)
    _close(ours["integrated_gradients"], theirs, "pixel", x.shape[-2:])


def test_occlusion_matches_captum(model, x):
    ours = explain(
        model, x, ["occlusion"], targets=TARGETS, raw=True, occlusion=dict(window=24, stride=12, baseline=0.0)
    )
    theirs = captum.Occlusion(copy.deepcopy(model)).attribute(
        x, target=TARGETS, sliding_window_shapes=(3, 24, 24), strides=12, baselines=0.0
    )
    torch.testing.assert_close(ours["occlusion"], theirs[:, 0], rtol=1e-4, atol=1e-6)
    assert torch.equal(theirs[:, 0], theirs[:, 2])  # captum repeats the map over channels
    _close(ours["occlusion"], theirs[:, 0], "signed", x.shape[-2:])


def test_gradcam_matches_captum_layer_gradcam(model, x):
    ours = explain(model, x, ["gradcam"], targets=TARGETS, layer="layer4", raw=True)["gradcam"]
    m = copy.deepcopy(model)
    theirs = captum.LayerGradCam(m, m.layer4).attribute(x, target=TARGETS, relu_attributions=True)[:, 0]
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7)
    _close(ours, theirs, "cam", x.shape[-2:])


def _grad_cam_lib(cls_name, model, x, targets=TARGETS, **kwargs):
    m = copy.deepcopy(model)
    cls = getattr(gradcam_lib, cls_name)
    with cls(model=m, target_layers=[m.layer4], **kwargs) as cam:
        out = torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(int(t)) for t in targets]))
    # pytorch-grad-cam divides by (max + 1e-7) where we divide by max: undo the epsilon.
    return out / out.flatten(1).amax(1)[:, None, None]


@pytest.mark.parametrize(
    ("method", "peer"),
    [("gradcam", "GradCAM"), ("gradcam_pp", "GradCAMPlusPlus"), ("ablation_cam", "AblationCAM")],
)
def test_cam_family_matches_pytorch_grad_cam(model, x, method, peer):
    targets = TARGETS
    if method == "ablation_cam":
        # Ablation-CAM divides by the target's score: pytorch-grad-cam by y_c, we by |y_c|. The two
        # agree for positive scores, such as the predicted class's here.
        with torch.no_grad():
            logits = model(x)
        targets = logits.argmax(1)
        assert (logits.gather(1, targets[:, None]) > 0).all()
    ours = explain(model, x, [method], targets=targets, layer="layer4")[method]
    theirs = _grad_cam_lib(peer, model, x, targets)
    assert (ours - theirs).abs().max() <= TOL


def test_score_cam_matches_pytorch_grad_cam(model, monkeypatch):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    # Two conventions differ. pytorch-grad-cam weighs channels by the softmax over channels of the
    # target's logit, where the Score-CAM authors use the target's class probability: our
    # score="logit_softmax" is theirs. And it upsamples masks with align_corners=True
    # (nn.UpsamplingBilinear2d) where every camlight upsampling uses align_corners=False: patched here.
    monkeypatch.setattr(
        torch.nn,
        "UpsamplingBilinear2d",
        lambda size: lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False),
    )
    ours = explain(model, x, ["score_cam"], targets=TARGETS, layer="layer4", score_cam=dict(score="logit_softmax"))
    theirs = _grad_cam_lib("ScoreCAM", model, x)
    assert (ours["score_cam"] - theirs).abs().max() <= TOL


@pytest.mark.parametrize(
    ("method", "peer"), [("hirescam", "HiResCAM"), ("xgradcam", "XGradCAM"), ("layercam", "LayerCAM")]
)
def test_gradient_weighted_cams_match_pytorch_grad_cam(model, x, method, peer):
    ours = explain(model, x, [method], targets=TARGETS, layer="layer4")[method]
    theirs = _grad_cam_lib(peer, model, x, TARGETS)
    assert (ours - theirs).abs().max() <= TOL


def test_eigen_cams_are_pytorch_grad_cams_projection_with_its_sign_correction(model, x):
    """EigenCAM and EigenGradCAM: pytorch-grad-cam's first-component projection of A (and of
    ∂y/∂A ⊙ A), with the sign rule of its `get_2d_projection_with_sign_correction` (its EigenCAM
    class leaves the SVD's arbitrary sign). Compared raw, at the layer's resolution."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    seen = {}
    handle = model.layer4.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
    try:
        logits = model(x)
    finally:
        handle.remove()
    a = seen["a"]
    (g,) = torch.autograd.grad(logits.gather(1, TARGETS[:, None]).sum(), a)
    for method, source in (("eigencam", a), ("eigengradcam", g * a)):
        ours = explain(model, x, [method], targets=TARGETS, layer="layer4", raw=True)[method]
        theirs = torch.from_numpy(get_2d_projection_with_sign_correction(source.detach().numpy())).clamp(min=0)
        scale = theirs.abs().max()
        assert (ours - theirs).abs().max() <= TOL * scale, method
        assert ours.max() > 0
    # Class-agnostic: EigenCAM's map is the same for every target.
    other = explain(model, x, ["eigencam"], targets=TARGETS.flip(0), layer="layer4", raw=True)["eigencam"]
    assert torch.equal(other, explain(model, x, ["eigencam"], targets=TARGETS, layer="layer4", raw=True)["eigencam"])


def test_input_x_gradient_matches_captum(model, x):
    ours = explain(model, x, ["input_x_gradient"], targets=TARGETS, raw=True)["input_x_gradient"]
    theirs = captum.InputXGradient(copy.deepcopy(model)).attribute(x.clone(), target=TARGETS)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("method", "peer"),
    [
        ("gradcam", "GradCAM"),
        ("gradcam_pp", "GradCAMPlusPlus"),
        ("xgradcam", "XGradCAM"),
        ("hirescam", "HiResCAM"),
        ("layercam", "LayerCAM"),
    ],
)
def test_eigen_smooth_matches_pytorch_grad_cam_with_its_sign_correction(model, x, method, peer, monkeypatch):
    """`eigen_smooth=True`: the first principal component of the weighted activations, as
    pytorch-grad-cam's option. Its `get_2d_projection` leaves the SVD's arbitrary sign; ours fixes
    it by its own `get_2d_projection_with_sign_correction`, patched in here so both use one rule."""
    from pytorch_grad_cam import base_cam, hirescam, layer_cam
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    for module in (base_cam, hirescam, layer_cam):
        monkeypatch.setattr(module, "get_2d_projection", get_2d_projection_with_sign_correction)
    ours = explain(model, x, [method], targets=TARGETS, layer="layer4", **{method: dict(eigen_smooth=True)})[method]
    m = copy.deepcopy(model)
    with getattr(gradcam_lib, peer)(model=m, target_layers=[m.layer4]) as cam:
        out = cam(x, targets=[ClassifierOutputTarget(int(t)) for t in TARGETS], eigen_smooth=True)
    theirs = torch.from_numpy(out)
    theirs = theirs / theirs.flatten(1).amax(1)[:, None, None]  # their (max + 1e-7), undone
    assert (ours - theirs).abs().max() <= TOL
    plain = explain(model, x, [method], targets=TARGETS, layer="layer4")[method]
    assert (ours - plain).abs().max() > 0.05  # the option changes the map


def _unit(maps):
    lo = maps.flatten(1).amin(1)[:, None, None]
    return (maps - lo) / (maps.flatten(1).amax(1)[:, None, None] - lo)


@pytest.mark.parametrize(
    ("method", "peer", "eigen"),
    [("gradcam", "GradCAM", False), ("xgradcam", "XGradCAM", False), ("layercam", "LayerCAM", True)],
)
def test_aug_smooth_matches_pytorch_grad_cam(model, x, method, peer, eigen, monkeypatch):
    """`aug_smooth=True`: the mean of the maps of six copies (flipped or not, times 0.9, 1, 1.1),
    each normalised and flipped back, as pytorch-grad-cam (through ttach) computes it. Its mean is
    not normalised again; ours is, so theirs is min-maxed here."""
    from pytorch_grad_cam import base_cam, layer_cam
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    for module in (base_cam, layer_cam):
        monkeypatch.setattr(module, "get_2d_projection", get_2d_projection_with_sign_correction)
    options = {method: dict(aug_smooth=True, eigen_smooth=eigen)}
    ours = explain(model, x, [method], targets=TARGETS, layer="layer4", **options)[method]
    m = copy.deepcopy(model)
    with getattr(gradcam_lib, peer)(model=m, target_layers=[m.layer4]) as cam:
        out = cam(x, targets=[ClassifierOutputTarget(int(t)) for t in TARGETS], aug_smooth=True, eigen_smooth=eigen)
    assert (ours - _unit(torch.from_numpy(out))).abs().max() <= TOL
    plain = explain(model, x, [method], targets=TARGETS, layer="layer4", **{method: dict(eigen_smooth=eigen)})[method]
    assert (ours - plain).abs().max() > 0.05  # the option changes the map


def test_several_layers_match_pytorch_grad_cams_mean_of_layers(model, x):
    """`layer=[...]` for Grad-CAM: the mean of the layers' normalised maps at the input's size,
    pytorch-grad-cam's rule for several target layers."""
    ours = explain(model, x, ["gradcam", "saliency"], targets=TARGETS, layer=["layer3", "layer4"])
    m = copy.deepcopy(model)
    with gradcam_lib.GradCAM(model=m, target_layers=[m.layer3, m.layer4]) as cam:
        theirs = torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(int(t)) for t in TARGETS]))
    assert (ours["gradcam"] - _unit(theirs)).abs().max() <= TOL
    torch.testing.assert_close(ours["saliency"], explain(model, x, ["saliency"], targets=TARGETS)["saliency"])


def test_layercam_fuses_layers_as_its_paper_by_scaled_maximum(model, x):
    """LayerCAM over layers: each layer's map M scaled by tanh(2 M / max M), upsampled, then the
    element-wise maximum (Jiang et al. 2021, eq. 9; torch-cam's fusion), checked from the layers'
    own maps."""
    layers = ["layer2", "layer3", "layer4"]
    fused = explain(model, x, ["layercam"], targets=TARGETS, layer=layers, raw=True)["layercam"]
    scaled = []
    for name in layers:
        m = explain(model, x, ["layercam"], targets=TARGETS, layer=name, raw=True)["layercam"].clamp(min=0)
        m = torch.tanh(2 * m / m.flatten(1).amax(1)[:, None, None])
        scaled.append(F.interpolate(m[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0])
    torch.testing.assert_close(fused, torch.stack(scaled).amax(0))
    assert fused.shape == (2, *x.shape[-2:])
    gamma = explain(model, x, ["layercam"], targets=TARGETS, layer=layers, raw=True, layercam=dict(gamma=0.5))
    assert not torch.allclose(gamma["layercam"], fused)


@pytest.fixture(scope="module")
def bn_model():
    """ResNet-18 whose batch-norms add biases, as trained ones do (at initialisation they add none)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    g = torch.Generator().manual_seed(2)
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        k = bn.num_features
        bn.running_mean.copy_(0.2 * torch.randn(k, generator=g))
        bn.running_var.copy_(0.5 + torch.rand(k, generator=g))
        bn.weight.data.copy_(1 + 0.2 * torch.randn(k, generator=g))
        bn.bias.data.copy_(0.2 * torch.randn(k, generator=g))
    return net


def test_fullgrad_matches_pytorch_grad_cam_in_its_convention(bn_model, x):
    """`fullgrad` with `convention="grad-cam"`: each channel of |∇ₓy ⊙ x| and of every BatchNorm's
    |∇_z y ⊙ b| min-max normalised on its own, upsampled, summed — pytorch-grad-cam's FullGrad."""
    model = bn_model
    ours = explain(model, x, ["fullgrad"], targets=TARGETS, fullgrad=dict(convention="grad-cam"))["fullgrad"]
    m = copy.deepcopy(model)
    with gradcam_lib.FullGrad(model=m, target_layers=[]) as cam:
        theirs = torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(int(t)) for t in TARGETS]))
    assert (ours - _unit(theirs)).abs().max() <= TOL
    paper = explain(model, x, ["fullgrad"], targets=TARGETS)["fullgrad"]
    assert (paper - ours).abs().max() > 0.05  # the conventions differ


def test_fullgrad_paper_convention_is_the_authors_post_processing(bn_model, x):
    """The default follows the authors' `FullGrad.saliency`: |.| then min-max over each image's whole
    tensor (ε = 1e-6), bias-gradients upsampled with align_corners=True, all summed."""
    model = bn_model

    def post(t):  # the authors' _postProcess
        t = t.abs()
        t = t - t.flatten(1).amin(1)[:, None, None, None]
        return t / (t.flatten(1).amax(1)[:, None, None, None] + 1e-6)

    xg = x.clone().requires_grad_(True)
    outs, hooks = [], []
    bns = [mod for mod in model.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    # The hook hands the rest of the model a copy, so the in-place ReLU after each batch-norm
    # leaves its output (whose gradient we take) as it was.
    hooks = [mod.register_forward_hook(lambda mod, i, o: outs.append(o) or o.clone()) for mod in bns]
    try:
        logits = model(xg)
    finally:
        for h in hooks:
            h.remove()
    grads = torch.autograd.grad(logits.gather(1, TARGETS[:, None]).sum(), [xg, *outs])
    expected = post(grads[0] * x).sum(1)
    for bn, g in zip(bns, grads[1:], strict=True):
        bias = bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps)
        up = F.interpolate(post(g * bias[None, :, None, None]), size=x.shape[-2:], mode="bilinear", align_corners=True)
        expected = expected + up.sum(1)
    ours = explain(model, x, ["fullgrad"], targets=TARGETS, raw=True)["fullgrad"]
    torch.testing.assert_close(ours, expected.detach(), rtol=1e-5, atol=1e-5)


def test_fullgrad_terms_add_up_to_the_output(bn_model, x):
    """The full-gradient decomposition: Σ ∇ₓy ⊙ x + Σ_l Σ ∇_{z_l}y ⊙ b_l + the linear layer's bias = y,
    exactly for a ReLU network of conv, batch-norm, pooling and linear layers."""
    model = bn_model
    from camlight.explain.fullgrad import bias_layers

    layers = bias_layers(model)
    outs = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: outs.append(o) or o.clone()) for mod, _ in layers]
    xg = x.clone().requires_grad_(True)
    try:
        logits = model(xg)
    finally:
        for h in hooks:
            h.remove()
    y = logits.gather(1, TARGETS[:, None])[:, 0]
    grads = torch.autograd.grad(y.sum(), [xg, *outs])
    total = (grads[0] * x).flatten(1).sum(1) + model.fc.bias[TARGETS]
    for (_, bias), g in zip(layers, grads[1:], strict=True):
        total = total + (g * bias[None, :, None, None]).flatten(1).sum(1)
    torch.testing.assert_close(total, y, rtol=1e-4, atol=1e-4)
    assert (total - (grads[0] * x).flatten(1).sum(1) - model.fc.bias[TARGETS]).abs().min() > 0.1  # biases count


class SmallVGG(torch.nn.Module):
    """VGG's layout at a small size: conv–ReLU(inplace)–max-pool blocks, then a ReLU'd linear head;
    `functional=True` writes every ReLU as F.relu in forward (no module for hooks to find)."""

    def __init__(self, functional: bool = False):
        super().__init__()
        self.functional = functional
        self.convs = torch.nn.ModuleList(
            [
                torch.nn.Conv2d(3, 16, 3, padding=1),
                torch.nn.Conv2d(16, 32, 3, padding=1),
                torch.nn.Conv2d(32, 32, 3, padding=1),
            ]
        )
        self.relus = torch.nn.ModuleList([torch.nn.ReLU(inplace=True) for _ in range(4)])
        self.pool = torch.nn.MaxPool2d(2)
        self.features_out = torch.nn.Identity()  # the target layer: the last block's activations
        self.fc1, self.fc2 = torch.nn.Linear(32 * 4 * 4, 32), torch.nn.Linear(32, 10)

    def _relu(self, i, t):
        return F.relu(t) if self.functional else self.relus[i](t)

    def forward(self, x):
        for i, conv in enumerate(self.convs):
            x = self.pool(self._relu(i, conv(x)))
        x = F.adaptive_avg_pool2d(self.features_out(x), 4).flatten(1)
        return self.fc2(self._relu(3, self.fc1(x)))


@pytest.fixture(scope="module", params=[False, True], ids=["inplace-relu-vgg", "functional-relu-vgg"])
def vgg(request):
    torch.manual_seed(0)
    return SmallVGG(functional=request.param).eval()


@pytest.mark.parametrize(
    ("method", "peer"),
    [
        ("gradcam", "GradCAM"),
        ("gradcam_pp", "GradCAMPlusPlus"),
        ("hirescam", "HiResCAM"),
        ("xgradcam", "XGradCAM"),
        ("layercam", "LayerCAM"),
        ("eigengradcam", "EigenGradCAM"),
    ],
)
def test_cam_family_matches_pytorch_grad_cam_on_vgg_nets(vgg, x, method, peer, monkeypatch):
    """On VGG-style nets with inplace and with functional ReLUs (EigenGradCAM with its sign rule
    patched in, as above)."""
    from pytorch_grad_cam import eigen_grad_cam
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction

    monkeypatch.setattr(eigen_grad_cam, "get_2d_projection", get_2d_projection_with_sign_correction)
    xs = x[:, :, :64, :64]
    with torch.no_grad():
        targets = vgg(xs).argmax(1)  # the predicted classes: positive evidence to show
    ours = explain(vgg, xs, [method], targets=targets, layer="features_out")[method]
    m = copy.deepcopy(vgg)
    with getattr(gradcam_lib, peer)(model=m, target_layers=[m.features_out]) as cam:
        theirs = torch.from_numpy(cam(xs, targets=[ClassifierOutputTarget(int(t)) for t in targets]))
    assert (ours - theirs / theirs.flatten(1).amax(1)[:, None, None]).abs().max() <= TOL
    assert ours.max() == 1


@pytest.mark.parametrize(("method", "peer"), [("saliency", "Saliency"), ("input_x_gradient", "InputXGradient")])
def test_gradients_match_captum_on_vgg_nets(vgg, x, method, peer):
    xs = x[:, :, :64, :64]
    ours = explain(vgg, xs, [method], targets=TARGETS, raw=True)[method]
    kwargs = dict(abs=False) if peer == "Saliency" else {}
    theirs = getattr(captum, peer)(copy.deepcopy(vgg)).attribute(xs, target=TARGETS, **kwargs)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_guided_backprop_matches_captum_on_the_inplace_vgg_and_not_the_functional_one(x):
    """captum swaps the rule into nn.ReLU modules only: on F.relu its guided backprop is the plain
    gradient. Ours sees every rectifier call, so on both nets it equals captum on the module one."""
    xs = x[:, :, :64, :64]
    torch.manual_seed(0)
    modules, functional = SmallVGG().eval(), SmallVGG(functional=True).eval()
    functional.load_state_dict(modules.state_dict())
    theirs = captum.GuidedBackprop(copy.deepcopy(modules)).attribute(xs, target=TARGETS)
    for net in (modules, functional):
        ours = explain(net, xs, ["guided_backprop"], targets=TARGETS, raw=True)["guided_backprop"]
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    missed = captum.GuidedBackprop(copy.deepcopy(functional)).attribute(xs, target=TARGETS)
    assert not torch.allclose(missed, theirs, rtol=1e-3, atol=1e-5)
