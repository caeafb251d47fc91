"""Fixtures shared by algorithm tests: a tiny collected dataset and a tiny pretrained policy."""

from __future__ import annotations

import pytest

from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain
from rllib_diffusion.collect.collect import collect_dataset

TINY = dict(
    gradient_steps=40,
    steps_per_iteration=20,
    batch_size=32,
    hidden_dims=(32, 32),
    denoising_steps=5,
    eval_episodes=2,
    warmup_steps=0,
)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bc")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINARI_DATASETS_PATH", str(root / "minari"))
    mp.setenv("RLLIB_DIFFUSION_CACHE", str(root / "cache"))
    collect_dataset("Hopper-v5", "test/hopper/random-v0", num_episodes=12, num_envs=4)
    yield root, "test/hopper/random-v0"
    mp.undo()


@pytest.fixture(scope="session")
def pretrained(tiny_dataset, ray_session):
    root, dataset_id = tiny_dataset
    out = root / "run"
    summary = pretrain(PretrainSettings(dataset=dataset_id, out_dir=str(out), **TINY))
    return out, summary
