"""Occlusion by incremental inference beside full forward passes and captum's `Occlusion`, in one process.

    python benchmarks/occlusion.py [--models resnet18 simple_cnn] [--images 2] [--repeats 3] [--rows 64] [--threads N] [--profile]

Models as benchmarks/explainers.py builds them (camlight Classifiers, random weights): ResNet-18
at 224 px with 1,000 classes, window 224/8 = 28, stride 14; simple_cnn at 64 px, window 8,
stride 4 (15 × 15 = 225 windows an image for both). Three ways to the same map, timed in turns:
ours by incremental inference (`incremental=True`, the default), ours with one full forward pass
per occluded copy (`incremental=False`), and captum's `Occlusion` (baseline 0, the same windows
and strides). Each evaluates `--rows` occluded copies per pass: ours as `batch_size`, captum as
`perturbations_per_eval = rows / images`, its fastest setting. Seconds per image are medians over
`--repeats` turns; ratios < 1 mean ours is faster. `--profile` prints the seconds each layer takes
in the incremental passes (kind: window = conv / pool on crops, pointwise and merge on crops,
full = on whole maps).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from timing import interleaved

from camlight.explain import _incremental, explain
from camlight.explain.perturbation import _starts
from camlight.modules import Classifier

warnings.filterwarnings("ignore")

SETTINGS = {"resnet18": (224, 28, 14), "simple_cnn": (64, 8, 4)}  # side, window, stride


def build(name: str, images: int):
    torch.manual_seed(0)
    side = SETTINGS[name][0]
    if name == "resnet18":
        classes = tuple(str(i) for i in range(1000))
        model = Classifier("resnet18", "gap", class_names=classes, image_size=side).eval()
    else:
        model = Classifier("simple_cnn", "gap", image_size=side).eval()
    return model, torch.randn(images, 3, side, side, generator=torch.Generator().manual_seed(1))


def runners(model, x, targets, window: int, stride: int, rows: int) -> dict:
    from captum import attr

    def ours(incremental: bool):
        options = dict(window=window, stride=stride, baseline=0.0, batch_size=rows, incremental=incremental)
        return lambda: explain(model, x, ["occlusion"], targets=targets, raw=True, occlusion=options)["occlusion"]

    def captum():
        return attr.Occlusion(model).attribute(
            x,
            target=targets,
            sliding_window_shapes=(3, window, window),
            strides=stride,
            baselines=0.0,
            perturbations_per_eval=max(1, rows // len(x)),
        )[:, 0]

    return {"incremental": ours(True), "full forwards": ours(False), "captum": captum}


def profile(model, x, window: int, stride: int, rows: int) -> None:
    """Seconds per layer of the incremental passes over every window of `x`."""
    side = x.shape[-1]
    positions = [(y, x0) for y in _starts(side, window, stride) for x0 in _starts(side, window, stride)]
    boxes = [(y, x0, min(y + window, side), min(x0 + window, side)) for y, x0 in positions]
    timings: dict = {}
    with torch.no_grad():
        start = time.perf_counter()
        inc = _incremental.prepare(model, x, boxes, (window, window), 0.0, model(x))
        prepared = time.perf_counter() - start
        per_pass = max(1, rows // len(x))
        for first in range(0, len(positions), per_pass):
            inc.logits(torch.arange(first, min(first + per_pass, len(positions))), timings)
    total = sum(timings.values())
    print(
        f"\nper layer, {len(x)} images, {len(positions)} windows: {total:.3f} s (+ {prepared:.3f} s trace, clean pass)"
    )
    print(f"convolution multiply-adds per copy: {conv_share(model, inc):.3f} × a full forward pass's\n")
    print("| node | kind | crop | s | share |")
    print("|---|---|---|---|---|")
    sizes = {n.name: s.size for n, s in inc.steps.items()}
    for (name, kind), seconds in sorted(timings.items(), key=lambda kv: -kv[1]):
        crop = "×".join(map(str, sizes[name])) if sizes[name] else "whole"
        print(f"| {name} | {kind} | {crop} | {seconds:.3f} | {seconds / total:.1%} |")


def conv_share(model, inc) -> float:
    """Multiply-adds of the convolutions one incremental copy computes, over a full forward pass's."""
    ours = full = 0
    for node, step in inc.steps.items():
        module = model.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, torch.nn.Conv2d) and step.shape is not None:
            per_position = module.out_channels * module.in_channels // module.groups * module.weight[0, 0].numel()
            area = step.shape[1] * step.shape[2]
            full += per_position * area
            ours += per_position * (step.size[0] * step.size[1] if step.kind == "window" else area)
    return ours / full


def bench(name: str, images: int, repeats: int, rows: int, show_profile: bool) -> None:
    model, x = build(name, images)
    side, window, stride = SETTINGS[name]
    with torch.no_grad():
        targets = model(x).argmax(1)
    fns = runners(model, x, targets, window, stride, rows)
    maps = {k: fn() for k, fn in fns.items()}  # warm up, and the maps agree
    diff = max((maps[k] - maps["captum"]).abs().max().item() for k in maps)
    times = {k: v / images for k, v in interleaved(fns, repeats).items()}
    windows = len(_starts(side, window, stride)) ** 2
    print(
        f"\n## {name}, {side} px, window {window}, stride {stride} ({windows} windows), {images} images, {rows} rows a pass\n"
    )
    print(f"(medians of {repeats} turns; largest difference between the three maps: {diff:.1e})\n")
    print("| | seconds per image | / captum |")
    print("|---|---|---|")
    for k, seconds in times.items():
        print(f"| {k} | {seconds:.3f} | {seconds / times['captum']:.3f} |")
    if show_profile:
        profile(model, x, window, stride, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=64, help="occluded copies per pass, for every method")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    parser.add_argument("--profile", action="store_true", help="also print seconds per layer (incremental)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for name in args.models:
        bench(name, args.images, args.repeats, args.rows, args.profile)


if __name__ == "__main__":
    main()
