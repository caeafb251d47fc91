"""Small optimizer helpers shared by learners (public torch API only)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (a per-step schedule's value)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """True iff every element of every tensor is finite, with one host sync.

    ``Σ_i sum(t_i)`` is NaN or ±inf whenever any element is (NaN and inf propagate, and
    ``inf − inf = NaN``); a non-finite total of finite tensors (float overflow) falls
    back to the exact per-tensor check, so the answer is always exact.
    """
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return True
    if bool(torch.isfinite(torch.stack([t.sum() for t in tensors]).sum())):
        return True
    return all(bool(torch.isfinite(t).all()) for t in tensors)
