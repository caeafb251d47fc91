"""A known toy linear dynamics for DyDiff tests: ``s′ = A s + B a`` (Do = 3, Da = 2),
actions uniform in [−1, 1], reward ``−|s|²/10``, episodes of 24 steps, no terminals."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from rllib_diffusion.algorithms.dydiff.dydiff_rl_module import (
    DyDiffModelConfig,
    DyDiffModule,
    fit_normalizers,
)
from rllib_diffusion.data import Episode, EpisodeDataset
from rllib_diffusion.data.segments import make_segments

A = np.array([[0.9, 0.2, 0.0], [-0.2, 0.9, 0.0], [0.0, 0.1, 0.8]], np.float32)
B = np.array([[0.5, 0.0], [0.0, 0.5], [0.3, -0.3]], np.float32)
LENGTH = 24


def step(s: np.ndarray, a: np.ndarray) -> np.ndarray:
    """The true dynamics on ``(..., 3)`` states and ``(..., 2)`` actions."""
    return s @ A.T + a @ B.T


def toy_linear_dataset(num_episodes: int, seed: int) -> EpisodeDataset:
    rng = np.random.default_rng(seed)
    episodes = []
    for _ in range(num_episodes):
        obs = [rng.normal(0, 1, 3).astype(np.float32)]
        actions = rng.uniform(-1, 1, (LENGTH, 2)).astype(np.float32)
        for a in actions:
            obs.append(step(obs[-1], a))
        obs = np.stack(obs)
        episodes.append(
            Episode(
                observations=obs,
                actions=actions,
                rewards=-(obs[1:] ** 2).sum(-1) / 10,
                terminations=np.zeros(LENGTH, bool),
                truncations=np.arange(LENGTH) == LENGTH - 1,
            )
        )
    return EpisodeDataset(episodes=episodes, env_id=None, name="toy-linear")


def toy_module(segments: dict, **kw) -> DyDiffModule:
    cfg = DyDiffModelConfig(
        obs_dim=3,
        action_dim=2,
        normalization=fit_normalizers(segments),
        clip_x0=6.0,
        **{
            "horizon": 4,
            "width": 128,
            "depth": 2,
            "denoising_steps": 20,
            "ensemble_size": 3,
            "ensemble_width": 32,
            "ensemble_depth": 2,
            **kw,
        },
    )
    box = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    return DyDiffModule(observation_space=box, action_space=box, model_config=cfg.to_dict())


def train_toy(module: DyDiffModule, segments: dict, steps: int, *, shuffle_actions=False):
    """Plain Adam on the module's own training forward (the RLlib learner's MSE);
    ``shuffle_actions`` permutes actions across segments (a model blind to them)."""
    from ray.rllib.core.columns import Columns

    from rllib_diffusion import columns as C
    from rllib_diffusion.modules.diffusion_policy_module import PREDICTION, TARGET

    torch.manual_seed(0)
    opt = torch.optim.Adam(module.net.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    n = len(segments[C.OBS])
    names = {C.OBS: Columns.OBS, C.ACTIONS: Columns.ACTIONS, C.REWARDS: Columns.REWARDS,
             C.NEXT_OBS: Columns.NEXT_OBS, C.TERMINATEDS: Columns.TERMINATEDS}  # fmt: skip
    for _ in range(steps):
        idx = rng.integers(0, n, 256)
        batch = {dst: torch.as_tensor(segments[src][idx]) for src, dst in names.items()}
        if shuffle_actions:
            batch[Columns.ACTIONS] = batch[Columns.ACTIONS][torch.randperm(256)]
        out = module._forward_train(batch)
        loss = torch.nn.functional.mse_loss(out[PREDICTION], out[TARGET])
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.ema_net.load_state_dict(module.net.state_dict())
    return module


def toy_segments(num_episodes: int, seed: int, horizon: int = 4) -> dict:
    return make_segments(toy_linear_dataset(num_episodes, seed), horizon=horizon)
