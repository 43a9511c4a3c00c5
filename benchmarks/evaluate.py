"""`explain.py evaluate` on the CPU: the protocols' share of the work, their cost per image, and the
end-to-end rate and memory, measured in one process (the end-to-end runs in child processes).

    .venv/bin/python benchmarks/evaluate.py            # full: about 6 minutes on 2 idle cores
    .venv/bin/python benchmarks/evaluate.py --quick    # smoke version: small sizes, about 1 minute

ResNet-18 with the GAP head at 224 px (random weights, 2 classes), SyntheticPets' val split drawn
at 224 px (ImageNet normalisation, as train.py prepares it for resnet18), batch 32, with what
`explain.py evaluate` runs by default: methods cam and gradcam, protocols cam_loc, wsol and
pointing (threshold step 0.01, compat paper), the centre baseline on.

1. Per batch (after a warm-up on the first): the median over `--repeats` of a plain forward pass,
   of `explain(model, x, ["cam", "gradcam"], targets=labels)`, and of the protocols' updates of a
   batch (`Protocols.update` for both methods plus `update_center`), summed over `--batches`
   batches (also with the protocols on one thread: their compiled passes split a batch's images
   over torch's threads); then the same updates per protocol (wsol also split into MaxBoxAccV2 and PxAP, and
   run in compat="wsolevaluation", and MaxBoxAccV2 on the centre baseline's map alone). Goal:
   protocols ≤ 25 % of explain.
2. Protocol time per image for a fresh `Protocols` fed 64 and 512 images (batch 32, maps computed
   beforehand; each batch's time a median over 3 rounds of both sizes in turn): flat if the two
   agree.
3. `explain.py evaluate` end to end in a child process at 1,000 and 5,000 images (a checkpoint of
   the same model saved first in a temporary folder): wall time, images/s and the child's peak
   resident memory (GNU time's maximum resident set size; /usr/bin/time is needed).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from omegaconf import OmegaConf
from timing import median_seconds
from torch.utils.data import DataLoader

from camlight import __version__
from camlight.config import load_config
from camlight.datamodules import IMAGENET_MEAN, IMAGENET_STD, SyntheticPets
from camlight.evaluate.command import Indexed
from camlight.explain import explain
from camlight.metrics.protocol_set import Protocols
from camlight.metrics.protocols import CENTER, Options, center_map
from camlight.modules import Classifier

warnings.filterwarnings("ignore")

REPO = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"  # GNU time, for the child's peak resident memory
SIZE, BATCH = 224, 32
METHODS = ["cam", "gradcam"]
PROTOCOLS = ["cam_loc", "wsol", "pointing"]


def build_model() -> Classifier:
    torch.manual_seed(0)
    return Classifier(
        "resnet18", "gap", class_names=SyntheticPets.class_names, image_size=SIZE, mean=IMAGENET_MEAN, std=IMAGENET_STD
    ).eval()


def batches(n: int):
    """The first `n` images of SyntheticPets' val split at 224 px, in batches of 32, as evaluate loads them."""
    dm = SyntheticPets(image_size=SIZE, val_size=n, test_size=0, cache=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    loader = DataLoader(Indexed(dm.dataset("val")), batch_size=BATCH, shuffle=False, collate_fn=dm.collate_fn)
    return list(loader)


def scored(model, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(logits, {method: maps}) of a batch, as `Evaluation.predict_step` computes them."""
    with torch.no_grad():
        logits = model(batch["image"])
    return logits, explain(model, batch["image"], METHODS, targets=batch["label"])


def protocols(names=PROTOCOLS, **compat) -> Protocols:
    return Protocols(names, METHODS, len(SyntheticPets.class_names), Options(compat=compat), center=True)


def forwarder(model, x: torch.Tensor):
    def run():
        with torch.no_grad():
            model(x)

    return run


def explainer(model, x: torch.Tensor, labels: torch.Tensor):
    return lambda: explain(model, x, METHODS, targets=labels)


def updater(p: Protocols, batch: dict, logits, maps):
    """One batch's protocol work in `predict_step`: `update` for each method, then `update_center`."""

    def run():
        b = dict(batch)  # a new batch each time, as in predict_step
        for m in METHODS:
            p.update(m, maps[m], b, logits, seeds=b["index"])
        p.update_center(b, logits)

    return run


def on_one_thread(fn):
    """fn with torch (and so the protocols' compiled passes, which split images over torch's
    threads) on one thread."""

    def run():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            fn()
        finally:
            torch.set_num_threads(threads)

    return run


def metric_updater(p: Protocols, name: str, batch: dict, maps, only: str | None = None):
    """One `WsolBoxes` / `Pxap` update per method and the centre baseline (or `only` one of them),
    called directly."""
    image = batch["image"]
    every = dict(maps, **{CENTER: center_map(*image.shape[-2:]).expand(len(image), *image.shape[-2:])})
    every = {only: every[only]} if only else every

    def run():
        with torch.no_grad():
            for method, m in every.items():
                if name == "pxap":
                    p.metrics[method][name].update(m, batch["mask"], batch.get("ignore"))
                else:
                    p.metrics[method][name].update(m, batch["box"])

    return run


ROWS = (
    ("forward", "plain forward pass"),
    ("explain", "explain cam + gradcam"),
    ("protocols", "protocols, all three (2 methods + centre)"),
    ("protocols_one_thread", "the same on one thread"),
    ("cam_loc", "cam_loc"),
    ("wsol", "wsol (paper)"),
    ("wsol_boxes", "wsol: MaxBoxAccV2 (paper)"),
    ("wsol_boxes_center", "wsol: MaxBoxAccV2 (paper), centre map only"),
    ("pxap", "wsol: PxAP"),
    ("pointing", "pointing"),
    ("wsol_ref", "wsol (compat wsolevaluation)"),
    ("wsol_ref_boxes", "wsol: MaxBoxAccV2 (wsolevaluation)"),
)


def per_batch(model, data: list[dict], repeats: int) -> dict[str, float]:
    """{row: seconds summed over the batches}, each batch's time a median over `repeats`."""
    totals = {k: 0.0 for k, _ in ROWS}
    everything = protocols()
    alone = {p: protocols([p]) for p in PROTOCOLS}
    ref = protocols(["wsol"], wsol="wsolevaluation")
    for i, batch in enumerate(data):
        logits, maps = scored(model, batch)
        fns = {
            "forward": forwarder(model, batch["image"]),
            "explain": explainer(model, batch["image"], batch["label"]),
            "protocols": updater(everything, batch, logits, maps),
            "protocols_one_thread": on_one_thread(updater(everything, batch, logits, maps)),
            **{p: updater(alone[p], batch, logits, maps) for p in PROTOCOLS},
            "wsol_boxes": metric_updater(alone["wsol"], "wsol", batch, maps),
            "wsol_boxes_center": metric_updater(alone["wsol"], "wsol", batch, maps, only=CENTER),
            "pxap": metric_updater(alone["wsol"], "pxap", batch, maps),
            "wsol_ref": updater(ref, batch, logits, maps),
            "wsol_ref_boxes": metric_updater(ref, "wsol", batch, maps),
        }
        for k, fn in fns.items():
            totals[k] += median_seconds(fn, repeats, warm_up=i == 0)
    return totals


def flat_cost(model, sizes: tuple[int, ...], rounds: int) -> dict[int, float]:
    """Protocol seconds per image for a fresh `Protocols` fed the first n images (maps computed
    beforehand), for each n; each batch's time is a median over `rounds` runs of every size in turn."""
    inputs = [(b, *scored(model, b)) for b in batches(max(sizes))]
    times = {n: [[] for _ in range(n // BATCH)] for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            p = protocols()
            for i, (batch, logits, maps) in enumerate(inputs[: n // BATCH]):
                start = time.perf_counter()
                updater(p, batch, logits, maps)()
                times[n][i].append(time.perf_counter() - start)
    return {n: sum(statistics.median(t) for t in ts) / n for n, ts in times.items()}


def save_checkpoint(path: Path) -> None:
    """The benchmark's model as train.py's checkpoint of it would be read back (`load_checkpoint`):
    its hyperparameters, its weights and the run config, whose data section evaluate starts from."""
    cfg = load_config(
        [
            "model.backbone=resnet18",
            "model.head=gap",
            f"data.image_size={SIZE}",
            "data.train_size=32",
            "explain.enabled=false",
            "wandb.mode=disabled",
        ]
    )
    run_cfg = OmegaConf.to_container(cfg, resolve=True)
    run_cfg["model"]["pretrained"] = False
    model = build_model()
    contents = {
        "hyper_parameters": dict(model.hparams),
        "state_dict": model.state_dict(),
        "camlight": {"version": __version__, "config": run_cfg},
    }
    torch.save(contents, path)


def end_to_end(checkpoint: Path, n: int, out: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `explain.py evaluate` on `n` images in a child process.

    The peak is GNU time's (`/usr/bin/time`, ru_maxrss of its own child): `os.wait4` on a child
    of this process would report at least this process's own resident size, which the child
    inherits at exec as its starting peak (Linux carries the old address space's high-water mark
    over into the new one).
    """
    command = [
        sys.executable,
        str(REPO / "explain.py"),
        "evaluate",
        f"checkpoint={checkpoint}",
        f"data.val_size={n}",
        f"out={out}",
        "trainer.enable_progress_bar=false",
    ]
    log, usage = out.parent / f"{out.name}.log", out.parent / f"{out.name}.time"
    with open(log, "w") as f:
        start = time.perf_counter()
        code = subprocess.call([TIME, "-f", "%M", "-o", str(usage), *command], cwd=REPO, stdout=f, stderr=f)
        wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"explain.py evaluate exited {code}:\n{log.read_text()}")
    images = json.loads((out / "results.json").read_text())["images"]
    if images != n:
        raise SystemExit(f"explain.py evaluate scored {images} images, not {n}")
    return wall, int(usage.read_text().split()[-1]) / 1024  # KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke version: 1 batch, 32 vs 96, 64 vs 128 images")
    parser.add_argument("--batches", type=int, default=None, help="batches timed in part 1 (default 4; quick 1)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per batch in part 1 (default 3; quick 2)")
    parser.add_argument("--skip-end-to-end", action="store_true", help="parts 1 and 2 only")
    args = parser.parse_args()
    n_batches = args.batches or (1 if args.quick else 4)
    repeats = args.repeats or (2 if args.quick else 3)
    flat_sizes = (32, 96) if args.quick else (64, 512)
    rounds = 2 if args.quick else 3
    e2e_sizes = (64, 128) if args.quick else (1000, 5000)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; ResNet-18 GAP at {SIZE} px, "
        f"batch {BATCH}, methods {'+'.join(METHODS)}, protocols {'+'.join(PROTOCOLS)} + centre baseline"
    )

    model = build_model()
    totals = per_batch(model, batches(n_batches * BATCH), repeats)
    n = n_batches * BATCH
    print(f"\n### Per batch: {n_batches} batches of {BATCH}, median of {repeats} each (after a warm-up)\n")
    print("| work | s per batch | images/s | × explain |")
    print("|---|---|---|---|")
    for key, label in ROWS:
        t = totals[key]
        print(f"| {label} | {t / n_batches:.3f} | {n / t:.1f} | {t / totals['explain']:.2f} |")
    share = totals["protocols"] / totals["explain"]
    model_work = totals["forward"] + totals["explain"]
    print(f"\nprotocols / explain: {100 * share:.0f} % (goal ≤ 25 %)")
    print(f"the same on one thread: {100 * totals['protocols_one_thread'] / totals['explain']:.0f} %")
    print(f"protocols / (forward + explain, predict_step's model work): {100 * totals['protocols'] / model_work:.0f} %")
    parts = {k: totals[k] for k in ("cam_loc", "wsol", "pointing")}
    top = max(parts, key=parts.get)
    print(
        f"largest protocol: {top}, {100 * parts[top] / sum(parts.values()):.0f} % of the three protocols' "
        f"time, {parts[top] / totals['explain']:.2f} × explain"
    )

    per_image = flat_cost(model, flat_sizes, rounds)
    a, b = flat_sizes
    print(f"\n### Protocol time per image, fresh Protocols, batch {BATCH}, median of {rounds} rounds per batch\n")
    print("| images | ms per image |")
    print("|---|---|")
    for size, t in per_image.items():
        print(f"| {size} | {1000 * t:.1f} |")
    print(f"\n{b} / {a} images, per-image cost: {per_image[b] / per_image[a]:.2f}")

    if args.skip_end_to_end:
        return
    print(f"\n### explain.py evaluate end to end (child process, batch {BATCH}, num_workers 0)\n")
    results = {}
    with tempfile.TemporaryDirectory() as root:
        checkpoint = Path(root) / "resnet18-gap.ckpt"
        save_checkpoint(checkpoint)
        for size in e2e_sizes:
            results[size] = end_to_end(checkpoint, size, Path(root) / f"ev{size}")
    print("| images | wall (s) | images/s | peak RSS (MB) |")
    print("|---|---|---|---|")
    for size, (wall, rss) in results.items():
        print(f"| {size} | {wall:.1f} | {size / wall:.1f} | {rss:.0f} |")
    (wa, ra), (wb, rb) = results[e2e_sizes[0]], results[e2e_sizes[1]]
    a, b = e2e_sizes
    print(
        f"\n{b} / {a} images: wall {wb / wa:.2f} ×, images/s {(b / wb) / (a / wa):.2f} ×, "
        f"peak RSS {rb / ra:.2f} ×; marginal rate {(b - a) / (wb - wa):.1f} images/s"
    )


if __name__ == "__main__":
    main()
