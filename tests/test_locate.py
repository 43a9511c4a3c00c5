"""Target layers for any model: layouts told from shapes, layers found, transformers and channels-last.

Small members of the real families (torchvision's VisionTransformer and SwinTransformer, timm's
VisionTransformer, with few layers) keep these fast; the code paths are the families' own.
"""

import copy

import pytest
import torch
import torchvision
from torch import nn

from camlight.explain import explain
from camlight.explain.locate import Ambiguous, interpret, locate

gradcam_lib = pytest.importorskip("pytorch_grad_cam", reason="parity tests need the 'parity' extra")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def test_layouts_are_told_from_shapes_or_refused():
    assert interpret((1, 512, 7, 7), (224, 224)) == ("nchw", 0, (7, 7))
    assert interpret((1, 7, 7, 768), (224, 224)) == ("nhwc", 0, (7, 7))  # Swin: 768 cannot be a side
    assert interpret((1, 56, 56, 96), (224, 224)) == ("nhwc", 0, (56, 56))  # (56, 96) is not 224²'s shape
    assert interpret((1, 197, 768), (224, 224)) == ("tokens", 1, (14, 14))  # ViT-B/16: class token + 14×14
    assert interpret((1, 198, 192), (224, 224)) == ("tokens", 2, (14, 14))  # DeiT distilled: + distillation token
    assert interpret((1, 512, 4, 5), (100, 150)) == ("nchw", 0, (4, 5))  # ⌈100/32⌉ × ⌈150/32⌉
    assert interpret((1, 4, 6, 6), (8, 8)) == ("nchw", 0, (6, 6))  # an unpadded 3×3 conv
    assert interpret((1, 6, 197, 197), (224, 224)) is None  # attention weights: 197 is no stride of 224
    assert interpret((1, 1000), (224, 224)) is None
    with pytest.raises(Ambiguous, match=r"\(1, 8, 8, 8\) could be nchw 8×8, nhwc 8×8"):
        interpret((1, 8, 8, 8), (64, 64))


def _tv_vit():
    torch.manual_seed(0)
    m = torchvision.models.vision_transformer.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5
    )
    nn.init.normal_(m.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return m.eval()


def _tv_swin():
    torch.manual_seed(0)
    m = torchvision.models.swin_transformer.SwinTransformer(
        patch_size=[4, 4], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4], num_classes=5
    )
    return m.eval()


def _timm_vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.models.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5, class_token=True
    ).eval()


class Reuses(nn.Module):
    """Like efficientnet-lite-pytorch: one activation module after the stem and after the head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.head_conv, self.act = nn.Conv2d(3, 4, 3, 2, 1), nn.Conv2d(4, 6, 3, 2, 1), nn.ReLU6()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.act(self.head_conv(self.act(self.stem(x)))).mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("build", "size", "expected"),
    [
        (lambda: torchvision.models.resnet18(num_classes=5).eval(), 64, "layer4 (channels first)"),
        (_tv_swin, 32, "permute (channels first)"),
        (_tv_vit, 32, "encoder.layers.encoder_layer_1.ln_1 (tokens on a 4×4 grid after 1 prefix token(s))"),
        (_timm_vit, 32, "blocks.1.norm1 (tokens on a 4×4 grid after 1 prefix token(s))"),
        (Reuses, 32, "act@-1 (channels first)"),
    ],
)
def test_the_layer_found_is_the_last_one_the_prediction_depends_on(build, size, expected):
    model = build().train()  # it must come back in training mode
    state = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    assert locate(model, torch.randn(1, 3, size, size)).describe() == expected
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # BatchNorm statistics too
    assert all(m.training for m in model.modules()) and flags == [p.requires_grad for p in model.parameters()]
    assert all(not m._forward_hooks for m in model.modules()) and all(p.grad is None for p in model.parameters())


def _vit_reshape(grid):
    def reshape(t):  # pytorch-grad-cam's documented ViT reshape: drop the class token, tokens → grid
        return t[:, 1:, :].reshape(t.size(0), grid, grid, t.size(2)).permute(0, 3, 1, 2)

    return reshape


def _their_gradcam(model, layer, x, targets, reshape=None):
    with gradcam_lib.GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        out = torch.from_numpy(cam(x, targets=[ClassifierOutputTarget(int(t)) for t in targets]))
    return out / out.flatten(1).amax(1)[:, None, None]  # their + 1e-7 in the min-max, undone


@pytest.mark.parametrize("family", ["torchvision", "timm"])
def test_gradcam_on_a_vit_equals_pytorch_grad_cam_with_its_reshape(family):
    model = _tv_vit() if family == "torchvision" else _timm_vit()
    x, targets = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 3])
    ours = explain(model, x, ["gradcam", "gradcam_pp"], targets=targets)  # the layer is found
    peer = copy.deepcopy(model)  # pytorch-grad-cam changes the model it is given
    block = peer.encoder.layers[-1].ln_1 if family == "torchvision" else peer.blocks[-1].norm1
    theirs = _their_gradcam(peer, block, x, targets, _vit_reshape(4))
    assert (ours["gradcam"] - theirs).abs().max() <= 1e-4
    assert ours["gradcam"].amax() == 1 and ours["gradcam_pp"].amax() == 1


def test_swin_features_are_read_channels_last_not_as_seven_channels():
    model = _tv_swin()
    x, targets = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 4])
    ours = explain(
        model, x, ["gradcam", "gradcam_pp", "ablation_cam", "guided_gradcam"], targets=targets, layer="features"
    )
    m = copy.deepcopy(model)
    theirs = _their_gradcam(m, m.features, x, targets, lambda t: t.permute(0, 3, 1, 2))  # (B,h,w,C) → (B,C,h,w)
    assert (ours["gradcam"] - theirs).abs().max() <= 1e-4
    a = model.features(x).detach().requires_grad_(True)  # by hand: A is (B,h,w,C)
    head = lambda f: model.head(model.flatten(model.avgpool(model.permute(model.norm(f)))))  # noqa: E731
    (g,) = torch.autograd.grad(head(a).gather(1, targets[:, None]).sum(), a)
    raw = (g.mean(dim=(1, 2))[:, None, None, :] * a).sum(-1).clamp(min=0)
    by_hand = explain(model, x, ["gradcam"], targets=targets, layer="features", raw=True)["gradcam"]
    torch.testing.assert_close(by_hand, raw.detach())


def test_a_layout_that_cannot_be_told_is_refused():
    class Cube(nn.Module):  # a layer whose output is (B,8,8,8) at 64 px: channels first or last?
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 8, 3, 8, 1), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    with pytest.raises(ValueError, match=r"layer 'conv': an output of shape \(1, 8, 8, 8\) could be nchw"):
        explain(Cube().eval(), torch.randn(1, 3, 64, 64), ["gradcam"], layer="conv")
