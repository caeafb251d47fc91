"""Fixtures of the algorithm tests. The tiny dataset / pretrained-policy fixtures live in
tests/conftest.py (shared with the system tests, so they are built once per session);
tiny batches, configs and run helpers in ``batches.py``."""

from __future__ import annotations

import json

import pytest

from tests.algorithms.batches import pretrain_biased, tiny_policy
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
    """Diffusion BC (K = 10, DDPM) on the biased toy data (:func:`pretrain_biased`): the
    weak policy of the fine-tuning learning tests; its pretrain summary."""
    return pretrain_biased(tmp_path_factory.mktemp("weak_ddpm"), "bc", denoising_steps=10)
