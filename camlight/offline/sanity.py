"""`explain.py sanity`: Adebayo et al. 2018's randomization tests of the methods on a checkpoint or
any classifier, on its probe set or on image files.

Model randomization re-initialises the network block by block on copies (`camlight.metrics.sanity`);
data randomization compares the maps with those of the same network trained on permuted labels
(`reference=`, a checkpoint of `train.py experiment=random_labels`). Writes into `out/`:
`sanity.csv` (per mode, step, method and measure: mean, spread and count over images),
`sanity_per_image.csv`, `sanity.png` (similarity against the blocks randomized, a line per method)
and `maps_<image>.png` (rows: methods; columns: the trained maps, then each step). The folder
appears whole at the end, or not at all.
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from camlight.config import ConfigError
from camlight.explain import check_methods, drop_unsupported, unsupported
from camlight.metrics import sanity as S
from camlight.offline.commands import EXIT_OK, EXIT_SKIPPED, check_out, device_of
from camlight.offline.inputs import from_files, from_split, load_model
from camlight.viz import denormalize, overlay, probe_grid, randomization_plot, whole_folder, write_csv

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ["mode", "step", "block", "method", "measure", "mean", "sd", "q25", "median", "q75", "n", "undefined"]


def run(cfg: DictConfig) -> int:
    """Run the tests, write `cfg.out`, return the exit code (0; 3 when image files were skipped).

    Raises:
        ConfigError: a usage mistake, before anything is written.
    """
    try:
        methods = check_methods(list(cfg.methods))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.target == "label" and cfg.input:
        raise ConfigError("target=label needs ground truth: leave out input= (the probe set), or use target=top1")
    out = Path(cfg.out)
    check_out(out)
    loaded = load_model(cfg)
    reference = _reference(cfg, loaded.model)
    items, skipped, source = _items(cfg, loaded)
    device = device_of(cfg.device)
    model = loaded.model.to(device).eval()
    images = torch.stack([it.image for it in items]).to(device)
    layer = cfg.get("layer")
    try:
        reasons = unsupported(model, images[:1], methods, layer)
    except ValueError as e:  # a layer= that does not fit this model
        raise ConfigError(str(e)) from None
    if len(reasons) == len(methods):
        raise ConfigError(f"this model supports none of the methods asked for: {'; '.join(reasons.values())}")
    methods = drop_unsupported(methods, reasons)
    if cfg.target == "label":
        targets = torch.tensor([it.label for it in items], device=device)
    else:
        with torch.no_grad():
            targets = model(images).argmax(1)
    modes = ["cascading", "independent"] if cfg.mode == "both" else [str(cfg.mode)]
    curves = {}
    for mode in modes:
        log.info("model randomization, %s: %d images, methods %s", mode, len(items), ", ".join(methods))
        curves[mode] = _randomization(model, images, methods, targets, mode, cfg, layer)
    if reference is not None:
        log.info("data randomization: the maps of %s", cfg.reference)
        curves["data"] = _data_randomization(model, reference.to(device).eval(), images, methods, targets, cfg, layer)
    names = [it.name for it in items]
    _write(out, curves, names, items, loaded, cfg, skipped)
    _report(curves)
    log.info("sanity checks of %d images (%s), skipped %d; results in %s", len(items), source, len(skipped), out)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _reference(cfg: DictConfig, model: torch.nn.Module) -> torch.nn.Module | None:
    """The network trained on permuted labels (`reference=`), checked to be the same architecture."""
    if not cfg.reference:
        return None
    other = load_model(OmegaConf.create({"checkpoint": str(cfg.reference)})).model
    mine, theirs = model.state_dict(), other.state_dict()
    if mine.keys() != theirs.keys() or any(mine[k].shape != theirs[k].shape for k in mine):
        raise ConfigError(
            f"reference={cfg.reference} is not the same network as the model (its parameters differ); "
            "train it with the same model.* keys and experiment=random_labels"
        )
    return other


def _items(cfg: DictConfig, loaded) -> tuple[list, list, str]:
    """The first `images` good images: of input=, or the checkpoint's probe set (split=val) or
    first images of split=test."""
    if cfg.input:
        inputs = from_files(Path(cfg.input), loaded)
    else:
        if not cfg.split:
            raise ConfigError("give input= (an image or a folder) or split= (val or test)")
        view = OmegaConf.create({"split": cfg.split, "probe_size": cfg.images if cfg.split == "val" else None})
        inputs = from_split(view, loaded)
    items = list(itertools.islice(inputs.items, cfg.images))
    if not items:
        raise ConfigError(f"no image of {inputs.source} could be read (see the skipped files); nothing to test")
    return items, inputs.skipped(), inputs.source


def _chunks(n: int, size: int):
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _randomization(model, images, methods, targets, mode: str, cfg, layer) -> dict:
    """model_randomization over the images in batches: {"blocks", "scores": {method: {measure:
    (steps, B) ndarray}}, "maps": {method: [(n,H,W)]} of the first `max_images` images}."""
    parts = []
    for k, part in enumerate(_chunks(len(images), cfg.batch_size)):
        keep = k == 0 and cfg.max_images > 0
        parts.append(
            S.model_randomization(
                model, images[part], methods, targets[part], mode, cfg.seed, keep_maps=keep, layer=layer
            )
        )
    scores = {
        m: {measure: torch.cat([p["scores"][m][measure] for p in parts], 1).cpu().numpy() for measure in s}
        for m, s in parts[0]["scores"].items()
    }
    maps = {m: [v[: cfg.max_images].cpu() for v in vs] for m, vs in parts[0].get("maps", {}).items()}
    return {"blocks": parts[0]["blocks"], "scores": scores, "maps": maps}


def _data_randomization(model, reference, images, methods, targets, cfg, layer) -> dict:
    """The maps of the model against those of the network trained on permuted labels (one step)."""
    scores: dict[str, dict[str, list]] = {}
    maps: dict[str, list] = {}
    for k, part in enumerate(_chunks(len(images), cfg.batch_size)):
        mine = S.both_maps(model, images[part], methods, targets[part], layer=layer)
        theirs = S.both_maps(reference, images[part], methods, targets[part], layer=layer)
        for m in mine:
            for measure, values in S.similarities(mine[m], theirs[m]).items():
                scores.setdefault(m, {}).setdefault(measure, []).append(values)
            if k == 0 and cfg.max_images > 0:
                maps[m] = [mine[m][0][: cfg.max_images].cpu(), theirs[m][0][: cfg.max_images].cpu()]
    return {
        "blocks": ["random labels"],
        "scores": {m: {k: torch.cat(v)[None].cpu().numpy() for k, v in s.items()} for m, s in scores.items()},
        "maps": maps,
    }


def summary_rows(curves: dict) -> list[dict]:
    """A row per mode, step, method and measure: mean, sd, quartiles over images (NaN — a constant
    map, whose correlation is undefined — left out and counted as `undefined`)."""
    rows = []
    for mode, c in curves.items():
        for step, block in enumerate(c["blocks"], start=1):
            for method, scores in c["scores"].items():
                for measure, values in scores.items():
                    v = values[step - 1]
                    ok = v[~np.isnan(v)]
                    stat = lambda f, ok=ok: float(f(ok)) if len(ok) else math.nan  # noqa: E731
                    rows.append(
                        {
                            "mode": mode,
                            "step": step,
                            "block": block,
                            "method": method,
                            "measure": measure,
                            "mean": stat(np.mean),
                            "sd": stat(np.std),
                            "q25": stat(lambda a: np.percentile(a, 25)),
                            "median": stat(np.median),
                            "q75": stat(lambda a: np.percentile(a, 75)),
                            "n": len(ok),
                            "undefined": int(len(v) - len(ok)),
                        }
                    )
    return rows


def _write(out: Path, curves: dict, names: list[str], items, loaded, cfg, skipped) -> None:
    """Everything into a hidden folder beside `out`, renamed to `out` when complete."""
    with whole_folder(out) as partial:
        write_csv(partial / "sanity.csv", summary_rows(curves), SUMMARY_COLUMNS)
        per_image = [
            {
                "mode": mode,
                "step": step,
                "block": block,
                "method": method,
                "measure": measure,
                "image": name,
                "value": v,
            }
            for mode, c in curves.items()
            for step, block in enumerate(c["blocks"], start=1)
            for method, scores in c["scores"].items()
            for measure, values in scores.items()
            for name, v in zip(names, values[step - 1].tolist(), strict=True)
        ]
        columns = ["mode", "step", "block", "method", "measure", "image", "value"]
        write_csv(partial / "sanity_per_image.csv", per_image, columns)
        model_modes = {m: c for m, c in curves.items() if m != "data"}
        if model_modes:
            randomization_plot(model_modes, partial / "sanity.png")
        pre = loaded.preprocessing
        for mode, c in curves.items():
            columns = ["trained", *c["blocks"]] if mode != "data" else ["model", "random labels"]
            for i, item in enumerate(items[: cfg.max_images]):
                grid = _maps_grid(item.image, c, i, columns, pre.mean, pre.std)
                if grid is not None:
                    grid.save(partial / f"maps_{mode}_{item.name}.png")
        if skipped:
            (partial / "skipped.txt").write_text("".join(f"{path}\t{why}\n" for path, why in skipped))


def _maps_grid(image: torch.Tensor, curve: dict, i: int, columns: list[str], mean, std):
    """Rows: methods (the input first in each row); columns: the trained maps, then each step;
    each cell titled with its Spearman correlation to the trained map."""
    maps = curve.get("maps") or {}
    if not maps:
        return None
    methods = list(maps)
    shown = denormalize(image[None].float(), mean, std).expand(len(methods), -1, -1, -1)
    overlays, titles = {}, {}
    for c, column in enumerate(columns):
        stack = torch.stack([maps[m][c][i] for m in methods])
        overlays[column] = overlay(shown, stack)
        if c == 0:
            titles[column] = [("", None)] * len(methods)
        else:
            rho = [curve["scores"][m]["spearman"][c - 1][i] for m in methods]
            titles[column] = [(f"rho {r:.2f}" if r == r else "rho n/a", None) for r in rho]
    return probe_grid(shown, overlays, methods, titles, cell=96)


def _report(curves: dict) -> None:
    """One line per method: the Spearman correlation after the last step of each mode."""
    for mode, c in curves.items():
        for method, scores in c["scores"].items():
            last = scores["spearman"][-1]
            ok = last[~np.isnan(last)]
            value = f"{ok.mean():.2f} ± {ok.std():.2f}" if len(ok) else "undefined (constant maps)"
            log.info("%-12s %-16s Spearman after %s: %s", mode, method, c["blocks"][-1], value)
