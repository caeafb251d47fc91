"""A known toy distribution of transitions on ``rllib_diffusion/ReachTarget-v0`` (1-D):
observation ``[target, t/T]``, a bimodal action ``±0.6 + N(0, 0.05²)``, reward
``1 − |a − target|``, every other episode terminated at its end (terminal rate 5%)."""

from __future__ import annotations

import numpy as np

from rllib_diffusion.data import Episode, EpisodeDataset
from rllib_diffusion.envs.toy import ENV_ID, register

HORIZON = 10


def toy_dataset(num_episodes: int, seed: int, name: str = "toy") -> EpisodeDataset:
    register()
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(num_episodes):
        target = rng.uniform(-0.8, 0.8)
        t = np.arange(HORIZON + 1) / HORIZON
        obs = np.stack([np.full(HORIZON + 1, target), t], axis=1)
        actions = rng.choice([-0.6, 0.6], HORIZON) + rng.normal(0, 0.05, HORIZON)
        terminal = np.zeros(HORIZON, bool)
        terminal[-1] = i % 2 == 0
        episodes.append(
            Episode(
                observations=obs,
                actions=actions[:, None],
                rewards=1.0 - np.abs(actions - target),
                terminations=terminal,
                truncations=~terminal & (np.arange(HORIZON) == HORIZON - 1),
            )
        )
    return EpisodeDataset(episodes=episodes, env_id=ENV_ID, name=name)
