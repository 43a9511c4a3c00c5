"""The explain engine: one call computes every requested map, sharing passes between methods.

Passes, each run at most once per call:

- the *plain* pass: one forward (and at most one backward) serving `saliency` (∂y/∂x), every
  CAM-family method (the activations A) and the gradient ones among them (∂y/∂A). Without
  `saliency`, the backward stops at A: the layers before it run without autograd.
- the *guided* and *deconv* passes: a forward under the modified rectifier rule, a backward to x.
- the methods' own passes (SmoothGrad, Integrated Gradients, occlusion, Ablation-CAM, Score-CAM),
  batched, without autograd where none is needed.

Targets default to the predicted class of the first forward pass. Several targets per image
((B,T) or "top3") share the passes: one forward, then one backward per target through the part of
the model the method differentiates (the head alone for the CAM family), or one set of perturbed
forwards scored for every target.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from camlight.explain._budget import DEFAULT_MEMORY, batch_limit, forward_bytes
from camlight.explain._combine import aug_smooth, fuse_layers
from camlight.explain._model import ModelAccess, NoLayer
from camlight.explain._normalize import channel_max_abs, finish, min_max
from camlight.explain._rules import ReluRule
from camlight.explain._state import as_input, untouched
from camlight.explain._targets import check_images, target_columns, target_table, top_k
from camlight.explain.neuron import Neuron, NeuronModel, is_neuron_spec, parse_neuron

# Normalisation kinds: "pixel" (B,3,H,W) signed → max |.| over channels → min-max;
# "cam" (B,h,w) → ReLU → upsample → min-max; "signed" (B,H,W) → min-max.
KINDS = ("pixel", "cam", "signed")
# Methods that need a classifier's classes, not one neuron: CAM reads a class's weights in the GAP
# head; Score-CAM and RISE weigh by a softmax over the classes (over one neuron it is always 1).
CLASS_ONLY = {
    "cam": "reads a class's weights in the GAP head",
    "score_cam": "weighs by a softmax over classes",
    "rise": "weighs by a softmax over classes",
}


@dataclass(frozen=True)
class Method:
    """A registered explanation method.

    Attributes:
        key: registry name.
        kind: how its raw map is normalised (see KINDS).
        compute: (Context, **options) → raw map.
        defaults: option names and default values.
        needs: what it takes from the plain pass: "x_grad", "layer", "layer_grad".
        requires: a further condition on the model, checked without running the method: Context
            (one image, the plain pass forward only) → None when met, else why not (CAM: a GAP head).
        all_targets: `compute` scores every target of the call at once (`Context.table`, (B,T))
            and returns its map with a target dimension, (B,T,...); other methods are called once
            per target (`Context.targets`, (B,)) with the passes they share kept.
    """

    key: str
    kind: str
    compute: Callable[..., torch.Tensor]
    defaults: dict = field(default_factory=dict)
    needs: frozenset = frozenset()
    requires: Callable[[Context], str | None] | None = None
    all_targets: bool = False


REGISTRY: dict[str, Method] = {}


def register(key: str, kind: str, needs: Sequence[str] = (), requires=None, all_targets: bool = False, **defaults):
    """Decorator adding `compute` to the registry under `key`."""

    def wrap(compute):
        REGISTRY[key] = Method(key, kind, compute, dict(defaults), frozenset(needs), requires, all_targets)
        return compute

    return wrap


@dataclass
class Pass:
    logits: torch.Tensor
    a: torch.Tensor | None = None  # (B,K,h,w), detached
    grad_x: torch.Tensor | None = None
    grad_a: torch.Tensor | None = None


class Context:
    """What the methods of one `explain` call share: input, targets and computed passes."""

    def __init__(self, access: ModelAccess, x: torch.Tensor, targets, needs: set[str], memory: int = DEFAULT_MEMORY):
        self.access, self.x, self._target_spec, self.needs = access, x, targets, needs
        self.memory = memory
        self.table: torch.Tensor | None = None  # (B,T): every target of the call, once resolved
        self.column = 0  # which of them `targets` is
        self._passes: dict = {}
        self._forward: tuple | None = None  # the plain pass's forward, shared by every target

    @property
    def targets(self) -> torch.Tensor | None:
        """(B,) the target being explained (one column of `table`), None until resolved."""
        return None if self.table is None else self.table[:, self.column]

    def rows(self, method: str, batch_size: int | None, kind: str = "forward") -> int:
        """Rows per evaluation of a perturbation method: as many as one evaluation may hold within
        `memory` bytes of activations, whatever the model, or `batch_size` when it is smaller.
        `kind` says what one row costs: "forward" (a forward pass of one image, measured),
        "backward" (twice that: a forward kept for a backward pass) or "head" (the head alone, on
        A of one image, with the split)."""
        if kind == "head":
            a = self.plain().a
            per_row = 3 * a[0].numel() * a.element_size()
        else:
            per_row = forward_bytes(self.model, self.x) * (2 if kind == "backward" else 1)
        budget = max(1, self.memory // per_row)
        return budget if batch_size is None else min(batch_limit(method, batch_size), budget)

    @property
    def model(self) -> nn.Module:
        return self.access.model

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.x.shape[-2:])

    @property
    def predicts(self) -> bool:
        """True while targets are still to come from the clean input's scores (none given, or "topk")."""
        return self.table is None and (self._target_spec is None or top_k(self._target_spec) is not None)

    def resolve_targets(self, logits: torch.Tensor) -> torch.Tensor:
        """The target being explained, (B,), after fixing the call's `table` of targets (B,T).
        `logits` (N >= B rows) fix their range; with no targets given, or "topk", they must be the
        clean input's, whose highest scores become the targets."""
        if self.table is None:
            self.table = target_table(self._target_spec, logits[: self.x.shape[0]])
        return self.targets

    def score(self, logits: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) logit of each row's target; `targets` defaults to the call's targets."""
        t = self.targets if targets is None else targets
        return logits.gather(1, t[:, None])[:, 0]

    def plain(self) -> Pass:
        """The plain pass for the current target: the forward is run once per call, the backward
        once per target (the graph is kept while other targets may still need it)."""
        if ("plain", self.column) not in self._passes:
            self._passes["plain", self.column] = self._plain()
        return self._passes["plain", self.column]

    def _plain(self) -> Pass:
        x_grad = "x_grad" in self.needs
        layer = bool(self.needs & {"layer", "layer_grad"})
        layer_grad = "layer_grad" in self.needs
        if self._forward is None:
            x = self.x.detach().requires_grad_(True) if x_grad else self.x  # a new leaf, no copy
            with torch.set_grad_enabled(x_grad or layer_grad):
                logits, a = self.access.forward(x, layer=layer, layer_grad=layer_grad)
            self._forward = (x, logits, a)
        x, logits, a = self._forward
        targets = self.resolve_targets(logits.detach())
        wanted = ([x] if x_grad else []) + ([a] if layer_grad else [])
        last = self.column == self.table.shape[1] - 1  # else other targets backpropagate through this graph
        grads = torch.autograd.grad(self.score(logits, targets).sum(), wanted, retain_graph=not last) if wanted else []
        if last and wanted:
            self._forward = None  # the graph is freed; a later target would run its own forward
        grads = list(grads)
        return Pass(
            logits.detach(),
            None if a is None else a.detach(),
            grads.pop(0) if x_grad else None,
            grads.pop(0) if layer_grad else None,
        )

    def logits(self) -> torch.Tensor:
        """Logits of the clean input: the plain pass's when the call has one, else any pass's
        that ran (forward values are the same under every rectifier rule), else a no-grad forward."""
        if self.needs:
            return self.plain().logits
        for key in ("forward", "guided", "deconv"):
            if key in self._passes:
                return self._passes[key].logits
        with torch.no_grad():
            logits = self.model(self.x)
        self.resolve_targets(logits)
        self._passes["forward"] = Pass(logits)
        return logits

    def input_gradient(self, x: torch.Tensor, rule: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(∂y_t/∂x, logits) for `x`, (B,3,H,W) or several such batches stacked, with rectifiers following
        `rule` (None, "guided", "deconv"); row i is scored for target i mod B."""
        x = x.detach().requires_grad_(True)  # a new leaf over the same storage, no copy
        if rule is None:
            logits = self.model(x)
        else:
            with ReluRule(rule) as mode:
                logits = self.model(x)
            why = mode.explanation()
            if why is not None:
                warnings.warn(why, stacklevel=4)
        targets = self.resolve_targets(logits.detach())
        targets = targets.repeat(x.shape[0] // targets.shape[0])
        return torch.autograd.grad(self.score(logits, targets).sum(), x)[0], logits.detach()

    def rule_gradient(self, rule: str) -> torch.Tensor:
        """∂y/∂x of the clean input under a rectifier rule, computed once per call and target."""
        if (rule, self.column) not in self._passes:
            grad, logits = self.input_gradient(self.x, rule)
            self._passes[rule, self.column] = Pass(logits, grad_x=grad)
            self._passes.setdefault(rule, self._passes[rule, self.column])  # its logits, for `logits()`
        return self._passes[rule, self.column].grad_x


def check_methods(methods) -> list[str]:
    """`methods` (one key or several) without repeats; ValueError naming the valid keys for an unknown one."""
    if isinstance(methods, str):
        methods = [methods]
    methods = list(dict.fromkeys(methods))
    for m in methods:
        if m not in REGISTRY:
            close = difflib.get_close_matches(str(m), REGISTRY, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown method {m!r}; {hint}choose from {', '.join(REGISTRY)}")
    if not methods:
        raise ValueError(f"no method asked for; choose from {', '.join(REGISTRY)}")
    return methods


def _method_options(methods: list[str], options: dict) -> dict[str, dict]:
    out = {}
    for key, value in options.items():
        if key not in REGISTRY:
            close = difflib.get_close_matches(key, [*REGISTRY, "targets", "layer", "raw", "memory"], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise TypeError(
                f"unexpected keyword {key!r}; {hint}per-method options are named after a method: {', '.join(REGISTRY)}"
            )
        if key not in methods:
            raise TypeError(f"options given for {key}, which is not among the methods asked for ({', '.join(methods)})")
        if not isinstance(value, dict):
            raise TypeError(f"options for {key} must be a dict, e.g. {key}=dict(...)")
    for m in methods:
        given = dict(options.get(m) or {})
        unknown = set(given) - set(REGISTRY[m].defaults)
        if unknown:
            valid = ", ".join(REGISTRY[m].defaults) or "none"
            raise TypeError(f"unknown option(s) {', '.join(sorted(unknown))} for {m}; valid: {valid}")
        out[m] = {**REGISTRY[m].defaults, **given}
    return out


def needs_of(methods: list[str]) -> set[str]:
    needs = set()
    for m in methods:
        needs |= REGISTRY[m].needs
    return needs


def normalise(kind: str, raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if kind == "pixel":
        return min_max(channel_max_abs(raw))
    if kind == "cam":
        return finish(raw.clamp(min=0), size)
    return min_max(raw)


def explain(
    model: nn.Module,
    images: torch.Tensor,
    methods: str | Sequence[str],
    targets=None,
    layer: str | nn.Module | None = None,
    raw: bool = False,
    memory: int = DEFAULT_MEMORY,
    **options,
) -> dict[str, torch.Tensor]:
    """Explanation maps for every method in `methods`, computed together.

    Args:
        model: a camlight `Classifier` (its `features`/`head` split is used, no hooks) or any
            classifier returning logits (B,C) (its target layer hooked: `layer=`, or found).
        images: (B,3,H,W) float, normalised as the model expects.
        methods: registry keys, e.g. ["saliency", "gradcam"]; see `REGISTRY`.
        targets: None (predicted class), an int (every image), a LongTensor (B,), or a neuron of
            an intermediate layer: a `Neuron` or its text, "layer4:123" (channel 123 summed over
            space), "layer4:123:max", "layer4:123:3:5" (one spatial neuron).
        layer: target layer for the CAM family: a dotted module name, "name@call" for one call of
            a module that runs several times, or the module; None: the split, or one found by
            `camlight.explain.locate` on the first image.
        raw: return each map as its paper defines it: signed (B,3,H,W) for pixel-space methods,
            (B,h,w) at the layer's resolution for the CAM family, (B,H,W) for occlusion.
        memory: bytes of activations one evaluation of a perturbation method (occlusion,
            Ablation-CAM, Score-CAM, Integrated Gradients) may hold; larger `batch_size`s are
            evaluated in chunks that fit (default 1 GiB).
        **options: per-method options, named after the method: `occlusion=dict(window=16)`.

    Returns:
        {method: (B,H,W) float32 in [0, 1]} on the input's device (or raw maps, see `raw`).

    The model is left exactly as it was: mode, hooks, `requires_grad`, `.grad`, buffers and the
    global RNG state are restored, also when the call raises.

    Example::

        maps = explain(model, batch["image"], ["saliency", "cam", "gradcam"])
        maps["gradcam"].shape   # (B, H, W)
    """
    check_images(images)
    methods = check_methods(methods)
    opts = _method_options(methods, options)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
        raise ValueError(f"memory must be a number of bytes >= 1, got {memory!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(layer, (list, tuple)):
        return _several_layers(model, images, methods, targets, list(layer), raw, memory, opts)
    columns = target_columns(targets)  # None: one target per image (or a neuron), maps (B,H,W)
    if is_neuron_spec(targets):  # a unit of an intermediate layer: its value is the one "logit"
        neuron = targets if isinstance(targets, Neuron) else parse_neuron(targets)
        refused = [f"{m} {CLASS_ONLY[m]}" for m in methods if m in CLASS_ONLY]
        if refused:
            raise ValueError(f"{'; '.join(refused)}: it explains classes, not a neuron; use gradcam")
        model, targets = NeuronModel(model, neuron), 0
        if isinstance(layer, str):  # names are the model's, now inside the wrapper
            layer = f"model.{layer}"
    access = ModelAccess(model, layer)
    out = {}
    with untouched(model):
        x = as_input(images)
        layered = [m for m in methods if REGISTRY[m].needs & {"layer", "layer_grad"}]
        if layered:
            try:
                access.prepare(x)
            except NoLayer as e:
                raise ValueError(access.missing_layer(layered[0], str(e))) from None
        ctx = Context(access, x, targets, needs_of(methods), memory)
        for m in methods:  # refused by what they declare, before any method runs
            why = None if REGISTRY[m].requires is None else REGISTRY[m].requires(ctx)
            if why is not None:
                raise ValueError(why)
        for m in methods:
            method = REGISTRY[m]
            result = _compute(ctx, method, dict(opts[m]), columns or 1, model, layer, memory).detach()
            n, t = result.shape[:2]
            if not raw:
                result = normalise(method.kind, result.flatten(0, 1), ctx.size).unflatten(0, (n, t))
            result = result.float()
            out[m] = result if columns is not None else result[:, 0]
    return out


def _compute(ctx: Context, method: Method, options: dict, columns: int, model, layer, memory) -> torch.Tensor:
    """A method's raw map for every target of the call, (B,T,...)."""
    if options.pop("aug_smooth", False):
        if ctx.table is None:  # the clean images' targets, for every augmented copy
            with torch.no_grad():
                ctx.resolve_targets(ctx.model(ctx.x))
        return aug_smooth(explain, model, ctx.x, method.key, ctx.table, _layer_of(ctx.access, layer), memory, options)
    if method.all_targets:
        return method.compute(ctx, **options)
    maps = []
    for column in range(columns):
        ctx.column = column
        maps.append(method.compute(ctx, **options))
    ctx.column = 0
    return maps[0].unsqueeze(1) if columns == 1 else torch.stack(maps, dim=1)


def _layer_of(access: ModelAccess, given):
    """The layer a call used, for calls that repeat it: the one found or given (None: the split)."""
    return None if access.split else (access.layer if access.layer is not None else given)


def _several_layers(model, images, methods, targets, layers: list, raw: bool, memory: int, opts: dict):
    """`explain` with `layer=[...]`: the CAM family's maps at each layer, fused (`fuse_layers`) into
    one map at the input's resolution; the other methods as with one layer."""
    if not layers:
        raise ValueError("layer=[] names no layer; give one or more layer names, or None")
    if len(layers) == 1:
        return explain(model, images, methods, targets, layers[0], raw, memory, **opts)
    layered = [m for m in methods if REGISTRY[m].needs & {"layer", "layer_grad"}]
    unfused = [m for m in layered if REGISTRY[m].kind != "cam"]
    if unfused:
        raise ValueError(f"{', '.join(unfused)} takes one layer, not a list; give layer= one name for it")
    rest = [m for m in methods if m not in layered]
    out = explain(model, images, rest, targets, None, raw, memory, **{m: opts[m] for m in rest}) if rest else {}
    several = target_columns(targets) is not None
    per_layer = []
    for name in layers:
        maps = explain(model, images, layered, targets, name, True, memory, **{m: opts[m] for m in layered})
        per_layer.append({m: v if several else v[:, None] for m, v in maps.items()})
    size = tuple(images.shape[-2:])
    for m in layered:
        fused = fuse_layers(m, [p[m] for p in per_layer], size, opts[m].get("gamma", 2.0))
        if not raw:
            fused = normalise("cam", fused.flatten(0, 1), size).unflatten(0, fused.shape[:2])
        out[m] = fused if several else fused[:, 0]
    return {m: out[m] for m in methods}
