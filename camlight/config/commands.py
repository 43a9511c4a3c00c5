"""`explain.py`'s schemas: one dataclass per command, each a `ModelChoice` (the model to load) with
the command's own keys, every field with its help text (see `camlight.config.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from camlight.config.schema import WandbConfig, _f


@dataclass
class ModelChoice:
    """The model of `explain.py` and its subcommands: a checkpoint, or any classifier by name."""

    checkpoint: str | None = _f(None, "checkpoint (.ckpt) of a camlight run (or give model=)")
    model: str | None = _f(
        None,
        "instead of checkpoint: torchvision:<name>[:<weights>], timm:<name>, package.module:function, or a .ckpt",
    )
    weights: str | None = _f(None, "with model=torchvision:/timm:: the weights (default: DEFAULT; none: random)")
    classes: str | None = _f(None, "a text file with one class name per line (models without class names)")
    image_size: int | None = _f(None, "input side (overrides the weights'; needed for package.module:function)")
    mean: list | None = _f(None, "input normalisation mean, 3 values in [0,1] (overrides the weights')")
    std: list | None = _f(None, "input normalisation std, 3 values (overrides the weights')")
    layer: str | None = _f(None, "target layer of the CAM family: a module name or name@call (null: found)")


@dataclass
class OfflineConfig(ModelChoice):
    """`explain.py`: explain a checkpoint, or any classifier, on images, offline."""

    input: str | None = _f(None, "an image file or a folder of images, searched recursively")
    split: str | None = _f(
        None, "instead of input: the checkpoint's own data split, with ground truth", choices=(None, "val", "test")
    )
    probe_size: int | None = _f(
        None, "with split=val: explain the training probe set of this size instead of the whole split", minimum=1
    )
    methods: list = _f(["gradcam", "saliency"], "explanation methods (camlight.explain keys)")
    metrics: list = _f(
        ["pointing_game", "energy_pointing_game"],
        "scores of the maps (camlight.metrics keys): per image in results.csv where ground truth exists, "
        "over all images in scores.csv",
    )
    target: str = _f(
        "top1",
        "top1, topk (with k) or top3 (any k: the k best classes, explained in one pass), label (needs ground "
        "truth), a class name or index, or a neuron: layer:channel "
        "(summed over space), layer:channel:max, layer:channel:row:col",
    )
    k: int = _f(3, "classes per image with target=topk", minimum=1)
    out: str = _f("explained", "output folder (created; must not hold an earlier result unless overwrite= or resume=)")
    overwrite: bool = _f(
        False, "replace the explain.py result in out= (removed once this run has passed its checks, before it writes)"
    )
    resume: bool = _f(
        False,
        "continue the interrupted run in out= with the same settings: images already explained are kept, "
        "the others explained",
    )
    batch_size: int = _f(32, "images per batch", minimum=1)
    device: str = _f("cpu", "cpu, cuda, or auto (cuda when available)")


@dataclass
class EvaluateTrainerConfig:
    accelerator: str = _f("cpu", "Lightning accelerator: cpu, gpu, auto, ...")
    devices: Any = _f(1, "Lightning devices: a count, a list of ids, or auto (every process scores its share)")
    strategy: str = _f("auto", "Lightning strategy: auto, ddp, ... (ddp: one process per device)")
    num_nodes: int = _f(1, "nodes (the output folder must be on a file system every node sees)", minimum=1)
    precision: str = _f("32-true", "Lightning precision of the model's passes")
    limit_predict_batches: Any = _f(1.0, "batches to score: a fraction (float <= 1.0) or a count (int)")
    enable_progress_bar: bool = _f(True, "progress bar with images/s")


@dataclass
class EvaluateConfig(ModelChoice):
    """`explain.py evaluate`: a whole split scored in the papers' localization protocols."""

    data: dict = _f(
        {},
        "the dataset, as train.py's data.* keys (data.name=cub data.root=...); a checkpoint's own data config "
        "is the default, these keys override it",
    )
    split: str = _f("val", "the split to score", choices=("train", "val", "test"))
    calibrate_on: str | None = _f(
        None,
        "a held-out split on which MaxBoxAccV2's thresholds are chosen, then frozen for split= (both reported)",
        choices=(None, "train", "val", "test"),
    )
    methods: list = _f(["cam", "gradcam"], "explanation methods (camlight.explain keys)")
    protocols: list = _f(
        ["cam_loc", "wsol", "pointing"],
        "cam_loc (CAM's top-k / GT-known loc error), wsol (MaxBoxAccV2, PxAP), pointing, causal "
        "(deletion/insertion AUC), aopc (Samek et al.), grabcut (GrabCut from the map, mask IoU; the segment extra)",
    )
    compat: dict = _f(
        {"wsol": "paper", "pointing": "paper"},
        "per protocol: paper, or the reference code's numbers (wsol: wsolevaluation; pointing: torchray)",
    )
    cam_threshold: float = _f(0.2, "CAM box threshold (fraction of the map's max; Grad-CAM's paper: 0.15)")
    topk: list = _f([1, 5], "CAM top-k localization errors (k below the number of classes)")
    wsol_ious: list = _f([0.3, 0.5, 0.7], "MaxBoxAccV2 IoU thresholds")
    threshold_step: float = _f(0.01, "MaxBoxAccV2 / PxAP threshold grid step (wsolevaluation training: 0.001)")
    tolerance: float | None = _f(None, "pointing game tolerance in pixels (null: 15 at 224 px, scaled)")
    causal_steps: int = _f(32, "deletion/insertion curve steps", minimum=1)
    aopc_region: int = _f(9, "AOPC region side in pixels", minimum=1)
    aopc_steps: int = _f(100, "AOPC perturbation steps", minimum=1)
    center_baseline: bool = _f(True, "score a centred Gaussian map beside the methods")
    batch_size: int = _f(32, "images per batch (per process)", minimum=1)
    num_workers: Any = _f(0, "DataLoader worker processes per process (or auto)")
    out: str = _f("evaluation", "output folder (created; must not hold an earlier result)")
    trainer: EvaluateTrainerConfig = field(default_factory=EvaluateTrainerConfig)
    wandb: WandbConfig = field(default_factory=lambda: WandbConfig(mode="disabled"))


@dataclass
class PatchesConfig(ModelChoice):
    """`explain.py patches`: the image patches that drive a layer's units most, over a whole split."""

    layer: str | None = _f(None, "the layer shown: a module name (null: a camlight Classifier's target layer)")
    data: dict = _f({}, "the dataset, as train.py's data.* keys (default: the checkpoint's own data config)")
    split: str = _f("val", "the split searched", choices=("train", "val", "test"))
    channels: list | None = _f(None, "the layer's channels (units) to follow (null: all of them)")
    k: int = _f(9, "patches per unit (each from a different image)", minimum=1)
    max_units: int = _f(16, "units drawn in patches.png (the csv has all; strongest first)", minimum=1)
    cell: int = _f(56, "side of each patch's cell in pixels", minimum=8)
    batch_size: int = _f(64, "images per batch (per process)", minimum=1)
    num_workers: Any = _f(0, "DataLoader worker processes per process (or auto)")
    out: str = _f("patches", "output folder (created; must not hold an earlier result)")
    trainer: EvaluateTrainerConfig = field(default_factory=EvaluateTrainerConfig)


@dataclass
class UnitsConfig(PatchesConfig):
    """`explain.py units`: the units a class relies on (CAM paper), each shown by its top patches."""

    target: str | None = _f(None, "the class, by name or index (also accepted as class=; required)")
    rank_by: str = _f(
        "weight",
        "weight: the GAP head's weight w_k^c (CAM); gradcam: Grad-CAM's α_k^c averaged over the class's images "
        "(any model)",
        choices=("weight", "gradcam"),
    )
    units: int = _f(8, "units shown: the largest scores for the class", minimum=1)
    alpha_images: int = _f(64, "with rank_by=gradcam: images of the class α is averaged over", minimum=1)
    out: str = _f("units", "output folder (created; must not hold an earlier result)")


@dataclass
class EmbeddingsConfig(ModelChoice):
    """`explain.py embeddings`: a split's final-layer features in 2-D, by PCA and t-SNE."""

    data: dict = _f({}, "the dataset, as train.py's data.* keys (default: the checkpoint's own data config)")
    split: str = _f("val", "the split embedded", choices=("train", "val", "test"))
    methods: list = _f(["pca", "tsne"], "reductions to 2-D: pca, tsne (scikit-learn's)")
    perplexity: float = _f(30.0, "t-SNE perplexity (lowered to (N-1)/3 for small splits)", minimum=1.0)
    seed: int = _f(0, "seed of the reductions (the same features give the same map)")
    thumb: int = _f(32, "side of the thumbnails kept per image (the maps shrink them to fit)", minimum=4)
    map_side: int = _f(1024, "side of the thumbnail maps in pixels, at most (a whole number of thumbnails)", minimum=64)
    batch_size: int = _f(64, "images per batch (per process)", minimum=1)
    num_workers: Any = _f(0, "DataLoader worker processes per process (or auto)")
    out: str = _f("embeddings", "output folder (created; must not hold an earlier result)")
    trainer: EvaluateTrainerConfig = field(default_factory=EvaluateTrainerConfig)
    wandb: WandbConfig = field(default_factory=lambda: WandbConfig(mode="disabled"))


@dataclass
class FoolConfig(ModelChoice):
    """`explain.py fool`: fooling images by targeted iterative FGSM within an L-inf budget."""

    input: str | None = _f(None, "an image file or a folder of images (default: the checkpoint's val probe set)")
    split: str | None = _f("val", "without input: the checkpoint's own data split", choices=(None, "val", "test"))
    images: int = _f(16, "images to fool", minimum=1)
    target: str = _f("other", "the class to reach, by name or index (also class=); other: the other of two classes")
    max_eps: float = _f(16.0, "the L-inf budget, in pixels of 255", minimum=0.001)
    step: float = _f(0.25, "the step of each iteration, in pixels of 255", minimum=0.001)
    magnify: int = _f(10, "the perturbation is drawn this many times larger", minimum=1)
    max_images: int = _f(4, "images drawn (fooling_<image>.png)", minimum=0)
    out: str = _f("fooling", "output folder (created; must not hold an earlier result)")
    device: str = _f("cpu", "cpu, cuda, or auto (cuda when available)")


@dataclass
class RobustnessConfig(ModelChoice):
    """`explain.py robustness`: accuracy under one-shot FGSM at several ε, over a whole split."""

    data: dict = _f({}, "the dataset, as train.py's data.* keys (default: the checkpoint's own data config)")
    split: str = _f("val", "the split scored", choices=("train", "val", "test"))
    eps: list = _f([0, 1, 2, 4, 8], "FGSM sizes, L-inf, in pixels of 255")
    batch_size: int = _f(64, "images per batch (per process)", minimum=1)
    num_workers: Any = _f(0, "DataLoader worker processes per process (or auto)")
    out: str = _f("robustness", "output folder (created; must not hold an earlier result)")
    trainer: EvaluateTrainerConfig = field(default_factory=EvaluateTrainerConfig)


@dataclass
class InvertConfig(ModelChoice):
    """`explain.py invert`: images reconstructed from each layer's features (Mahendran & Vedaldi)."""

    input: str | None = _f(None, "an image file or a folder of images (default: the checkpoint's val probe set)")
    split: str | None = _f("val", "without input: the checkpoint's own data split", choices=(None, "val", "test"))
    images: int = _f(2, "images to invert", minimum=1)
    layers: list | None = _f(None, "layers, shallow to deep (null: a camlight Classifier's backbone blocks)")
    steps: int = _f(300, "Adam steps per reconstruction", minimum=1)
    lr: float = _f(0.05, "Adam step size", minimum=0.0)
    tv: float = _f(0.5, "weight of the total-variation prior", minimum=0.0)
    l2: float = _f(1e-3, "weight of the L2 prior", minimum=0.0)
    cell: int = _f(96, "side of each image's cell in pixels", minimum=8)
    out: str = _f("inversion", "output folder (created; must not hold an earlier result)")
    device: str = _f("cpu", "cpu, cuda, or auto (cuda when available)")


@dataclass
class StyleConfig(ModelChoice):
    """`explain.py style`: Gatys et al.'s style transfer with the network's own layers."""

    content: str | None = _f(None, "the content image file (required)")
    style: str | None = _f(None, "the style image file (required)")
    content_layer: str | None = _f(None, "the content layer (null: a Classifier's second-deepest block)")
    style_layers: list | None = _f(None, "the style layers (null: a Classifier's backbone blocks)")
    steps: int = _f(300, "Adam steps", minimum=1)
    lr: float = _f(0.05, "Adam step size", minimum=0.0)
    style_weight: float = _f(1e3, "weight of the Gram-matrix loss against the content loss", minimum=0.0)
    tv: float = _f(0.1, "weight of the total-variation prior", minimum=0.0)
    cell: int = _f(160, "side of each image's cell in pixels", minimum=8)
    out: str = _f("style", "output folder (created; must not hold an earlier result)")
    device: str = _f("cpu", "cpu, cuda, or auto (cuda when available)")


@dataclass
class SanityConfig(ModelChoice):
    """`explain.py sanity`: Adebayo et al.'s randomization tests of the methods on a checkpoint."""

    input: str | None = _f(None, "an image file or a folder of images (default: the checkpoint's val probe set)")
    split: str | None = _f(
        "val", "without input: the checkpoint's own data split (its probe set)", choices=(None, "val", "test")
    )
    images: int = _f(16, "images to test (the probe set of this size; or the first of input=)", minimum=1)
    methods: list = _f(
        ["saliency", "guided_backprop", "gradcam", "cam"], "explanation methods (those the model lacks are skipped)"
    )
    mode: str = _f(
        "both",
        "model randomization: cascading (from the logits down, cumulative), independent (one block at a time), both",
        choices=("cascading", "independent", "both"),
    )
    reference: str | None = _f(
        None,
        "data randomization: a checkpoint of the same network trained on permuted labels "
        "(train.py experiment=random_labels); its maps are compared with the model's",
    )
    target: str = _f(
        "top1",
        "the class explained: top1 (the model's prediction) or label (needs ground truth)",
        choices=("top1", "label"),
    )
    seed: int = _f(0, "seed of the re-initialised weights")
    max_images: int = _f(4, "images drawn in the maps grids", minimum=0)
    out: str = _f("sanity", "output folder (created; must not hold an earlier result)")
    batch_size: int = _f(16, "images per explain call", minimum=1)
    device: str = _f("cpu", "cpu, cuda, or auto (cuda when available)")


@dataclass
class FiltersConfig(ModelChoice):
    """`explain.py filters`: the first convolution's filters as an RGB grid."""

    scale: str = _f(
        "all",
        "all: one scale for every filter (strengths comparable); each: every filter to its own largest weight",
        choices=("all", "each"),
    )
    sort: bool = _f(True, "strongest filters (largest weight norm) first")
    max_filters: int = _f(256, "filters drawn", minimum=1)
    cell: int = _f(32, "side of each filter's cell in pixels", minimum=4)
    out: str = _f("filters", "output folder (created; must not hold an earlier result)")


@dataclass
class ActivationsConfig(ModelChoice):
    """`explain.py activations`: a layer's activation maps for images, channels strongest first."""

    layer: str | None = _f(None, "the layer shown: a module name (null: a camlight Classifier's target layer)")
    input: str | None = _f(None, "an image file or a folder of images (default: the checkpoint's val probe set)")
    split: str | None = _f("val", "without input: the checkpoint's own data split", choices=(None, "val", "test"))
    images: int = _f(4, "images to show", minimum=1)
    max_channels: int = _f(64, "channels drawn per image (the strongest)", minimum=1)
    cmap: str = _f("viridis", "matplotlib colormap of the maps")
    cell: int = _f(48, "side of each map's cell in pixels", minimum=8)
    out: str = _f("activations", "output folder (created; must not hold an earlier result)")
    device: str = _f("cpu", "cpu, cuda, or auto (cuda when available)")


@dataclass
class VisualizeConfig:
    """`explain.py visualize-class`: the image a checkpoint finds most class-like."""

    checkpoint: str | None = _f(None, "checkpoint (.ckpt) of a camlight run (required)")
    target: str | None = _f(
        None,
        "the class, by name or index (also accepted as class=), or a neuron: layer:channel (summed over space), "
        "layer:channel:max, layer:channel:row:col",
    )
    start: str = _f(
        "auto",
        "the first image: mean (the data's mean, a little noise), zeros, noise (random pixels), an image file "
        "(ascent from a photo: the DeepDream-like case), or auto (mean for a class, noise for a neuron: a unit "
        "deep in the network is often off at the mean, with no gradient to climb)",
    )
    steps: int = _f(200, "gradient-ascent steps", minimum=1)
    lr: float = _f(0.1, "step size (on the mean-normalised gradient)", minimum=0.0)
    l2: float = _f(0.01, "L2 regularisation: the image decays by this fraction every step", minimum=0.0)
    jitter: int = _f(2, "random shift in pixels before each step (0 = none)", minimum=0)
    blur_every: int = _f(10, "Gaussian blur every n steps (0 = never)", minimum=0)
    out: str = _f("class_model", "output folder")
    device: str = _f("cpu", "cpu, cuda, or auto")


@dataclass
class SegmentConfig(ModelChoice):
    """`explain.py segment`: each method's map turned into a segmentation by GrabCut."""

    input: str | None = _f(None, "an image file or a folder of images (default: the checkpoint's val probe set)")
    split: str | None = _f("val", "without input: the checkpoint's own data split", choices=(None, "val", "test"))
    images: int = _f(8, "images to segment", minimum=1)
    methods: list = _f(["saliency", "guided_backprop", "gradcam"], "explanation methods (camlight.explain keys)")
    target: str = _f("top1", "the class explained: top1 or label (needs ground truth)", choices=("top1", "label"))
    max_images: int = _f(4, "images drawn (segment_<image>.png)", minimum=0)
    cell: int = _f(96, "side of each cell in pixels", minimum=8)
    out: str = _f("segment", "output folder (created; must not hold an earlier result)")
    device: str = _f("cpu", "cpu, cuda, or auto (cuda when available)")
