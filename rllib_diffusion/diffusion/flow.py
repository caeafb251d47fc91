"""Flow matching on the linear (rectified) path, its Euler sampler, and the noisy Euler
chain that ReinFlow fine-tunes.

Shape glossary:
    B   batch size
    S   number of Euler steps (K for a fine-tuned chain)
    Ta  action horizon (chunk length)
    Da  action dimension
    Dc  conditioning dimension

Time convention: ``t ∈ [0, 1]`` is a float tensor ``(B,)``; ``t = 0`` is noise and
``t = 1`` is data. ``x_t = (1 − t)·x_noise + t·x_data`` moves with constant velocity
``x_data − x_noise``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from rllib_diffusion.diffusion.logprob import gaussian_entropy, transition_logprob
from rllib_diffusion.diffusion.losses import reduce_per_sample

__all__ = [
    "FlowChain",
    "StdFn",
    "VelocityFn",
    "VelocityNet",
    "bounded_std",
    "euler_sample",
    "flow_chain_entropy",
    "flow_chain_logprob",
    "flow_matching_loss",
    "flow_times",
    "linear_path",
    "noisy_euler_chain",
]

#: ``velocity_fn(x (B, Ta, Da), t (B,) float) -> v̂ (B, Ta, Da)``; conditioning bound by the caller.
VelocityFn = Callable[[Tensor, Tensor], Tensor]
#: ``net(x_t (B, Ta, Da), t (B,) float, cond (B, Dc)) -> v̂ (B, Ta, Da)``.
VelocityNet = Callable[[Tensor, Tensor, Tensor], Tensor]
#: ``std_fn(x (B, Ta, Da), t (B,) float) -> σ (B, Ta, Da)`` > 0, the std of a noisy
#: Euler step (ReinFlow's noise net, conditioning bound by the caller).
StdFn = Callable[[Tensor, Tensor], Tensor]


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


def flow_times(num_steps: int, batch: int, *, device=None, dtype=torch.float32) -> Tensor:
    """Times ``t_k = k / S`` of the S Euler steps, ``(B, S)`` (as ``euler_sample`` uses)."""
    t = torch.arange(num_steps, device=device, dtype=dtype) / num_steps
    return t.expand(batch, num_steps)


def bounded_std(raw: Tensor, min_std: Tensor | float, max_std: Tensor | float) -> Tensor:
    """Map an unbounded network output to a std in ``[min_std, max_std]`` (ReinFlow).

    ``log σ² = log σ_min² + (log σ_max² − log σ_min²)·(tanh(raw) + 1)/2``, ``σ = exp(½ log σ²)``:
    the log-variance moves between the bounds' log-variances, so σ is geometric between them.

    Args:
        raw: any shape, the noise network's output.
        min_std, max_std: bounds, ``0 < min_std <= max_std`` (floats or 0-d tensors).

    Returns:
        σ, same shape as ``raw``.
    """
    lo = 2 * torch.log(torch.as_tensor(min_std, dtype=raw.dtype, device=raw.device))
    hi = 2 * torch.log(torch.as_tensor(max_std, dtype=raw.dtype, device=raw.device))
    return torch.exp(0.5 * (lo + (hi - lo) * (torch.tanh(raw) + 1) / 2))


class FlowChain(NamedTuple):
    """A noisy Euler chain. ``actions`` ``(B, Ta, Da)`` = ``chain[:, -1]``; ``chain``
    ``(B, S+1, Ta, Da)`` with ``chain[:, 0]`` the initial noise; ``means`` and ``stds``
    ``(B, S, Ta, Da)``: step k draws ``chain[:, k+1] ~ N(means[:, k], stds[:, k]²)``."""

    actions: Tensor
    chain: Tensor
    means: Tensor
    stds: Tensor


def noisy_euler_chain(
    velocity_fn: VelocityFn,
    std_fn: StdFn,
    x_init: Tensor,
    num_steps: int,
    *,
    deterministic: bool = False,
    mean_clip: float | None = 1.0,
    final_clip: float | None = 1.0,
    noise_clip: float | None = 3.0,
    generator: torch.Generator | None = None,
) -> FlowChain:
    """ReinFlow's Markov chain: Euler steps of the flow plus learned Gaussian noise.

    For k = 0..S−1 with ``t_k = k/S`` and ``dt = 1/S``::

        μ_k     = clip(x_k + v(x_k, t_k)·dt, ±mean_clip)
        x_{k+1} = μ_k + σ(x_k, t_k) ⊙ clip(ε_k, ±noise_clip),   ε_k ~ N(0, I)

    and the last sample is clamped to ``±final_clip``. Each step is Gaussian with an exact
    density (``transition_logprob(x_{k+1}, μ_k, σ_k)``), so the chain's log-probability is
    a sum of per-step terms. ``deterministic`` drops the noise: the chain is the Euler
    integration of the flow (with the same clamps), as ``euler_sample`` with ``clip``.

    Args:
        velocity_fn: ``(x (B, Ta, Da), t (B,)) -> v (B, Ta, Da)``.
        std_fn: ``(x (B, Ta, Da), t (B,)) -> σ (B, Ta, Da)``, > 0.
        x_init: ``(B, Ta, Da)`` noise x_0.
        num_steps: S >= 1.
        deterministic: no noise (evaluation).
        mean_clip: clamp of each step's mean (ReinFlow's ``denoised_clip_value`` 1; None: none).
        final_clip: clamp of the last sample (the action range; None: none).
        noise_clip: clamp of ε (ReinFlow's ``randn_clip_value`` 3; None: none).
        generator: RNG of ε.

    Returns:
        :class:`FlowChain`.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = 1.0 / num_steps
    times = flow_times(num_steps, x_init.shape[0], device=x_init.device, dtype=x_init.dtype)
    x, chain, means, stds = x_init, [x_init], [], []
    for k in range(num_steps):
        t = times[:, k]
        mean = x + dt * velocity_fn(x, t)
        if mean_clip is not None:
            mean = mean.clamp(-mean_clip, mean_clip)
        std = std_fn(x, t).expand_as(mean)
        x = mean
        if not deterministic:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            if noise_clip is not None:
                eps = eps.clamp(-noise_clip, noise_clip)
            x = mean + std * eps
        if k == num_steps - 1 and final_clip is not None:
            x = x.clamp(-final_clip, final_clip)
        chain.append(x)
        means.append(mean)
        stds.append(std)
    return FlowChain(x, torch.stack(chain, 1), torch.stack(means, 1), torch.stack(stds, 1))


def flow_chain_logprob(
    x_init: Tensor,
    step_logp: Tensor,
    *,
    include_init: bool = True,
    clamp: tuple[float, float] | None = (-1.0, 1.0),
) -> Tensor:
    """ReinFlow's log-probability of a whole chain, averaged per step and per dimension.

    ``log p(x_0:S | s) = [log N(x_0; 0, I)] + Σ_k log N(x_{k+1}; μ_k, σ_k²)``, divided by the
    number of terms (S, or S+1 with the initial noise) and by Ta·Da, then clamped. With
    mean-reduced per-step terms (``chain_logprobs(..., clamp=None)``) that is the mean of
    the S (or S+1) terms.

    Args:
        x_init: ``(B, Ta, Da)`` initial noise x_0 (scored under N(0, I) with ``include_init``).
        step_logp: ``(B, S)`` per-step log-probs, each the mean over (Ta, Da), unclamped.
        include_init: count the initial noise's log-prob (ReinFlow's
            ``account_for_initial_stochasticity``).
        clamp: ``(low, high)`` of the result (ReinFlow's ``logprob_min/max``), None for none.

    Returns:
        ``(B,)`` chain log-probabilities.
    """
    terms = step_logp
    if include_init:
        zero = torch.zeros_like(x_init)
        init = transition_logprob(x_init, zero, torch.ones_like(x_init), clamp=None)
        terms = torch.cat([init[:, None], step_logp], dim=1)
    logp = terms.mean(dim=1)
    return logp if clamp is None else logp.clamp(clamp[0], clamp[1])


def flow_chain_entropy(stds: Tensor, *, include_init: bool = True) -> Tensor:
    """Entropy rate of the chain: the mean over steps (and the N(0, I) start with
    ``include_init``) of each step's Gaussian entropy per dimension (ReinFlow's
    ``entropy_rate_est`` normalised by Ta·Da).

    Args:
        stds: ``(B, S, Ta, Da)`` step stds.
        include_init: count the entropy of x_0 ~ N(0, I).

    Returns:
        ``(B,)`` entropies.
    """
    batch, steps = stds.shape[:2]
    per_step = gaussian_entropy(stds.reshape(batch * steps, *stds.shape[2:])).reshape(batch, steps)
    if include_init:
        init = torch.full((batch, 1), 0.5 * math.log(2 * math.pi * math.e), dtype=stds.dtype)
        per_step = torch.cat([init.to(stds.device), per_step], dim=1)
    return per_step.mean(dim=1)
