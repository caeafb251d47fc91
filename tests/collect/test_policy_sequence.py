"""`collect --policy-sequence RUN --until-return R` (D4RL's medium-replay): the checkpoints
of a behaviour run in training order, up to the first that reaches R, an equal share each,
with provenance; bad input refused in one line before any policy loads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rllib_diffusion.collect.collect as collect_mod
from rllib_diffusion.cli import main
from rllib_diffusion.collect.collect import PROVENANCE_KEY
from rllib_diffusion.data import load_minari
from rllib_diffusion.data.minari_io import read_extra_metadata

ENV = "Pendulum-v1"  # fixed 200-step episodes, Box actions in [-2, 2]
RETURNS = (-1500.0, -900.0, -400.0, -200.0)


class FakeCheckpointPolicy:
    """Stands in for an RLlib checkpoint: acts a constant that identifies it (its
    iteration / 10) and logs the order in which checkpoints are loaded."""

    loaded: list[str] = []

    def __init__(self, checkpoint: str, *, explore: bool = True) -> None:
        self.name = f"fake:{Path(checkpoint).name}"
        self.value = int(Path(checkpoint).name.split("_")[1]) / 10
        FakeCheckpointPolicy.loaded.append(Path(checkpoint).name)

    def reset(self, i, obs) -> None:
        pass

    def act(self, indices):
        return np.full((len(indices), 1), self.value, dtype=np.float32)

    def step(self, i, action, obs, reward, terminated, truncated) -> None:
        pass


@pytest.fixture
def fake_run(tmp_path, monkeypatch) -> Path:
    """A behaviour run directory with four checkpoints (iterations 3, 6, 9, 12)."""
    FakeCheckpointPolicy.loaded = []
    monkeypatch.setattr(collect_mod, "RLlibCheckpointPolicy", FakeCheckpointPolicy)
    run = tmp_path / "run"
    entries = []
    for k, ret in enumerate(RETURNS, start=1):
        path = run / f"checkpoint_{3 * k:05d}"
        path.mkdir(parents=True)
        entries.append({"path": str(path), "iteration": 3 * k, "env_steps": 100 * k, "return": ret})
    # Listed out of order: the sequence follows the iterations, not the file order.
    index = {"env_id": ENV, "checkpoints": [entries[2], entries[0], entries[3], entries[1]]}
    (run / "checkpoints.json").write_text(json.dumps(index))
    return run


def _collect(run: Path, *extra: str) -> list[str]:
    return [
        "collect",
        "--env",
        ENV,
        "--dataset-id",
        "test/pendulum/medium-replay-v0",
        "--policy-sequence",
        str(run),
        "--num-envs",
        "2",
        *extra,
    ]


def test_checkpoints_in_training_order_up_to_the_threshold(isolated_dirs, fake_run):
    assert main(_collect(fake_run, "--until-return", "-500", "--num-steps", "1200")) == 0
    # The first checkpoint that reaches -500 is iteration 9 (-400); iteration 12 never loads.
    assert FakeCheckpointPolicy.loaded == [
        "checkpoint_00003",
        "checkpoint_00006",
        "checkpoint_00009",
    ]
    ds = load_minari("test/pendulum/medium-replay-v0")
    prov = read_extra_metadata("test/pendulum/medium-replay-v0", PROVENANCE_KEY)
    assert prov["kind"] == "policy-sequence" and prov["until_return"] == -500
    assert prov["run_dir"] == str(fake_run.resolve())
    stages = prov["stages"]
    assert [s["iteration"] for s in stages] == [3, 6, 9]
    assert [s["training_return"] for s in stages] == list(RETURNS[:3])
    # Equal shares of 1200 steps: at least 400 each, in complete 200-step episodes.
    assert all(s["transitions"] >= 400 and s["transitions"] % 200 == 0 for s in stages)
    assert ds.num_transitions == sum(s["transitions"] for s in stages)
    assert ds.num_episodes == sum(s["episodes"] for s in stages)
    # Every episode was recorded by the stage provenance says, in that order.
    bounds = [s["first_episode"] for s in stages] + [ds.num_episodes]
    for k, stage in enumerate(stages):
        for ep in ds.episodes[bounds[k] : bounds[k + 1]]:
            np.testing.assert_allclose(ep.actions, stage["iteration"] / 10)
        returns = [ep.episode_return for ep in ds.episodes[bounds[k] : bounds[k + 1]]]
        assert stage["return_mean"] == pytest.approx(np.mean(returns))


def test_without_a_threshold_every_checkpoint_is_used_and_episodes_split(isolated_dirs, fake_run):
    assert main(_collect(fake_run, "--num-episodes", "9")) == 0
    assert FakeCheckpointPolicy.loaded == [f"checkpoint_{i:05d}" for i in (3, 6, 9, 12)]
    stages = read_extra_metadata("test/pendulum/medium-replay-v0", PROVENANCE_KEY)["stages"]
    assert [s["episodes"] for s in stages] == [3, 2, 2, 2]  # 9 split, remainder first
    assert load_minari("test/pendulum/medium-replay-v0").num_episodes == 9


def test_a_single_checkpoint_records_its_training_return(isolated_dirs, fake_run):
    ckpt = fake_run / "checkpoint_00006"
    argv = ["collect", "--env", ENV, "--dataset-id", "test/pendulum/expert-v0"]
    assert main([*argv, "--policy", str(ckpt), "--num-episodes", "2"]) == 0
    prov = read_extra_metadata("test/pendulum/expert-v0", PROVENANCE_KEY)
    assert prov["kind"] == "policy" and prov["run_dir"] is None
    [stage] = prov["stages"]
    assert (stage["path"], stage["training_return"]) == (str(ckpt), RETURNS[1])
    assert stage["episodes"] == 2


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert FakeCheckpointPolicy.loaded == []  # refused before any policy loads
    return err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--until-return", "0", "--num-steps", "100"), "no checkpoint of"),
        (("--until-return", "-500", "--num-steps", "2"), "fewer than the 3 checkpoints"),
        (("--policy", "random", "--num-steps", "100"), "not both"),
    ],
)
def test_bad_sequence_inputs_are_one_line(isolated_dirs, fake_run, capsys, extra, message):
    err = _one_line_error(_collect(fake_run, *extra), capsys)
    assert message in err
    assert not (isolated_dirs / "minari" / "test").exists()


def test_threshold_error_names_the_best_checkpoint(isolated_dirs, fake_run, capsys):
    err = _one_line_error(_collect(fake_run, "--until-return", "0", "--num-steps", "9"), capsys)
    assert "best: -200.0 at checkpoint_00012" in err


def test_run_of_another_env_or_no_run_is_refused(isolated_dirs, fake_run, capsys):
    argv = _collect(fake_run, "--num-steps", "100")
    argv[argv.index(ENV)] = "Hopper-v5"
    assert "trained on Pendulum-v1, not on --env Hopper-v5" in _one_line_error(argv, capsys)
    err = _one_line_error(_collect(fake_run / "checkpoint_00003", "--num-steps", "9"), capsys)
    assert "has no checkpoints.json" in err


def test_until_return_needs_a_sequence(isolated_dirs, capsys):
    FakeCheckpointPolicy.loaded = []
    argv = ["collect", "--env", ENV, "--dataset-id", "t/p/x-v0", "--num-steps", "9"]
    err = _one_line_error([*argv, "--until-return", "5"], capsys)
    assert "--until-return needs --policy-sequence" in err


def test_existing_id_is_refused_before_collecting(isolated_dirs, fake_run, capsys, monkeypatch):
    argv = _collect(fake_run, "--num-episodes", "4")
    assert main(argv) == 0
    FakeCheckpointPolicy.loaded = []

    def never(*args, **kwargs):
        raise AssertionError("collected although the id exists")

    monkeypatch.setattr(collect_mod, "collect_episodes", never)
    assert "already exists" in _one_line_error(argv, capsys)


@pytest.mark.slow
def test_real_behaviour_run_drives_a_sequence(isolated_dirs, ray_session):
    """Two real PPO checkpoints (tiny), collected in order through the real policy class."""
    from rllib_diffusion.collect.behavior import BehaviorPPOSettings, train_behavior_policy

    settings = BehaviorPPOSettings(
        num_env_runners=0,
        num_envs_per_env_runner=2,
        train_batch_size=256,
        minibatch_size=64,
        num_epochs=1,
    )
    out = isolated_dirs / "behavior"
    train_behavior_policy(
        "Hopper-v5", out, max_env_steps=500, checkpoint_every=1, settings=settings
    )
    argv = ["collect", "--env", "Hopper-v5", "--dataset-id", "test/hopper/medium-replay-v0"]
    assert main([*argv, "--policy-sequence", str(out), "--num-episodes", "4"]) == 0
    prov = read_extra_metadata("test/hopper/medium-replay-v0", PROVENANCE_KEY)
    assert [s["iteration"] for s in prov["stages"]] == [1, 2]
    assert [s["policy"] for s in prov["stages"]] == [
        "rllib:checkpoint_00001",
        "rllib:checkpoint_00002",
    ]
    assert load_minari("test/hopper/medium-replay-v0").num_episodes == 4
