"""Fixtures of the algorithm tests. The tiny dataset / pretrained-policy fixtures live in
tests/conftest.py (shared with the system tests, so they are built once per session);
tiny batches, configs and run helpers in ``batches.py``."""

from __future__ import annotations

import json

import pytest

from tests.algorithms.batches import tiny_policy
from tests.conftest import TINY  # noqa: F401  (imported by the algorithm tests)


@pytest.fixture
def fake_bc_checkpoint(tmp_path) -> str:
    """A DiffusionBC checkpoint of the tiny policy with only its meta (enough for the CLI
    to build a fine-tuning config)."""
    meta = {"algorithm": "DiffusionBC", "policy_config": tiny_policy()}
    (tmp_path / "rllib_diffusion.json").write_text(json.dumps(meta))
    return str(tmp_path)


@pytest.fixture(scope="session")
def weak_ddpm_policy(ray_session, tmp_path_factory) -> dict:
    """Diffusion BC (K = 10, DDPM, 64-64, 1,500 steps) on the biased toy data
    (``ReachTarget-v0`` acting at ``target + 0.5``, see test_dppo_learning.py): a weak
    policy (return ≈ 5 of 10) for the fine-tuning learning tests; its pretrain summary."""
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings, pretrain
    from rllib_diffusion.data import save_npz
    from tests.algorithms.test_dppo_learning import biased_dataset

    root = tmp_path_factory.mktemp("weak_ddpm")
    return pretrain(
        PretrainSettings(
            dataset=save_npz(biased_dataset(), root / "reach.npz"),
            out_dir=str(root / "bc"),
            horizon=1,
            act_steps=1,
            denoising_steps=10,
            hidden_dims=(64, 64),
            gradient_steps=1500,
            steps_per_iteration=500,
            batch_size=128,
            warmup_steps=0,
            eval_episodes=10,
        )
    )
