"""Several targets per call: the cost of T classes per image against one, in one process, on the CPU.

    python benchmarks/targets.py [--targets 5] [--repeats 5]

For each method and model: ours with a (B,T) target table against ours with one target, timed
in turns; for Grad-CAM also ours with T targets against pytorch-grad-cam's way of explaining T
classes (one call per class, each a full forward and backward), timed in turns apart (numpy's and
OpenCV's worker threads, still spinning after its call, slow whatever runs next). Models: ResNet-18 at 224 px, batch 16, as a
camlight Classifier (the features/head split) and as torchvision's module hooked at `layer4`;
simple_cnn at 64 px, batch 64, 10 classes. Random weights; targets are each image's T best classes.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torchvision
from timing import interleaved

from camlight.explain import explain
from camlight.modules import Classifier

warnings.filterwarnings("ignore")

LIGHT = {"rise": dict(n_masks=64, batch_size=64), "score_cam": dict(batch_size=64)}


def models():
    torch.manual_seed(0)
    names = tuple(str(i) for i in range(1000))
    yield "resnet18 split", Classifier("resnet18", "gap", class_names=names, image_size=224).eval(), 224, 16, None
    torch.manual_seed(0)
    yield "resnet18 hooked", torchvision.models.resnet18().eval(), 224, 16, "layer4"
    torch.manual_seed(0)
    ten = tuple(str(i) for i in range(10))
    yield "simple_cnn split", Classifier("simple_cnn", "gap", class_names=ten, image_size=64).eval(), 64, 64, None


def peer(model, layer_name, x, table):
    """pytorch-grad-cam's Grad-CAM for T classes: one call per class."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer = model.get_submodule(layer_name)

    def run():
        with GradCAM(model=model, target_layers=[layer]) as cam:
            for t in range(table.shape[1]):
                cam(x, targets=[ClassifierOutputTarget(int(c)) for c in table[:, t]])

    return run


def runner(model, x, targets, method, layer, options):
    return lambda: explain(model, x, [method], targets=targets, layer=layer, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["gradcam", "gradcam_pp", "hirescam", "score_cam", "rise"])
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, T = {args.targets}\n")
    print("| model | method | 1 target (s) | T targets (s) | T / 1 | grad-cam, T calls (s) | ours / grad-cam |")
    print("|---|---|---|---|---|---|---|")
    for name, model, side, batch, layer in models():
        x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            table = model(x).topk(args.targets, dim=1).indices
        for method in args.methods:
            opts = {method: LIGHT[method]} if method in LIGHT else {}
            heavy = method in ("score_cam", "rise")
            xs, ts = (x[:2], table[:2]) if heavy else (x, table)
            fns = {
                "one": runner(model, xs, ts[:, 0], method, layer, opts),
                "all": runner(model, xs, ts, method, layer, opts),
            }
            fns["one"]()  # warm up
            times = interleaved(fns, 1 if heavy else args.repeats)
            against = None
            if method == "gradcam":  # in turns with ours apart: its numpy/OpenCV threads slow what follows them
                peer_fn = peer(model, layer or model.target_layer, xs, ts)
                against = interleaved({"all": fns["all"], "grad-cam": peer_fn}, args.repeats)
            cells = [name, method + (" (2 images)" if heavy else ""), f"{times['one']:.3f}", f"{times['all']:.3f}"]
            cells += [f"{times['all'] / times['one']:.2f}"]
            if against:
                cells += [f"{against['grad-cam']:.3f}", f"{against['all'] / against['grad-cam']:.3f}"]
            else:
                cells += ["-", "-"]
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
