"""Occlusion by incremental inference: recompute each layer only where the patch can reach.

Nakandala, Kumar & Papakonstantinou, "Incremental and Approximate Inference for Faster
Occlusion-based Deep CNN Explanations" (SIGMOD 2019), the exact part ("incremental inference"):
an occluded copy differs from the clean image only inside the patch, so the output of a layer
differs only inside the patch's projective field, the *dirty* rectangle. Per axis, a layer with
kernel k, stride s, padding p and dilation d maps a dirty interval [a, b] of its input to

    [max(0, ⌈(a + p − d(k − 1)) / s⌉), min(H_out − 1, ⌊(b + p) / s⌋)]

an elementwise layer keeps it, and a sum, product or channel concatenation of several maps takes
the union. Each layer is recomputed on its dirty rectangle only, from an input window whose halo
(and border padding) comes from the clean image's activations, computed once; every position
outside the rectangle keeps its clean value, so the result is exact (up to float summation
order), not approximate.

Conventions (where the paper leaves a choice):

- One rectangle size per layer for every copy (the largest dirty extent over all patch
  positions), shifted inward at the border rather than clipped, so that the copies' crops stack
  into one tensor (N,C,rh,rw); positions of a rectangle outside the dirty interval are
  recomputed to their clean values.
- From the first layer that mixes all positions (global pooling, flatten, linear, any operation
  not listed below), or where a rectangle would cover more than `FULL_FRACTION` of its map, the
  copies are materialised as whole maps (clean activation with the dirty crop pasted in) and
  the ordinary layers run on the full tensors.
- Crops are held channels last (oneDNN convolves them faster on CPU); whole maps are contiguous,
  so the layers after the switch run the very kernels of a full forward pass. The difference to
  full forward passes is float summation order only (about 1e-6 on ResNet-18's maps).
- Recomputed on crops: `nn.Conv2d` (zero padding), `nn.MaxPool2d`, `nn.AvgPool2d` (counting the
  padding, or no padding; no ceil mode), batch norm in eval mode with running statistics,
  elementwise activations and dropout in eval mode, +, −, ×, ÷ with constants that do not vary
  over space or between two maps, and concatenation along channels.
- A model torch.fx cannot trace, one with hooks (they would not run on the crops), an in-place
  method call, a clean pass through the traced graph that does not reproduce the model's own
  logits, a baseline that varies over space, or a plan with no convolution or pooling left on
  crops: `prepare` returns None and the caller runs one full forward pass per occluded copy.

Tensors: the clean batch holds B images; the copies are (position, image) pairs, position-major:
copy n is image n mod B occluded at the n // B-th position of the chunk.
"""

from __future__ import annotations

import copy
import operator
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

FULL_FRACTION = 0.8  # a rectangle covering more of its map than this: run the layers on whole maps
_EMPTY = 10**9  # an empty dirty interval is [_EMPTY, −_EMPTY]

_POINTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)
_POINTWISE_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.leaky_relu,
    F.elu,
    F.gelu,
    F.silu,
    F.mish,
    F.hardswish,
    F.hardsigmoid,
    F.hardtanh,
    F.sigmoid,
    F.tanh,
    F.dropout,
    torch.relu,
    torch.sigmoid,
    torch.tanh,
}
_POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "float", "clone"}
_BINARY = {operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub, torch.mul, torch.div}
_BINARY_METHODS = {"add", "sub", "mul", "div"}
_INPLACE_FUNCTIONS = {torch.relu_: torch.relu, F.relu_: F.relu}


@dataclass
class _Step:
    """How one graph node runs: `kind` is "const" (independent of the input: computed once),
    "input", "window" (conv / pool on a crop), "pointwise" (acts per position on one crop),
    "merge" (several crops combined per position), or "full" (ordinary op on whole maps)."""

    node: fx.Node
    kind: str
    run: object = None  # callable(*args, **kwargs) running the node as the model does
    sources: list = field(default_factory=list)  # the input-dependent nodes it reads
    # window ops: kernel, stride, padding, dilation per axis; the op on a window without padding
    geometry: tuple | None = None
    on_window: object = None
    fill: float = 0.0
    # crops: rectangle size (rh, rw), per-position starts (P,2), clean map shape (C,H,W)
    size: tuple[int, int] | None = None
    starts: torch.Tensor | None = None
    shape: tuple[int, int, int] | None = None
    aligned: frozenset = frozenset()  # merge sources whose crops already sit on this node's rectangle


def _has_hooks(model: nn.Module) -> bool:
    from torch.nn.modules import module as m

    if m._global_forward_hooks or m._global_forward_pre_hooks:
        return True
    return any(mod._forward_hooks or mod._forward_pre_hooks for mod in model.modules())


def _not_inplace(module: nn.Module) -> nn.Module:
    if getattr(module, "inplace", False):
        module = copy.copy(module)
        module.inplace = False
    return module


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _window_op(module: nn.Module, out_shape):
    """(geometry, op on an unpadded window, padding fill) for a conv / pool module, or None."""
    t = type(module)
    if t is nn.Conv2d:
        if module.padding_mode != "zeros":
            return None
        k, s, d = _pair(module.kernel_size), _pair(module.stride), _pair(module.dilation)
        if isinstance(module.padding, str):
            if module.padding != "valid":
                return None  # "same": possibly asymmetric padding, run on whole maps
            p = (0, 0)
        else:
            p = _pair(module.padding)
        w, b, g = module.weight, module.bias, module.groups
        return (k, s, p, d), (lambda z: F.conv2d(z, w, b, s, 0, d, g)), 0.0
    if t is nn.MaxPool2d:
        if module.ceil_mode or module.return_indices:
            return None
        k, p, d = _pair(module.kernel_size), _pair(module.padding), _pair(module.dilation)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        return (k, s, p, d), (lambda z: F.max_pool2d(z, k, s, 0, d)), float("-inf")
    if t is nn.AvgPool2d:
        k = _pair(module.kernel_size)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        p = _pair(module.padding)
        if module.ceil_mode or module.divisor_override is not None or (any(p) and not module.count_include_pad):
            return None
        return (k, s, p, (1, 1)), (lambda z: F.avg_pool2d(z, k, s, 0)), 0.0
    return None


def _out_interval(lo, hi, geometry, axis: int, size_out: int):
    """Dirty interval of a window op's output from its input's (both (P,) long tensors)."""
    k, s, p, d = (g[axis] for g in geometry)
    new_lo = (-((-(lo + p - d * (k - 1))) // s)).clamp(min=0)
    new_hi = torch.div(hi + p, s, rounding_mode="floor").clamp(max=size_out - 1)
    empty = lo > hi
    return torch.where(empty, _EMPTY, new_lo), torch.where(empty, -_EMPTY, new_hi)


def _spatial_constant(value) -> bool:
    """A constant operand that is the same at every position of a (B,C,H,W) map."""
    if isinstance(value, (int, float, bool)):
        return True
    if isinstance(value, torch.Tensor):
        shape = (1, 1, 1, 1, *value.shape)[-4:]
        return value.dim() <= 4 and shape[0] == 1 and shape[2] == 1 and shape[3] == 1
    return False


class Incremental:
    """A traced model planned for one input size and one set of patch positions.

    Args:
        model: the classifier, in eval mode.
        graph: its torch.fx graph.
        x: (B,3,H,W) the clean images.
        boxes: (P,4) long tensor of patches, (top, left, bottom, right) exclusive, cut at the border.
        window: (wh, ww), the uncut patch size.
        baseline: the value patched in, a number or a tensor constant over space.
    """

    def __init__(self, model, graph, x, boxes, window, baseline):
        self.model, self.graph, self.x, self.boxes, self.window = model, graph, x, boxes, window
        self.baseline = baseline
        self.steps: dict[fx.Node, _Step] = {}
        self.clean: dict[fx.Node, object] = {}
        self.output: fx.Node | None = None
        self.bytes_per_copy = 0  # activation bytes one occluded copy holds in a pass (set by `plan`)
        self.tables: dict = {}  # (node, padding, fill) → clean map padded, channels last, (B·Hp·Wp, C)

    # -- analysis ------------------------------------------------------------------------------

    def analyse(self) -> bool:
        """Classify every node and run the clean pass; False when the model cannot be analysed."""
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            return False
        dependent: set[fx.Node] = set()
        for node in self.graph.nodes:
            if node.op == "output":
                if not isinstance(node.args[0], fx.Node):
                    return False
                self.output = node.args[0]
                continue
            step = self._classify(node, dependent)
            if step is None:
                return False
            self.steps[node] = step
            if step.kind != "const":
                dependent.add(node)
            self.clean[node] = self._run_clean(step)
        return True

    def _classify(self, node: fx.Node, dependent: set) -> _Step | None:
        sources = [n for n in node.all_input_nodes if n in dependent]
        if node.op == "placeholder":
            return _Step(node, "input", run=lambda: self.x)
        if node.op == "get_attr":
            target = node.target
            return _Step(node, "const", run=lambda: _attr(self.model, target))
        if node.op == "call_module":
            module = _not_inplace(self.model.get_submodule(node.target))
            run = module
        elif node.op == "call_function":
            fn = _INPLACE_FUNCTIONS.get(node.target, node.target)
            if node.kwargs.get("inplace"):
                node.kwargs = {**node.kwargs, "inplace": False}
            run = fn
        elif node.op == "call_method":
            if node.target.endswith("_"):
                return None  # an in-place method: it could change the clean activations we keep
            name = node.target
            run = lambda obj, *a, **k: getattr(obj, name)(*a, **k)  # noqa: E731
        else:
            return None
        if not sources:
            return _Step(node, "const", run=run)
        return _Step(node, self._kind(node, run, sources), run=run, sources=sources)

    def _kind(self, node: fx.Node, run, sources) -> str:
        """The kind of an input-dependent node, before its geometry is known."""
        first = node.args[0] if node.args else None
        others = [a for a in (*node.args[1:], *node.kwargs.values())]
        if node.op == "call_module":
            if _window_op(run, None) is not None:
                return "window"
            if type(run) is nn.BatchNorm2d:
                return "pointwise" if not run.training and run.running_mean is not None else "full"
            if type(run) in _POINTWISE_MODULES:
                return "pointwise" if not run.training else "full"
            return "full"
        one_source = len(sources) == 1 and first is sources[0]
        if node.op == "call_function":
            if node.target in _POINTWISE_FUNCTIONS or node.target in _INPLACE_FUNCTIONS:
                if node.target is F.dropout and node.kwargs.get(
                    "training", node.args[2] if len(node.args) > 2 else True
                ):
                    return "full"  # F.dropout drops by default
                if one_source and not any(isinstance(a, fx.Node) for a in others):
                    return "pointwise"
                return "full"
            if node.target in _BINARY:
                return self._binary_kind(node, sources)
            if node.target is torch.cat:
                dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
                items = node.args[0]
                if dim in (1, -3) and isinstance(items, (list, tuple)) and all(i in sources for i in items):
                    return "merge"
            return "full"
        if node.op == "call_method":
            if node.target in _POINTWISE_METHODS and one_source and not others:
                return "pointwise"
            if node.target in _BINARY_METHODS:
                return self._binary_kind(node, sources)
        return "full"

    def _binary_kind(self, node: fx.Node, sources) -> str:
        if node.kwargs or len(node.args) != 2:
            return "full"
        a, b = node.args
        if a in sources and b in sources:
            return "merge"
        const = b if a in sources else a
        if isinstance(const, fx.Node):
            return "pointwise"  # its value is checked by `_pointwise_ok`
        return "pointwise" if _spatial_constant(const) else "full"

    def _run_clean(self, step: _Step):
        node = step.node
        if step.kind == "input":
            return self.x
        if node.op == "get_attr":
            return step.run()
        args = fx.node.map_arg(node.args, lambda n: self.clean[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: self.clean[n])
        return step.run(*args, **kwargs)

    def plan(self) -> None:
        """Dirty intervals per position, rectangle sizes and starts; demotes nodes to "full"."""
        intervals: dict[fx.Node, tuple] = {}
        b = self.x.shape[0]
        for node, step in self.steps.items():
            if step.kind in ("const", "full"):
                continue
            value = self.clean[node]
            if not (isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[0] == b):
                step.kind = "full"
                continue
            step.shape = tuple(value.shape[1:])
            if step.kind == "input":
                rows = (self.boxes[:, 0], self.boxes[:, 2] - 1)
                cols = (self.boxes[:, 1], self.boxes[:, 3] - 1)
                self._place(step, rows, cols, self.window)
                intervals[node] = (rows, cols)
                continue
            if any(self.steps[s].kind == "full" for s in step.sources):
                step.kind = "full"
                continue
            ins = [self.clean[s] for s in step.sources]
            if any(v.shape[0] != b or v.shape[-2:] != value.shape[-2:] for v in ins) and step.kind != "window":
                step.kind = "full"
                continue
            if step.kind == "pointwise" and not self._pointwise_ok(step):
                step.kind = "full"
                continue
            if step.kind == "window":
                step.geometry, step.on_window, step.fill = _window_op(step.run, value.shape)
                (rlo, rhi), (clo, chi) = intervals[step.sources[0]]
                h_out, w_out = value.shape[-2:]
                if not self._window_shape_ok(step, ins[0].shape[-2:], (h_out, w_out)):
                    step.kind = "full"
                    continue
                rows = _out_interval(rlo, rhi, step.geometry, 0, h_out)
                cols = _out_interval(clo, chi, step.geometry, 1, w_out)
            else:
                parts = [intervals[s] for s in step.sources]
                rows = (torch.stack([p[0][0] for p in parts]).amin(0), torch.stack([p[0][1] for p in parts]).amax(0))
                cols = (torch.stack([p[1][0] for p in parts]).amin(0), torch.stack([p[1][1] for p in parts]).amax(0))
            extent = (int((rows[1] - rows[0] + 1).max().clamp(min=1)), int((cols[1] - cols[0] + 1).max().clamp(min=1)))
            if extent[0] * extent[1] > FULL_FRACTION * step.shape[1] * step.shape[2]:
                step.kind = "full"
                continue
            self._place(step, rows, cols, extent)
            intervals[node] = (rows, cols)
            if step.kind == "merge":
                step.aligned = frozenset(
                    s
                    for s in step.sources
                    if self.steps[s].size == step.size and torch.equal(self.steps[s].starts, step.starts)
                )
        self.bytes_per_copy = self._bytes_per_copy()
        self._forget()

    def _forget(self) -> None:
        """Drop the clean activations no pass reads: keep the constants, the maps halos are taken
        from and those materialised as whole maps."""
        keep = {n for n, s in self.steps.items() if s.kind in ("const", "input")}
        for step in self.steps.values():
            if step.kind in ("window", "merge"):
                keep.update(step.sources)
            elif step.kind == "full":
                keep.update(s for s in step.sources if self.steps[s].kind != "full")
        if self.steps[self.output].kind != "full":
            keep.add(self.output)
        for node in list(self.clean):
            if node not in keep:
                del self.clean[node]

    def _pointwise_ok(self, step: _Step) -> bool:
        """A pointwise node whose constant operands do not vary over space and keep B,H,W."""
        node = step.node
        for a in (*node.args, *node.kwargs.values()):
            if isinstance(a, fx.Node) and a not in step.sources and not _spatial_constant(self.clean[a]):
                return False
        return True

    @staticmethod
    def _window_shape_ok(step: _Step, size_in, size_out) -> bool:
        k, s, p, d = step.geometry
        for axis in range(2):
            expect = (size_in[axis] + 2 * p[axis] - d[axis] * (k[axis] - 1) - 1) // s[axis] + 1
            if expect != size_out[axis]:
                return False
        return True

    @staticmethod
    def _place(step: _Step, rows, cols, extent) -> None:
        _, h, w = step.shape
        step.size = (min(extent[0], h), min(extent[1], w))
        start_r = rows[0].clamp(max=h - step.size[0]).clamp(min=0)
        start_c = cols[0].clamp(max=w - step.size[1]).clamp(min=0)
        step.starts = torch.stack([start_r, start_c], 1)

    def _bytes_per_copy(self) -> int:
        """Activation bytes one occluded copy holds in a pass: its crops and its whole maps."""
        total = 0
        b = self.x.shape[0]
        for node, step in self.steps.items():
            value = self.clean[node]
            if step.kind in ("input", "window", "pointwise", "merge"):
                total += step.shape[0] * step.size[0] * step.size[1] * value.element_size()
            elif step.kind == "full" and isinstance(value, torch.Tensor):
                total += value.numel() // max(1, b) * value.element_size()
        return max(1, total)

    # -- execution -----------------------------------------------------------------------------

    def logits(self, positions: torch.Tensor, timings: dict | None = None) -> torch.Tensor:
        """Logits (len(positions)·B, C) of the copies occluded at `positions` (indices into boxes).
        With `timings`, adds each node's seconds to timings[(name, kind)] (for profiling)."""
        return _Chunk(self, positions).run(timings)


class _Chunk:
    """One pass: every image occluded at each of `positions`."""

    def __init__(self, inc: Incremental, positions: torch.Tensor):
        self.inc = inc
        device = inc.x.device
        b = inc.x.shape[0]
        self.pos = positions.to(device).repeat_interleave(b)
        self.img = torch.arange(b, device=device).repeat(len(positions))
        self.n = len(self.pos)
        self.values: dict[fx.Node, object] = {}  # crops (N,C,rh,rw) or whole tensors
        self.whole: dict[fx.Node, torch.Tensor] = {}  # crops materialised as whole maps
        self.starts: dict[fx.Node, torch.Tensor] = {}

    def run(self, timings: dict | None = None) -> torch.Tensor:
        for node, step in self.inc.steps.items():
            if step.kind == "const":
                continue
            start = time.perf_counter()
            self.values[node] = getattr(self, "_" + step.kind)(step)
            if timings is not None:
                key = (node.name, step.kind)
                timings[key] = timings.get(key, 0.0) + time.perf_counter() - start
        return self._full_value(self.inc.output)

    # crops --------------------------------------------------------------------------------------

    def _starts(self, step: _Step) -> torch.Tensor:
        if step.node not in self.starts:
            self.starts[step.node] = step.starts.to(self.pos.device)[self.pos]
        return self.starts[step.node]

    def _input(self, step: _Step) -> torch.Tensor:
        inc = self.inc
        starts = self._starts(step)
        crop = self._gather(step.node, starts, (1, 1), (0, 0), step.size, 0.0, paste=False)
        box = inc.boxes.to(starts.device)[self.pos]
        r = starts[:, 0, None] + torch.arange(step.size[0], device=starts.device)
        c = starts[:, 1, None] + torch.arange(step.size[1], device=starts.device)
        inside_r = (r >= box[:, 0, None]) & (r < box[:, 2, None])
        inside_c = (c >= box[:, 1, None]) & (c < box[:, 3, None])
        mask = (inside_r[:, :, None] & inside_c[:, None, :])[:, None]
        baseline = torch.as_tensor(inc.baseline, dtype=crop.dtype, device=crop.device)
        return torch.where(mask, baseline, crop)

    def _window(self, step: _Step) -> torch.Tensor:
        _, s, p, d = step.geometry
        k = step.geometry[0]
        span = tuple((step.size[a] - 1) * s[a] + d[a] * (k[a] - 1) + 1 for a in range(2))
        window = self._gather(step.sources[0], self._starts(step), s, p, span, step.fill)
        return step.on_window(window)

    def _pointwise(self, step: _Step):
        node = step.node
        args = fx.node.map_arg(node.args, self._arg)
        kwargs = fx.node.map_arg(node.kwargs, self._arg)
        return step.run(*args, **kwargs)

    def _merge(self, step: _Step):
        starts = self._starts(step)
        aligned = {}
        for s in step.sources:
            if s in step.aligned:
                aligned[s] = self.values[s]
            else:
                aligned[s] = self._gather(s, starts, (1, 1), (0, 0), step.size, 0.0)
        node = step.node
        args = fx.node.map_arg(node.args, lambda n: aligned[n] if n in aligned else self.inc.clean[n])
        kwargs = fx.node.map_arg(node.kwargs, lambda n: aligned[n] if n in aligned else self.inc.clean[n])
        return step.run(*args, **kwargs)

    def _arg(self, n: fx.Node):
        return self.values[n] if n in self.values else self.inc.clean[n]

    def _gather(self, source: fx.Node, starts, stride, pad, span, fill, paste: bool = True) -> torch.Tensor:
        """(N,C,span) windows of `source`'s map for every copy, channels last: the clean map padded
        with `fill`, the copy's dirty crop pasted in; window n starts at starts[n]·stride − pad."""
        src = self.inc.steps[source]
        clean = self.inc.clean[source]
        c = clean.shape[1]
        key = (source, pad, fill)
        tables = self.inc.tables
        if key not in tables:
            padded = F.pad(clean, (pad[1], pad[1], pad[0], pad[0]), value=fill) if any(pad) else clean
            tables[key] = (padded.permute(0, 2, 3, 1).contiguous().view(-1, c), padded.shape[-2:])
        table, (hp, wp) = tables[key]
        device = starts.device
        r = starts[:, 0, None] * stride[0] - pad[0] + torch.arange(span[0], device=device)  # (N,Lh) map rows
        col = starts[:, 1, None] * stride[1] - pad[1] + torch.arange(span[1], device=device)
        index = ((self.img[:, None] * hp + r + pad[0])[:, :, None] * wp + (col + pad[1])[:, None, :]).reshape(-1)
        out = table.index_select(0, index)
        if not paste:
            return out.view(self.n, span[0], span[1], c).permute(0, 3, 1, 2)
        crop = self.values[source]
        src_starts = self._starts(src)
        rr = r - src_starts[:, 0, None]
        cc = col - src_starts[:, 1, None]
        rh, rw = src.size
        keep = ((rr >= 0) & (rr < rh))[:, :, None] & ((cc >= 0) & (cc < rw))[:, None, :]
        dst = keep.reshape(-1).nonzero()[:, 0]
        n = torch.arange(self.n, device=device)
        from_crop = ((n[:, None, None] * rh + rr[:, :, None]) * rw + cc[:, None, :]).reshape(-1)[dst]
        flat = crop.permute(0, 2, 3, 1).reshape(-1, c)
        out.index_copy_(0, dst, flat.index_select(0, from_crop))
        return out.view(self.n, span[0], span[1], c).permute(0, 3, 1, 2)

    # whole maps ---------------------------------------------------------------------------------

    def _full(self, step: _Step):
        """The node's op on whole maps, as the model runs it (contiguous NCHW tensors: the same
        kernels as a full forward pass, and a `view` works)."""
        node = step.node
        args = fx.node.map_arg(node.args, self._full_value)
        kwargs = fx.node.map_arg(node.kwargs, self._full_value)
        return step.run(*args, **kwargs)

    def _full_value(self, n: fx.Node):
        step = self.inc.steps[n]
        if step.kind == "const":
            return self.inc.clean[n]
        if step.kind == "full":
            return self.values[n]
        if n not in self.whole:
            self.whole[n] = self._materialise(step)
        return self.whole[n]

    def _materialise(self, step: _Step) -> torch.Tensor:
        """(N,C,H,W) whole maps, contiguous: the clean map of each copy's image with its dirty
        crop pasted in."""
        _, h, w = step.shape
        if step.size != (h, w):
            return self._gather(
                step.node, torch.zeros_like(self._starts(step)), (1, 1), (0, 0), (h, w), 0.0
            ).contiguous()
        return self.values[step.node].contiguous()


def _attr(model: nn.Module, target: str):
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def prepare(model: nn.Module, x: torch.Tensor, boxes, window, baseline, clean_logits) -> Incremental | None:
    """An `Incremental` for `model` on the clean images `x`, or None when it cannot be analysed
    (see the module docstring); `clean_logits` (B,C) are the model's own, to check the trace."""
    if _has_hooks(model) or not _spatial_constant(baseline):
        return None
    # Tracing runs the model's own Python forward on proxies: whatever it stores on a module
    # (`self.last = x`, counters) is put back as it was.
    saved = [(m, dict(m.__dict__)) for m in model.modules()]
    try:
        graph = fx.Tracer().trace(model)
    except Exception:  # noqa: BLE001  (any failure to trace: user code may raise anything)
        return None
    finally:
        for m, attributes in saved:
            m.__dict__.clear()
            m.__dict__.update(attributes)
    boxes = torch.as_tensor(boxes, dtype=torch.long)
    inc = Incremental(model, graph, x, boxes, window, baseline)
    with torch.no_grad():
        try:
            ok = inc.analyse()
        except Exception:  # noqa: BLE001  (a traced graph that does not run as the model does)
            return None
    out = inc.clean.get(inc.output) if ok else None
    if not (isinstance(out, torch.Tensor) and out.shape == clean_logits.shape) or inc.steps[inc.output].kind == "const":
        return None
    if not torch.allclose(out, clean_logits, rtol=1e-4, atol=1e-5):
        return None
    inc.plan()
    if not any(step.kind == "window" for step in inc.steps.values()):
        return None  # nothing is recomputed on crops: the full forward passes are cheaper
    return inc
