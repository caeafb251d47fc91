"""Timestep embeddings for denoising / velocity networks.

Shape glossary:
    B   batch size
    K   number of denoising steps (integer timesteps 0..K-1) or flow time in [0, 1]
    Ta  action horizon, Da action dim, Dc conditioning dim (not used here)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalPosEmb", "TimeEmbedding"]


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal features of a scalar time.

    ``[sin(t·ω_0) … sin(t·ω_{h−1}), cos(t·ω_0) … cos(t·ω_{h−1})]`` with
    ``h = dim // 2`` geometric frequencies from 1 down to 1/10000.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even number >= 2, got {dim}")
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        """Args: t ``(B,)`` int or float. Returns ``(B, dim)`` float32."""
        half = self.dim // 2
        # Frequencies are rebuilt per call (cheap) so the module has no state to move.
        scale = math.log(10000.0) / max(half - 1, 1)
        freqs = torch.exp(-scale * torch.arange(half, device=t.device, dtype=torch.float32))
        args = t.reshape(-1, 1).float() * freqs.unsqueeze(0)
        return torch.cat([args.sin(), args.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """``sinusoidal(dim) → Linear(dim, hidden) → Mish → Linear(hidden, dim)``.

    ``time_scale`` multiplies ``t`` first: integer DDPM steps need none, flow time in
    [0, 1] benefits from a larger scale (e.g. 100) to use the high frequencies.
    """

    def __init__(self, dim: int = 16, hidden: int = 32, *, time_scale: float = 1.0) -> None:
        super().__init__()
        self.time_scale = float(time_scale)
        self.net = nn.Sequential(
            SinusoidalPosEmb(dim), nn.Linear(dim, hidden), nn.Mish(), nn.Linear(hidden, dim)
        )

    def forward(self, t: Tensor) -> Tensor:
        """Args: t ``(B,)`` int or float. Returns ``(B, dim)``."""
        return self.net(t.float() * self.time_scale)
