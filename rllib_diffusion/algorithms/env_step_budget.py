"""Sampling to an env-step budget, above the families: exploring rollouts from the
EnvRunners, true env steps counted from each decision's ``info["env_steps"]`` (a
decision executes a chunk of actions), and a last iteration sized to what the budget
still needs (:func:`~rllib_diffusion.algorithms.finetune_run.last_iteration_decisions`,
set by the run family's ``before_iteration``), so a run ends within one vector step of
its budget instead of a whole iteration above it.

Used by DRWR/DAWR (``awr/``) and DIPO/QSM (``qgrad/``); host:
``<Algo>(<FamilyMixin>(EnvStepBudgetMixin), Algorithm)``.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.execution.rollout_ops import synchronous_parallel_sample
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS


def episode_env_steps(episodes: list) -> int:
    """True env steps of episode chunks: the sum of their decisions' ``info["env_steps"]``
    (1 where a decision carries none; the reset info is not a step)."""
    return sum(int(info.get("env_steps", 1)) for ep in episodes for info in ep.get_infos()[1:])


class EnvStepBudgetMixin:
    """Exploring samples with env-step counting and a budget-sized last iteration."""

    @override(Algorithm)
    def setup(self, config: AlgorithmConfig) -> None:
        super().setup(config)
        self._env_steps_lifetime = 0
        self._decisions_cap: int | None = None

    @property
    def env_steps_lifetime(self) -> int:
        """True env steps sampled so far (decisions × executed actions); checkpointed by
        the host."""
        return self._env_steps_lifetime

    def limit_next_iteration(self, decisions: int | None) -> None:
        """Sample ``decisions`` action chunks (rounded up to whole vector steps) in the next
        iteration only (the last of an env-step budget); None: the configured batch."""
        self._decisions_cap = decisions

    def sample_episodes(self) -> list:
        """One iteration's exploring episode chunks: the configured batch
        (``train_batch_size_per_learner`` decisions per learner) or the cap set by
        :meth:`limit_next_iteration`, each EnvRunner sampling its share. Aggregates the
        EnvRunners' metrics and adds the chunks' true env steps to the lifetime count."""
        cap, self._decisions_cap = self._decisions_cap, None
        if cap is None:
            episodes, runner_results = synchronous_parallel_sample(
                worker_set=self.env_runner_group,
                max_env_steps=self.config.total_train_batch_size,
                sample_timeout_s=self.config.sample_timeout_s,
                _uses_new_env_runners=True,
                _return_metrics=True,
            )
        else:
            episodes, runner_results = self._sample_capped(cap)
        self.metrics.aggregate(runner_results, key=ENV_RUNNER_RESULTS)
        self._env_steps_lifetime += episode_env_steps(episodes)
        return episodes

    def _sample_capped(self, decisions: int) -> tuple[list, list[dict[str, Any]]]:
        """Each EnvRunner (the local one when there are no remote ones) samples its share
        of ``decisions`` (whole vector steps)."""
        group = self.env_runner_group
        remote = group.num_remote_env_runners()
        share = -(-decisions // max(remote, 1))
        results = group.foreach_env_runner(
            lambda runner: (runner.sample(num_timesteps=share), runner.get_metrics()),
            local_env_runner=remote == 0,
            timeout_seconds=self.config.sample_timeout_s,
        )
        return [ep for eps, _ in results for ep in eps], [m for _, m in results]
