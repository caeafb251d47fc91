"""Fixtures for the dataset-layer tests: a private Minari root and synthetic episodes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from rllib_diffusion.data import Episode, EpisodeDataset


@pytest.fixture(autouse=True)
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own MINARI_DATASETS_PATH, so nothing touches ~/.minari."""
    root = tmp_path / "minari_root"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def random_episode(
    rng: np.random.Generator, length: int, obs_dim: int, action_dim: int, *, terminated: bool
) -> Episode:
    """An episode of random data; float64-exact values are not needed, float32 is stored."""
    terminations = np.zeros(length, dtype=bool)
    truncations = np.zeros(length, dtype=bool)
    if terminated:
        terminations[-1] = True
    else:
        truncations[-1] = True
    return Episode(
        observations=rng.standard_normal((length + 1, obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (length, action_dim)).astype(np.float32),
        rewards=rng.standard_normal(length).astype(np.float32),
        terminations=terminations,
        truncations=truncations,
    )


@pytest.fixture
def make_dataset() -> Callable[..., EpisodeDataset]:
    """Factory: ``make_dataset(lengths, obs_dim=11, action_dim=3, seed=0, **dataset_fields)``."""

    def _make(
        lengths: Sequence[int] = (7, 3, 12),
        obs_dim: int = 11,
        action_dim: int = 3,
        seed: int = 0,
        **fields: object,
    ) -> EpisodeDataset:
        rng = np.random.default_rng(seed)
        episodes = [
            random_episode(rng, t, obs_dim, action_dim, terminated=(i % 2 == 0))
            for i, t in enumerate(lengths)
        ]
        return EpisodeDataset(episodes=episodes, **fields)  # type: ignore[arg-type]

    return _make


def _assert_same_episodes(a: EpisodeDataset, b: EpisodeDataset) -> None:
    assert a.num_episodes == b.num_episodes
    for i, (ea, eb) in enumerate(zip(a.episodes, b.episodes)):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            x, y = getattr(ea, field), getattr(eb, field)
            assert x.dtype == y.dtype, (i, field)
            np.testing.assert_array_equal(x, y, err_msg=f"episode {i} {field}")


@pytest.fixture
def assert_same_episodes() -> Callable[[EpisodeDataset, EpisodeDataset], None]:
    """Exact equality of every array (values and dtypes) of two datasets."""
    return _assert_same_episodes
