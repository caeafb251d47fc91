"""``rllib-diffusion dydiff`` end to end through RLlib on a tiny Hopper set: the model
trains and is checkpointed as "DyDiff", a real policy checkpoint's rollouts are written
as single-step Minari episodes with provenance, and the checkpoint reproduces them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rolled_out(tiny_dataset, pretrained, ray_session, tmp_path_factory):
    from rllib_diffusion.algorithms.dydiff import DyDiffRolloutSettings, dydiff

    _, dataset_id = tiny_dataset
    policy_dir, _ = pretrained
    s = DyDiffRolloutSettings(
        dataset=dataset_id,
        out_dir=str(tmp_path_factory.mktemp("dydiff") / "run"),
        gradient_steps=40,
        steps_per_iteration=20,
        batch_size=32,
        horizon=4,
        width=32,
        depth=2,
        denoising_steps=5,
        ensemble_size=3,
        ensemble_width=16,
        ensemble_depth=2,
        policy=str(policy_dir / "checkpoint"),
        dataset_id="test/hopper/dydiff-v0",
        num_rollouts=50,
        rollout_batch_size=20,
        seed=5,
    )
    return s, dydiff(s)


def test_dydiff_writes_rollouts_with_provenance(rolled_out) -> None:
    from rllib_diffusion.algorithms.synther import read_provenance as synther_read
    from rllib_diffusion.checkpoints import read_checkpoint_meta
    from rllib_diffusion.data import load_minari
    from rllib_diffusion.data.synthetic import read_provenance

    s, summary = rolled_out
    prov = read_provenance(s.dataset_id)
    assert prov == summary["provenance"] == synther_read(s.dataset_id)
    assert read_checkpoint_meta(prov["generator_checkpoint"]).algorithm == "DyDiff"
    assert prov["num_rollouts"] == 50 and prov["num_rollouts_kept"] == 30  # hardmax 0.6
    assert prov["injection_rounds"] == 2 and prov["filter"]["kind"] == "hardmax"
    assert prov["policy_checkpoint"].endswith("checkpoint") and prov["seed"] == 5
    data = load_minari(s.dataset_id)
    assert data.num_episodes == data.num_transitions == prov["num_transitions"]
    assert 0 < prov["num_transitions"] <= 30 * 4
    term = np.array([e.terminations[0] for e in data.episodes])
    trunc = np.array([e.truncations[0] for e in data.episodes])
    assert (term != trunc).all()
    evaluation = summary["model_evaluation"]
    assert len(evaluation["diffusion_rmse_per_step"]) == 4
    assert np.isfinite(evaluation["ensemble_rmse_mean"])


def test_the_model_checkpoint_reproduces_the_rollouts(rolled_out) -> None:
    from rllib_diffusion.algorithms.dydiff import dydiff
    from rllib_diffusion.data import load_minari

    s, summary = rolled_out
    again = replace(
        s,
        model=summary["model_checkpoint"],
        dataset_id="test/hopper/dydiff-v1",
        out_dir=s.out_dir + "-again",
    )
    dydiff(again)
    first, second = load_minari(s.dataset_id), load_minari(again.dataset_id)
    assert first.num_episodes == second.num_episodes
    for a, b in zip(first.episodes, second.episodes):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
