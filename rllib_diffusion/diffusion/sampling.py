"""Reverse-process sampling: single DDPM/DDIM Gaussian steps and whole denoising chains.

Shape glossary:
    B   batch size
    K   number of denoising steps of the schedule
    S   number of steps actually taken by a chain (K for DDPM, ``ddim_steps`` for DDIM)
    K_ft  the last steps of a chain that a second (fine-tuned) network takes (DPPO)
    Ta  action horizon (chunk length)
    Da  action dimension
    Dc  conditioning dimension (bound inside ``eps_fn`` by the caller)

Every reverse step is a Gaussian ``x_{next} ~ N(mean, diag(std²))``; the chain keeps
the means and stds so that per-step log-probabilities (DPPO) can be computed exactly.
No ``torch.no_grad`` is used here: wrap calls in it for rollouts, or leave it out to
backpropagate through the whole chain (Diffusion-QL).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rllib_diffusion.diffusion.schedules import NoiseSchedule, extract_at

__all__ = [
    "ChainOutput",
    "EpsFn",
    "alphas_prev_at",
    "ddim_mean_std",
    "ddim_sigma",
    "ddim_timesteps",
    "ddpm_mean_std",
    "gaussian_step",
    "reverse_step",
    "reverse_step_std",
    "reverse_timesteps",
    "sample_chain",
]

#: ``eps_fn(x_t (B, Ta, Da), t (B,) long) -> ε̂ (B, Ta, Da)``; conditioning is bound by
#: the caller, e.g. ``lambda x, t: net(x, t, obs)``.
EpsFn = Callable[[Tensor, Tensor], Tensor]

# Floor on the std of deterministic DDPM evaluation (DPPO's convention).
DETERMINISTIC_MIN_STD = 1e-3


def _clip(x: Tensor, bound: float | None) -> Tensor:
    return x if bound is None else x.clamp(-bound, bound)


def ddpm_mean_std(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: Tensor,
    eps_hat: Tensor,
    *,
    clip_x0: float | None = 1.0,
    min_std: float = 0.0,
    variance: str = "posterior",
) -> tuple[Tensor, Tensor]:
    """Mean and std of the DDPM reverse step ``p(x_{t−1} | x_t)``.

    ``x̂0`` is reconstructed from ``ε̂`` and clamped to ``±clip_x0`` (data lives in
    [-1, 1]); the mean is the posterior mean ``q(x_{t−1} | x_t, x̂0)``; the std is
    ``max(sqrt(β̃_t), min_std)`` with β̃ log-clamped at 1e-20 (``variance="beta"``:
    ``sqrt(β_t)``, see :func:`reverse_step_std`).

    Args:
        schedule: the noise schedule (K steps).
        x_t: ``(B, Ta, Da)`` current sample.
        t: ``(B,)`` long timesteps.
        eps_hat: ``(B, Ta, Da)`` predicted noise.

    Returns:
        ``(mean, std)``, both ``(B, Ta, Da)``.
    """
    x0_hat = _clip(schedule.predict_x0(x_t, t, eps_hat), clip_x0)
    mean = schedule.posterior_mean(x0_hat, x_t, t)
    std = reverse_step_std(schedule, "ddpm", t, t - 1, min_std=min_std, variance=variance)
    return mean, std.reshape(-1, *([1] * (mean.dim() - 1))).expand_as(mean)


def ddim_timesteps(num_steps: int, ddim_steps: int) -> Tensor:
    """ "Leading" DDIM timesteps ``t_i = i·(K // ddim_steps)``, ``i = 0..ddim_steps−1``.

    Returns:
        ``(ddim_steps,)`` long, ascending; sampling iterates it in reverse.
    """
    if not 1 <= ddim_steps <= num_steps:
        raise ValueError(
            f"ddim_steps must satisfy 1 <= ddim_steps <= {num_steps}, got {ddim_steps}"
        )
    return torch.arange(ddim_steps, dtype=torch.long) * (num_steps // ddim_steps)


def ddim_mean_std(
    schedule: NoiseSchedule,
    x_t: Tensor,
    t: Tensor,
    t_prev: Tensor,
    eps_hat: Tensor,
    *,
    eta: float,
    clip_x0: float | None = 1.0,
    min_std: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Mean and std of the DDIM step from timestep ``t`` to ``t_prev``.

    ``ᾱ_prev = ᾱ[t_prev]`` (1.0 where ``t_prev < 0``, i.e. the final step to data);
    ``σ = η·sqrt((1−ᾱ_prev)/(1−ᾱ)·(1−ᾱ/ᾱ_prev))``;
    ``mean = sqrt(ᾱ_prev)·x̂0 + sqrt(1−ᾱ_prev−σ²)·ε̂`` where ε̂ is recomputed from the
    clamped x̂0 so that mean and x̂0 stay consistent; ``std = max(σ, min_std)``.

    Args:
        x_t: ``(B, Ta, Da)``.
        t: ``(B,)`` long current timesteps.
        t_prev: ``(B,)`` long next (less noisy) timesteps, ``-1`` for the last step.
        eps_hat: ``(B, Ta, Da)`` predicted noise.
        eta: 0 gives deterministic DDIM, 1 a DDPM-like variance.

    Returns:
        ``(mean, std)``, both ``(B, Ta, Da)``.
    """
    t_prev = torch.as_tensor(t_prev, device=t.device).expand_as(t)
    alpha = extract_at(schedule.alphas_cumprod, t, x_t)
    alpha_prev = alphas_prev_at(schedule, t_prev).reshape(alpha.shape)
    x0_hat = _clip(schedule.predict_x0(x_t, t, eps_hat), clip_x0)
    eps = schedule.predict_eps(x_t, t, x0_hat)
    sigma = ddim_sigma(alpha, alpha_prev, eta)
    dir_coef = (1 - alpha_prev - sigma**2).clamp(min=0).sqrt()
    mean = alpha_prev.sqrt() * x0_hat + dir_coef * eps
    std = sigma.clamp(min=min_std).expand_as(mean)
    return mean, std


def alphas_prev_at(schedule: NoiseSchedule, t_prev: Tensor) -> Tensor:
    """``ᾱ[t_prev]`` ``(B,)``, 1.0 where ``t_prev < 0`` (the step that lands on data)."""
    alpha_prev = schedule.alphas_cumprod[t_prev.clamp(min=0)]
    return torch.where(t_prev < 0, torch.ones_like(alpha_prev), alpha_prev)


def ddim_sigma(alpha: Tensor, alpha_prev: Tensor, eta: float) -> Tensor:
    """``σ = η·sqrt((1−ᾱ_prev)/(1−ᾱ)·(1−ᾱ/ᾱ_prev))`` (any broadcastable shapes)."""
    return eta * ((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev)).clamp(min=0).sqrt()


def reverse_step_std(
    schedule: NoiseSchedule,
    method: str,
    t: Tensor,
    t_prev: Tensor,
    *,
    eta: float = 1.0,
    min_std: float = 0.0,
    variance: str = "posterior",
) -> Tensor:
    """Std of reverse steps ``t → t_prev``, which depends on the timesteps only.

    DDPM: ``max(sqrt(β̃_t), min_std)`` (β̃ log-clamped at 1e-20; ``t_prev = t − 1``);
    with ``variance="beta"`` ``sqrt(β_t)`` instead, 0 at the last step ``t = 0`` (the
    σ² = β_t choice of Ho et al., which the official DAC and IDQL samplers use);
    DDIM: ``max(σ, min_std)`` with σ as in ``ddim_mean_std``. Lets DPPO evaluate the
    log-prob std (its own floor) of a step without another network call.

    Args:
        t: ``(N,)`` long timesteps; t_prev: ``(N,)`` long landing timesteps (DDIM).

    Returns:
        ``(N,)`` stds.
    """
    if variance not in ("posterior", "beta"):
        raise ValueError(f"unknown variance {variance!r}; allowed values: ['beta', 'posterior']")
    if method == "ddpm" and variance == "beta":
        std = torch.where(t > 0, schedule.betas[t].sqrt(), torch.zeros_like(schedule.betas[t]))
    elif method == "ddpm":
        std = (0.5 * schedule.posterior_log_variance_clipped[t]).exp()
    elif method == "ddim":
        t_prev = torch.as_tensor(t_prev, device=t.device).expand_as(t)
        std = ddim_sigma(schedule.alphas_cumprod[t], alphas_prev_at(schedule, t_prev), eta)
    else:
        raise ValueError(f"unknown sampling method {method!r}; allowed values: ['ddim', 'ddpm']")
    return std.clamp(min=min_std)


def gaussian_step(
    mean: Tensor,
    std: Tensor,
    *,
    noise_clip: float | None = 3.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample ``mean + std·clip(z, ±noise_clip)``, ``z ~ N(0, I)``.

    Clipping the standard normal bounds each step's deviation to ``noise_clip·std``,
    which keeps fine-tuning rollouts away from the log-prob clamp region.

    Args:
        mean: ``(B, ...)``.
        std: broadcastable to ``mean``.

    Returns:
        ``(B, ...)`` like ``mean``.
    """
    z = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + std * _clip(z, noise_clip)


@dataclass
class ChainOutput:
    """Result of ``sample_chain``.

    Attributes:
        actions: ``(B, Ta, Da)`` final sample, clamped to ``±final_clip``.
        chain: ``(B, S+1, Ta, Da)``; ``chain[:, 0]`` is the initial noise and
            ``chain[:, i+1]`` the sample after step ``i`` (unclamped, so that
            log-probs of the stored transitions are exact).
        timesteps: ``(S,)`` long, the timestep ``t`` used at each step.
        means: ``(B, S, Ta, Da)`` Gaussian mean of each step.
        stds: ``(B, S, Ta, Da)`` Gaussian std of each step.
    """

    actions: Tensor
    chain: Tensor
    timesteps: Tensor
    means: Tensor
    stds: Tensor


def reverse_timesteps(
    method: str, num_steps: int, ddim_steps: int | None = None
) -> tuple[Tensor, Tensor]:
    """Timesteps visited by the reverse process, and the timestep each step lands on.

    DDPM: ``t = K−1 … 0`` landing on ``t−1``; DDIM: ``reversed(ddim_timesteps)`` landing
    on the next visited timestep, ``−1`` after the last.

    Returns:
        ``(timesteps (S,), prev_steps (S,))`` long tensors.
    """
    if method == "ddpm":
        timesteps = torch.arange(num_steps - 1, -1, -1, dtype=torch.long)
        return timesteps, timesteps - 1
    if method == "ddim":
        timesteps = ddim_timesteps(num_steps, ddim_steps or num_steps).flip(0)
        return timesteps, torch.cat([timesteps[1:], timesteps.new_tensor([-1])])
    raise ValueError(f"unknown sampling method {method!r}; allowed values: ['ddim', 'ddpm']")


def reverse_step(
    schedule: NoiseSchedule,
    method: str,
    x_t: Tensor,
    t: Tensor,
    t_prev: Tensor,
    eps_hat: Tensor,
    *,
    eta: float = 1.0,
    clip_x0: float | None = 1.0,
    min_std: float = 0.0,
    deterministic: bool = False,
    last: bool = False,
    variance: str = "posterior",
) -> tuple[Tensor, Tensor]:
    """Mean and std of one reverse step with the std floor of each mode.

    Stochastic (rollouts, log-probs): DDPM ``std = max(sqrt(β̃_t), min_std)``, DDIM
    ``std = max(σ_η, min_std)``. Deterministic (evaluation): DDPM floors at 1e-3 and
    uses std 0 at the ``last`` step; DDIM uses ``η = 0`` and std 0 at every step.

    Args:
        x_t, eps_hat: ``(B, Ta, Da)``; t, t_prev: ``(B,)`` long (``t_prev`` DDIM only).

    Returns:
        ``(mean, std)``, both ``(B, Ta, Da)``.
    """
    if method == "ddpm":
        floor = DETERMINISTIC_MIN_STD if deterministic else min_std
        mean, std = ddpm_mean_std(
            schedule, x_t, t, eps_hat, clip_x0=clip_x0, min_std=floor, variance=variance
        )
        zero = deterministic and last
    elif method == "ddim":
        eta = 0.0 if deterministic else eta
        mean, std = ddim_mean_std(
            schedule, x_t, t, t_prev, eps_hat, eta=eta, clip_x0=clip_x0, min_std=min_std
        )
        zero = deterministic
    else:
        raise ValueError(f"unknown sampling method {method!r}; allowed values: ['ddim', 'ddpm']")
    return mean, (torch.zeros_like(std) if zero else std)


def sample_chain(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    method: str = "ddpm",
    ddim_steps: int | None = None,
    eta: float = 1.0,
    clip_x0: float | None = 1.0,
    min_std: float = 0.0,
    noise_clip: float | None = 3.0,
    deterministic: bool = False,
    final_clip: float | None = 1.0,
    x_init: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    eps_fn_ft: EpsFn | None = None,
    ft_steps: int = 0,
    variance: str = "posterior",
    clip_xt: float | None = None,
) -> ChainOutput:
    """Run the reverse process from noise and record every step.

    DDPM visits ``t = K−1 … 0``; DDIM visits ``reversed(ddim_timesteps(K, ddim_steps))``
    with ``t_prev`` the next visited timestep or ``−1`` after the last.

    ``deterministic=True`` is evaluation mode: DDPM uses a std floor of 1e-3 (instead
    of ``min_std``) and std 0 at the last step; DDIM uses ``η = 0`` and std 0 at every
    step, so that the chain is a deterministic function of ``x_init``.

    Args:
        eps_fn: ``(x_t (B, Ta, Da), t (B,)) -> ε̂ (B, Ta, Da)``.
        schedule: noise schedule with K steps.
        shape: ``(B, Ta, Da)``.
        method: ``"ddpm"`` or ``"ddim"``.
        ddim_steps: number of DDIM steps S (default K).
        eta: DDIM noise scale (ignored by DDPM).
        clip_x0: clamp of the reconstructed x̂0 (None: no clamp).
        min_std: std floor of each stochastic step (e.g. 0.1 for DPPO rollouts).
        noise_clip: clamp of the standard-normal noise (None: no clamp).
        deterministic: evaluation mode, see above.
        final_clip: clamp of the returned ``actions`` only (None: no clamp).
        x_init: ``(B, Ta, Da)`` initial noise; sampled from N(0, I) if None.
        generator: RNG for the initial and per-step noise.
        device: device of the sampled noise (default: the schedule's).
        eps_fn_ft: network of the last ``ft_steps`` steps (DPPO's fine-tuned copy);
            ``eps_fn`` runs the first ``S − ft_steps`` (only the network a step needs runs).
        ft_steps: K_ft, in ``[0, S]``.
        variance: DDPM step variance, "posterior" (β̃_t) or "beta" (β_t).
        clip_xt: clamp of every step's sample x_{t−1} (IDQL's sampler; None: none).

    Returns:
        ``ChainOutput`` with S steps.
    """
    timesteps, prev_steps = reverse_timesteps(method, schedule.num_steps, ddim_steps)

    if x_init is None:
        device = schedule.betas.device if device is None else device
        x = torch.randn(shape, generator=generator, device=device, dtype=schedule.betas.dtype)
    else:
        x = x_init
    batch = x.shape[0]
    steps = len(timesteps)
    if not 0 <= ft_steps <= steps or (ft_steps and eps_fn_ft is None):
        raise ValueError(f"ft_steps must be in [0, {steps}] with eps_fn_ft given, got {ft_steps}")

    chain, means, stds = [x], [], []
    for i, (t_int, t_prev_int) in enumerate(zip(timesteps.tolist(), prev_steps.tolist())):
        t = torch.full((batch,), t_int, dtype=torch.long, device=x.device)
        net = eps_fn_ft if i >= steps - ft_steps else eps_fn
        mean, std = reverse_step(
            schedule, method, x, t, torch.full_like(t, t_prev_int), net(x, t),
            eta=eta, clip_x0=clip_x0, min_std=min_std,
            deterministic=deterministic, last=i == steps - 1, variance=variance,
        )  # fmt: skip
        zero_std = deterministic and (method == "ddim" or i == steps - 1)
        # A zero-std step is its mean; skipping the draw leaves the RNG stream untouched.
        x = (
            mean
            if zero_std
            else gaussian_step(mean, std, noise_clip=noise_clip, generator=generator)
        )
        x = _clip(x, clip_xt)
        chain.append(x)
        means.append(mean)
        stds.append(std)

    chain_t = torch.stack(chain, dim=1)
    return ChainOutput(
        actions=_clip(chain_t[:, -1], final_clip),
        chain=chain_t,
        timesteps=timesteps.to(x.device),
        means=torch.stack(means, dim=1),
        stds=torch.stack(stds, dim=1),
    )
