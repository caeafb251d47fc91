"""Critic building blocks shared by the offline algorithms: Q ensembles and Polyak updates.

Glossary: B batch, H ensemble heads, Do observation dim, Da action dim.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rllib_diffusion.diffusion import MLP, ema_update_


class QEnsemble(nn.Module):
    """``H`` independent Q(s, a) MLPs evaluated together.

    Forward: ``obs (B, Do), actions (B, Da) -> (H, B)``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        num_heads: int = 2,
        hidden_dims: Sequence[int] = (256, 256, 256),
        activation: str = "mish",
        layer_norm: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            MLP(
                obs_dim + action_dim,
                1,
                hidden_dims,
                activation=activation,
                layer_norm=layer_norm,
                residual=residual,
            )
            for _ in range(num_heads)
        )

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        x = torch.cat([obs, actions.reshape(actions.shape[0], -1)], dim=-1)
        return torch.stack([head(x).squeeze(-1) for head in self.heads], dim=0)


def polyak_update_(target: nn.Module, source: nn.Module, tau: float) -> None:
    """``target ← (1 − tau)·target + tau·source`` (an EMA with decay ``1 − tau``)."""
    ema_update_(target, source, 1.0 - tau)
