"""Per-transition Gaussian log-probabilities of denoising chains (DPPO's inner MDP).

Shape glossary:
    B   batch size
    S   number of recorded denoising transitions (e.g. K' fine-tuned steps)
    Ta  action horizon (chunk length); Ta' = ``act_steps`` executed rows
    Da  action dimension

Each reverse step ``x_next ~ N(mean, diag(std²))`` is an RL action. Following DPPO,
each element's log-density is clamped (so near-zero stds cannot explode the PPO
ratio), only the executed rows are kept, and the result is *averaged* over
``(Ta', Da)`` rather than summed; the PPO clip ranges are tuned for this scale.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["chain_logprobs", "gaussian_entropy", "transition_logprob"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def transition_logprob(
    x_next: Tensor,
    mean: Tensor,
    std: Tensor,
    *,
    clamp: tuple[float, float] | None = (-5.0, 2.0),
    act_steps: int | None = None,
) -> Tensor:
    """Mean-reduced, element-clamped Normal log-prob of one denoising transition.

    Args:
        x_next: ``(B, Ta, Da)`` sample after the step.
        mean: ``(B, Ta, Da)`` Gaussian mean of the step.
        std: ``(B, Ta, Da)`` (or broadcastable) Gaussian std, must be > 0.
        clamp: ``(low, high)`` bounds of each element's log-density, None for none.
        act_steps: keep only the first ``act_steps`` rows along Ta (None: all).

    Returns:
        ``(B,)`` log-probabilities.
    """
    z = (x_next - mean) / std
    logp = -0.5 * z**2 - std.log() - _LOG_SQRT_2PI
    if clamp is not None:
        logp = logp.clamp(clamp[0], clamp[1])
    if act_steps is not None:
        logp = logp[:, :act_steps]
    return logp.flatten(1).mean(dim=1)


def chain_logprobs(
    chain: Tensor,
    means: Tensor,
    stds: Tensor,
    *,
    clamp: tuple[float, float] | None = (-5.0, 2.0),
    act_steps: int | None = None,
) -> Tensor:
    """``transition_logprob`` of every step of a chain.

    Args:
        chain: ``(B, S+1, Ta, Da)``; step ``i`` goes from ``chain[:, i]`` to ``chain[:, i+1]``.
        means: ``(B, S, Ta, Da)`` step means (e.g. recomputed by the trainable actor).
        stds: ``(B, S, Ta, Da)`` step stds.
        clamp, act_steps: as in ``transition_logprob``.

    Returns:
        ``(B, S)`` per-step log-probabilities (never summed over the chain).
    """
    batch, steps = means.shape[:2]
    if chain.shape[1] != steps + 1:
        raise ValueError(f"chain has {chain.shape[1]} entries, expected S+1 = {steps + 1}")
    x_next = chain[:, 1:]
    stds = stds.expand_as(means)
    logp = transition_logprob(
        x_next.reshape(batch * steps, *x_next.shape[2:]),
        means.reshape(batch * steps, *means.shape[2:]),
        stds.reshape(batch * steps, *stds.shape[2:]),
        clamp=clamp,
        act_steps=act_steps,
    )
    return logp.reshape(batch, steps)


def gaussian_entropy(std: Tensor) -> Tensor:
    """Entropy of ``N(μ, diag(std²))`` per dimension: the mean over (Ta, Da) of
    ``½·log(2πe·σ²)``.

    Args:
        std: ``(B, Ta, Da)`` stds, > 0.

    Returns:
        ``(B,)`` entropies.
    """
    return (std.log() + 0.5 + _LOG_SQRT_2PI).flatten(1).mean(dim=1)
