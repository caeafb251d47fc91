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
