"""In-memory episodes: the common currency of every loader and writer in this package.

Glossary: T steps in an episode, Do observation dim, Da action dim, E episodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from rllib_diffusion.data.errors import DatasetError


def _as_2d_float32(name: str, array: npt.ArrayLike) -> np.ndarray:
    out = np.asarray(array, dtype=np.float32)
    if out.ndim != 2:
        raise DatasetError(
            f"Episode {name} must be a 2-D array (steps, dim), got shape {out.shape}; "
            f"reshape it first (e.g. `x.reshape(len(x), -1)` for image or nested observations)."
        )
    return out


@dataclass
class Episode:
    """One episode, stored the way Minari stores it (with the final observation).

    Attributes:
        observations: ``(T+1, Do)`` float32; ``observations[t]`` is seen before ``actions[t]``
            and ``observations[T]`` is the observation after the last step.
        actions: ``(T, Da)`` float32.
        rewards: ``(T,)`` float32; ``rewards[t]`` follows ``actions[t]``.
        terminations: ``(T,)`` bool; true where the MDP ended (no bootstrapping).
        truncations: ``(T,)`` bool; true where the episode was cut (time limit), so a
            learner must still bootstrap from ``observations[t+1]``.

    Inputs are converted to these dtypes on construction (without copying when they
    already match); lengths are checked so that a bad loader fails here, not in a learner.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray

    def __post_init__(self) -> None:
        self.observations = _as_2d_float32("observations", self.observations)
        self.actions = _as_2d_float32("actions", self.actions)
        self.rewards = np.asarray(self.rewards, dtype=np.float32).reshape(-1)
        self.terminations = np.asarray(self.terminations, dtype=bool).reshape(-1)
        self.truncations = np.asarray(self.truncations, dtype=bool).reshape(-1)
        problem = self.length_problem()
        if problem is not None:
            raise DatasetError(problem)

    def length_problem(self) -> str | None:
        """Describe an inconsistency between the array lengths, or return ``None``.

        Kept separate from ``__post_init__`` because the fields are mutable and
        :func:`~rllib_diffusion.data.validate_dataset` re-checks them later.
        """
        t = len(self.actions)
        lengths = {
            "observations": (len(self.observations), t + 1),
            "rewards": (len(self.rewards), t),
            "terminations": (len(self.terminations), t),
            "truncations": (len(self.truncations), t),
        }
        bad = [
            f"{k} has {got} (expected {want})" for k, (got, want) in lengths.items() if got != want
        ]
        if not bad:
            return None
        return (
            f"Inconsistent episode arrays: actions has {t} steps but " + ", ".join(bad) + ". "
            "An episode needs T+1 observations (including the final one) and T actions, "
            "rewards, terminations and truncations; append the final observation or trim "
            "the per-step arrays."
        )

    @property
    def length(self) -> int:
        """Number of steps T (actions taken)."""
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        """Undiscounted sum of rewards (accumulated in float64 for long episodes)."""
        return float(np.sum(self.rewards, dtype=np.float64))


@dataclass
class EpisodeDataset:
    """A list of episodes plus what is needed to interpret them.

    Attributes:
        episodes: the E episodes.
        env_id: gymnasium id of the environment that produced the data (``None`` if unknown).
        name: human-readable name (a Minari id, or a file stem).
        ref_min_score: return of the "0" reference (typically a uniform-random policy).
        ref_max_score: return of the "100" reference (typically an expert policy).
        env_kwargs: keyword arguments the env was made with (``make_env(env_id,
            **env_kwargs)``), e.g. the Franka Kitchen's ``tasks_to_complete``, which also
            set its observation size; ``None``: the env's defaults.
    """

    episodes: list[Episode] = field(default_factory=list)
    env_id: str | None = None
    name: str = "dataset"
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    env_kwargs: dict[str, Any] | None = None

    def _first(self) -> Episode:
        if not self.episodes:
            raise DatasetError(
                f"Dataset '{self.name}' has no episodes; load or collect a non-empty dataset "
                "(e.g. with `rllib-diffusion collect`)."
            )
        return self.episodes[0]

    @property
    def obs_dim(self) -> int:
        """Do, taken from the first episode (all episodes must agree; see ``validate_dataset``)."""
        return int(self._first().observations.shape[1])

    @property
    def action_dim(self) -> int:
        """Da, taken from the first episode."""
        return int(self._first().actions.shape[1])

    @property
    def num_episodes(self) -> int:
        """E."""
        return len(self.episodes)

    @property
    def num_transitions(self) -> int:
        """Σ T over episodes."""
        return int(sum(ep.length for ep in self.episodes))

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode, ``(E,)`` float64."""
        return np.array([ep.episode_return for ep in self.episodes], dtype=np.float64)

    def normalized_score(self, returns: npt.ArrayLike) -> np.ndarray:
        """D4RL-style score ``100 * (R - ref_min) / (ref_max - ref_min)``.

        Note that ``minari.get_normalized_score`` returns the same quantity as a
        *fraction*; this one is already multiplied by 100.

        Args:
            returns: scalar or array of undiscounted returns, any shape.

        Returns:
            float64 array of the same shape as ``returns``.
        """
        if self.ref_min_score is None or self.ref_max_score is None:
            raise DatasetError(
                f"Dataset '{self.name}' has no reference scores (ref_min_score="
                f"{self.ref_min_score}, ref_max_score={self.ref_max_score}), so returns "
                "cannot be normalised. Set both on the EpisodeDataset (e.g. the mean return of "
                "a uniform-random policy and of an expert on the same env), or pass them to "
                "`write_minari(..., ref_min_score=..., ref_max_score=...)`. The official "
                "Minari mujoco/*-v0 sets ship without them."
            )
        span = float(self.ref_max_score) - float(self.ref_min_score)
        if span == 0.0:
            raise DatasetError(
                f"Dataset '{self.name}' has ref_min_score == ref_max_score == "
                f"{self.ref_min_score}; set distinct reference scores."
            )
        r = np.asarray(returns, dtype=np.float64)
        return 100.0 * (r - float(self.ref_min_score)) / span

    def summary(self) -> dict[str, Any]:
        """Plain-python statistics, safe to log or dump as JSON (works on empty datasets)."""
        out: dict[str, Any] = {
            "name": self.name,
            "env_id": self.env_id,
            "num_episodes": self.num_episodes,
            "num_transitions": self.num_transitions,
            "obs_dim": self.obs_dim if self.episodes else None,
            "action_dim": self.action_dim if self.episodes else None,
            "ref_min_score": self.ref_min_score,
            "ref_max_score": self.ref_max_score,
        }
        if self.episodes:
            returns = self.episode_returns()
            lengths = np.array([ep.length for ep in self.episodes])
            out.update(
                return_mean=float(returns.mean()),
                return_std=float(returns.std()),
                return_min=float(returns.min()),
                return_max=float(returns.max()),
                length_mean=float(lengths.mean()),
                length_min=int(lengths.min()),
                length_max=int(lengths.max()),
                num_terminated=int(sum(bool(ep.terminations.any()) for ep in self.episodes)),
            )
            if self.ref_min_score is not None and self.ref_max_score is not None:
                out["normalized_score_mean"] = float(self.normalized_score(returns).mean())
        return out
