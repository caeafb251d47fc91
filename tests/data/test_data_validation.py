"""validate_dataset error messages, and the Episode / EpisodeDataset basics."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest

from rllib_diffusion.data import (
    DatasetError,
    Episode,
    EpisodeDataset,
    check_finite,
    validate_dataset,
)

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (11,), np.float64)
ACT_SPACE = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)


def test_valid_dataset_passes(make_dataset: Callable[..., EpisodeDataset]) -> None:
    validate_dataset(make_dataset(), observation_space=OBS_SPACE, action_space=ACT_SPACE)


def test_hopper_spaces_from_env_id(make_dataset: Callable[..., EpisodeDataset]) -> None:
    validate_dataset(make_dataset(), env_id="Hopper-v5")
    with pytest.raises(DatasetError, match=r"obs dim 17 but env 'Hopper-v5' has obs dim 11"):
        validate_dataset(make_dataset(obs_dim=17, action_dim=6), env_id="Hopper-v5")


def test_nan_observation(make_dataset: Callable[..., EpisodeDataset]) -> None:
    ds = make_dataset()
    ds.episodes[2].observations[4, 1] = np.nan
    ds.episodes[2].observations[5, 0] = np.nan
    with pytest.raises(DatasetError) as err:
        validate_dataset(ds)
    msg = str(err.value)
    assert "observations of episode 2" in msg and "2 NaN" in msg and "Filter" in msg


def test_inf_action(make_dataset: Callable[..., EpisodeDataset]) -> None:
    ds = make_dataset()
    ds.episodes[1].actions[0, 2] = np.inf
    with pytest.raises(DatasetError, match=r"actions of episode 1 contain 1 non-finite.*1 inf"):
        validate_dataset(ds, observation_space=OBS_SPACE, action_space=ACT_SPACE)


def test_nan_reward_lists_all_bad_episodes(make_dataset: Callable[..., EpisodeDataset]) -> None:
    ds = make_dataset(lengths=(3, 3, 3, 3))
    for i in (1, 3):
        ds.episodes[i].rewards[0] = np.nan
    with pytest.raises(DatasetError, match=r"rewards of episode 1 .*2 episodes affected: \[1, 3\]"):
        validate_dataset(ds)


def test_wrong_obs_dim(make_dataset: Callable[..., EpisodeDataset]) -> None:
    ds = make_dataset(obs_dim=17, env_id="Walker2d-v5")
    with pytest.raises(DatasetError) as err:
        validate_dataset(
            ds, observation_space=OBS_SPACE, action_space=ACT_SPACE, env_id="Hopper-v5"
        )
    msg = str(err.value)
    assert (
        "obs dim 17" in msg and "obs dim 11" in msg and "Hopper-v5" in msg and "Walker2d-v5" in msg
    )


def test_wrong_action_dim(make_dataset: Callable[..., EpisodeDataset]) -> None:
    ds = make_dataset(action_dim=6)
    with pytest.raises(DatasetError, match=r"action dim 6 but env 'Hopper-v5' has action dim 3"):
        validate_dataset(
            ds, observation_space=OBS_SPACE, action_space=ACT_SPACE, env_id="Hopper-v5"
        )


def test_discrete_actions_rejected(make_dataset: Callable[..., EpisodeDataset]) -> None:
    with pytest.raises(DatasetError, match="continuous Box action space"):
        validate_dataset(make_dataset(), action_space=gym.spaces.Discrete(3))


def test_empty_dataset() -> None:
    with pytest.raises(DatasetError, match="is empty.*0 episodes"):
        validate_dataset(EpisodeDataset(name="nothing"))
    empty_episode = Episode(np.zeros((1, 2)), np.zeros((0, 1)), [], [], [])
    with pytest.raises(DatasetError, match="0 transitions"):
        validate_dataset(EpisodeDataset(episodes=[empty_episode]))


def test_inconsistent_lengths(make_dataset: Callable[..., EpisodeDataset]) -> None:
    with pytest.raises(DatasetError, match=r"observations has 3 \(expected 4\)"):
        Episode(np.zeros((3, 2)), np.zeros((3, 1)), np.zeros(3), np.zeros(3), np.zeros(3))
    ds = make_dataset()
    ds.episodes[1].rewards = ds.episodes[1].rewards[:-1]  # fields are mutable after creation
    with pytest.raises(DatasetError, match=r"episode 1: .*rewards has 2 \(expected 3\)"):
        validate_dataset(ds)
    ds = make_dataset()
    ds.episodes[2] = Episode(
        np.zeros((3, 4)), np.zeros((2, 3)), np.zeros(2), np.zeros(2), np.zeros(2)
    )
    with pytest.raises(DatasetError, match="episode 2 has observations of shape"):
        validate_dataset(ds)


def test_check_finite() -> None:
    check_finite("ok", np.ones(3))
    check_finite("ints", np.arange(3))
    with pytest.raises(
        DatasetError, match=r"my array contain 2 .*1 NaN, 1 inf \(first at index \(0, 1\)\)"
    ):
        check_finite("my array", np.array([[0.0, np.nan], [np.inf, 1.0]]))


def test_episode_dataset_properties(make_dataset: Callable[..., EpisodeDataset]) -> None:
    ds = make_dataset(lengths=(2, 4), ref_min_score=0.0, ref_max_score=10.0)
    assert (ds.obs_dim, ds.action_dim, ds.num_episodes, ds.num_transitions) == (11, 3, 2, 6)
    ep = ds.episodes[0]
    assert ep.length == 2 and ep.episode_return == pytest.approx(float(ep.rewards.sum()))
    np.testing.assert_allclose(
        ds.episode_returns(), [e.rewards.sum() for e in ds.episodes], rtol=1e-6
    )
    np.testing.assert_allclose(ds.normalized_score([0.0, 5.0, 10.0]), [0.0, 50.0, 100.0])
    summary = ds.summary()
    assert summary["num_transitions"] == 6 and summary["length_max"] == 4
    assert "normalized_score_mean" in summary
    assert EpisodeDataset().summary()["obs_dim"] is None
    with pytest.raises(DatasetError, match="ref_min_score"):
        make_dataset().normalized_score(1.0)
