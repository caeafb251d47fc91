"""A tiny random transition batch shared by the offline Q-learner tests."""

from __future__ import annotations

import torch
from ray.rllib.core.columns import Columns


def transition_batch(n: int, obs_dim: int, act_dim: int, seed: int = 0) -> dict:
    """``n`` random transitions: obs/next obs ~ N(0, 1), actions ~ U(-1, 1), rewards
    ~ N(0, 1), terminations ~ Bernoulli(0.5); the same tensors for the same seed."""
    g = torch.Generator().manual_seed(seed)
    return {
        Columns.OBS: torch.randn(n, obs_dim, generator=g),
        Columns.ACTIONS: torch.rand(n, act_dim, generator=g) * 2 - 1,
        Columns.REWARDS: torch.randn(n, generator=g),
        Columns.NEXT_OBS: torch.randn(n, obs_dim, generator=g),
        Columns.TERMINATEDS: (torch.rand(n, generator=g) > 0.5).float(),
    }
