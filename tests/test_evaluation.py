"""evaluate_module with fewer envs than episodes: envs are reused, episodes keep their seeds."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from rllib_diffusion.envs.robosuite_tasks import ROBOT_TASKS
from rllib_diffusion.envs.tasks import eval_envs_at_once

ENV_ID = "rllib_diffusion_test/SeedLength-v0"


class _SeedLengthEnv(gym.Env):
    """Episodes last ``1 + seed % 4`` steps; success (reward 1) on odd seeds. Counts the
    instances alive at once."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    alive = 0
    most_alive = 0

    def __init__(self) -> None:
        type(self).alive += 1
        type(self).most_alive = max(type(self).most_alive, type(self).alive)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._seed, self._t = seed, 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self._t += 1
        done = self._t >= 1 + self._seed % 4
        success = done and self._seed % 2 == 1
        return np.zeros(1, np.float32), float(success), done, False, {"success": success}

    def close(self) -> None:
        type(self).alive -= 1


class _Zero(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward_inference(self, batch):
        from ray.rllib.core.columns import Columns

        return {Columns.ACTIONS: torch.zeros(batch[Columns.OBS].shape[0], 1, 1)}


@pytest.fixture
def seed_length_env():
    gym.register(ENV_ID, entry_point=_SeedLengthEnv)
    _SeedLengthEnv.alive = _SeedLengthEnv.most_alive = 0
    yield {"env_id": ENV_ID, "horizon": 1}
    gym.registry.pop(ENV_ID)


@pytest.mark.parametrize("max_envs", [1, 3, 7, None])
def test_pooled_evaluation_runs_each_episode_with_its_seed(seed_length_env, max_envs):
    from rllib_diffusion.evaluation import evaluate_module

    result = evaluate_module(_Zero(), seed_length_env, num_episodes=7, seed=10, max_envs=max_envs)
    seeds = range(10, 17)
    assert result["episode_lengths"] == [1 + s % 4 for s in seeds]
    assert result["episode_successes"] == [s % 2 == 1 for s in seeds]
    assert result["success_rate"] == pytest.approx(3 / 7)
    assert result["env_steps"] == sum(1 + s % 4 for s in seeds)
    assert _SeedLengthEnv.most_alive == (max_envs or 7)
    assert _SeedLengthEnv.alive == 0  # all closed


def test_max_envs_must_be_positive(seed_length_env):
    from rllib_diffusion.evaluation import evaluate_module

    with pytest.raises(ValueError, match="max_envs must be >= 1"):
        evaluate_module(_Zero(), seed_length_env, num_episodes=2, max_envs=0)


def test_robot_tasks_bound_the_envs_of_an_evaluation():
    for env_id in ROBOT_TASKS:
        assert eval_envs_at_once(env_id) == 10
    assert eval_envs_at_once("Hopper-v5") is None and eval_envs_at_once(None) is None
