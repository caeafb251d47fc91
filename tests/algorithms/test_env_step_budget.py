"""The last iteration of an env-step budget (``algorithms/env_step_budget.py``): sized to
what the budget still needs, topped up inside the same iteration where episodes ended
inside a chunk, with one chunk per episode in the batch it hands to the learners.

The EnvRunners here are fakes that step RLlib's own ``SingleAgentEpisode`` the way
``SingleAgentEnvRunner.sample(num_timesteps=n)`` does: whole vector steps of their envs,
finished episodes returned whole, ongoing ones returned as a chunk and continued by its
``cut()`` successor (same id) in the next call.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from ray.rllib.env.single_agent_episode import SingleAgentEpisode

from rllib_diffusion.algorithms.env_step_budget import (
    LastIteration,
    append_chunks,
    episode_env_steps,
    last_iteration,
    sample_last_iteration,
)

ACT_STEPS = 4


class ChunkEnvRunner:
    """``num_envs`` envs whose episodes last ``lengths`` decisions in turn; each decision
    executes ``ACT_STEPS`` actions, except an episode's last, which executes 1 (the
    episode ended inside the chunk)."""

    def __init__(self, num_envs: int, lengths: list[int]) -> None:
        self.lengths, self.started = lengths, 0
        self.envs = [self._new_episode() for _ in range(num_envs)]
        self.sample_calls: list[int] = []

    def _new_episode(self) -> SingleAgentEpisode:
        length = self.lengths[self.started % len(self.lengths)]
        self.started += 1
        ep = SingleAgentEpisode(
            observation_space=gym.spaces.Box(-1e6, 1e6, (1,)),
            action_space=gym.spaces.Box(-1, 1, (1,)),
        )
        ep.add_env_reset(observation=np.zeros(1, np.float32), infos={})
        ep.custom_data["length"] = length
        return ep

    def _step(self, ep: SingleAgentEpisode) -> None:
        last = ep.t + 1 == ep.custom_data["length"]
        ep.add_env_step(
            observation=np.full(1, ep.t + 1, np.float32),
            action=np.zeros(1, np.float32),
            reward=1.0,
            infos={"env_steps": 1 if last else ACT_STEPS},
            terminated=last,
        )

    def sample(self, num_timesteps: int) -> list[SingleAgentEpisode]:
        self.sample_calls.append(num_timesteps)
        done = []
        for _ in range(-(-num_timesteps // len(self.envs))):
            for i, ep in enumerate(self.envs):
                self._step(ep)
                if ep.is_done:
                    done.append(ep.to_numpy())
                    self.envs[i] = self._new_episode()
        ongoing = [ep for ep in self.envs if ep.t > ep.t_started]
        self.envs = [ep.cut() if ep.t > ep.t_started else ep for ep in self.envs]
        return done + [ep.to_numpy() for ep in ongoing]

    def get_metrics(self) -> dict:
        return {}


class LocalGroup:
    """The parts of ``EnvRunnerGroup`` the sampling uses: one local EnvRunner."""

    def __init__(self, runner: ChunkEnvRunner) -> None:
        self.runner = runner

    def num_remote_env_runners(self) -> int:
        return 0

    def foreach_env_runner(self, fn, local_env_runner: bool, timeout_seconds=None) -> list:
        assert local_env_runner
        return [fn(self.runner)]


def test_last_iteration_is_sized_to_the_budget():
    assert last_iteration(10_000, 4, 200) is None  # full iterations remain
    assert last_iteration(1500 - 793, 4, 200) == LastIteration(177, 707, 4)  # ceil(707/4)
    assert last_iteration(300, 4, 60).decisions == 75  # ≤ 1.5 iterations: no tiny tail
    assert last_iteration(1, 4, 200) == LastIteration(1, 1, 4)


def test_the_shortfall_is_sampled_in_the_same_iteration_with_one_chunk_per_episode():
    """Episodes of 3 decisions execute 4 + 4 + 1 = 9 actions: the 25 decisions a
    100-step budget asks for hold fewer than 100 env steps, and the missing ones are
    sampled and appended before the iteration's one update."""
    runner = ChunkEnvRunner(num_envs=2, lengths=[3, 7, 5])
    runner.sample(6)  # an earlier iteration: both envs are inside episodes now
    runner.sample_calls.clear()
    episodes, metrics = sample_last_iteration(LocalGroup(runner), LastIteration(25, 100, 4), 60)
    steps = episode_env_steps(episodes)
    assert len(runner.sample_calls) >= 2 and runner.sample_calls[0] == 25  # a top-up ran
    # At least the budget, at most one vector step (2 envs × 4 actions) above it.
    assert 100 <= steps <= 100 + 2 * ACT_STEPS
    assert len(metrics) == len(runner.sample_calls)
    ids = [ep.id_ for ep in episodes]
    assert len(ids) == len(set(ids))  # every episode is one chunk
    for ep in episodes:
        t = np.arange(ep.t_started, ep.t + 1, dtype=np.float32)
        np.testing.assert_array_equal(ep.get_observations().reshape(-1), t)  # contiguous
        assert len(ep.get_infos()) == len(ep) + 1


def test_a_full_first_round_samples_nothing_more():
    runner = ChunkEnvRunner(num_envs=2, lengths=[1000])  # no episode ends
    episodes, _ = sample_last_iteration(LocalGroup(runner), LastIteration(10, 40, 4), 60)
    assert runner.sample_calls == [10] and episode_env_steps(episodes) == 40


def test_append_chunks_keeps_unrelated_and_finished_episodes_apart():
    runner = ChunkEnvRunner(num_envs=2, lengths=[2, 6])
    first = runner.sample(2)  # one vector step: both episodes are under way
    second = runner.sample(4)  # env 0's 2-decision episode ends, a new one starts
    decisions = sum(len(ep) for ep in first + second)
    merged = append_chunks(first, second)  # (appends to the first call's chunks in place)
    # Both chunks of the first call are continued by the second's; the new episode
    # stays a chunk of its own.
    assert len({ep.id_ for ep in merged}) == len(merged)
    assert sum(len(ep) for ep in merged) == decisions == 6
    assert len(merged) == 3 and all(ep.t_started == 0 for ep in merged)
    assert [ep.is_done for ep in merged] == [True, False, False]


def test_rounds_that_return_nothing_stop_the_top_up():
    class DeadGroup(LocalGroup):
        def foreach_env_runner(self, fn, local_env_runner: bool, timeout_seconds=None):
            return []

    episodes, metrics = sample_last_iteration(
        DeadGroup(ChunkEnvRunner(1, [3])), LastIteration(5, 20, 4), 1
    )
    assert episodes == [] and metrics == []


@pytest.mark.parametrize("lengths", [[1], [2, 9], [4, 4, 13]])
def test_the_budget_is_met_within_one_vector_step_for_any_episode_lengths(lengths):
    for budget in (1, 7, 33, 120):
        runner = ChunkEnvRunner(num_envs=3, lengths=lengths)
        cap = last_iteration(budget, ACT_STEPS, 1000)
        episodes, _ = sample_last_iteration(LocalGroup(runner), cap, 60)
        steps = episode_env_steps(episodes)
        assert budget <= steps <= budget + 3 * ACT_STEPS, (lengths, budget, steps)
