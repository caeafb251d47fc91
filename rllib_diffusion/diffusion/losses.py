"""Denoising (ε-prediction) loss for diffusion behaviour cloning and its weighted variants.

Shape glossary:
    B   batch size
    K   number of denoising steps
    Ta  action horizon (chunk length)
    Da  action dimension
    Dc  conditioning dimension
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rllib_diffusion.diffusion.schedules import NoiseSchedule

__all__ = ["EpsNet", "denoising_loss", "reduce_per_sample"]

#: ``net(x_t (B, Ta, Da), t (B,) long, cond (B, Dc)) -> ε̂ (B, Ta, Da)``.
EpsNet = Callable[[Tensor, Tensor, Tensor], Tensor]

_REDUCTIONS = ("mean", "sum", "none")


def reduce_per_sample(
    per_sample: Tensor, weights: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    """Apply optional per-sample weights ``(B,)`` and reduce a per-sample loss ``(B,)``.

    ``"mean"`` returns ``mean(w·l)`` (not normalised by ``sum(w)``, as in AWR-style
    losses), ``"sum"`` returns ``sum(w·l)``, ``"none"`` returns ``w·l`` of shape ``(B,)``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; allowed values: {list(_REDUCTIONS)}")
    if weights is not None:
        per_sample = per_sample * weights.reshape(-1).to(per_sample.dtype)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def denoising_loss(
    net: EpsNet,
    schedule: NoiseSchedule,
    x0: Tensor,
    cond: Tensor | None,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    weights: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """MSE between predicted and true noise, ``t ~ U{0..K−1}``, ``ε ~ N(0, I)``.

    Args:
        net: ε-prediction network ``net(x_t, t, cond)``.
        schedule: noise schedule with K steps.
        x0: ``(B, Ta, Da)`` clean (normalised) action chunks.
        cond: ``(B, Dc)`` conditioning (e.g. flattened observations), or None.
        t: ``(B,)`` long timesteps; sampled uniformly if None.
        noise: ``(B, Ta, Da)`` noise; sampled if None.
        generator: RNG for ``t`` and ``noise``.
        weights: ``(B,)`` optional per-sample weights (advantage-weighted variants).
        reduction: ``"mean"`` (scalar), ``"sum"`` (scalar) or ``"none"`` (``(B,)``).

    Returns:
        scalar loss, or ``(B,)`` per-sample losses (mean over Ta, Da) for ``"none"``.
    """
    batch = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.num_steps, (batch,), generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = schedule.q_sample(x0, t, noise)
    eps_hat = net(x_t, t, cond)
    per_sample = (eps_hat - noise).pow(2).flatten(1).mean(dim=1)
    return reduce_per_sample(per_sample, weights, reduction)
