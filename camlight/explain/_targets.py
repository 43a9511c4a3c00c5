"""Targets and images of an `explain` call, checked: (B,T) target tables from every spec a user
may give, and the images' shape and type."""

from __future__ import annotations

import torch


def top_k(spec) -> int | None:
    """k for a "topk" spec ("top3": the 3 highest-scoring classes of each image), else None."""
    if isinstance(spec, str) and spec.startswith("top") and spec[3:].isdigit() and int(spec[3:]) >= 1:
        return int(spec[3:])
    return None


def target_columns(spec) -> int | None:
    """T for a spec of several targets per image ((B,T) or "topk"), None for one target per image."""
    k = top_k(spec)
    if k is not None:
        return k
    if spec is None or isinstance(spec, (int, str)):
        return None
    try:
        t = torch.as_tensor(spec)  # a tensor, or a nested list or array of class indices
    except (TypeError, ValueError, RuntimeError):
        return None  # not a table: `target_table` says what is wrong with it
    return t.shape[1] if t.dim() == 2 else None


def target_table(spec, logits: torch.Tensor) -> torch.Tensor:
    """(B,T) target classes from a spec: None (the predicted class), an int (every image), a
    LongTensor (B,) or (B,T), or "topk" (each image's k highest-scoring classes, best first)."""
    if logits.dim() != 2:
        raise ValueError(f"the model must return logits (B,C); it returned shape {tuple(logits.shape)}")
    batch, classes = logits.shape
    if spec is None:
        return logits.argmax(dim=1)[:, None]
    if isinstance(spec, bool):
        raise TypeError("targets must be None, an int, a LongTensor (B,) or (B,T), or 'topk', not a bool")
    if isinstance(spec, str):
        k = top_k(spec)
        if k is None:
            raise ValueError(
                f"targets {spec!r}: give 'topk' (e.g. 'top3'), a neuron such as 'layer4:12', or class indices"
            )
        if k > classes:
            raise ValueError(f"targets {spec!r}: the model has only {classes} classes")
        return logits.topk(k, dim=1).indices
    if isinstance(spec, int):
        t = torch.full((batch, 1), spec, dtype=torch.long, device=logits.device)
    else:
        t = torch.as_tensor(spec, device=logits.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"targets must hold class indices (integers), got dtype {t.dtype}")
        if t.dim() > 2 or (t.dim() == 2 and (t.shape[1] < 1 or t.shape[0] != batch)):
            raise ValueError(
                f"targets of shape {tuple(t.shape)} for {batch} images; give (B,) or (B,T) class indices, one int, or None"
            )
        # A copy: the caller's tensor may be an inference tensor, which autograd cannot save.
        t = t.long().clone()
        if t.dim() == 0:
            t = t.expand(batch).clone()
        if t.dim() == 1:
            if t.numel() != batch:
                raise ValueError(f"got {t.numel()} targets for {batch} images; give one per image, one int, or None")
            t = t[:, None]
    bad = (t < 0) | (t >= classes)
    if bad.any():
        raise ValueError(
            f"target class {int(t[bad][0])} out of range: the model has {classes} classes (0..{classes - 1})"
        )
    return t


def check_images(images) -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B,3,H,W), got {type(images).__name__}")
    if images.dim() != 4:
        hint = "; add a batch dimension with images[None]" if images.dim() == 3 else ""
        raise ValueError(f"images must be (B,3,H,W), got shape {tuple(images.shape)}{hint}")
    if images.shape[1] != 3:
        raise ValueError(f"images must have 3 colour channels, got {images.shape[1]} in shape {tuple(images.shape)}")
    if not images.dtype.is_floating_point:
        raise TypeError(f"images must be float (normalised), got {images.dtype}")
