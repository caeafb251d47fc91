"""Sampling to an env-step budget, above the families: exploring rollouts from the
EnvRunners, true env steps counted from each decision's ``info["env_steps"]`` (a
decision executes a chunk of actions), and a last iteration sized to what the budget
still needs (:func:`last_iteration`, set by the run family's ``before_iteration``;
sampled by :func:`sample_last_iteration`), so a run ends within one vector step of its
budget instead of a whole iteration above it, with one update on all of it.

Used by DPPO and its descendants (``dppo/``), DRWR/DAWR (``awr/``) and DIPO/QSM
(``qgrad/``); host: ``<Algo>(<FamilyMixin>(EnvStepBudgetMixin), Algorithm)``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS


def episode_env_steps(episodes: list) -> int:
    """True env steps of episode chunks: the sum of their decisions' ``info["env_steps"]``
    (1 where a decision carries none; the reset info is not a step)."""
    return sum(int(info.get("env_steps", 1)) for ep in episodes for info in ep.get_infos()[1:])


class LastIteration(NamedTuple):
    """What the last iteration of an env-step budget samples: ``decisions`` action
    chunks, then more until they hold ``env_steps`` true env steps (``act_steps`` actions
    per decision at most)."""

    decisions: int
    env_steps: int
    act_steps: int


def last_iteration(
    remaining_env_steps: int, act_steps: int, per_iteration: int
) -> LastIteration | None:
    """The budget's last iteration, or None while full iterations remain.

    It samples the ``ceil(remaining / act_steps)`` decisions the budget still needs: up
    to 1.5 iterations' worth, so that no tiny iteration (a PPO update on a handful of
    chunks) is left over.
    """
    decisions = -(-remaining_env_steps // act_steps)
    if decisions > per_iteration * 3 // 2:
        return None
    return LastIteration(decisions, remaining_env_steps, act_steps)


def sample_shares(group: Any, decisions: int, timeout_s: float | None) -> tuple[list, list]:
    """Each EnvRunner of ``group`` (the local one when there are no remote ones) samples
    its share of ``decisions`` (whole vector steps); returns the episode chunks and the
    EnvRunners' metrics."""
    remote = group.num_remote_env_runners()
    share = -(-decisions // max(remote, 1))
    results = group.foreach_env_runner(
        lambda runner: (runner.sample(num_timesteps=share), runner.get_metrics()),
        local_env_runner=remote == 0,
        timeout_seconds=timeout_s,
    )
    return [ep for eps, _ in results for ep in eps], [m for _, m in results]


def append_chunks(episodes: list, more: list) -> list:
    """``episodes`` followed by ``more``, where a chunk of ``more`` that continues an
    unfinished chunk of ``episodes`` (same episode, next step) is appended to it
    (``SingleAgentEpisode.concat_episode``): one chunk per episode, as RLlib's learner
    connectors (GAE's per-episode bootstrap, the reward scaling's carried return)
    expect of one batch."""
    out = list(episodes)
    open_chunks = {ep.id_: ep for ep in episodes if not ep.is_done}
    for ep in more:
        head = open_chunks.pop(ep.id_, None)
        if head is not None and head.t == ep.t_started:
            head.concat_episode(ep)
            ep = head
        else:
            out.append(ep)
        if not ep.is_done:
            open_chunks[ep.id_] = ep
    return out


def sample_last_iteration(
    group: Any, cap: LastIteration, timeout_s: float | None
) -> tuple[list, list]:
    """The last iteration's episode chunks and EnvRunner metrics: ``cap.decisions``
    first; where episodes ended inside a chunk (fewer actions executed) the true env
    steps fall short of ``cap.env_steps``, and the missing decisions are sampled at
    once and appended (:func:`append_chunks`), so that the iteration's one update sees
    all of it and the count ends at most one vector step of the EnvRunners' envs above
    the budget. Stops early only if a round returns nothing (EnvRunners down)."""
    episodes, metrics = sample_shares(group, cap.decisions, timeout_s)
    while (missing := cap.env_steps - episode_env_steps(episodes)) > 0:
        more, more_metrics = sample_shares(group, -(-missing // cap.act_steps), timeout_s)
        if not more:
            break
        episodes, metrics = append_chunks(episodes, more), metrics + more_metrics
    return episodes, metrics


class EnvStepBudgetMixin:
    """Exploring samples with env-step counting and a budget-sized last iteration."""

    @override(Algorithm)
    def setup(self, config: AlgorithmConfig) -> None:
        super().setup(config)
        self._env_steps_lifetime = 0
        self._last_iteration: LastIteration | None = None

    @property
    def env_steps_lifetime(self) -> int:
        """True env steps sampled so far (decisions × executed actions); checkpointed by
        the host."""
        return self._env_steps_lifetime

    def limit_next_iteration(self, cap: LastIteration | None) -> None:
        """Sample ``cap`` (:func:`sample_last_iteration`) in the next iteration only (the
        last of an env-step budget); None: the configured batch."""
        self._last_iteration = cap

    def sample_episodes(self) -> list:
        """One iteration's exploring episode chunks: the configured batch
        (``train_batch_size_per_learner`` decisions per learner) or the cap set by
        :meth:`limit_next_iteration`, each EnvRunner sampling its share. Aggregates the
        EnvRunners' metrics and adds the chunks' true env steps to the lifetime count."""
        cap, self._last_iteration = self._last_iteration, None
        if cap is None:
            episodes, runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                max_env_steps=self.config.total_train_batch_size,
                sample_timeout_s=self.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        else:
            episodes, runner_results = sample_last_iteration(
                self.env_runner_group, cap, self.config.sample_timeout_s
            )
        self.metrics.aggregate(runner_results, key=ENV_RUNNER_RESULTS)
        self._env_steps_lifetime += episode_env_steps(episodes)
        return episodes
