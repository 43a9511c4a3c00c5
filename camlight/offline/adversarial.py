"""`explain.py fool`: fooling images. Each image is pushed toward a chosen class by targeted
iterative FGSM within an L∞ budget (`camlight.inspect.adversarial.fool`); writes `fooling.csv`
(per image: its class and probability before, the target's probability after, success and the ε
it needed) and `fooling_<image>.png` (the original, the perturbation magnified, the result, and
Grad-CAM of the original for its predicted class and of the result for the target class). The folder appears whole at the end, or not at all.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig

from camlight.config import ConfigError
from camlight.explain import explain
from camlight.inspect.adversarial import fool
from camlight.offline.commands import EXIT_OK, EXIT_SKIPPED, check_out, device_of
from camlight.offline.inputs import first_images, load_model
from camlight.offline.results import class_index
from camlight.viz import denormalize, overlay, probe_grid, whole_folder, write_csv

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> int:
    loaded = load_model(cfg)
    names = loaded.class_names
    if str(cfg.target) != "other":
        target_index = class_index(cfg.target, names, what="class")
    elif len(names) != 2:
        raise ConfigError(f"target=other needs two classes; this model has {len(names)}: give class=NAME")
    out = Path(cfg.out)
    check_out(out)
    device = device_of(cfg.device)
    model = loaded.model.to(device).eval()
    items, skipped = first_images(cfg, loaded)
    x = torch.stack([it.image for it in items]).to(device)
    pre = loaded.preprocessing
    with torch.no_grad():
        before = model(x).softmax(1)
    predicted = before.argmax(1)
    target = 1 - predicted if str(cfg.target) == "other" else torch.full_like(predicted, target_index)
    result = fool(model, x, target, pre.mean, pre.std, float(cfg.max_eps), float(cfg.step))
    adv = result["adversarial"]
    with torch.no_grad():
        after = model(adv).softmax(1)
    rows = []
    for i, it in enumerate(items):
        p, t = int(predicted[i]), int(target[i])
        rows.append(
            {
                "image": it.name,
                "predicted": names[p],
                "probability": round(float(before[i, p]), 6),
                "target": names[t],
                "target_probability_before": round(float(before[i, t]), 6),
                "success": bool(result["success"][i]),
                "eps_needed": ""
                if math.isnan(float(result["eps_needed"][i]))
                else round(float(result["eps_needed"][i]), 3),
                "predicted_after": names[int(after[i].argmax())],
                "target_probability_after": round(float(after[i, t]), 6),
                "original_probability_after": round(float(after[i, p]), 6),
                "steps": int(result["steps"][i]),
            }
        )
    m = int(cfg.max_images)
    grids = []
    if m > 0:
        try:
            grids = _grids(model, x[:m], adv[:m], predicted[:m], target[:m], before[:m], after[:m], names, pre, cfg)
        except ValueError as e:  # a layer= that does not fit, or none found for Grad-CAM
            raise ConfigError(str(e)) from None

    def write(folder: Path) -> None:
        write_csv(folder / "fooling.csv", rows)
        for it, grid in zip(items, grids, strict=False):
            grid.save(folder / f"fooling_{it.name}.png")
        if skipped:
            (folder / "skipped.txt").write_text("".join(f"{p}\t{why}\n" for p, why in skipped))

    with whole_folder(out) as folder:
        write(folder)
    ok = result["success"]
    eps = result["eps_needed"][ok]
    median = float(eps.median()) if len(eps) else float("nan")
    log.info(
        "fooled %d of %d images within ε = %g/255; median ε needed %.2f/255; results in %s",
        int(ok.sum()),
        len(items),
        float(cfg.max_eps),
        median,
        out,
    )
    return EXIT_SKIPPED if skipped else EXIT_OK


def _grids(model, x, adv, predicted, target, before, after, names, pre, cfg):
    """One grid per image: original, perturbation × magnify (grey = none), result; then the
    Grad-CAM of the original for its class and of the result for the target (at `layer=`)."""
    magnify, layer = int(cfg.magnify), cfg.get("layer")
    shown = denormalize(x.float().cpu(), pre.mean, pre.std)
    fooled = denormalize(adv.float().cpu(), pre.mean, pre.std)
    delta = (0.5 + magnify * (fooled - shown)).clamp(0, 1)
    cam_before = explain(model, x, ["gradcam"], targets=predicted, layer=layer)["gradcam"].cpu()
    cam_after = explain(model, adv, ["gradcam"], targets=target, layer=layer)["gradcam"].cpu()
    grids = []
    for i in range(len(x)):
        p, t = int(predicted[i]), int(target[i])
        columns = {
            f"perturbation x{magnify}": delta[i : i + 1],
            "result": fooled[i : i + 1],
            f"Grad-CAM {names[p]}": overlay(shown[i : i + 1], cam_before[i : i + 1]),
            f"Grad-CAM {names[t]}": overlay(fooled[i : i + 1], cam_after[i : i + 1]),
        }
        eps = float((fooled[i] - shown[i]).abs().amax() * 255)
        titles = {
            f"perturbation x{magnify}": [(f"L-inf {eps:.2f}/255", None)],
            "result": [(f"{names[t]} {after[i, t]:.2f}, {names[p]} {after[i, p]:.2f}", bool(after[i].argmax() == t))],
            f"Grad-CAM {names[p]}": [("original", None)],
            f"Grad-CAM {names[t]}": [("result", None)],
        }
        row = [f"{names[p]} {before[i, p]:.2f}, {names[t]} {before[i, t]:.2f}"]
        grids.append(probe_grid(shown[i : i + 1], columns, row, titles, cell=128))
    return grids
