"""Offline → online fine-tuning of the Q-learning family (IDQL, FQL, Diffusion-QL, DAC).

The same algorithm and losses as offline; only the data source changes. EnvRunners act
with the exploration forward pass (IDQL/Diffusion-QL/DAC: sampled candidates re-ranked
by Q; FQL: the one-step policy with fresh noise) and their transitions are appended to
a replay buffer that starts with the offline dataset. Each iteration samples
``online_env_steps_per_iteration`` env steps, then takes ``updates_per_env_step`` × that
many gradient steps on uniform minibatches from the buffer.

Replay buffer: RLlib's ``EpisodeReplayBuffer`` keeps ``SingleAgentEpisode`` objects and
assembles each sample item by item in Python: 33 ms per 256-transition sample from 200
Hopper-sized episodes, against 0.17 ms for this buffer (``python
benchmarks/replay_buffer_sampling.py`` on the 2-core machine), and its samples still
need the learner connector to become a train batch. Our learners take flat transition
columns, so the buffer is a numpy ring of those.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.core.columns import Columns

from rllib_diffusion.data import EpisodeDataset

TRANSITION_COLUMNS = (
    Columns.OBS,
    Columns.ACTIONS,
    Columns.REWARDS,
    Columns.NEXT_OBS,
    Columns.TERMINATEDS,
)


class TransitionReplayBuffer:
    """Fixed-capacity FIFO of transitions with uniform sampling.

    Columns: obs (Do,), actions (Da,), rewards, new_obs (Do,), terminateds (1.0 where the
    MDP ended, so no bootstrapping; time-limit truncations stay 0).
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, seed: int = 0) -> None:
        if capacity <= 0:
            raise ValueError(f"replay capacity must be positive, got {capacity}.")
        self.capacity = capacity
        self._data = {
            Columns.OBS: np.zeros((capacity, obs_dim), np.float32),
            Columns.ACTIONS: np.zeros((capacity, action_dim), np.float32),
            Columns.REWARDS: np.zeros(capacity, np.float32),
            Columns.NEXT_OBS: np.zeros((capacity, obs_dim), np.float32),
            Columns.TERMINATEDS: np.zeros(capacity, np.float32),
        }
        self._next = 0
        self.size = 0
        self.added = 0
        self._rng = np.random.default_rng(seed)

    def add(self, transitions: dict[str, np.ndarray]) -> None:
        n = len(transitions[Columns.REWARDS])
        if n > self.capacity:  # keep the newest
            transitions = {k: v[-self.capacity :] for k, v in transitions.items()}
            n = self.capacity
        idx = (self._next + np.arange(n)) % self.capacity
        for key in TRANSITION_COLUMNS:
            self._data[key][idx] = transitions[key]
        self._next = (self._next + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.added += n

    def sample(self, n: int) -> dict[str, np.ndarray]:
        if self.size == 0:
            raise ValueError("the replay buffer is empty; seed it with the offline dataset.")
        idx = self._rng.integers(0, self.size, n)
        return {k: v[idx] for k, v in self._data.items()}


def dataset_transitions(dataset: EpisodeDataset) -> dict[str, np.ndarray]:
    """All transitions of ``dataset`` as replay-buffer columns."""
    eps = dataset.episodes
    return {
        Columns.OBS: np.concatenate([e.observations[:-1] for e in eps]),
        Columns.ACTIONS: np.concatenate([e.actions for e in eps]),
        Columns.REWARDS: np.concatenate([e.rewards for e in eps]),
        Columns.NEXT_OBS: np.concatenate([e.observations[1:] for e in eps]),
        Columns.TERMINATEDS: np.concatenate([e.terminations for e in eps]).astype(np.float32),
    }


def episode_transitions(episodes: list[Any]) -> dict[str, np.ndarray]:
    """Transitions of RLlib ``SingleAgentEpisode`` chunks (as returned by EnvRunners).

    A chunk of length L holds L + 1 observations; only its last step can be terminal.
    """
    cols: dict[str, list[np.ndarray]] = {k: [] for k in TRANSITION_COLUMNS}
    for ep in episodes:
        n = len(ep)
        if n == 0:
            continue
        obs = np.asarray(ep.get_observations(), np.float32).reshape(n + 1, -1)
        term = np.zeros(n, np.float32)
        term[-1] = float(ep.is_terminated)
        cols[Columns.OBS].append(obs[:-1])
        cols[Columns.NEXT_OBS].append(obs[1:])
        cols[Columns.ACTIONS].append(np.asarray(ep.get_actions(), np.float32).reshape(n, -1))
        cols[Columns.REWARDS].append(np.asarray(ep.get_rewards(), np.float32).reshape(n))
        cols[Columns.TERMINATEDS].append(term)
    if not cols[Columns.REWARDS]:
        return {}
    return {k: np.concatenate(v) for k, v in cols.items()}
