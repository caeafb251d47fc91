"""Episode segments in time order: the rollout store of DRWR and DAWR (numpy, no ``ray``).

Glossary: n decisions of a segment, Do observation dim, Ta action horizon, Da action dim.

RLlib hands an iteration's rollouts over as episode chunks; a chunk that continues an
episode of an earlier iteration carries the same episode id and starts at that
episode's last observation. The store joins such chunks into one segment, so that
returns (DRWR) and TD(λ) recursions (DAWR) run over whole episodes, as the reference's
per-env arrays do. With a ``capacity`` it is DAWR's FIFO buffer: the oldest decisions
are dropped first.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Segment:
    """Consecutive decisions of one episode: ``obs`` ``(n+1, Do)`` (the last one is the
    observation after the last decision), ``actions`` ``(n, Ta, Da)``, ``rewards``
    ``(n,)``; ``terminated``/``done``: the episode ended after its last decision by
    termination / by termination or time limit."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: bool = False
    done: bool = False

    def __len__(self) -> int:
        return len(self.rewards)


@dataclass
class FlatRows:
    """Segments laid out row after row (N decisions, S segments).

    ``obs`` ``(N + S, Do)`` holds each segment's observations including its final one;
    ``row_obs`` ``(N,)`` indexes the observation of every decision (its next observation
    is at ``row_obs + 1``); ``actions`` ``(N, Ta, Da)``, ``rewards``/``last``/
    ``terminated`` ``(N,)`` (see :mod:`.weights`)."""

    obs: np.ndarray
    row_obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    last: np.ndarray
    terminated: np.ndarray

    def __len__(self) -> int:
        return len(self.rewards)


class EpisodeSegments:
    """Segments by episode id, oldest first; at most ``capacity`` decisions (None: no
    limit)."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        self._segments: OrderedDict[Any, Segment] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add_segment(self, key: Any, segment: Segment) -> None:
        """Append ``segment`` (joined to the open segment of the same ``key``)."""
        old = self._segments.get(key)
        if old is not None and not old.done:
            segment = Segment(
                np.concatenate([old.obs[:-1], segment.obs]),
                np.concatenate([old.actions, segment.actions]),
                np.concatenate([old.rewards, segment.rewards]),
                segment.terminated,
                segment.done,
            )
            self._size -= len(old)
            self._segments[key] = segment
        else:
            key = key if old is None else (key, id(segment))
            self._segments[key] = segment
        self._size += len(segment)
        self._evict()

    def add_episodes(self, episodes: Iterable[Any], reward_scale: float = 1.0) -> None:
        """Append RLlib ``SingleAgentEpisode`` chunks (rewards times ``reward_scale``)."""
        for ep in episodes:
            if len(ep) == 0:
                continue
            self.add_segment(
                ep.id_,
                Segment(
                    np.asarray(ep.get_observations(), np.float32),
                    np.asarray(ep.get_actions(), np.float32),
                    np.asarray(ep.get_rewards(), np.float64) * reward_scale,
                    bool(ep.is_terminated),
                    bool(ep.is_done),
                ),
            )

    def pop_done(self) -> list[Segment]:
        """Remove and return the segments whose episode has ended."""
        keys = [k for k, s in self._segments.items() if s.done]
        out = [self._segments.pop(k) for k in keys]
        self._size -= sum(len(s) for s in out)
        return out

    def drop_open(self, keep: set[Any]) -> None:
        """Forget open segments whose key is not in ``keep`` (episodes no EnvRunner
        continues, e.g. after a restart)."""
        for key in [k for k, s in self._segments.items() if not s.done and k not in keep]:
            self._size -= len(self._segments.pop(key))

    def segments(self) -> list[Segment]:
        return list(self._segments.values())

    def get_state(self) -> dict[str, Any]:
        """The segments (arrays and flags) by key, oldest first (checkpoints)."""
        return {"segments": [(k, dataclasses.astuple(s)) for k, s in self._segments.items()]}

    def set_state(self, state: dict[str, Any]) -> None:
        self._segments = OrderedDict((k, Segment(*fields)) for k, fields in state["segments"])
        self._size = sum(len(s) for s in self._segments.values())
        self._evict()

    def _evict(self) -> None:
        while self.capacity is not None and self._size > self.capacity:
            key, oldest = next(iter(self._segments.items()))
            drop = min(self._size - self.capacity, len(oldest))
            if drop == len(oldest):
                del self._segments[key]
            else:
                self._segments[key] = Segment(
                    oldest.obs[drop:],
                    oldest.actions[drop:],
                    oldest.rewards[drop:],
                    oldest.terminated,
                    oldest.done,
                )
            self._size -= drop


def flatten(segments: list[Segment]) -> FlatRows:
    """``segments`` as :class:`FlatRows`."""
    if not segments:
        raise ValueError("no segments to flatten")
    lengths = np.array([len(s) for s in segments])
    starts = np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])
    row_obs = np.concatenate([start + np.arange(n) for start, n in zip(starts, lengths)])
    last = np.zeros(lengths.sum(), bool)
    last[np.cumsum(lengths) - 1] = True
    terminated = np.zeros_like(last)
    terminated[np.cumsum(lengths) - 1] = [s.terminated for s in segments]
    return FlatRows(
        obs=np.concatenate([s.obs for s in segments]),
        row_obs=row_obs,
        actions=np.concatenate([s.actions for s in segments]),
        rewards=np.concatenate([s.rewards for s in segments]),
        last=last,
        terminated=terminated,
    )
