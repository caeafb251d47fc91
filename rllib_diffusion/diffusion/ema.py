"""Exponential moving average of network weights (used for sampling and target actions).

Shape glossary: parameters keep their own shapes; no batch dimension is involved
(B batch, K denoising steps, Ta action horizon, Da action dim, Dc conditioning dim
do not appear here).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

__all__ = ["EMA", "ema_update_"]


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


class EMA:
    """An averaged copy of a module with a start step and an update period.

    ``update(step)`` does nothing unless ``step % update_every == 0``. Before
    ``start_step`` the target is a plain copy of the source (the average starts from
    the weights at ``start_step``, not from the initialisation); from ``start_step``
    on it is averaged with ``decay``.

    Attributes:
        target: the averaged module (``requires_grad=False``); use it for inference.
        num_updates: number of calls that changed the target.
        last_step: the last step that changed the target (-1 if none).
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.995,
        *,
        start_step: int = 0,
        update_every: int = 1,
    ) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.source = model
        self.target = copy.deepcopy(model).requires_grad_(False)
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.update_every = int(update_every)
        self.num_updates = 0
        self.last_step = -1
        self._calls = 0

    def update(self, step: int | None = None) -> bool:
        """Update the target at training step ``step`` (default: an internal call counter).

        Returns:
            True if the target changed.
        """
        if step is None:
            step = self._calls
        self._calls += 1
        if step % self.update_every != 0:
            return False
        ema_update_(self.target, self.source, 0.0 if step < self.start_step else self.decay)
        self.num_updates += 1
        self.last_step = int(step)
        return True

    def state_dict(self) -> dict[str, Any]:
        """Counters and settings (the target's weights are saved with ``target.state_dict()``)."""
        return {
            "decay": self.decay,
            "start_step": self.start_step,
            "update_every": self.update_every,
            "num_updates": self.num_updates,
            "last_step": self.last_step,
            "calls": self._calls,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""
        self.decay = float(state["decay"])
        self.start_step = int(state["start_step"])
        self.update_every = int(state["update_every"])
        self.num_updates = int(state["num_updates"])
        self.last_step = int(state["last_step"])
        self._calls = int(state.get("calls", 0))
