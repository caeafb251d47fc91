"""Record episodes of a policy in a gymnasium env and write them as a Minari dataset."""

from __future__ import annotations

import logging
import time
from typing import Any

import gymnasium as gym
import numpy as np

from rllib_diffusion.collect.policies import CollectPolicy, RandomPolicy, RLlibCheckpointPolicy
from rllib_diffusion.data import Episode, EpisodeDataset, write_minari
from rllib_diffusion.envs.tasks import make_env, task_info
from rllib_diffusion.modules.model_config import ConfigError

logger = logging.getLogger(__name__)


def collect_episodes(
    env_id: str,
    policy: CollectPolicy,
    *,
    num_episodes: int | None = None,
    num_steps: int | None = None,
    num_envs: int = 8,
    seed: int = 0,
    progress: bool = True,
    env_kwargs: dict[str, Any] | None = None,
) -> list[Episode]:
    """Run ``policy`` in ``num_envs`` copies of ``env_id`` until enough data is recorded.

    Stops once ``num_episodes`` episodes are complete, or once at least ``num_steps``
    transitions are recorded in complete episodes (episodes running at that point are
    finished, not cut, so every recorded episode ends in termination or truncation).
    Observations and actions are recorded in raw env units.
    """
    if (num_episodes is None) == (num_steps is None):
        raise ValueError("Give exactly one of num_episodes or num_steps.")
    envs = [make_env(env_id, **(env_kwargs or {})) for _ in range(num_envs)]
    started = 0
    obs_buf: list[list[np.ndarray]] = [[] for _ in envs]
    act_buf: list[list[np.ndarray]] = [[] for _ in envs]
    rew_buf: list[list[float]] = [[] for _ in envs]
    done_eps: list[Episode] = []
    steps_done = 0
    alive = np.zeros(num_envs, dtype=bool)
    t0 = time.perf_counter()
    last_print = t0

    def want_more() -> bool:
        if num_episodes is not None:
            return started < num_episodes
        return steps_done + sum(len(a) for a in act_buf) < num_steps

    def start(i: int) -> None:
        nonlocal started
        obs, _ = envs[i].reset(seed=seed + started)
        started += 1
        obs_buf[i], act_buf[i], rew_buf[i] = [np.asarray(obs, np.float32)], [], []
        policy.reset(i, obs)
        alive[i] = True

    for i in range(num_envs):
        if want_more():
            start(i)
    while alive.any():
        idx = [int(i) for i in np.flatnonzero(alive)]
        actions = policy.act(idx)
        for j, i in enumerate(idx):
            action = actions[j]
            obs, reward, terminated, truncated, _ = envs[i].step(action)
            policy.step(i, action, obs, float(reward), terminated, truncated)
            obs_buf[i].append(np.asarray(obs, np.float32))
            act_buf[i].append(np.asarray(action, np.float32))
            rew_buf[i].append(float(reward))
            if terminated or truncated:
                T = len(act_buf[i])
                term = np.zeros(T, bool)
                trunc = np.zeros(T, bool)
                term[-1], trunc[-1] = terminated, truncated and not terminated
                done_eps.append(
                    Episode(
                        observations=np.stack(obs_buf[i]),
                        actions=np.stack(act_buf[i]),
                        rewards=np.asarray(rew_buf[i], np.float32),
                        terminations=term,
                        truncations=trunc,
                    )
                )
                steps_done += T
                obs_buf[i], act_buf[i], rew_buf[i] = [], [], []
                alive[i] = False
                if want_more():
                    start(i)
        now = time.perf_counter()
        if progress and now - last_print > 10:
            last_print = now
            rets = [e.episode_return for e in done_eps[-20:]]
            print(
                f"[collect] {len(done_eps)} episodes, {steps_done} steps, "
                f"recent return {np.mean(rets) if rets else float('nan'):.1f}, "
                f"{steps_done / (now - t0):.0f} steps/s",
                flush=True,
            )
    for env in envs:
        env.close()
    return done_eps


def check_collectable_env(env_id: str) -> None:
    """Raise a one-line ``ConfigError`` unless ``env_id`` is a known env with a continuous
    Box action space (what the datasets and diffusion policies of this package need)."""
    env = make_env(env_id)  # an unknown id is a ConfigError naming close matches
    space = env.action_space
    env.close()
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(
            f"--env {env_id} has action space {space}; collecting datasets for diffusion "
            "policies needs a continuous Box action space (e.g. Hopper-v5, "
            "rllib_diffusion/ReachTarget-v0)."
        )


def make_policy(spec: str, env_id: str, *, explore: bool = True, seed: int = 0) -> CollectPolicy:
    """``"random"`` or a path to an RLlib Algorithm checkpoint."""
    if spec == "random":
        env = make_env(env_id)
        space = env.action_space
        env.close()
        return RandomPolicy(space, seed=seed)
    return RLlibCheckpointPolicy(spec, explore=explore)


def collect_dataset(
    env_id: str,
    dataset_id: str,
    *,
    policy: str = "random",
    num_episodes: int | None = None,
    num_steps: int | None = None,
    num_envs: int = 8,
    explore: bool = True,
    seed: int = 0,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    overwrite: bool = False,
    description: str | None = None,
) -> dict[str, Any]:
    """Collect episodes with ``policy`` and write them as Minari dataset ``dataset_id``.

    Reference scores default to the task table (:mod:`rllib_diffusion.envs.tasks`), so
    that ``get_normalized_score`` works on the result. Returns a summary dict.
    """
    from rllib_diffusion.utils.runtime import limit_threads

    limit_threads()
    check_collectable_env(env_id)
    pol = make_policy(policy, env_id, explore=explore, seed=seed)
    t0 = time.perf_counter()
    episodes = collect_episodes(
        env_id, pol, num_episodes=num_episodes, num_steps=num_steps, num_envs=num_envs, seed=seed
    )
    seconds = time.perf_counter() - t0
    info = task_info(env_id)
    if info is not None:
        ref_min_score = info.ref_min_score if ref_min_score is None else ref_min_score
        ref_max_score = info.ref_max_score if ref_max_score is None else ref_max_score
    dataset = EpisodeDataset(
        episodes=episodes,
        env_id=env_id,
        name=dataset_id,
        ref_min_score=ref_min_score,
        ref_max_score=ref_max_score,
    )
    path = write_minari(
        dataset,
        dataset_id,
        env_id=env_id,
        ref_min_score=ref_min_score,
        ref_max_score=ref_max_score,
        algorithm_name=pol.name,
        author="rllib-diffusion collect",
        description=description
        or f"{len(episodes)} episodes of {env_id} collected with {pol.name} (explore={explore}).",
        overwrite=overwrite,
    )
    returns = dataset.episode_returns()
    summary = {
        "dataset_id": dataset_id,
        "path": path,
        "env_id": env_id,
        "policy": pol.name,
        "episodes": len(episodes),
        "transitions": dataset.num_transitions,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "ref_min_score": ref_min_score,
        "ref_max_score": ref_max_score,
        "seconds": seconds,
    }
    print(
        f"[collect] wrote {dataset_id}: {summary['episodes']} episodes, "
        f"{summary['transitions']} transitions, return {summary['return_mean']:.1f} ± "
        f"{summary['return_std']:.1f} ({seconds:.0f}s) -> {path}",
        flush=True,
    )
    return summary
