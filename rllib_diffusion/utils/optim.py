"""Small optimizer helpers shared by learners (public torch API only)."""

from __future__ import annotations

import torch


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate (a per-step schedule's value)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
