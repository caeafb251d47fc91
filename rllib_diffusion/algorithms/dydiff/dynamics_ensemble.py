"""One-step dynamics ensemble of DyDiff (pure torch): M small MLPs, each predicting the
standardised state change, reward and terminal flag of a transition.

Glossary: M members, N rows, Do / Da observation / action dims.

Member k maps standardised ``(z(s), z(a))`` to ``[z_Δ(s′ − s), z_r(r), d]`` (Do + 2). All
members see the same batches and differ by their initial weights (DyDiff's model, from
MBPO, is a Gaussian ensemble of 7 nets, 4×200 swish, with 5 elites and bootstrapped
data; this one is deterministic, fitted by MSE, and keeps all members).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rllib_diffusion.diffusion.networks.mlp import MLP


class DynamicsEnsemble(nn.Module):
    """``forward(x (..., Do + Da)) -> (M, ..., Do + 2)``: every member's prediction."""

    def __init__(
        self, obs_dim: int, action_dim: int, *, members: int = 7, width: int = 200, depth: int = 4
    ) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.members = nn.ModuleList(
            MLP(obs_dim + action_dim, obs_dim + 2, (width,) * depth, activation="silu")
            for _ in range(members)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([m(x) for m in self.members])


def ensemble_disagreement(pred: Tensor) -> Tensor:
    """MOPO's max-norm disagreement of member predictions ``pred`` (M, ..., D):
    ``u = max_k ‖μ_k − μ̄‖₂`` with ``μ̄ = mean_k μ_k``; returns ``(...)``."""
    return (pred - pred.mean(dim=0, keepdim=True)).norm(dim=-1).amax(dim=0)


def ensemble_targets(z_delta: Tensor, z_reward: Tensor, terminal: Tensor, members: int) -> Tensor:
    """Regression targets ``[z_Δ, z_r, d]`` (..., Do + 2) repeated for every member:
    ``(M, ..., Do + 2)``. The ensemble's loss is ``mean_{k,i,j} (f_k(x_i)_j − y_ij)²``."""
    y = torch.cat([z_delta, z_reward.unsqueeze(-1), terminal.unsqueeze(-1)], dim=-1)
    return y.unsqueeze(0).expand(members, *y.shape)
