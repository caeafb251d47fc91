"""A tiny continuous-control task for fast learning tests and examples.

``rllib_diffusion/ReachTarget-v0``: each episode draws a target in [-0.8, 0.8]^D; the
observation is ``[target, t / T]``; the reward of action ``a`` is ``1 - mean|a - target|``;
episodes are truncated after ``T`` steps. A policy that outputs the target scores T.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ENV_ID = "rllib_diffusion/ReachTarget-v0"


class ReachTargetEnv(gym.Env):
    def __init__(self, dim: int = 1, horizon: int = 10) -> None:
        self.dim, self.horizon = dim, horizon
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (dim + 1,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self._target = np.zeros(dim, np.float32)
        self._t = 0

    def _obs(self) -> np.ndarray:
        return np.r_[self._target, self._t / self.horizon].astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._target = self.np_random.uniform(-0.8, 0.8, self.dim).astype(np.float32)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        reward = 1.0 - float(np.abs(a - self._target).mean())
        self._t += 1
        return self._obs(), reward, False, self._t >= self.horizon, {}


def register() -> None:
    if ENV_ID not in gym.registry:
        gym.register(ENV_ID, entry_point=ReachTargetEnv)
