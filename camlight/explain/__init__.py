"""Explanation maps for image classifiers: `explain(model, images, methods)` and one class per method.

No Lightning, no logging, no files: tensors in, tensors out, the model left as it was
(`untouched(model)` is the guard that makes it so; the metrics use it too).

Example::

    from camlight.explain import explain, GradCAM
    maps = explain(model, images, ["saliency", "cam", "gradcam"])   # shared passes
    heat = GradCAM(model)(images, targets=1)                        # (B,H,W) in [0,1]
    heat = GradCAM(torchvision_model, layer="layer4")(images)        # any classifier, hooked
"""

from __future__ import annotations

import torch
from torch import nn

# The registry, and every list of methods shown to users, follows the order of these imports.
# isort: off
from camlight.explain import gradient as _gradient  # noqa: F401  (registers the gradient methods)
from camlight.explain import attribution as _attribution  # noqa: F401  (registers deeplift, gradient_shap)
from camlight.explain import lrp as _lrp  # noqa: F401  (registers layer-wise relevance propagation)
from camlight.explain import cam as _cam  # noqa: F401  (registers the CAM family)
from camlight.explain import fullgrad as _fullgrad  # noqa: F401  (registers FullGrad)
from camlight.explain import perturbation as _perturbation  # noqa: F401  (registers occlusion, ablation, score, RISE)

# isort: on
from camlight.explain._state import untouched
from camlight.explain.blur import gaussian_blur
from camlight.explain.engine import REGISTRY, check_methods, explain
from camlight.explain.engine import _method_options as _check_options
from camlight.explain.locate import Layer, locate
from camlight.explain.support import drop_unsupported, supported, target_layer, unsupported

METHODS = tuple(REGISTRY)


class Explainer:
    """One method bound to a model, a layer and options: `Explainer(model, layer, **options)(images, targets)`."""

    method: str = ""

    def __init__(self, model: nn.Module, layer: str | nn.Module | None = None, **options):
        if self.method not in REGISTRY:
            raise TypeError("Explainer is a base class; use a method class such as GradCAM, or explain()")
        _check_options([self.method], {self.method: options})
        self.model, self.layer, self.options = model, layer, options

    def __call__(self, images: torch.Tensor, targets=None, raw: bool = False) -> torch.Tensor:
        """(B,H,W) map in [0,1] (or the raw map with `raw=True`); see `explain`."""
        out = explain(self.model, images, [self.method], targets, self.layer, raw=raw, **{self.method: self.options})
        return out[self.method]


def _explainer(name: str, key: str) -> type[Explainer]:
    doc = REGISTRY[key].compute.__doc__
    return type(name, (Explainer,), {"method": key, "__doc__": doc, "__module__": __name__})


Saliency = _explainer("Saliency", "saliency")
Deconvnet = _explainer("Deconvnet", "deconvnet")
GuidedBackprop = _explainer("GuidedBackprop", "guided_backprop")
Occlusion = _explainer("Occlusion", "occlusion")
CAM = _explainer("CAM", "cam")
GradCAM = _explainer("GradCAM", "gradcam")
GuidedGradCAM = _explainer("GuidedGradCAM", "guided_gradcam")
GradCAMPlusPlus = _explainer("GradCAMPlusPlus", "gradcam_pp")
AblationCAM = _explainer("AblationCAM", "ablation_cam")
ScoreCAM = _explainer("ScoreCAM", "score_cam")
SmoothGrad = _explainer("SmoothGrad", "smoothgrad")
IntegratedGradients = _explainer("IntegratedGradients", "integrated_gradients")
InputXGradient = _explainer("InputXGradient", "input_x_gradient")
DeepLift = _explainer("DeepLift", "deeplift")
GradientShap = _explainer("GradientShap", "gradient_shap")
LRP = _explainer("LRP", "lrp")
HiResCAM = _explainer("HiResCAM", "hirescam")
XGradCAM = _explainer("XGradCAM", "xgradcam")
LayerCAM = _explainer("LayerCAM", "layercam")
EigenCAM = _explainer("EigenCAM", "eigencam")
EigenGradCAM = _explainer("EigenGradCAM", "eigengradcam")
RISE = _explainer("RISE", "rise")
FullGrad = _explainer("FullGrad", "fullgrad")

__all__ = [
    "METHODS",
    "REGISTRY",
    "AblationCAM",
    "CAM",
    "Deconvnet",
    "DeepLift",
    "Explainer",
    "FullGrad",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientShap",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "InputXGradient",
    "LayerCAM",
    "LRP",
    "EigenCAM",
    "EigenGradCAM",
    "XGradCAM",
    "IntegratedGradients",
    "Layer",
    "Occlusion",
    "RISE",
    "Saliency",
    "ScoreCAM",
    "SmoothGrad",
    "check_methods",
    "drop_unsupported",
    "explain",
    "gaussian_blur",
    "locate",
    "supported",
    "target_layer",
    "unsupported",
    "untouched",
]
