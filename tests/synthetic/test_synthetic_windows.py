"""Synthetic transitions in the form of the real parquet (no Ray): transitions for the
offline Q-learners, one-step (obs, action) windows with the real data's normalisation
for BC; refused where they cannot fit."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from rllib_diffusion.algorithms.offline_run import synthetic_input
from rllib_diffusion.data import DatasetError, write_minari
from rllib_diffusion.data.offline import META_FILE, prepare_offline_data, prepare_transition_data
from rllib_diffusion.data.transitions import dataset_transitions, transition_episodes
from tests.synthetic.toy import toy_dataset


@pytest.fixture
def synthetic_id(isolated_dirs):
    cols = dataset_transitions(toy_dataset(20, seed=5))
    write_minari(transition_episodes(cols), "test/toy/synthetic-v0", env_id=None)
    return "test/toy/synthetic-v0"


def _settings(dataset: str, real_ratio: float = 0.5):
    return SimpleNamespace(synthetic_dataset=dataset, real_ratio=real_ratio, batch_size=32, seed=0)


def test_windows_use_the_real_normalisation(synthetic_id) -> None:
    real = prepare_offline_data(toy_dataset(50, seed=0), horizon=1)
    path = synthetic_input(real.path, _settings(synthetic_id), 16)
    meta = json.loads((Path(path) / META_FILE).read_text())
    assert meta["num_samples"] == 200 and meta["horizon"] == 1
    assert meta["normalization"] == real.normalization.to_dict()
    parts = sorted(Path(path).glob("part-*.parquet"))
    actions = np.concatenate(
        [np.stack(pq.read_table(p).column("actions").to_numpy(zero_copy_only=False)) for p in parts]
    )
    # ±0.6 in the real data's [-1, 1] map: the real range is about [-0.75, 0.75].
    assert np.abs(actions).max() <= 1.0 + 1e-5


def test_transitions_form_and_refusals(synthetic_id) -> None:
    real_path, _ = prepare_transition_data(toy_dataset(50, seed=0))
    path = synthetic_input(real_path, _settings(synthetic_id), 16)
    assert json.loads((Path(path) / META_FILE).read_text())["num_samples"] == 200
    chunks = prepare_offline_data(toy_dataset(50, seed=0), horizon=4)
    with pytest.raises(DatasetError, match="--horizon 1"):
        synthetic_input(chunks.path, _settings(synthetic_id), 16)
    big_batch = SimpleNamespace(**{**vars(_settings(synthetic_id)), "batch_size": 400})
    with pytest.raises(DatasetError, match="fewer than"):  # 200 synthetic rows, 300 per batch
        synthetic_input(real_path, big_batch, 100)


def test_online_phase_of_a_mixed_run_reads_no_synthetic_input() -> None:
    """``online`` rebuilds the offline run's config from its checkpoint settings, which
    name the synthetic data; the online phase has no offline input to mix it into."""
    from dataclasses import asdict

    from rllib_diffusion.algorithms.idql.idql import IDQLConfig
    from rllib_diffusion.algorithms.offline_q.train import OfflineSettings
    from rllib_diffusion.algorithms.online_run import OnlineSettings, online_config
    from rllib_diffusion.checkpoints import CheckpointMeta

    offline = OfflineSettings(
        algo="idql", dataset="d", synthetic_dataset="s", real_ratio=0.5, batch_size=32
    )
    model = IDQLConfig.default_model_config(11, 3, env_id="Hopper-v5")
    meta = CheckpointMeta(
        algorithm="idql", env_id="Hopper-v5", model_config=model.to_dict(), settings=asdict(offline)
    )
    config = online_config(OnlineSettings(checkpoint="c"), meta)
    assert config.offline_data_class is None and config.input_ is None
