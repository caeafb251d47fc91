"""Chunked windows: never cross episode ends, pad the history at episode starts."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rllib_diffusion.data import DatasetError, Episode, EpisodeDataset, make_windows


def _encoded_dataset(lengths: list[int]) -> EpisodeDataset:
    """Actions and observations encode (episode, step): value = 1000*episode + step."""
    episodes = []
    for e, t in enumerate(lengths):
        steps = np.arange(t + 1, dtype=np.float32)
        obs = np.stack([np.full(t + 1, e, np.float32), steps], axis=1)
        act = np.stack([np.full(t, e, np.float32), steps[:-1]], axis=1)
        episodes.append(Episode(obs, act, np.zeros(t), np.zeros(t, bool), np.zeros(t, bool)))
    return EpisodeDataset(episodes=episodes, name="encoded")


@pytest.mark.parametrize("horizon", [1, 2, 4])
@pytest.mark.parametrize("obs_history", [1, 3])
def test_windows_stay_inside_one_episode(horizon: int, obs_history: int) -> None:
    lengths = [5, 1, 3, 9, 4, 2]
    w = make_windows(_encoded_dataset(lengths), horizon=horizon, obs_history=obs_history)
    assert len(w) == sum(max(t - horizon + 1, 0) for t in lengths)
    assert w.obs.shape == (len(w), obs_history, 2) and w.actions.shape == (len(w), horizon, 2)
    assert w.obs.dtype == np.float32 and w.actions.dtype == np.float32

    # Every chunk is contiguous steps i..i+Ta-1 of one episode, ending inside it.
    ep, step = w.actions[..., 0], w.actions[..., 1]
    assert (ep == w.episode_index[:, None]).all()
    np.testing.assert_array_equal(step, w.step_index[:, None] + np.arange(horizon))
    assert (step[:, -1] < np.array(lengths)[w.episode_index]).all()

    # History ends at the chunk's first step, is clamped to step 0, never leaves the episode.
    assert (w.obs[..., 0] == w.episode_index[:, None]).all()
    want = np.maximum(w.step_index[:, None] - obs_history + 1 + np.arange(obs_history), 0)
    np.testing.assert_array_equal(w.obs[..., 1], want)

    # Every valid (episode, start) appears exactly once.
    got = sorted(zip(w.episode_index.tolist(), w.step_index.tolist()))
    expected = [(e, i) for e, t in enumerate(lengths) for i in range(t - horizon + 1)]
    assert got == expected


def test_history_padding_repeats_first_obs() -> None:
    w = make_windows(_encoded_dataset([4, 4]), horizon=2, obs_history=3)
    first_of_second = np.flatnonzero((w.episode_index == 1) & (w.step_index == 0))[0]
    np.testing.assert_array_equal(w.obs[first_of_second], [[1, 0], [1, 0], [1, 0]])
    second = np.flatnonzero((w.episode_index == 1) & (w.step_index == 1))[0]
    np.testing.assert_array_equal(w.obs[second], [[1, 0], [1, 0], [1, 1]])


def test_horizon_too_long(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(DatasetError, match=r"longest has 5 steps.*horizon <= 5"):
        make_windows(_encoded_dataset([3, 5]), horizon=6)
    with caplog.at_level(logging.WARNING):
        w = make_windows(_encoded_dataset([3, 5, 2]), horizon=4)
    assert len(w) == 2
    assert "skipped 2 of 3 episodes" in caplog.text
    with pytest.raises(DatasetError, match="horizon >= 1"):
        make_windows(_encoded_dataset([3]), horizon=0)


def test_large_dataset_is_vectorised() -> None:
    # 1000 episodes x 1000 steps = 1M transitions (the size of Minari's mujoco sets); a
    # per-window Python loop would take tens of seconds here.
    t = 1000
    obs = np.zeros((t + 1, 11), np.float32)
    episodes = [
        Episode(
            obs, np.full((t, 3), e, np.float32), np.zeros(t), np.zeros(t, bool), np.zeros(t, bool)
        )
        for e in range(1000)
    ]
    w = make_windows(EpisodeDataset(episodes=episodes), horizon=4, obs_history=2)
    assert len(w) == 1000 * (t - 3)
    assert (w.actions[:, 0, 0] == w.episode_index).all()
