"""Record episodes of a policy in a gymnasium env and write them as a Minari dataset."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from rllib_diffusion.collect.policies import CollectPolicy, RandomPolicy, RLlibCheckpointPolicy
from rllib_diffusion.collect.sequence import (
    PolicySequenceSettings,
    SequenceStep,
    equal_shares,
    policy_sequence,
    training_record,
)
from rllib_diffusion.data import Episode, EpisodeDataset, write_minari
from rllib_diffusion.data.minari_io import check_output_id
from rllib_diffusion.envs.tasks import make_env, task_info
from rllib_diffusion.modules.model_config import ConfigError

logger = logging.getLogger(__name__)

#: ``metadata.json`` key of a collected dataset's provenance (policies, training
#: returns, what each recorded; for a concatenation, its sources).
PROVENANCE_KEY = "collection_provenance"


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
    rec = _Recorder(envs, policy, num_episodes=num_episodes, num_steps=num_steps, seed=seed)
    t0 = time.perf_counter()
    last_print = t0
    for i in range(num_envs):
        if rec.want_more():
            rec.start(i)
    while rec.alive.any():
        rec.step_alive()
        now = time.perf_counter()
        if progress and now - last_print > 10:
            last_print = now
            _print_progress(rec.done_eps, rec.steps_done, now - t0)
    for env in envs:
        env.close()
    return rec.done_eps


class _Recorder:
    """Per-env step buffers of one collection, turned into an ``Episode`` as each one ends."""

    def __init__(
        self,
        envs: list[gym.Env],
        policy: CollectPolicy,
        *,
        num_episodes: int | None,
        num_steps: int | None,
        seed: int,
    ) -> None:
        self.envs, self.policy, self.seed = envs, policy, seed
        self.num_episodes, self.num_steps = num_episodes, num_steps
        self.started = 0
        self.obs_buf: list[list[np.ndarray]] = [[] for _ in envs]
        self.act_buf: list[list[np.ndarray]] = [[] for _ in envs]
        self.rew_buf: list[list[float]] = [[] for _ in envs]
        self.done_eps: list[Episode] = []
        self.steps_done = 0
        self.alive = np.zeros(len(envs), dtype=bool)

    def want_more(self) -> bool:
        """Whether another episode should be started (or the running ones suffice)."""
        if self.num_episodes is not None:
            return self.started < self.num_episodes
        return self.steps_done + sum(len(a) for a in self.act_buf) < self.num_steps

    def start(self, i: int) -> None:
        """Reset env ``i`` with the next seed and start recording its episode."""
        obs, _ = self.envs[i].reset(seed=self.seed + self.started)
        self.started += 1
        self.obs_buf[i], self.act_buf[i], self.rew_buf[i] = [np.asarray(obs, np.float32)], [], []
        self.policy.reset(i, obs)
        self.alive[i] = True

    def step_alive(self) -> None:
        """Step every running env once with the policy's actions; restart those that end."""
        idx = [int(i) for i in np.flatnonzero(self.alive)]
        actions = self.policy.act(idx)
        for j, i in enumerate(idx):
            action = actions[j]
            obs, reward, terminated, truncated, _ = self.envs[i].step(action)
            self.policy.step(i, action, obs, float(reward), terminated, truncated)
            self.obs_buf[i].append(np.asarray(obs, np.float32))
            self.act_buf[i].append(np.asarray(action, np.float32))
            self.rew_buf[i].append(float(reward))
            if terminated or truncated:
                self._finish(i, terminated, truncated)
                if self.want_more():
                    self.start(i)

    def _finish(self, i: int, terminated: bool, truncated: bool) -> None:
        """Turn env ``i``'s buffers into a finished episode and mark the env idle."""
        T = len(self.act_buf[i])
        term = np.zeros(T, bool)
        trunc = np.zeros(T, bool)
        term[-1], trunc[-1] = terminated, truncated and not terminated
        self.done_eps.append(
            Episode(
                observations=np.stack(self.obs_buf[i]),
                actions=np.stack(self.act_buf[i]),
                rewards=np.asarray(self.rew_buf[i], np.float32),
                terminations=term,
                truncations=trunc,
            )
        )
        self.steps_done += T
        self.obs_buf[i], self.act_buf[i], self.rew_buf[i] = [], [], []
        self.alive[i] = False


def _print_progress(done_eps: list[Episode], steps_done: int, elapsed: float) -> None:
    """One progress line: episodes and steps so far, recent return, throughput."""
    rets = [e.episode_return for e in done_eps[-20:]]
    print(
        f"[collect] {len(done_eps)} episodes, {steps_done} steps, "
        f"recent return {np.mean(rets) if rets else float('nan'):.1f}, "
        f"{steps_done / elapsed:.0f} steps/s",
        flush=True,
    )


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


def episode_stats(episodes: list[Episode]) -> dict[str, Any]:
    """Episodes, transitions, mean and std return of ``episodes`` (plain python)."""
    returns = np.array([ep.episode_return for ep in episodes], dtype=np.float64)
    return {
        "episodes": len(episodes),
        "transitions": int(sum(ep.length for ep in episodes)),
        "return_mean": float(returns.mean()) if len(returns) else float("nan"),
        "return_std": float(returns.std()) if len(returns) else float("nan"),
    }


def _plan(
    env_id: str, policy: str | None, sequence: PolicySequenceSettings, total: int, flag: str
) -> tuple[list[tuple[str, SequenceStep | None]], list[int]]:
    """The policies to collect with, in order, each with its training record, and the
    share of ``total`` (steps or episodes) each one records."""
    if sequence.policy_sequence is None:
        spec = policy or "random"
        return [(spec, None if spec == "random" else training_record(spec))], [total]
    steps = policy_sequence(sequence.policy_sequence, sequence.until_return, env_id=env_id)
    return [(s.path, s) for s in steps], equal_shares(total, len(steps), flag=flag)


def collect_stages(
    env_id: str,
    stages: list[tuple[str, SequenceStep | None]],
    shares: list[int],
    *,
    by_steps: bool,
    num_envs: int = 8,
    explore: bool = True,
    seed: int = 0,
) -> tuple[list[Episode], list[dict[str, Any]]]:
    """Collect ``shares[k]`` steps (``by_steps``) or episodes with policy ``stages[k]``,
    one policy after the other; returns the episodes in that order and one provenance
    record per stage (policy, its training record, what it recorded). Reset seeds run on
    across stages, so no two episodes share one."""
    episodes: list[Episode] = []
    records: list[dict[str, Any]] = []
    for (spec, step), share in zip(stages, shares):
        start = seed + len(episodes)
        pol = make_policy(spec, env_id, explore=explore, seed=start)
        size = {"num_steps": share} if by_steps else {"num_episodes": share}
        new = collect_episodes(env_id, pol, num_envs=num_envs, seed=start, **size)
        episodes.extend(new)
        record = {"policy": pol.name, "first_episode": len(episodes) - len(new)}
        record.update(asdict(step) if step is not None else {"path": spec})
        records.append({**record, **episode_stats(new)})
        if len(stages) > 1:
            print(f"[collect] stage {len(records)}/{len(stages)}: {records[-1]}", flush=True)
    return episodes, records


def collect_dataset(
    env_id: str,
    dataset_id: str,
    *,
    policy: str | None = None,
    sequence: PolicySequenceSettings | None = None,
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
    """Collect episodes with ``policy`` (``"random"`` for None, or an RLlib checkpoint)
    or with the checkpoints of ``sequence`` in training order, and write them as Minari
    dataset ``dataset_id`` with their provenance under :data:`PROVENANCE_KEY`.

    Reference scores default to the task table (:mod:`rllib_diffusion.envs.tasks`), so
    that ``get_normalized_score`` works on the result. Bad input (flags that do not go
    together, an existing id, a run that never reaches ``until_return``) is refused in one
    line before any policy loads. Returns a summary dict.
    """
    from rllib_diffusion.utils.runtime import limit_threads

    limit_threads()
    sequence = sequence or PolicySequenceSettings()
    _check_request(env_id, dataset_id, policy, sequence, num_episodes, num_steps, overwrite)
    total, flag = (num_steps, "--num-steps") if num_steps else (num_episodes, "--num-episodes")
    stages, shares = _plan(env_id, policy, sequence, int(total), flag)
    t0 = time.perf_counter()
    episodes, records = collect_stages(
        env_id, stages, shares, by_steps=bool(num_steps), num_envs=num_envs, explore=explore,
        seed=seed,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    ref_min_score, ref_max_score = _ref_scores(env_id, ref_min_score, ref_max_score)
    provenance = _provenance(
        env_id, sequence, records, explore=explore, seed=seed, num_envs=num_envs, seconds=seconds
    )
    run_dir = sequence.policy_sequence
    name = f"{len(stages)} checkpoints of {run_dir} in order" if run_dir else records[0]["policy"]
    dataset = EpisodeDataset(episodes, env_id, dataset_id, ref_min_score, ref_max_score)
    path = write_minari(
        dataset,
        dataset_id,
        algorithm_name=name,
        author="rllib-diffusion collect",
        description=description
        or f"{len(episodes)} episodes of {env_id} collected with {name} (explore={explore}).",
        overwrite=overwrite,
        extra_metadata={PROVENANCE_KEY: provenance},
    )
    return _summary(dataset, path, name, len(stages), seconds)


def _check_request(
    env_id: str,
    dataset_id: str,
    policy: str | None,
    sequence: PolicySequenceSettings,
    num_episodes: int | None,
    num_steps: int | None,
    overwrite: bool,
) -> None:
    """Refuse flags that do not go together, an existing id or an unsuitable env, in one line."""
    sequence.check(policy)
    if (num_episodes is None) == (num_steps is None):
        raise ConfigError("give exactly one of --num-steps or --num-episodes.")
    check_output_id(dataset_id, overwrite=overwrite)
    check_collectable_env(env_id)


def _ref_scores(
    env_id: str, ref_min_score: float | None, ref_max_score: float | None
) -> tuple[float | None, float | None]:
    """The given reference scores, the task table's where one is ``None``."""
    info = task_info(env_id)
    if info is not None:
        ref_min_score = info.ref_min_score if ref_min_score is None else ref_min_score
        ref_max_score = info.ref_max_score if ref_max_score is None else ref_max_score
    return ref_min_score, ref_max_score


def _provenance(
    env_id: str,
    sequence: PolicySequenceSettings,
    records: list[dict[str, Any]],
    *,
    explore: bool,
    seed: int,
    num_envs: int,
    seconds: float,
) -> dict[str, Any]:
    """The dataset's provenance record (stored under :data:`PROVENANCE_KEY`)."""
    from rllib_diffusion.utils.runtime import run_metadata

    run_dir = sequence.policy_sequence
    return {
        "kind": "policy-sequence" if run_dir else "policy",
        "env_id": env_id,
        "run_dir": str(Path(run_dir).expanduser().resolve()) if run_dir else None,
        "until_return": sequence.until_return,
        **dict(explore=explore, seed=seed, num_envs=num_envs, stages=records, seconds=seconds),
        "meta": run_metadata(),
    }


def _summary(
    dataset: EpisodeDataset, path: str, policy: str, stages: int, seconds: float
) -> dict[str, Any]:
    summary = {
        "dataset_id": dataset.name,
        "path": path,
        "env_id": dataset.env_id,
        "policy": policy,
        "stages": stages,
        **episode_stats(dataset.episodes),
        "ref_min_score": dataset.ref_min_score,
        "ref_max_score": dataset.ref_max_score,
        "seconds": seconds,
    }
    if dataset.ref_min_score is not None and dataset.ref_max_score is not None:
        scores = dataset.normalized_score(dataset.episode_returns())
        summary["normalized_score_mean"] = float(scores.mean())
    print(
        f"[collect] wrote {dataset.name}: {summary['episodes']} episodes, "
        f"{summary['transitions']} transitions, return {summary['return_mean']:.1f} ± "
        f"{summary['return_std']:.1f} ({seconds:.0f}s) -> {path}",
        flush=True,
    )
    return summary
