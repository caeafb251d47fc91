"""Gymnasium wrapper that lets a chunked diffusion policy act in a plain env.

Glossary: To observation history, Do obs dim, Ta action horizon (chunk length),
Da action dim, act_steps (<= Ta) actions of each chunk executed open loop.

The policy lives entirely in normalised [-1, 1] space: the wrapper normalises
observations with the dataset statistics (and stacks To of them) and unnormalises
the chunk before executing it. One wrapper step = one decision = up to
``act_steps`` env steps whose rewards are **summed**; the chunk stops early at
termination or truncation, which are kept apart.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np

from rllib_diffusion.envs.tasks import make_env

ENV_NAME = "rllib_diffusion/ChunkedEnv"
#: env_config key: clip the normalised observations to [-1, 1] (absent: False).
CLAMP_OBS_KEY = "clamp_obs"


class ActionChunkWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Executes ``act_steps`` actions of a (Ta, Da) chunk per step.

    Args:
        env: the underlying env with a Box observation and action space.
        horizon: Ta, chunk length the policy outputs.
        act_steps: how many actions of each chunk to execute (1 <= act_steps <= Ta).
        obs_history: To, number of stacked observations given to the policy.
        obs_low/obs_high, action_low/action_high: min-max normalisation statistics
            (per dimension) of the dataset the policy was trained on. ``None`` means
            identity (the policy acts in raw units).
        flatten_actions: expose the chunk as a flat (Ta * Da,) Box, for policies that
            need 1-D actions (RLlib's default Gaussian modules).
        clamp_obs: clip normalised observations to [-1, 1] (DPPO's
            ``RobomimicLowdimWrapper(clamp_obs=...)``). Off by default, as there; the
            policy's setting is ``DiffusionPolicyConfig.clamp_obs``.

    Observation space: Box (To * Do,) of normalised observations (unbounded, since
    states outside the dataset's range normalise beyond ±1 unless ``clamp_obs``).
    Action space: Box [-1, 1] of shape (Ta, Da), or (Ta * Da,) with ``flatten_actions``.
    ``info["env_steps"]`` counts the env steps of the decision; where the env reports
    ``info["success"]``, the decision's is True if any of its steps succeeded. With
    ``record_frames=True`` (env made with ``render_mode="rgb_array"``),
    ``info["frames"]`` holds one rendered frame per executed env step.

    Its constructor arguments are recorded (``gymnasium.utils.RecordConstructorArgs``),
    so ``env.spec`` describes the wrapped env and ``gym.make(env.spec)`` recreates it.
    """

    def __init__(
        self,
        env: gym.Env,
        *,
        horizon: int,
        act_steps: int | None = None,
        obs_history: int = 1,
        obs_low: np.ndarray | None = None,
        obs_high: np.ndarray | None = None,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        flatten_actions: bool = False,
        record_frames: bool = False,
        clamp_obs: bool = False,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self,
            horizon=horizon,
            act_steps=act_steps,
            obs_history=obs_history,
            obs_low=obs_low,
            obs_high=obs_high,
            action_low=action_low,
            action_high=action_high,
            flatten_actions=flatten_actions,
            record_frames=record_frames,
            clamp_obs=clamp_obs,
        )
        gym.Wrapper.__init__(self, env)
        if not isinstance(env.action_space, gym.spaces.Box) or not isinstance(
            env.observation_space, gym.spaces.Box
        ):
            raise TypeError("ActionChunkWrapper needs Box observation and action spaces.")
        act_steps = horizon if act_steps is None else act_steps
        if not 1 <= act_steps <= horizon:
            raise ValueError(f"act_steps must be in [1, horizon={horizon}], got {act_steps}.")
        if obs_history < 1:
            raise ValueError(f"obs_history must be >= 1, got {obs_history}.")
        self.horizon, self.act_steps, self.obs_history = horizon, act_steps, obs_history
        self.record_frames, self.clamp_obs = record_frames, bool(clamp_obs)
        obs_dim = int(np.prod(env.observation_space.shape))
        act_dim = int(np.prod(env.action_space.shape))
        self._obs_stats = _stats(obs_low, obs_high, obs_dim, "observation")
        self._act_stats = _stats(action_low, action_high, act_dim, "action")
        self._env_low = env.action_space.low.astype(np.float64)
        self._env_high = env.action_space.high.astype(np.float64)
        self._chunk_shape = (horizon, act_dim)
        self.observation_space, self.action_space = chunk_spaces(
            obs_history * obs_dim, horizon, act_dim, flatten_actions=flatten_actions
        )
        self._history: deque[np.ndarray] = deque(maxlen=obs_history)

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        if self._obs_stats is None:
            return np.asarray(obs, dtype=np.float32)
        low, high = self._obs_stats
        normalised = 2.0 * (obs - low) / (high - low + 1e-6) - 1.0
        if self.clamp_obs:
            normalised = np.clip(normalised, -1.0, 1.0)
        return normalised.astype(np.float32)

    def unnormalize_action(self, action: np.ndarray) -> np.ndarray:
        if self._act_stats is None:
            return np.asarray(action, dtype=np.float64)
        low, high = self._act_stats
        return (np.asarray(action, dtype=np.float64) + 1.0) / 2.0 * (high - low + 1e-6) + low

    def _observation(self) -> np.ndarray:
        return np.concatenate(list(self._history), axis=0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        first = self.normalize_obs(obs)
        self._history.clear()
        for _ in range(self.obs_history):
            self._history.append(first)
        return self._observation(), info

    def step(self, action: np.ndarray):
        chunk = np.asarray(action, dtype=np.float64).reshape(self._chunk_shape)
        env_actions = np.clip(self.unnormalize_action(chunk), self._env_low, self._env_high)
        total_reward = 0.0
        terminated = truncated = False
        info: dict[str, Any] = {}
        frames: list[np.ndarray] = []
        steps = 0
        success = None
        for i in range(self.act_steps):
            obs, reward, terminated, truncated, info = self.env.step(env_actions[i])
            total_reward += float(reward)
            steps += 1
            if "success" in info:
                success = bool(success) or bool(info["success"])
            self._history.append(self.normalize_obs(obs))
            if self.record_frames:
                frames.append(self.env.render())
            if terminated or truncated:
                break
        info = dict(info)
        info["env_steps"] = steps
        if success is not None:  # success at any step of the chunk
            info["success"] = success
        if self.record_frames:
            info["frames"] = frames
        return self._observation(), total_reward, terminated, truncated, info


def chunk_spaces(
    obs_dim: int, horizon: int, action_dim: int, *, flatten_actions: bool = False
) -> tuple[gym.spaces.Box, gym.spaces.Box]:
    """(observation, action) spaces a chunked policy sees: (To*Do,) unbounded, [-1, 1]^(Ta, Da).

    With ``flatten_actions`` the action space is [-1, 1]^(Ta*Da,) instead.
    """
    act_shape = (horizon * action_dim,) if flatten_actions else (horizon, action_dim)
    return (
        gym.spaces.Box(-np.inf, np.inf, (obs_dim,), dtype=np.float32),
        gym.spaces.Box(-1.0, 1.0, act_shape, dtype=np.float32),
    )


def _stats(low, high, dim: int, what: str) -> tuple[np.ndarray, np.ndarray] | None:
    if low is None and high is None:
        return None
    if low is None or high is None:
        raise ValueError(f"Give both {what} low and high normalisation statistics, or neither.")
    low = np.asarray(low, dtype=np.float64).reshape(-1)
    high = np.asarray(high, dtype=np.float64).reshape(-1)
    if low.shape != (dim,) or high.shape != (dim,):
        raise ValueError(
            f"{what} normalisation statistics have {low.shape[0]} dims but the env's {what} "
            f"space has {dim}: the policy/dataset was made for another env."
        )
    return low, high


def make_chunked_env(config: dict[str, Any] | None = None) -> gym.Env:
    """Env creator used by RLlib EnvRunners (``config`` is RLlib's env_config).

    Keys: ``env_id`` (required), ``horizon``, ``act_steps``, ``obs_history``,
    ``normalization`` (a ``DatasetNormalization.to_dict()``), ``env_kwargs``,
    ``flatten_actions`` (1-D action space, for RLlib's default Gaussian modules),
    ``clamp_obs`` (clip normalised observations to [-1, 1]; see
    :class:`ActionChunkWrapper`).
    """
    config = dict(config or {})
    if "env_id" not in config:
        raise ValueError("env_config needs 'env_id' (e.g. 'Hopper-v5').")
    env = make_env(config["env_id"], **config.get("env_kwargs", {}))
    norm = config.get("normalization") or {}
    obs_norm = norm.get("obs") or {}
    act_norm = norm.get("action") or {}
    return ActionChunkWrapper(
        env,
        horizon=int(config.get("horizon", 1)),
        act_steps=config.get("act_steps"),
        obs_history=int(config.get("obs_history", 1)),
        obs_low=obs_norm.get("low"),
        obs_high=obs_norm.get("high"),
        action_low=act_norm.get("low"),
        action_high=act_norm.get("high"),
        flatten_actions=bool(config.get("flatten_actions", False)),
        record_frames=bool(config.get("record_frames", False)),
        clamp_obs=bool(config.get(CLAMP_OBS_KEY, False)),
    )


def register_chunked_env() -> str:
    """Register :func:`make_chunked_env` with Ray Tune's registry; returns its name."""
    from ray.tune.registry import register_env

    register_env(ENV_NAME, make_chunked_env)
    return ENV_NAME
