"""Flow matching on the linear (rectified) path and its Euler sampler.

Shape glossary:
    B   batch size
    S   number of Euler steps
    Ta  action horizon (chunk length)
    Da  action dimension
    Dc  conditioning dimension

Time convention: ``t ∈ [0, 1]`` is a float tensor ``(B,)``; ``t = 0`` is noise and
``t = 1`` is data. ``x_t = (1 − t)·x_noise + t·x_data`` moves with constant velocity
``x_data − x_noise``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rllib_diffusion.diffusion.losses import reduce_per_sample

__all__ = ["VelocityFn", "VelocityNet", "euler_sample", "flow_matching_loss", "linear_path"]

#: ``velocity_fn(x (B, Ta, Da), t (B,) float) -> v̂ (B, Ta, Da)``; conditioning bound by the caller.
VelocityFn = Callable[[Tensor, Tensor], Tensor]
#: ``net(x_t (B, Ta, Da), t (B,) float, cond (B, Dc)) -> v̂ (B, Ta, Da)``.
VelocityNet = Callable[[Tensor, Tensor, Tensor], Tensor]


def _bcast(t: Tensor, x: Tensor) -> Tensor:
    return t.to(x.dtype).reshape(t.shape[0], *([1] * (x.dim() - 1)))


def linear_path(x_noise: Tensor, x_data: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Point and target velocity on the straight path from noise to data.

    Args:
        x_noise: ``(B, Ta, Da)`` noise sample (t = 0).
        x_data: ``(B, Ta, Da)`` data sample (t = 1).
        t: ``(B,)`` float times in [0, 1].

    Returns:
        ``(x_t, v)``: ``x_t = (1−t)·x_noise + t·x_data`` and ``v = x_data − x_noise``,
        both ``(B, Ta, Da)``.
    """
    tb = _bcast(t, x_data)
    return (1 - tb) * x_noise + tb * x_data, x_data - x_noise


def flow_matching_loss(
    net: VelocityNet,
    x_data: Tensor,
    cond: Tensor | None,
    *,
    t: Tensor | None = None,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    weights: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Conditional flow-matching MSE ``‖v̂(x_t, t, cond) − (x_data − x_noise)‖²``.

    Args:
        net: velocity network ``net(x_t, t, cond)``.
        x_data: ``(B, Ta, Da)`` dataset actions.
        cond: ``(B, Dc)`` conditioning, or None.
        t: ``(B,)`` float times; ``U[0, 1)`` if None.
        noise: ``(B, Ta, Da)`` noise; ``N(0, I)`` if None.
        generator: RNG for ``t`` and ``noise``.
        weights: ``(B,)`` optional per-sample weights.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B,)``).

    Returns:
        scalar loss, or ``(B,)`` per-sample losses for ``"none"``.
    """
    batch = x_data.shape[0]
    if t is None:
        t = torch.rand((batch,), generator=generator, device=x_data.device, dtype=x_data.dtype)
    if noise is None:
        noise = torch.randn(
            x_data.shape, generator=generator, device=x_data.device, dtype=x_data.dtype
        )
    x_t, target = linear_path(noise, x_data, t)
    per_sample = (net(x_t, t, cond) - target).pow(2).flatten(1).mean(dim=1)
    return reduce_per_sample(per_sample, weights, reduction)


def euler_sample(
    velocity_fn: VelocityFn,
    x_init: Tensor,
    num_steps: int,
    *,
    clip: float | None = None,
    return_path: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Integrate ``dx/dt = v(x, t)`` from ``t = 0`` to ``t = 1`` with S Euler steps.

    Differentiable end to end (no ``no_grad`` inside), so a Q-loss can backpropagate
    through the integration.

    Args:
        velocity_fn: ``(x (B, Ta, Da), t (B,) float) -> v (B, Ta, Da)``.
        x_init: ``(B, Ta, Da)`` noise at t = 0.
        num_steps: S >= 1.
        clip: clamp of the returned final sample to ``±clip`` (None: no clamp).
        return_path: also return the unclamped path.

    Returns:
        ``(B, Ta, Da)`` final sample; with ``return_path`` a tuple
        ``(final, path)`` where ``path`` is ``(B, S+1, Ta, Da)`` with ``path[:, 0] = x_init``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = 1.0 / num_steps
    x = x_init
    path = [x]
    for i in range(num_steps):
        t = torch.full((x.shape[0],), i * dt, device=x.device, dtype=x.dtype)
        x = x + dt * velocity_fn(x, t)
        path.append(x)
    final = x if clip is None else x.clamp(-clip, clip)
    if return_path:
        return final, torch.stack(path, dim=1)
    return final
