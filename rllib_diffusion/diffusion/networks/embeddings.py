"""Timestep embeddings for denoising / velocity networks.

Shape glossary:
    B   batch size
    K   number of denoising steps (integer timesteps 0..K-1) or flow time in [0, 1]
    N   rows of the cached feature table (integer timesteps 0..N-1, N >= K once used)
    Ta  action horizon, Da action dim, Dc conditioning dim (not used here)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["SinusoidalPosEmb", "TimeEmbedding"]

# Smallest cached table: covers the usual K (5..100) without regrowing.
_MIN_TABLE_ROWS = 128
# Larger integer times are computed directly rather than cached (memory bound).
_MAX_TABLE_ROWS = 1 << 16


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal features of a scalar time.

    ``[sin(t·ω_0) … sin(t·ω_{h−1}), cos(t·ω_0) … cos(t·ω_{h−1})]`` with
    ``h = dim // 2`` geometric frequencies from 1 down to 1/10000.

    Integer timesteps on the CPU are looked up in a table of the features of
    ``0..N−1`` (grown on demand), which a denoising chain hits at every step. Its rows
    are computed by the same elementwise float32 ops as the direct path, so the
    lookup is bit-identical to recomputing. The table is a plain attribute, not a
    buffer: it is derived data, absent from ``state_dict`` and parameter-free, so it
    stays valid while the network trains. Float (flow) times and accelerator tensors
    (whose bound check would synchronise the device) are computed directly.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be an even number >= 2, got {dim}")
        self.dim = dim
        self._table: Tensor | None = None  # (N, dim) float32, CPU

    def _features(self, t: Tensor) -> Tensor:
        """The direct computation: t ``(B,)`` -> ``(B, dim)`` float32."""
        half = self.dim // 2
        # Frequencies are rebuilt per call (cheap) so the module has no state to move.
        scale = math.log(10000.0) / max(half - 1, 1)
        freqs = torch.exp(-scale * torch.arange(half, device=t.device, dtype=torch.float32))
        args = t.reshape(-1, 1).float() * freqs.unsqueeze(0)
        return torch.cat([args.sin(), args.cos()], dim=-1)

    def _lookup(self, t: Tensor) -> Tensor | None:
        """Table rows of integer CPU ``t`` ``(B,)``, or None where the table cannot serve."""
        if t.numel() == 0 or torch.compiler.is_compiling():
            return None
        bounds = torch.aminmax(t)
        lo, hi = bounds.min.item(), bounds.max.item()
        if lo < 0 or hi >= _MAX_TABLE_ROWS:
            return None
        if self._table is None or hi >= self._table.shape[0]:
            rows = min(max(_MIN_TABLE_ROWS, 2 * hi + 2), _MAX_TABLE_ROWS)
            self._table = self._features(torch.arange(rows, dtype=torch.long))
        return self._table.index_select(0, t.reshape(-1))

    def forward(self, t: Tensor) -> Tensor:
        """Args: t ``(B,)`` int or float. Returns ``(B, dim)`` float32."""
        if not t.is_floating_point() and t.device.type == "cpu":
            out = self._lookup(t)
            if out is not None:
                return out
        return self._features(t)


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
        # Integer steps at scale 1 stay integers so that the sinusoidal table serves them
        # (``t.float() * 1.0`` is exact, so both paths give the same features).
        if t.is_floating_point() or self.time_scale != 1.0:
            t = t.float() * self.time_scale
        return self.net(t)
