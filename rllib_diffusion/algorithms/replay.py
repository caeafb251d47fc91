"""Flat replay of single transitions, sampled uniformly (SB3's ``ReplayBuffer``, which
the official DSRL uses; the DPPO reference's DIPO/QSM/DQL/IDQL deques), above the
families: DSRL, DIPO, QSM, the online DQL/IDQL fine-tuning and the offline Q-learners'
online phase (seeded with the offline dataset) use it.

Glossary: B batch, Do*To flattened observation, N flattened action (noise for DSRL-SAC,
decoded env chunk for DSRL-NA, the action chunk for DIPO/QSM).

RLlib 2.60's ``EpisodeReplayBuffer`` returns every sampled transition as its own
``SingleAgentEpisode``, which the learner connector then turns back into a batch: on
Hopper that took ≈ 0.13 s of a ≈ 0.36 s SAC gradient step (issue 17), more than the
frozen decoder. Here a sample is a few numpy index operations, and the learner takes the
batch as it is (``LearnerGroup.update(batch=...)``, no connector).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.core.columns import Columns

#: Columns of a sampled batch: ``(B, ...)`` arrays.
COLUMNS = (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS, Columns.TERMINATEDS)


class TransitionReplay:
    """Uniform replay of ``(s, a, r, s', terminated)`` transitions.

    Arrays grow by doubling up to ``capacity`` transitions, then the oldest are
    overwritten (a ring, as SB3's buffer).

    Args:
        capacity: most transitions kept.
        seed: seed of the sampling RNG.
    """

    def __init__(self, capacity: int, seed: int | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}.")
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self.data: dict[str, np.ndarray] = {}
        self.size = 0  # transitions held
        self.next = 0  # slot of the next write

    def __len__(self) -> int:
        return self.size

    def add(self, episodes: list[Any]) -> int:
        """Add every transition of ``episodes`` (``SingleAgentEpisode`` chunks from the
        EnvRunners: ``len(ep) + 1`` observations, the last one the next observation of
        the last transition, which is terminal only if the episode terminated; a
        truncated episode bootstraps). Returns the number added."""
        added = 0
        for ep in episodes:
            n = len(ep)
            if n == 0:
                continue
            obs = np.asarray(ep.get_observations(), np.float32).reshape(n + 1, -1)
            terminated = np.zeros(n, bool)
            terminated[-1] = bool(ep.is_terminated)
            self._write(
                {
                    Columns.OBS: obs[:-1],
                    Columns.ACTIONS: np.asarray(ep.get_actions(), np.float32).reshape(n, -1),
                    Columns.REWARDS: np.asarray(ep.get_rewards(), np.float32),
                    Columns.NEXT_OBS: obs[1:],
                    Columns.TERMINATEDS: terminated,
                }
            )
            added += n
        return added

    def add_columns(self, columns: dict[str, np.ndarray]) -> int:
        """Add transitions given as columns ``{column: (n, ...)}`` (all of :data:`COLUMNS`,
        e.g. an offline dataset's); the oldest are overwritten once full. Returns n."""
        rows = {key: np.asarray(columns[key]) for key in COLUMNS}
        rows[Columns.TERMINATEDS] = rows[Columns.TERMINATEDS].astype(bool)
        for key in (Columns.OBS, Columns.ACTIONS, Columns.REWARDS, Columns.NEXT_OBS):
            rows[key] = rows[key].astype(np.float32, copy=False)
        n = len(rows[Columns.REWARDS])
        if n:
            self._write(rows)
        return n

    def get_state(self) -> dict[str, Any]:
        """The held transitions (the filled rows of each column), the write slot and the
        sampling RNG: :meth:`set_state` of a fresh replay continues exactly."""
        return {
            "capacity": self.capacity,
            "size": self.size,
            "next": self.next,
            "rng": self.rng.bit_generator.state,
            "data": {k: v[: self.size].copy() for k, v in self.data.items()},
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_state`'s replay (the capacity must be the same)."""
        if int(state["capacity"]) != self.capacity:
            raise ValueError(
                f"replay capacity {self.capacity} cannot restore a replay of capacity "
                f"{state['capacity']}."
            )
        self.data = {k: np.array(v) for k, v in state["data"].items()}
        self.size, self.next = int(state["size"]), int(state["next"])
        self.rng.bit_generator.state = state["rng"]

    def sample(self, batch_size: int) -> dict[str, np.ndarray]:
        """``batch_size`` transitions drawn uniformly with replacement: ``{column: (B, ...)}``."""
        return self.rows(self.sample_indices(batch_size))

    def sample_indices(self, batch_size: int) -> np.ndarray:
        """``batch_size`` row indices ``(B,)`` drawn uniformly with replacement."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay.")
        return self.rng.integers(0, self.size, size=batch_size)

    def rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The transitions at ``idx``: ``{column: (B, ...)}`` (copies)."""
        return {key: self.data[key][idx] for key in COLUMNS}

    def set_actions(self, idx: np.ndarray, actions: np.ndarray) -> None:
        """Overwrite the actions of rows ``idx`` ``(B,)`` with ``actions`` ``(B, N)``
        (DIPO writes its improved actions back). A row drawn twice gets the last value."""
        idx = np.asarray(idx)
        if idx.size and (idx.min() < 0 or idx.max() >= self.size):
            raise IndexError(f"rows {idx.min()}..{idx.max()} outside the {self.size} held.")
        column = self.data[Columns.ACTIONS]
        column[idx] = np.asarray(actions, column.dtype).reshape(len(idx), -1)

    def _write(self, rows: dict[str, np.ndarray]) -> None:
        n = len(rows[Columns.REWARDS])
        if n > self.capacity:  # only the newest fit
            rows = {k: v[-self.capacity :] for k, v in rows.items()}
            n = self.capacity
        self._grow(self.size + n, rows)
        slots = (self.next + np.arange(n)) % self.capacity
        for key, value in rows.items():
            self.data[key][slots] = value
        self.next = int((self.next + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def _grow(self, needed: int, rows: dict[str, np.ndarray]) -> None:
        """Arrays of at least ``min(needed, capacity)`` rows (doubling), before the ring
        wraps; a full ring never grows."""
        have = len(self.data[Columns.REWARDS]) if self.data else 0
        if have >= min(needed, self.capacity):
            return
        rows_now = min(self.capacity, max(needed, 2 * have, 1024))
        for key, value in rows.items():
            grown = np.zeros((rows_now, *value.shape[1:]), value.dtype)
            if key in self.data:
                grown[:have] = self.data[key]
            self.data[key] = grown
