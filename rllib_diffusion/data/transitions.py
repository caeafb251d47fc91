"""Flattened transitions ``(s, a, r, s′, terminal)`` and their per-dimension standardisation,
the data a transition generator (SynthER) models.

Glossary: N transitions, Do observation dim, Da action dim, D = 2·Do + Da + 2 the
flattened transition dim. Works on numpy arrays and torch tensors alike (no torch
import), like :mod:`rllib_diffusion.data.normalization`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rllib_diffusion import columns as C
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.data.normalization import _is_tensor

#: Columns of a flattened transition, in order (parquet names of
#: :func:`rllib_diffusion.data.offline.prepare_transition_data`).
TRANSITION_COLUMNS = (C.OBS, C.ACTIONS, C.REWARDS, C.NEXT_OBS, C.TERMINATEDS)
#: Smallest std a dimension is divided by (constant dimensions map to 0).
MIN_STD = 1e-6


@dataclass(frozen=True)
class TransitionLayout:
    """Where each column of a transition sits in the flat vector ``[s, a, r, s′, d]``."""

    obs_dim: int
    action_dim: int

    @property
    def dim(self) -> int:
        """D = 2·Do + Da + 2."""
        return 2 * self.obs_dim + self.action_dim + 2

    def widths(self) -> dict[str, int]:
        """Column → width, in flattening order."""
        return {
            C.OBS: self.obs_dim,
            C.ACTIONS: self.action_dim,
            C.REWARDS: 1,
            C.NEXT_OBS: self.obs_dim,
            C.TERMINATEDS: 1,
        }

    @property
    def terminal_index(self) -> int:
        """Index of the terminal flag (the last entry)."""
        return self.dim - 1

    def flatten(self, columns: dict[str, Any]) -> Any:
        """``{column: (N,) or (N, w)}`` → ``(N, D)`` (numpy or torch, the columns' kind)."""
        parts = [columns[name].reshape(len(columns[name]), -1) for name in TRANSITION_COLUMNS]
        bad = {
            n: p.shape[1]
            for n, p in zip(TRANSITION_COLUMNS, parts)
            if p.shape[1] != self.widths()[n]
        }
        if bad:
            raise DatasetError(
                f"transition columns have widths {bad}; this layout expects {self.widths()} "
                "(obs_dim, action_dim of the generator's data)."
            )
        if _is_tensor(parts[0]):
            import torch

            return torch.cat([p.to(parts[0].dtype) for p in parts], dim=1)
        return np.concatenate([np.asarray(p, dtype=np.float32) for p in parts], axis=1)

    def split(self, flat: Any) -> dict[str, Any]:
        """``(N, D)`` → ``{column: (N, w)}``, rewards and terminals as ``(N,)``."""
        out, start = {}, 0
        for name, width in self.widths().items():
            piece = flat[:, start : start + width]
            out[name] = piece[:, 0] if width == 1 else piece
            start += width
        return out


@dataclass
class StandardNormalizer:
    """Per-dimension ``(x − mean) / std`` (std floored at :data:`MIN_STD`).

    Attributes:
        mean: ``(D,)`` per-dimension mean (float64).
        std: ``(D,)`` per-dimension standard deviation (float64, floored).
    """

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(-1)
        self.std = np.maximum(np.asarray(self.std, dtype=np.float64).reshape(-1), MIN_STD)
        if self.mean.shape != self.std.shape:
            raise DatasetError(
                f"StandardNormalizer mean has shape {self.mean.shape} but std {self.std.shape}."
            )
        if not (np.isfinite(self.mean).all() and np.isfinite(self.std).all()):
            raise DatasetError(
                "StandardNormalizer statistics contain NaN/inf: the data is not finite; run "
                "validate_dataset(...) and drop the bad episodes."
            )

    @classmethod
    def fit(cls, x: Any) -> StandardNormalizer:
        """Mean and std over the rows of ``x`` ``(N, D)``."""
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim != 2 or len(arr) == 0:
            raise DatasetError(f"Cannot fit a StandardNormalizer on an array of shape {arr.shape}.")
        return cls(mean=arr.mean(axis=0), std=arr.std(axis=0))

    def _stats_like(self, x: Any) -> tuple[Any, Any]:
        if _is_tensor(x):
            import torch

            return (
                torch.as_tensor(self.mean, dtype=x.dtype, device=x.device),
                torch.as_tensor(self.std, dtype=x.dtype, device=x.device),
            )
        return self.mean.astype(np.asarray(x).dtype), self.std.astype(np.asarray(x).dtype)

    def normalize(self, x: Any) -> Any:
        mean, std = self._stats_like(x)
        return (x - mean) / std

    def unnormalize(self, y: Any) -> Any:
        mean, std = self._stats_like(y)
        return y * std + mean

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StandardNormalizer:
        missing = [k for k in ("mean", "std") if k not in d]
        if missing:
            raise DatasetError(f"StandardNormalizer dict lacks {missing} (has {sorted(d)}).")
        return cls(mean=np.asarray(d["mean"]), std=np.asarray(d["std"]))


def dataset_transitions(dataset: Any) -> dict[str, np.ndarray]:
    """Every transition of an ``EpisodeDataset`` as columns (raw units; terminal as 0/1)."""
    eps = dataset.episodes
    return {
        C.OBS: np.concatenate([e.observations[:-1] for e in eps]).astype(np.float32),
        C.ACTIONS: np.concatenate([e.actions for e in eps]).astype(np.float32),
        C.REWARDS: np.concatenate([e.rewards for e in eps]).astype(np.float32),
        C.NEXT_OBS: np.concatenate([e.observations[1:] for e in eps]).astype(np.float32),
        C.TERMINATEDS: np.concatenate([e.terminations for e in eps]).astype(np.float32),
    }


def transition_episodes(columns: dict[str, np.ndarray]) -> list:
    """One single-step ``Episode`` per transition: observations ``[s, s′]``; a terminal one
    is terminated, any other truncated (a learner bootstraps from ``s′``)."""
    from rllib_diffusion.data.episodes import Episode

    obs, nxt = columns[C.OBS], columns[C.NEXT_OBS]
    terminal = np.asarray(columns[C.TERMINATEDS]).reshape(-1) >= 0.5
    return [
        Episode(
            observations=np.stack([obs[i], nxt[i]]),
            actions=columns[C.ACTIONS][i : i + 1],
            rewards=columns[C.REWARDS][i : i + 1],
            terminations=terminal[i : i + 1],
            truncations=~terminal[i : i + 1],
        )
        for i in range(len(obs))
    ]
