"""Collecting Minari datasets: random policy and an RLlib PPO checkpoint (with MeanStdFilter)."""

from __future__ import annotations

import json

import numpy as np

from rllib_diffusion.cli import main
from rllib_diffusion.collect.behavior import BehaviorPPOSettings, train_behavior_policy
from rllib_diffusion.collect.collect import collect_episodes
from rllib_diffusion.collect.policies import RandomPolicy
from rllib_diffusion.data import load_minari


def test_collect_random_episodes_are_complete_and_consistent():
    import gymnasium as gym

    space = gym.make("Hopper-v5").action_space
    eps = collect_episodes(
        "Hopper-v5", RandomPolicy(space), num_steps=300, num_envs=3, progress=False
    )
    assert sum(e.length for e in eps) >= 300
    for e in eps:
        assert e.observations.shape == (e.length + 1, 11)
        assert e.actions.shape == (e.length, 3)
        assert (e.terminations[-1] or e.truncations[-1]) and not e.terminations[:-1].any()
        assert np.all(np.abs(e.actions) <= 1.0)


def test_cli_collect_writes_minari_with_reference_scores(isolated_dirs):
    summary_path = isolated_dirs / "s.json"
    rc = main(
        [
            "collect",
            "--env",
            "Hopper-v5",
            "--dataset-id",
            "test/hopper/random-v0",
            "--num-episodes",
            "5",
            "--json",
            str(summary_path),
        ]
    )
    assert rc == 0
    ds = load_minari("test/hopper/random-v0")
    assert ds.num_episodes == 5 and ds.env_id == "Hopper-v5"
    assert (ds.ref_min_score, ds.ref_max_score) == (16.7, 3234.3)
    assert json.loads(summary_path.read_text())["episodes"] == 5
    # Writing the same id again is refused with a clear message, not overwritten.
    rc = main(
        [
            "collect",
            "--env",
            "Hopper-v5",
            "--dataset-id",
            "test/hopper/random-v0",
            "--num-episodes",
            "1",
        ]
    )
    assert rc == 2


def test_behavior_checkpoint_drives_collection(isolated_dirs, ray_session):
    out = isolated_dirs / "behavior"
    settings = BehaviorPPOSettings(
        num_env_runners=0,
        num_envs_per_env_runner=2,
        train_batch_size=256,
        minibatch_size=64,
        num_epochs=1,
    )
    summary = train_behavior_policy(
        "Hopper-v5", out, max_env_steps=1, checkpoint_every=1, settings=settings
    )
    assert summary["iterations"] == 1
    index = json.loads((out / "checkpoints.json").read_text())
    ckpt = index["checkpoints"][-1]["path"]
    rc = main(
        [
            "collect",
            "--env",
            "Hopper-v5",
            "--dataset-id",
            "test/hopper/ppo-v0",
            "--policy",
            ckpt,
            "--num-episodes",
            "3",
            "--deterministic",
        ]
    )
    assert rc == 0
    ds = load_minari("test/hopper/ppo-v0")
    assert ds.num_episodes == 3
    assert all(np.isfinite(e.actions).all() for e in ds.episodes)


def test_collect_from_incomplete_checkpoint_is_clear(isolated_dirs, capsys):
    (isolated_dirs / "nope").mkdir()  # a directory, but no checkpoint in it
    rc = main(
        [
            "collect",
            "--env",
            "Hopper-v5",
            "--dataset-id",
            "t/h/x-v0",
            "--policy",
            str(isolated_dirs / "nope"),
            "--num-episodes",
            "1",
        ]
    )
    assert rc == 2
    assert "not a complete RLlib Algorithm checkpoint" in capsys.readouterr().err
