"""Training windows for chunked diffusion policies (DPPO pretraining).

Glossary: N windows, To observation-history length, Ta action horizon (chunk length),
Do / Da observation / action dims, E episodes, T steps of one episode.

A window at step ``i`` of an episode pairs the observations ``i-To+1 .. i`` (the first
observation repeated where that reaches before the episode start) with the action chunk
``actions[i : i+Ta]``. Starts run over ``i = 0 .. T-Ta`` so a chunk never crosses the
episode end; no index ever reaches into a neighbouring episode.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from rllib_diffusion.data.episodes import EpisodeDataset
from rllib_diffusion.data.errors import DatasetError

logger = logging.getLogger(__name__)


@dataclass
class ChunkedWindows:
    """All windows of a dataset, as flat arrays.

    Attributes:
        obs: ``(N, To, Do)`` float32, oldest observation first; ``obs[:, -1]`` is the
            observation at which the chunk starts.
        actions: ``(N, Ta, Da)`` float32 action chunks.
        episode_index: ``(N,)`` int64 index into ``dataset.episodes``.
        step_index: ``(N,)`` int64 step ``i`` at which the chunk starts.
    """

    obs: np.ndarray
    actions: np.ndarray
    episode_index: np.ndarray
    step_index: np.ndarray

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def obs_history(self) -> int:
        """To."""
        return int(self.obs.shape[1])

    @property
    def horizon(self) -> int:
        """Ta."""
        return int(self.actions.shape[1])


def make_windows(dataset: EpisodeDataset, *, horizon: int, obs_history: int = 1) -> ChunkedWindows:
    """Cut every episode into (observation history, action chunk) windows.

    An episode of length T yields ``max(T - horizon + 1, 0)`` windows; shorter episodes are
    skipped (and counted in a log warning). Fully vectorised: memory is about one copy of
    the dataset plus the output.

    Args:
        dataset: the episodes.
        horizon: Ta, actions per chunk (>= 1).
        obs_history: To, observations per window (>= 1).

    Raises:
        DatasetError: bad arguments, an empty dataset, or ``horizon`` longer than every episode.
    """
    lengths, counts, total = _window_counts(dataset, horizon, obs_history)
    all_obs = np.concatenate([ep.observations for ep in dataset.episodes])  # (Σ(T+1), Do)
    all_act = np.concatenate([ep.actions for ep in dataset.episodes])  # (ΣT, Da)
    act_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    obs_start = act_start + np.arange(len(lengths))  # each episode has one extra observation

    episode_index = np.repeat(np.arange(len(lengths)), counts)
    # Step within its episode: global position minus where the episode's windows begin.
    first_window = np.cumsum(counts) - counts
    step_index = np.arange(total) - np.repeat(first_window, counts)

    act_idx = (act_start[episode_index] + step_index)[:, None] + np.arange(horizon)[None, :]
    # Clamping at 0 (within the episode) repeats its first observation for early steps.
    rel_obs = np.maximum(step_index[:, None] - obs_history + 1 + np.arange(obs_history)[None, :], 0)
    obs_idx = obs_start[episode_index][:, None] + rel_obs

    return ChunkedWindows(
        obs=all_obs[obs_idx],
        actions=all_act[act_idx],
        episode_index=episode_index.astype(np.int64),
        step_index=step_index.astype(np.int64),
    )


def _window_counts(
    dataset: EpisodeDataset, horizon: int, obs_history: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Episode lengths, windows per episode and their total; refuses what yields none."""
    if horizon < 1 or obs_history < 1:
        raise DatasetError(
            f"make_windows needs horizon >= 1 and obs_history >= 1, got horizon={horizon}, "
            f"obs_history={obs_history}."
        )
    if not dataset.episodes:
        raise DatasetError(
            f"Dataset '{dataset.name}' has no episodes, so there are no windows; load a "
            "non-empty dataset."
        )
    lengths = np.array([ep.length for ep in dataset.episodes], dtype=np.int64)
    counts = np.maximum(lengths - horizon + 1, 0)
    total = int(counts.sum())
    if total == 0:
        raise DatasetError(
            f"horizon={horizon} is longer than every episode of '{dataset.name}' (the longest "
            f"has {int(lengths.max())} steps); use horizon <= {int(lengths.max())}."
        )
    skipped = int((counts == 0).sum())
    if skipped:
        logger.warning(
            "make_windows: skipped %d of %d episodes shorter than horizon=%d.",
            skipped,
            len(lengths),
            horizon,
        )
    return lengths, counts, total
