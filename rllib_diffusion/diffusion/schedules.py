"""Discrete noise schedules for DDPM/DDIM as an ``nn.Module`` of registered buffers.

Shape glossary:
    B   batch size
    K   number of denoising steps (timestep indices 0..K-1; K-1 is the noisiest)
    Ta  action horizon (chunk length)
    Da  action dimension
    Dc  conditioning dimension

Timestep convention: ``t`` is a ``LongTensor`` of shape ``(B,)`` with indices in
``[0, K-1]``; index ``t`` corresponds to the paper's step ``t+1`` (so
``alphas_cumprod[t] = prod_{i<=t} alpha_i``). ``alphas_cumprod_prev[t]`` is the
cumulative product one step earlier, with 1.0 for ``t = 0`` (clean data).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["NoiseSchedule", "cosine_betas", "extract_at", "linear_betas", "vp_betas"]


def cosine_betas(num_steps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Improved-DDPM cosine schedule (Nichol & Dhariwal 2021).

    ``ᾱ(t) = f(t)/f(0)`` with ``f(t) = cos²(((t/K) + s)/(1 + s) · π/2)`` and
    ``β_t = min(1 − ᾱ(t)/ᾱ(t−1), max_beta)`` for ``t = 1..K``.

    Returns:
        betas ``(K,)`` float32.
    """
    _check_steps(num_steps)
    # float64 so that ratios of nearly-equal cosines near t=0 stay accurate.
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alphas_cumprod = f / f[0]
    betas = 1.0 - alphas_cumprod[1:] / alphas_cumprod[:-1]
    return betas.clamp(max=max_beta).float()


def vp_betas(num_steps: int, b_min: float = 0.1, b_max: float = 10.0) -> Tensor:
    """Variance-preserving schedule used by Diffusion-QL (discretised VP-SDE).

    ``β_i = 1 − exp(−b_min/T − ½(b_max − b_min)(2i − 1)/T²)`` for ``i = 1..T``.

    Returns:
        betas ``(K,)`` float32 with ``K = T = num_steps``.
    """
    _check_steps(num_steps)
    t = float(num_steps)
    i = torch.arange(1, num_steps + 1, dtype=torch.float64)
    alphas = torch.exp(-b_min / t - 0.5 * (b_max - b_min) * (2 * i - 1) / t**2)
    return (1.0 - alphas).float()


def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> Tensor:
    """Linear schedule of the original DDPM paper.

    Returns:
        betas ``(K,)`` float32, evenly spaced from ``beta_start`` to ``beta_end``.
    """
    _check_steps(num_steps)
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64).float()


def _check_steps(num_steps: int) -> None:
    if int(num_steps) < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")


_SCHEDULES = {"cosine": cosine_betas, "vp": vp_betas, "linear": linear_betas}


def extract_at(buf: Tensor, t: Tensor, x: Tensor) -> Tensor:
    """Gather ``buf[t]`` and reshape to ``(B, 1, ..., 1)`` so it broadcasts against ``x``.

    Args:
        buf: ``(K,)`` per-timestep coefficients.
        t: ``(B,)`` long timestep indices.
        x: ``(B, ...)`` tensor whose rank and dtype the result follows.

    Returns:
        ``(B, 1, ..., 1)`` with ``x.dim()`` dimensions, in ``x.dtype``.
    """
    # Conversions only where needed: this runs several times per denoising step.
    if t.dtype != torch.long or t.device != buf.device:
        t = t.to(device=buf.device, dtype=torch.long)
    out = buf.index_select(0, t.reshape(-1))
    if out.dtype != x.dtype or out.device != x.device:
        out = out.to(device=x.device, dtype=x.dtype)
    return out.view(t.shape[0], *([1] * (x.dim() - 1)))


class NoiseSchedule(nn.Module):
    """A discrete diffusion schedule: all derived coefficients as float32 buffers ``(K,)``.

    Being an ``nn.Module`` of buffers, the schedule follows ``.to(device)`` and is
    saved in ``state_dict`` alongside the network that uses it.

    Buffers (each ``(K,)``): ``betas``, ``alphas``, ``alphas_cumprod`` (ᾱ_t),
    ``alphas_cumprod_prev`` (ᾱ_{t−1}, with 1.0 at t=0), ``sqrt_alphas_cumprod``,
    ``sqrt_one_minus_alphas_cumprod``, ``sqrt_recip_alphas_cumprod``,
    ``sqrt_recipm1_alphas_cumprod``, ``posterior_variance`` (β̃_t),
    ``posterior_log_variance_clipped``, ``posterior_mean_coef1``, ``posterior_mean_coef2``.
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    alphas_cumprod_prev: Tensor
    sqrt_alphas_cumprod: Tensor
    sqrt_one_minus_alphas_cumprod: Tensor
    sqrt_recip_alphas_cumprod: Tensor
    sqrt_recipm1_alphas_cumprod: Tensor
    posterior_variance: Tensor
    posterior_log_variance_clipped: Tensor
    posterior_mean_coef1: Tensor
    posterior_mean_coef2: Tensor

    def __init__(self, betas: Tensor) -> None:
        """Args:
        betas: ``(K,)`` noise variances in (0, 1).
        """
        super().__init__()
        betas = torch.as_tensor(betas).detach().to(torch.float64).flatten()
        if betas.numel() < 1:
            raise ValueError("betas must contain at least one step")
        if bool((betas <= 0).any()) or bool((betas >= 1).any()):
            raise ValueError("betas must lie strictly inside (0, 1)")
        # Derive everything in float64, store float32: cumulative products over
        # K=100+ steps lose precision in float32.
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = torch.cat([ac.new_ones(1), ac[:-1]])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        buffers = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": ac.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - ac).sqrt(),
            "sqrt_recip_alphas_cumprod": (1.0 / ac).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / ac - 1.0).sqrt(),
            "posterior_variance": post_var,
            # β̃_0 = 0 exactly; the clamp keeps its log finite (std ≈ 1e-10).
            "posterior_log_variance_clipped": post_var.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float())

    @classmethod
    def from_name(cls, name: str, num_steps: int, **kw: float) -> NoiseSchedule:
        """Build a schedule by name: ``"cosine"``, ``"vp"`` or ``"linear"``.

        Extra keyword arguments go to the beta function (e.g. ``s``, ``b_min``).
        """
        try:
            fn = _SCHEDULES[name]
        except KeyError:
            raise ValueError(
                f"unknown schedule {name!r}; allowed values: {sorted(_SCHEDULES)}"
            ) from None
        return cls(fn(num_steps, **kw))

    @property
    def num_steps(self) -> int:
        """K, the number of denoising steps."""
        return int(self.betas.shape[0])

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward process sample ``x_t = sqrt(ᾱ_t)·x0 + sqrt(1−ᾱ_t)·ε``.

        Args:
            x0: ``(B, ...)`` clean data, e.g. ``(B, Ta, Da)``.
            t: ``(B,)`` long timesteps.
            noise: ``(B, ...)`` standard normal noise ε.

        Returns:
            ``(B, ...)`` noised sample x_t.
        """
        return (
            extract_at(self.sqrt_alphas_cumprod, t, x0) * x0
            + extract_at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Invert ``q_sample``: ``x0 = sqrt(1/ᾱ_t)·x_t − sqrt(1/ᾱ_t − 1)·ε``. Shapes ``(B, ...)``."""
        return (
            extract_at(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t
            - extract_at(self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps
        )

    def predict_eps(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Noise implied by ``(x_t, x0)``: ``ε = (x_t − sqrt(ᾱ_t)·x0)/sqrt(1−ᾱ_t)``. Shapes ``(B, ...)``."""
        return (x_t - extract_at(self.sqrt_alphas_cumprod, t, x_t) * x0) / extract_at(
            self.sqrt_one_minus_alphas_cumprod, t, x_t
        )

    def posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Mean of ``q(x_{t−1} | x_t, x0)``: ``coef1_t·x0 + coef2_t·x_t``. Shapes ``(B, ...)``."""
        return (
            extract_at(self.posterior_mean_coef1, t, x_t) * x0
            + extract_at(self.posterior_mean_coef2, t, x_t) * x_t
        )
