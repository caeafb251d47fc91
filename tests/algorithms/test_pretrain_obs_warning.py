"""``pretrain`` warns once on stderr, before training, about near-constant observation
dims unless ``clamp_obs`` is on (Ray and the training loop stubbed out)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain
from rllib_diffusion.data import Episode, EpisodeDataset

# The package exports the function ``pretrain`` under the module's name.
pretrain_module = importlib.import_module("rllib_diffusion.algorithms.bc.pretrain")


def _hopper_like_dataset(constant_dim: int) -> EpisodeDataset:
    rng = np.random.default_rng(0)
    episodes = []
    for length in (30, 40):
        obs = rng.standard_normal((length + 1, 11)).astype(np.float32)
        obs[:, constant_dim] = 1.5
        done = np.zeros(length, dtype=bool)
        done[-1] = True
        episodes.append(
            Episode(
                observations=obs,
                actions=rng.uniform(-1, 1, (length, 3)).astype(np.float32),
                rewards=np.ones(length, dtype=np.float32),
                terminations=done,
                truncations=np.zeros(length, dtype=bool),
            )
        )
    return EpisodeDataset(episodes=episodes, name="test/flat-dim-v0", env_id="Hopper-v5")


@pytest.mark.parametrize("clamp_obs", [False, True])
def test_pretrain_warns_about_near_constant_obs_before_training(
    isolated_dirs, monkeypatch, capsys, clamp_obs
) -> None:
    dataset = _hopper_like_dataset(constant_dim=7)
    trained = []

    def fake_start(settings):
        return isolated_dirs / "run", 0.0, dataset, "Hopper-v5"

    def fake_training(*args, **kwargs):
        trained.append(capsys.readouterr().err)  # what stderr held when training began
        return {}

    monkeypatch.setattr(pretrain_module, "start_offline_run", fake_start)
    monkeypatch.setattr(pretrain_module, "run_offline_training", fake_training)
    settings = PretrainSettings(
        dataset="unused", out_dir=str(isolated_dirs / "run"), policy={"clamp_obs": clamp_obs}
    )
    pretrain(settings)
    (err,) = trained
    warnings = [line for line in err.splitlines() if "near-constant" in line]
    if clamp_obs:
        assert warnings == []
    else:
        (line,) = warnings
        assert line.startswith("[pretrain] warning: 1 of 11 observation dims")
        assert "7 (constant at 1.5)" in line and "--clamp-obs" in line
