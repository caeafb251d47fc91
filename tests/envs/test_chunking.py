"""Action-chunk wrapper: reward summing, early stop, terminated vs truncated, normalisation."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rllib_diffusion.envs.chunking import ActionChunkWrapper, make_chunked_env


class CountingEnv(gym.Env):
    """1-D env: reward = step index (1, 2, 3, ...); ends at ``end`` (terminated or truncated)."""

    def __init__(self, end: int = 100, terminate: bool = True) -> None:
        self.observation_space = gym.spaces.Box(-100, 100, (2,), np.float32)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
        self.end, self.terminate = end, terminate
        self.executed: list[float] = []

    def reset(self, *, seed=None, options=None):
        self.t = 0
        self.executed = []
        return np.array([0.0, 0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        self.executed.append(float(action[0]))
        done = self.t >= self.end
        obs = np.array([self.t, float(action[0])], np.float32)
        return obs, float(self.t), done and self.terminate, done and not self.terminate, {}


def test_sums_rewards_over_act_steps_and_ignores_rest_of_chunk():
    env = ActionChunkWrapper(CountingEnv(), horizon=4, act_steps=3)
    env.reset()
    chunk = np.array([[0.1], [0.2], [0.3], [0.9]], np.float32)
    _, reward, terminated, truncated, info = env.step(chunk)
    assert reward == pytest.approx(1 + 2 + 3)
    assert info["env_steps"] == 3
    assert env.unwrapped.executed == pytest.approx([0.1, 0.2, 0.3])
    assert not terminated and not truncated


@pytest.mark.parametrize("terminate", [True, False])
def test_stops_at_episode_end_and_keeps_terminated_apart(terminate):
    env = ActionChunkWrapper(CountingEnv(end=5, terminate=terminate), horizon=4, act_steps=4)
    env.reset()
    env.step(np.zeros((4, 1), np.float32))  # steps 1..4
    _, reward, terminated, truncated, info = env.step(np.zeros((4, 1), np.float32))
    assert info["env_steps"] == 1  # only step 5 ran
    assert reward == pytest.approx(5.0)
    assert terminated is terminate and truncated is (not terminate)


def test_actions_are_unnormalised_and_clipped_to_env_bounds():
    env = ActionChunkWrapper(
        CountingEnv(), horizon=2, act_steps=2, action_low=[-1.0], action_high=[3.0]
    )
    env.reset()
    env.step(np.array([[-1.0], [1.0]], np.float32))
    # -1 -> low = -1; +1 -> high = 3 (+1e-6) which the env bounds clip to 2.
    assert env.unwrapped.executed == pytest.approx([-1.0, 2.0], abs=1e-5)


def test_observation_history_normalised_and_padded_at_reset():
    env = ActionChunkWrapper(
        CountingEnv(), horizon=1, obs_history=3, obs_low=[0.0, -1.0], obs_high=[10.0, 1.0]
    )
    obs, _ = env.reset()
    assert env.observation_space.shape == (6,)
    first = np.array([-1.0, 0.0])
    np.testing.assert_allclose(obs, np.tile(first, 3), atol=1e-5)
    obs, *_ = env.step(np.array([[0.5]], np.float32))
    np.testing.assert_allclose(obs[-2:], [2 * 1 / 10 - 1, 0.5], atol=1e-5)
    np.testing.assert_allclose(obs[:4], np.tile(first, 2), atol=1e-5)


@pytest.mark.parametrize("clamp_obs", [False, True])
def test_clamp_obs_clips_normalised_observations_to_unit_box(clamp_obs):
    # obs dim 1 has data range [-1, 1]; the env can put it at 2 (action bound 2).
    env = ActionChunkWrapper(
        CountingEnv(),
        horizon=1,
        obs_low=[0.0, -1.0],
        obs_high=[10.0, 1.0],
        clamp_obs=clamp_obs,
    )
    env.reset()
    obs, *_ = env.step(np.array([[2.0]], np.float32))  # raw obs (1, 2)
    beyond = 2 * (2.0 + 1.0) / (2.0 + 1e-6) - 1  # 2.0: outside the data's range
    np.testing.assert_allclose(obs, [2 * 1 / 10 - 1, 1.0 if clamp_obs else beyond], atol=1e-5)
    obs, *_ = env.step(np.array([[-2.0]], np.float32))  # raw obs (2, -2)
    below = 2 * (-2.0 + 1.0) / (2.0 + 1e-6) - 1  # -2.0
    np.testing.assert_allclose(obs, [2 * 2 / 10 - 1, -1.0 if clamp_obs else below], atol=1e-5)


def test_policy_clamp_obs_reaches_the_env_through_env_config():
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    # Hopper's reset height ~1.25 normalises to ~2,500 with a data range of 1e-3.
    norm = {"obs": {"low": [0.0] * 11, "high": [1e-3] * 11}}
    for clamp_obs in (False, True):
        policy = DiffusionPolicyConfig(
            obs_dim=11, action_dim=3, env_id="Hopper-v5", normalization=norm, clamp_obs=clamp_obs
        )
        assert policy.env_config()["clamp_obs"] is clamp_obs
        obs, _ = make_chunked_env(policy.env_config()).reset(seed=0)
        # Height 1.25 -> 2 * 1.25 / (1e-3 + 1e-6) - 1 ~ 2,496 unclamped, 1 clamped.
        assert obs[0] == pytest.approx(1.0 if clamp_obs else 2 * 1.25 / 1.001e-3 - 1, rel=1e-2)
        assert bool(np.abs(obs).max() <= 1.0) == clamp_obs
    assert DiffusionPolicyConfig(obs_dim=1, action_dim=1).clamp_obs is False  # DPPO's default


def test_rejects_stats_of_another_env():
    with pytest.raises(ValueError, match="another env"):
        ActionChunkWrapper(CountingEnv(), horizon=1, obs_low=[0.0] * 5, obs_high=[1.0] * 5)


def test_make_chunked_env_hopper_spaces():
    env = make_chunked_env({"env_id": "Hopper-v5", "horizon": 4, "act_steps": 2})
    assert env.action_space.shape == (4, 3)
    assert env.observation_space.shape == (11,)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.zeros((4, 3), np.float32))
    assert info["env_steps"] == 2


def test_flatten_actions_gives_1d_box_and_reshapes_inside_step():
    env = ActionChunkWrapper(CountingEnv(), horizon=3, act_steps=2, flatten_actions=True)
    assert env.action_space.shape == (3,)
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    env.reset()
    _, reward, _, _, info = env.step(np.array([0.1, 0.2, 0.3], np.float32))
    assert info["env_steps"] == 2
    assert env.unwrapped.executed == pytest.approx([0.1, 0.2])
    assert reward == pytest.approx(1 + 2)
    hopper = make_chunked_env(
        {"env_id": "Hopper-v5", "horizon": 2, "act_steps": 1, "flatten_actions": True}
    )
    assert hopper.action_space.shape == (6,)
    hopper.reset(seed=0)
    assert hopper.step(np.zeros(6, np.float32))[4]["env_steps"] == 1
