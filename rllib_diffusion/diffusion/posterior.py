"""Denoising chains that end at a given sample, drawn from the forward process's posterior.

Shape glossary:
    B   batch size
    S   number of reverse steps the chain records (e.g. DPPO's K_ft fine-tuned steps)
    Ta  action horizon (chunk length)
    Da  action dimension

A reverse sampler visits timesteps ``t_0 > t_1 > … > t_{S−1}``; step ``i`` goes from
``t_i`` to ``t'_i`` (``t_{i+1}``, or −1 = data after the last step; see
``reverse_timesteps``). Given clean data ``x_0 = a`` (e.g. a generated action chunk), a
chain ``x^(0) … x^(S)`` that such a sampler could have produced is drawn backwards from
the forward process conditioned on ``a``:

    x^(0)   ~ q(x_{t_0} | x_0 = a)                  = N(sqrt(ᾱ_{t_0})·a, (1 − ᾱ_{t_0})·I)
    x^(i+1) ~ q(x_{t'_i} | x_{t_i} = x^(i), x_0 = a)

- DDPM (``t'_i = t_i − 1``): the posterior ``N(c1_t·a + c2_t·x_t, β̃_t·I)`` with
  ``c1_t = β_t·sqrt(ᾱ_{t−1})/(1 − ᾱ_t)``, ``c2_t = (1 − ᾱ_{t−1})·sqrt(α_t)/(1 − ᾱ_t)``,
  ``β̃_t = β_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t)``: the schedule's float64-derived buffers
  ``posterior_mean_coef1``, ``posterior_mean_coef2``, ``posterior_variance``.
- DDIM with η (any visited subsequence): the non-Markovian forward process of Song et
  al. (2021, eq. 7), ``q_σ(x_{t'} | x_t, x_0 = a) = N(sqrt(ᾱ_{t'})·a + sqrt(1 − ᾱ_{t'}
  − σ²)·ε(x_t, a), σ²·I)`` with ``ε(x_t, a) = (x_t − sqrt(ᾱ_t)·a)/sqrt(1 − ᾱ_t)`` and
  ``σ = η·sqrt((1 − ᾱ_{t'})/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_{t'}))``. Its marginals
  ``q_σ(x_t | x_0)`` are the DDPM ones for every η, so the first draw is the same; with
  η = 1 and consecutive timesteps it is the DDPM posterior.

Both are exactly the distribution of the sampler's own step (``ddpm_mean_std``,
``ddim_mean_std``) with the network's clamped x̂0 replaced by ``a`` and no std floor or
noise clip. The step that lands on data (``t' = −1``) has σ = 0 and mean ``a``, so a
chain whose last step lands on data ends at ``a`` exactly (set, not computed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rllib_diffusion.diffusion.sampling import alphas_prev_at, ddim_sigma
from rllib_diffusion.diffusion.schedules import NoiseSchedule, extract_at

__all__ = ["posterior_chain", "posterior_step_mean_std"]


def posterior_step_mean_std(
    schedule: NoiseSchedule,
    method: str,
    x0: Tensor,
    x_t: Tensor,
    t: Tensor,
    t_prev: Tensor,
    *,
    eta: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Mean and std of ``q(x_{t_prev} | x_t, x_0)`` (module doc: DDPM posterior, or
    DDIM's ``q_σ`` with ``eta``).

    Args:
        schedule: the noise schedule (K steps).
        method: ``"ddpm"`` (``t_prev`` must be ``t − 1``) or ``"ddim"``.
        x0: ``(B, Ta, Da)`` the clean sample the chain ends at.
        x_t: ``(B, Ta, Da)`` the current sample at timestep ``t``.
        t: ``(B,)`` long timesteps; t_prev: ``(B,)`` long landing timesteps (−1: data).
        eta: DDIM η (ignored by DDPM).

    Returns:
        ``(mean, std)``, both ``(B, Ta, Da)``.
    """
    if method == "ddpm":
        if bool((t_prev != t - 1).any()):
            raise ValueError("a DDPM posterior step lands on t - 1")
        mean = schedule.posterior_mean(x0, x_t, t)
        std = extract_at(schedule.posterior_variance, t, x_t).sqrt()
    elif method == "ddim":
        alpha = extract_at(schedule.alphas_cumprod, t, x_t)
        alpha_prev = alphas_prev_at(schedule, t_prev).reshape(alpha.shape).to(x_t.dtype)
        std = ddim_sigma(alpha, alpha_prev, eta)
        dir_coef = (1 - alpha_prev - std**2).clamp(min=0).sqrt()
        mean = alpha_prev.sqrt() * x0 + dir_coef * schedule.predict_eps(x_t, t, x0)
    else:
        raise ValueError(f"unknown sampling method {method!r}; allowed values: ['ddim', 'ddpm']")
    return mean, std.expand_as(mean)


def posterior_chain(
    schedule: NoiseSchedule,
    x0: Tensor,
    timesteps: Tensor,
    prev_steps: Tensor,
    *,
    method: str = "ddpm",
    eta: float = 1.0,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """A chain over ``timesteps`` that ends at ``x0``, drawn from the forward process
    conditioned on ``x0`` (module doc).

    Args:
        schedule: the noise schedule (K steps).
        x0: ``(B, Ta, Da)`` the samples the chains end at (e.g. action chunks).
        timesteps: ``(S,)`` long, the timestep each recorded step starts from
            (descending, as ``reverse_timesteps`` gives them).
        prev_steps: ``(S,)`` long, the timestep each step lands on (−1: data).
        method: ``"ddpm"`` or ``"ddim"``; eta: DDIM η.
        noise: ``(B, S+1, Ta, Da)`` standard normal draws (``[:, 0]`` for the first
            state, ``[:, i+1]`` for step i); drawn with ``generator`` if None.
        generator: RNG of ``noise`` when it is not given.

    Returns:
        ``(B, S+1, Ta, Da)``: ``[:, 0]`` at timestep ``timesteps[0]``, ``[:, i+1]`` the
        sample after step i; ``[:, S]`` equals ``x0`` exactly when the last step lands
        on data.
    """
    batch, steps = x0.shape[0], len(timesteps)
    if noise is None:
        shape = (batch, steps + 1, *x0.shape[1:])
        noise = torch.randn(shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = timesteps.to(x0.device).reshape(steps, 1).expand(steps, batch)
    t_prev = prev_steps.to(x0.device).reshape(steps, 1).expand(steps, batch)
    x = schedule.q_sample(x0, t[0], noise[:, 0])
    chain = [x]
    for i in range(steps):
        if int(prev_steps[i]) < 0:
            x = x0  # q(x_data | x_t, x_0) is a point mass at x_0
        else:
            mean, std = posterior_step_mean_std(schedule, method, x0, x, t[i], t_prev[i], eta=eta)
            x = mean + std * noise[:, i + 1]
        chain.append(x)
    return torch.stack(chain, dim=1)
