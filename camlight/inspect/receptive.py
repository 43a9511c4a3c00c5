"""Receptive fields computed from the network's graph, not guessed.

The model is traced once with `torch.fx`; from the input, every node's receptive field is
propagated with the arithmetic of Dumoulin & Visin (2016) and Araujo et al. (2019): per axis a
size r, a jump j (input pixels between neighbouring units) and a start s (the input coordinate of
unit 0's centre), so unit i covers input pixels [s + i·j − (r−1)/2, s + i·j + (r−1)/2].

- convolution and pooling (kernel k, stride t, padding p, dilation d; k' = d(k−1)+1):
  r ← r + (k'−1)·j,  s ← s + ((k'−1)/2 − p)·j,  j ← j·t;
- pointwise layers (BatchNorm in eval, activations, dropout, 1×1 channel mixing): unchanged;
- a sum, product or concatenation of branches (residual connections): the union of their fields;
- anything that mixes every position (global pooling, a linear layer on flattened maps, a
  squeeze-and-excitation gate): the whole input.

Reshapes, flattening and reductions (`view`, `reshape`, `flatten`, `mean`, `sum`, `amax`) are
taken, conservatively, to mix every position; layers whose effect on positions is not known
(upsampling, attention, anything else) are refused with the node's name rather than guessed.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn

POINTWISE_MODULES = (
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Mish,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)
POINTWISE_FUNCTIONS = {
    torch.relu,
    torch.sigmoid,
    torch.tanh,
    nn.functional.relu,
    nn.functional.relu6,
    nn.functional.silu,
    nn.functional.gelu,
    nn.functional.hardswish,
    nn.functional.sigmoid,
    nn.functional.dropout,
    operator.neg,
}
POINTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "float", "to", "type_as", "detach"}
MERGE_FUNCTIONS = {
    operator.add,
    operator.iadd,
    operator.mul,
    operator.imul,
    operator.sub,
    torch.add,
    torch.mul,
    torch.cat,
}
MERGE_METHODS = {"add", "add_", "mul", "mul_"}
GLOBAL_MODULES = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Linear, nn.Flatten)
GLOBAL_FUNCTIONS = {torch.flatten, nn.functional.adaptive_avg_pool2d, nn.functional.adaptive_max_pool2d}
GLOBAL_METHODS = {"mean", "amax", "sum", "flatten", "view", "reshape"}


@dataclass(frozen=True)
class ReceptiveField:
    """Per axis (y, x): `size` r, `jump` j and `start` s in input pixels; `whole`: every unit sees
    the whole input."""

    size: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    whole: bool = False

    def box(self, i: int, j: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1), end-exclusive, of the input pixels unit (i, j) sees, clipped to the
        image."""
        if self.whole:
            return 0, height, 0, width
        spans = []
        for index, r, step, s, limit in zip((i, j), self.size, self.jump, self.start, (height, width), strict=True):
            lo = math.ceil(s + index * step - (r - 1) / 2 - 1e-9)
            spans += [min(max(lo, 0), limit), min(max(lo + int(r), 0), limit)]
        return spans[0], spans[1], spans[2], spans[3]


_PIXEL = ReceptiveField((1.0, 1.0), (1.0, 1.0), (0.0, 0.0))
_WHOLE = ReceptiveField((math.inf, math.inf), (1.0, 1.0), (0.0, 0.0), whole=True)


def receptive_field(model: nn.Module, layer: str) -> ReceptiveField:
    """The receptive field of the units of module `layer`'s output (the output of its last call).

    Raises:
        ValueError: the model cannot be traced, `layer` is not in its graph, or a node on the way
            changes positions in a way this arithmetic does not cover (the message names it).
    """
    try:
        graph = fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - tracing fails in many ways; all mean "cannot compute"
        raise ValueError(f"cannot trace the model to compute receptive fields ({type(e).__name__}: {e})") from None
    fields: dict[fx.Node, ReceptiveField] = {}
    found = None
    for node in graph.graph.nodes:
        if node.op == "placeholder":
            fields[node] = _PIXEL if not fields else _WHOLE
            continue
        if node.op == "output":
            break
        if node.op == "get_attr":
            continue
        try:  # a node that cannot be computed matters only if the layer depends on it
            fields[node] = _through(graph, node, fields)
        except ValueError as e:
            fields[node] = e
        if _in_scope(node, layer):
            found = node
    if found is None:
        raise ValueError(f"layer {layer!r} is not called in the model's forward pass")
    if isinstance(fields[found], ValueError):
        raise fields[found]
    return fields[found]


def _in_scope(node: fx.Node, layer: str) -> bool:
    stack = node.meta.get("nn_module_stack") or {}
    paths = {key.split("@")[0] for key in stack}
    if node.op == "call_module":
        paths.add(str(node.target))
    return layer in paths


def _inputs(node: fx.Node, fields) -> list[ReceptiveField]:
    found = []

    def visit(a):
        if isinstance(a, fx.Node) and a in fields:
            found.append(fields[a])
        elif isinstance(a, (list, tuple)):
            for b in a:
                visit(b)

    for a in (*node.args, *node.kwargs.values()):
        visit(a)
    return found


def _through(graph: fx.GraphModule, node: fx.Node, fields) -> ReceptiveField:
    inputs = _inputs(node, fields)
    for f in inputs:
        if isinstance(f, ValueError):  # an input that could not be computed
            raise f
    if not inputs:  # a constant
        return _PIXEL
    if any(f.whole for f in inputs):
        return _WHOLE
    if node.op == "call_module":
        module = graph.get_submodule(str(node.target))
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            return _window(inputs[0], module, node)
        if isinstance(module, POINTWISE_MODULES):
            return inputs[0]
        if isinstance(module, GLOBAL_MODULES):
            return _WHOLE
    elif node.op == "call_function":
        if node.target in POINTWISE_FUNCTIONS:
            return inputs[0]
        if node.target in MERGE_FUNCTIONS:
            return _union(inputs, node)
        if node.target in GLOBAL_FUNCTIONS:
            return _WHOLE
    elif node.op == "call_method":
        if node.target in POINTWISE_METHODS:
            return inputs[0]
        if node.target in MERGE_METHODS:
            return _union(inputs, node)
        if node.target in GLOBAL_METHODS:
            return _WHOLE
    raise ValueError(f"cannot compute the receptive field through {node.op} {node.target} ({node.name})")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _window(rf: ReceptiveField, module: nn.Module, node: fx.Node) -> ReceptiveField:
    kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
    dilation = _pair(getattr(module, "dilation", 1))
    padding = module.padding
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:  # "same" (stride 1): centred, as much on each side
            padding = tuple((d * (k - 1)) / 2 for k, d in zip(kernel, dilation, strict=True))
    else:
        padding = _pair(padding)
    size, jump, start = [], [], []
    for axis in range(2):
        k = dilation[axis] * (kernel[axis] - 1) + 1
        size.append(rf.size[axis] + (k - 1) * rf.jump[axis])
        start.append(rf.start[axis] + ((k - 1) / 2 - padding[axis]) * rf.jump[axis])
        jump.append(rf.jump[axis] * stride[axis])
    return ReceptiveField(tuple(size), tuple(jump), tuple(start))


def _union(fields: list[ReceptiveField], node: fx.Node) -> ReceptiveField:
    if len({f.jump for f in fields}) > 1:
        raise ValueError(f"cannot compute the receptive field through {node.name}: its inputs have different strides")
    size, start = [], []
    for axis in range(2):
        lo = min(f.start[axis] - (f.size[axis] - 1) / 2 for f in fields)
        hi = max(f.start[axis] + (f.size[axis] - 1) / 2 for f in fields)
        size.append(hi - lo + 1)
        start.append((lo + hi) / 2)
    return ReceptiveField(tuple(size), fields[0].jump, tuple(start))
