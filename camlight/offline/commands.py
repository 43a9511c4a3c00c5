"""The `explain.py` commands: explain a checkpoint or any classifier on images, and visualize a class."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from camlight.config import ConfigError
from camlight.datamodules.io import BadFile
from camlight.explain import REGISTRY, check_methods, drop_unsupported, explain, target_layer, unsupported, untouched
from camlight.explain._targets import top_k
from camlight.explain.engine import CLASS_ONLY
from camlight.explain.neuron import NeuronModel, is_neuron_spec, parse_neuron
from camlight.metrics import METRICS, check_metrics
from camlight.metrics.segmentation import check_available as check_grabcut
from camlight.offline.inputs import Inputs, from_files, from_split, load_model, prepare
from camlight.offline.names import shown
from camlight.offline.outputs import PARTIAL, Writer, is_output, logged_keys, remove_outputs
from camlight.offline.results import Result, SetScores, class_index, ground_truth_batch, per_image_scores, targets
from camlight.viz import denormalize, save_png

log = logging.getLogger(__name__)

EXIT_OK, EXIT_SKIPPED = 0, 3


def device_of(name: str) -> torch.device:
    """ "auto" → cuda when available, else cpu; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check(cfg: DictConfig, class_names: tuple[str, ...]) -> None:
    """Usage mistakes that need the model's classes; raises ConfigError."""
    try:
        check_methods(list(cfg.methods))
        check_metrics(list(cfg.metrics))
        if "grabcut_iou" in cfg.metrics:
            check_grabcut()
    except (ValueError, ImportError) as e:
        raise ConfigError(str(e)) from None
    if bool(cfg.input) == bool(cfg.split):
        raise ConfigError("give exactly one of input= (an image or a folder) and split= (val or test)")
    t = str(cfg.target)
    if cfg.probe_size and cfg.split != "val":
        raise ConfigError("probe_size= works with split=val (the probe set is drawn from validation data)")
    if t == "label" and not cfg.split:
        raise ConfigError("target=label needs ground truth: use split=val or split=test, or target=top1")
    if is_neuron_spec(t):
        try:
            parse_neuron(t)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        rescored = [m for m in cfg.metrics if not METRICS[m].ground_truth]
        if rescored:
            raise ConfigError(
                f"metrics {', '.join(rescored)} re-score a class, not a neuron; with target={t} leave them out"
            )
    elif t not in ("top1", "topk", "label") and (top_k(t) is None or t in class_names):
        try:
            class_index(t, class_names)
        except ConfigError as e:
            raise ConfigError(f"{e}; or top1, topk, top3 (any k), label") from None
    check_rerun(cfg)


def check_out(out: Path) -> None:
    """ConfigError when `out` exists and is not an empty folder (a run never writes over another's)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out={out} already exists and is not empty; choose another out=")


# The keys that may change when an interrupted run is resumed: the rest must be as it was started.
RESUMABLE_KEYS = ("out", "overwrite", "resume", "batch_size", "device")


def settings(cfg: DictConfig) -> dict:
    """The run's settings that decide what it writes (every key but `RESUMABLE_KEYS`)."""
    return {k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k not in RESUMABLE_KEYS}


def check_rerun(cfg: DictConfig) -> None:
    """ConfigError unless `out=` is new or empty, or holds an explain.py result and overwrite=true
    (replace it) or resume=true (continue it, with the settings it was started with) is given."""
    out = Path(cfg.out)
    if cfg.overwrite and cfg.resume:
        raise ConfigError("give one of overwrite=true (start again) and resume=true (continue), not both")
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise ConfigError(f"out={out} is a file; give a folder for out=")
    if not (cfg.overwrite or cfg.resume):
        raise ConfigError(
            f"out={out} already exists and is not empty; choose another out=, or overwrite=true to replace "
            "the explain.py result there, or resume=true to continue an interrupted run"
        )
    foreign = sorted(shown(p.name) for p in out.iterdir() if not is_output(p.name))
    if foreign:
        option = "overwrite" if cfg.overwrite else "resume"
        raise ConfigError(
            f"out={out} holds {foreign[0]}{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}, not "
            f"written by explain.py; {option}=true only works on an explain.py result: choose another out="
        )
    if cfg.resume:
        _check_resume(cfg, out)


def _check_resume(cfg: DictConfig, out: Path) -> None:
    saved = out / PARTIAL / "settings.json"
    if not saved.is_file():
        what = "a finished run (run.json)" if (out / "run.json").is_file() else "no interrupted run"
        raise ConfigError(f"resume=true: out={out} holds {what}, nothing to continue; overwrite=true replaces it")
    started, now = json.loads(saved.read_text()), settings(cfg)
    differ = [k for k in sorted(set(started) | set(now)) if started.get(k) != now.get(k)]
    if differ:
        was = ", ".join(f"{k}={json.dumps(started.get(k))}" for k in differ)
        raise ConfigError(f"resume=true: out={out} was started with {was}; give the same, or overwrite=true")
    whole_set = [m for m in cfg.metrics if METRICS[m].per_image is None]
    if cfg.split and whole_set:
        raise ConfigError(
            f"resume=true: the scores over the whole set ({', '.join(whole_set)}) are not saved along the way, "
            "so this run cannot be continued; start it again with overwrite=true"
        )


def run(cfg: DictConfig, progress: bool = True) -> int:
    """Explain, write `cfg.out`, return the exit code (0 all explained, 3 some files skipped).

    Raises:
        ConfigError: a usage mistake, before anything is written.
    """
    loaded = load_model(cfg)
    model, names = loaded.model, loaded.class_names
    check(cfg, names)
    out = Path(cfg.out)
    resuming = bool(cfg.resume) and (out / PARTIAL / "settings.json").is_file()
    done = logged_keys(out) if resuming else set()
    inputs = _inputs(cfg, loaded, done)
    first = inputs.first if inputs.first is not None or not done else _inputs(cfg, loaded, set()).first
    device = device_of(cfg.device)
    model = model.to(device)
    methods, layer = list(check_methods(list(cfg.methods))), cfg.get("layer")
    layer_used = None
    if first is not None:
        methods, layer_used = _supported(cfg, model, first.image[None].to(device), methods, layer)
    if cfg.overwrite and out.is_dir():  # every check passed: the earlier result goes
        remove_outputs(out)
    pre = loaded.preprocessing
    if done:
        log.info("resuming: %d images were explained before, in %s", len(done), out)
    writer = Writer(out, names, pre.mean, pre.std, settings(cfg), resume=resuming)
    set_scores = _explain(cfg, model, methods, inputs, writer, device, progress, layer)
    skipped = inputs.skipped()
    title = f"camlight — {loaded.name} on {inputs.source}"
    about = {
        "model": loaded.name,
        "target_layer": layer_used,
        "methods": methods,
        "target": str(cfg.target),
        "preprocessing": pre.as_dict(),
        "source": inputs.source,
    }
    writer.finish(set_scores, skipped, title, about)
    log.info("explained %d images, skipped %d; results in %s", writer.images, len(skipped), cfg.out)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _supported(cfg: DictConfig, model, first: torch.Tensor, methods: list[str], layer) -> tuple[list[str], str | None]:
    """The methods this model supports (others dropped with a warning) and the target layer they
    use, from one image (1,3,S,S); ConfigError when it supports none, or for a layer= or neuron
    that does not fit it."""
    target, layer_used = str(cfg.target), None
    if is_neuron_spec(target):
        _check_neuron(model, first, target, methods)
    try:
        reasons = unsupported(model, first, methods, layer)
        if len(reasons) == len(methods):
            raise ConfigError(f"this model supports none of the methods asked for: {'; '.join(reasons.values())}")
        methods = drop_unsupported(methods, reasons)
        if any(REGISTRY[m].needs & {"layer", "layer_grad"} for m in methods):
            if is_neuron_spec(target):  # the layer found in the network cut at the neuron
                neuron = NeuronModel(model, parse_neuron(target))
                layer_used = target_layer(neuron, first, None if layer is None else f"model.{layer}")
            else:
                layer_used = target_layer(model, first, layer)
    except ValueError as e:  # a layer= that does not fit this model
        raise ConfigError(str(e)) from None
    if layer_used:
        log.info("target layer: %s", layer_used)
    return methods, layer_used


def _inputs(cfg: DictConfig, loaded, done: set[str]) -> Inputs:
    """The images of input= or split=, without those whose keys are in `done`."""
    if cfg.input:
        return from_files(Path(cfg.input), loaded, done)
    inputs = from_split(cfg, loaded)
    if done:
        inputs.items = (it for it in inputs.items if it.key not in done)
        inputs.total -= len(done)
    return inputs


def _check_neuron(model, first: torch.Tensor, spec: str, methods: list[str]) -> None:
    """ConfigError unless the neuron exists in the model (layer, channel, position) and every
    method can explain one."""
    refused = [f"{m} {CLASS_ONLY[m]}" for m in methods if m in CLASS_ONLY]
    if refused:
        raise ConfigError(f"{'; '.join(refused)}: it explains classes, not a neuron; drop it for target={spec}")
    try:
        with untouched(model), torch.no_grad():
            NeuronModel(model, parse_neuron(spec))(first)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _explain(cfg, model, methods, inputs: Inputs, writer: Writer, device, progress, layer=None) -> SetScores:
    """Explain every input in batches, for every target; hand each batch to the writer as it
    comes; return the set-level scores."""
    metrics = list(cfg.metrics)
    set_scores = SetScores(metrics, len(writer.class_names))
    bar, bar_at, explained = _progress(inputs.total, progress), 0, 0
    for chunk in _batches(inputs.items, cfg.batch_size):
        batch, valid = ground_truth_batch(chunk, device)
        if "grabcut_iou" in metrics:  # GrabCut segments the colours the model saw
            batch["rgb"] = denormalize(batch["image"].float(), writer.mean, writer.std)
        x = batch["image"]
        with torch.no_grad():
            probs = model(x).softmax(1)
        conf, pred = probs.max(1)
        neuron = str(cfg.target) if is_neuron_spec(str(cfg.target)) else None
        ranked = targets(cfg, writer.class_names, probs, chunk)
        every = None  # with several classes per image: all their maps from one call (shared passes)
        if methods and neuron is None and len(ranked) > 1:
            every = explain(model, x, methods, targets=torch.stack([t for _, t in ranked], 1), layer=layer)
        for column, (rank, t) in enumerate(ranked):
            spec = t if neuron is None else neuron
            if every is not None:
                maps = {m: v[:, column] for m, v in every.items()}
            else:
                maps = explain(model, x, methods, targets=spec, layer=layer) if methods else {}
            scores = per_image_scores(metrics, maps, batch, valid, model, t)
            rows = [
                Result(
                    shown(it.key),
                    int(pred[i]),
                    float(conf[i]),
                    int(t[i]),
                    float(probs[i, t[i]]),
                    it.label,
                    rank,
                    list(maps),
                    scores[i],
                    neuron,
                )
                for i, it in enumerate(chunk)
            ]
            set_scores.update(rows[0].column, maps, batch, valid, model, t)
            writer.add(chunk, x, rows, maps)
        writer.commit()
        explained += len(chunk)
        tried = explained + len(inputs.skipped())  # bad files count as done too
        bar.update(tried - bar_at)
        bar_at = tried
    bar.update(explained + len(inputs.skipped()) - bar_at)  # bad files after the last good one
    bar.close()
    return set_scores


def _batches(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _NoBar:
    def update(self, n): ...
    def close(self): ...


def _progress(total: int, show: bool, unit: str = "img", desc: str = "explaining"):
    if not show:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc)


# The options of `class_model` that `explain.py visualize-class` passes through by the same names.
CLASS_MODEL_OPTIONS = ("steps", "lr", "l2", "jitter", "blur_every")


def visualize(cfg: DictConfig, progress: bool = True) -> int:
    """`explain.py visualize-class`: write `<target>.png` and `<target>_steps.png` into `cfg.out`,
    for a class or a neuron (`class=layer4:12`), from the start `cfg.start`."""
    from camlight.explain.class_model import STARTS, class_model

    loaded = load_model(cfg)
    model, names = loaded.model, loaded.class_names
    if cfg.target is None or str(cfg.target) == "":
        raise ConfigError(f"class= is required: one of {', '.join(names)} (or its index), or a neuron layer:channel")
    size = loaded.preprocessing.image_size
    if is_neuron_spec(str(cfg.target)):
        target, name = str(cfg.target), str(cfg.target).replace(":", "_")
        try:
            with untouched(model), torch.no_grad():
                NeuronModel(model, parse_neuron(target))(torch.zeros(1, 3, size, size))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        target = class_index(cfg.target, names, what="class")
        name = names[target]
    start = str(cfg.start)
    if start == "auto":
        start = "noise" if is_neuron_spec(str(cfg.target)) else "mean"
    if start not in STARTS:  # an image file: the DeepDream-like start
        if not Path(start).is_file():
            raise ConfigError(f"start={start}: not {', '.join(STARTS)} and not an image file")
        try:
            start = prepare(Path(start), loaded.preprocessing.as_dict())
        except BadFile as e:
            raise ConfigError(f"start={cfg.start}: {e}") from None
    out = Path(cfg.out)
    check_out(out)
    model = model.to(device_of(cfg.device))
    bar = _progress(cfg.steps, progress, unit="step", desc=f"target {name}")

    def on_step(step: int, score: float) -> None:
        bar.update(1)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(score=f"{score:.3g}", refresh=False)

    options = {k: cfg[k] for k in CLASS_MODEL_OPTIONS}
    image, shots, scores = class_model(model, target, size, on_step=on_step, start=start, **options)
    bar.close()
    mean, std = loaded.preprocessing.mean, loaded.preprocessing.std
    out.mkdir(parents=True, exist_ok=True)
    save_png(_display(image, mean, std), out / f"{name}.png")
    save_png(torch.cat([_display(s, mean, std) for s in shots], dim=2), out / f"{name}_steps.png")
    log.info("%s: score %.3f → %.3f over %d steps; %s", name, scores[0], scores[-1], len(scores), out)
    return EXIT_OK


def _display(image: torch.Tensor, mean, std) -> torch.Tensor:
    """Denormalise, then stretch to [0,1] (the optimised image may leave the data's range)."""
    x = image.cpu()[None] * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    x = (x - x.min()) / (x.max() - x.min()).clamp(min=1e-12)
    return x[0]
