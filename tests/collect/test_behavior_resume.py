"""`train-behavior --resume` continues a behaviour run from its last checkpoint (so a run
that hit its time budget can go on to expert level), refusing a mismatch in one line."""

from __future__ import annotations

import json

import pytest

from rllib_diffusion.cli import main
from rllib_diffusion.collect.behavior import BehaviorPPOSettings, train_behavior_policy

TINY = BehaviorPPOSettings(
    num_env_runners=0, num_envs_per_env_runner=2, train_batch_size=256, minibatch_size=64,
    num_epochs=1,
)  # fmt: skip


def _one_line_error(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


@pytest.fixture
def no_ray(monkeypatch):
    import rllib_diffusion.utils.runtime as runtime

    def refuse(*args, **kwargs):
        raise AssertionError("Ray was started for a run that cannot resume")

    monkeypatch.setattr(runtime, "init_ray", refuse)


def test_resume_without_a_run_is_one_line_before_ray(tmp_path, capsys, no_ray):
    argv = ["train-behavior", "--env", "Hopper-v5", "--out", str(tmp_path), "--resume"]
    assert "has no checkpoints.json" in _one_line_error(argv, capsys)


def test_resume_of_another_env_or_settings_is_refused(tmp_path, capsys, no_ray):
    index = {"env_id": "Walker2d-v5", "settings": {"hidden": [64, 64]}, "checkpoints": [{}]}
    (tmp_path / "checkpoints.json").write_text(json.dumps(index))
    argv = ["train-behavior", "--env", "Hopper-v5", "--out", str(tmp_path), "--resume"]
    assert "run of Walker2d-v5" in _one_line_error(argv, capsys)
    index["env_id"] = "Hopper-v5"
    (tmp_path / "checkpoints.json").write_text(json.dumps(index))
    assert "differ from the run" in _one_line_error([*argv, "--seed", "3"], capsys)


def test_resume_drops_progress_after_the_last_checkpoint(tmp_path):
    from rllib_diffusion.collect.behavior import _rewind_progress

    lines = [
        {"iteration": i, "env_steps": 10 * i, "return": 0.0, "minutes": i / 2} for i in (1, 2, 3)
    ]
    (tmp_path / "progress.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert _rewind_progress(tmp_path, 2) == 1.0
    kept = (tmp_path / "progress.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in kept] == [1, 2]


@pytest.mark.slow
def test_a_resumed_run_counts_on_from_its_last_checkpoint(tmp_path, ray_session):
    first = train_behavior_policy(
        "Hopper-v5", tmp_path, max_env_steps=1, checkpoint_every=1, settings=TINY
    )
    assert first["iterations"] == 1
    with open(tmp_path / "progress.jsonl", "a") as f:  # an iteration after the checkpoint
        f.write(json.dumps({"iteration": 2, "env_steps": 1, "return": 0.0, "minutes": 9}) + "\n")
    second = train_behavior_policy(
        "Hopper-v5", tmp_path, max_env_steps=600, checkpoint_every=1, settings=TINY, resume=True
    )
    index = json.loads((tmp_path / "checkpoints.json").read_text())["checkpoints"]
    assert [c["iteration"] for c in index] == [1, 2, 3] and second["iterations"] == 3
    steps = [c["env_steps"] for c in index]
    assert steps[0] >= 256 and steps[1] > steps[0] and steps[2] > steps[1] >= 600 - 256
    lines = (tmp_path / "progress.jsonl").read_text().splitlines()
    assert [json.loads(x)["iteration"] for x in lines] == [1, 2, 3]
