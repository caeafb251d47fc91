"""Checkpoints written before the redesign (``tests/fixtures/legacy_v0``, made by
``make_legacy_checkpoints.py`` at commit 2ef4577) still load and act identically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.make_legacy_checkpoints import expected_actions

LEGACY = Path(__file__).parent / "fixtures" / "legacy_v0"
EXPECTED = np.load(LEGACY / "expected_actions.npz")


@pytest.mark.parametrize("name", sorted(EXPECTED.files))
def test_pre_redesign_checkpoint_loads_and_acts_identically(name):
    np.testing.assert_allclose(expected_actions(LEGACY / name), EXPECTED[name], atol=1e-6)


def test_the_fixture_covers_every_family_and_was_written_without_a_meta_version():
    assert set(EXPECTED.files) == {"bc", "dppo", "dac", "idql", "fql"}
    for name in EXPECTED.files:
        assert "version" not in json.loads((LEGACY / name / "rllib_diffusion.json").read_text())


def test_meta_is_typed_versioned_and_refuses_what_it_cannot_read(tmp_path):
    from rllib_diffusion.checkpoints import (
        LEGACY_CHAIN_MODEL_KEY,
        META_FILE,
        META_VERSION,
        CheckpointError,
        CheckpointMeta,
        read_checkpoint_meta,
    )

    old = read_checkpoint_meta(LEGACY / "dppo")
    assert isinstance(old, CheckpointMeta) and old.algorithm == "DPPO"
    assert old.model_config["ft_denoising_steps"] == 2 and old.iteration == 1
    assert old["policy_config"] == old.policy_config  # the Mapping view of old callers
    # Written back, it is the same content plus the version, the chain model config
    # under its current key.
    again = json.loads(old.to_json())
    raw = json.loads((LEGACY / "dppo" / META_FILE).read_text())
    raw["model_config"] = raw.pop(LEGACY_CHAIN_MODEL_KEY)
    assert again == {**raw, "version": META_VERSION}
    for bad, match in (
        ({"algorithm": "DPPO", "colour": 1}, r"unknown keys \['colour'\]"),
        ({"env_id": "Hopper-v5"}, "no 'algorithm'"),
        ({"algorithm": "DPPO", "version": META_VERSION + 1}, "newer rllib-diffusion"),
    ):
        (tmp_path / META_FILE).write_text(json.dumps(bad))
        with pytest.raises(CheckpointError, match=match):
            read_checkpoint_meta(tmp_path)
