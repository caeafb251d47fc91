"""Exponential moving average of network weights (used for sampling and target actions).

Shape glossary: parameters keep their own shapes; no batch dimension is involved
(B batch, K denoising steps, Ta action horizon, Da action dim, Dc conditioning dim
do not appear here).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ema_schedule_decay", "ema_step_", "ema_update_"]


@torch.no_grad()
def ema_update_(target: nn.Module, source: nn.Module, decay: float) -> None:
    """In place: ``θ_target ← decay·θ_target + (1 − decay)·θ_source``; buffers are copied.

    Buffers (e.g. running statistics, noise schedules) are not averaged because an
    average of them has no meaning; the target takes the source's current values.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must lie in [0, 1], got {decay}")
    t_params = list(target.parameters())
    s_params = list(source.parameters())
    t_bufs = list(target.buffers())
    s_bufs = list(source.buffers())
    if len(t_params) != len(s_params) or len(t_bufs) != len(s_bufs):
        raise ValueError("target and source modules have different structures")
    for tp, sp in zip(t_params, s_params):
        tp.lerp_(sp.detach().to(tp.dtype), 1.0 - decay)
    for tb, sb in zip(t_bufs, s_bufs):
        tb.copy_(sb)


def ema_schedule_decay(step: int, *, decay: float, start: int, every: int) -> float | None:
    """The one EMA schedule: what to do after gradient step ``step`` (counted from 1).

    Up to and including ``start`` the average tracks the weights exactly (decay 0: a
    copy, so averaging starts from the weights at ``start``, not from the
    initialisation); afterwards it is averaged with ``decay`` at every ``every``-th step
    and left alone in between.

    Returns:
        The decay to pass to :func:`ema_update_`, or None for no update at this step.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    if step <= start:
        return 0.0
    return decay if step % every == 0 else None


@torch.no_grad()
def ema_step_(
    target: nn.Module, source: nn.Module, step: int, *, decay: float, start: int, every: int
) -> bool:
    """Apply :func:`ema_schedule_decay` at ``step``; True if ``target`` changed."""
    d = ema_schedule_decay(step, decay=decay, start=start, every=every)
    if d is not None:
        ema_update_(target, source, d)
    return d is not None
