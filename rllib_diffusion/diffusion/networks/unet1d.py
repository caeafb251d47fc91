"""1-D temporal UNet over the action horizon with FiLM conditioning.

Shape glossary:
    B   batch size
    K   number of denoising steps (t indexes them; flow time is a float in [0, 1])
    Ta  action horizon: the convolution axis
    Da  action dimension: the input/output channels
    Dc  conditioning dimension

Convolutions run along Ta with Da channels. Every residual block is modulated by
FiLM (per-channel scale and bias) computed from concat[time-embedding(t), cond].
A level is downsampled only if its length is even and the result stays >= 2, so
short chunks (Ta = 1, 4) work without padding and every upsample restores the
exact length of its skip connection.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rllib_diffusion.diffusion.networks.embeddings import TimeEmbedding
from rllib_diffusion.diffusion.networks.mlp import _batch_time

__all__ = ["TemporalUNet1D"]


class _ConvBlock(nn.Sequential):
    """``Conv1d → GroupNorm → Mish``, length-preserving."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int) -> None:
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, c_out),
            nn.Mish(),
        )


class _FiLMResBlock(nn.Module):
    """Two conv blocks; FiLM after the first; 1×1 conv on the skip when widths differ."""

    def __init__(
        self, c_in: int, c_out: int, emb_dim: int, kernel_size: int, n_groups: int
    ) -> None:
        super().__init__()
        self.block1 = _ConvBlock(c_in, c_out, kernel_size, n_groups)
        self.block2 = _ConvBlock(c_out, c_out, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(emb_dim, 2 * c_out))
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x ``(B, C_in, L)``, emb ``(B, E)`` -> ``(B, C_out, L)``."""
        scale, bias = self.film(emb).unsqueeze(-1).chunk(2, dim=1)
        # (1 + scale) keeps a freshly initialised block close to unmodulated.
        h = self.block1(x) * (1 + scale) + bias
        return self.block2(h) + self.skip(x)


class TemporalUNet1D(nn.Module):
    """Conv UNet predicting ε (or velocity) for an action chunk.

    Same forward contract as ``DiffusionMLP``:
    ``forward(x (B, Ta, Da), t (B,), cond (B, Dc)) -> (B, Ta, Da)``.
    """

    def __init__(
        self,
        action_dim: int,
        horizon: int,
        cond_dim: int,
        *,
        time_dim: int = 32,
        dims: Sequence[int] = (64, 128, 256),
        kernel_size: int = 5,
        n_groups: int = 8,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if not dims:
            raise ValueError("dims must name at least one level")
        bad = [d for d in dims if d % n_groups]
        if bad:
            raise ValueError(f"every entry of dims must be divisible by n_groups={n_groups}: {bad}")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to preserve length, got {kernel_size}")
        self.action_dim = action_dim
        self.horizon = horizon
        self.cond_dim = cond_dim
        self.time_emb = TimeEmbedding(time_dim, 4 * time_dim, time_scale=time_scale)
        emb_dim = time_dim + cond_dim

        def res(c_in: int, c_out: int) -> _FiLMResBlock:
            return _FiLMResBlock(c_in, c_out, emb_dim, kernel_size, n_groups)

        chans = [action_dim, *dims]
        length = horizon
        downsampled: list[bool] = []
        self.downs = nn.ModuleList()
        for i, (c_in, c_out) in enumerate(zip(chans[:-1], chans[1:])):
            down = i < len(dims) - 1 and length % 2 == 0 and length // 2 >= 2
            downsampled.append(down)
            self.downs.append(
                nn.ModuleList(
                    [
                        res(c_in, c_out),
                        res(c_out, c_out),
                        nn.Conv1d(c_out, c_out, 3, stride=2, padding=1) if down else nn.Identity(),
                    ]
                )
            )
            length = length // 2 if down else length
        self.mid = nn.ModuleList([res(dims[-1], dims[-1]), res(dims[-1], dims[-1])])
        self.ups = nn.ModuleList()
        # Level i (from the deepest up) merges skip i and returns to level i-1's width.
        for i in range(len(dims) - 1, 0, -1):
            c_skip, c_out = dims[i], dims[i - 1]
            self.ups.append(
                nn.ModuleList(
                    [
                        res(2 * c_skip, c_out),
                        res(c_out, c_out),
                        nn.ConvTranspose1d(c_out, c_out, 4, stride=2, padding=1)
                        if downsampled[i - 1]
                        else nn.Identity(),
                    ]
                )
            )
        self.final = nn.Sequential(
            _ConvBlock(dims[0], dims[0], kernel_size, n_groups), nn.Conv1d(dims[0], action_dim, 1)
        )

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        """Args:
            x: ``(B, Ta, Da)`` noisy actions.
            t: ``(B,)`` long denoising step or float flow time (a scalar is broadcast).
            cond: ``(B, Dc)`` conditioning (None allowed only when ``cond_dim == 0``).

        Returns:
            ``(B, Ta, Da)``.
        """
        batch = x.shape[0]
        emb = [self.time_emb(_batch_time(t, batch, x.device)).to(x.dtype)]
        if self.cond_dim:
            if cond is None:
                raise ValueError(f"cond of shape (B, {self.cond_dim}) is required")
            emb.append(cond.reshape(batch, -1).to(x.dtype))
        e = torch.cat(emb, dim=-1)

        h = x.transpose(1, 2)  # (B, Da, Ta): Conv1d wants channels first
        skips = []
        for block1, block2, down in self.downs:
            h = block2(block1(h, e), e)
            skips.append(h)
            h = down(h)
        for block in self.mid:
            h = block(h, e)
        for block1, block2, up in self.ups:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(block2(block1(h, e), e))
        # The input's dtype out (fp32 losses under autocast; a no-op otherwise).
        return self.final(h).transpose(1, 2).to(x.dtype)
