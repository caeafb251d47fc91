"""`collect` / `train-behavior` refuse bad --policy / --env values in one line, before Ray."""

from __future__ import annotations

import pytest

from rllib_diffusion.cli import main


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def _collect(*extra: str) -> list[str]:
    return ["collect", "--dataset-id", "test/bad/inputs-v0", "--num-episodes", "1", *extra]


def test_missing_policy_checkpoint_says_it_does_not_exist(isolated_dirs, capsys):
    missing = isolated_dirs / "nonexistent"
    err = _one_line_error(_collect("--env", "Hopper-v5", "--policy", str(missing)), capsys)
    assert f"--policy '{missing}' does not exist" in err
    assert "not a complete" not in err


def test_discrete_action_env_is_refused(isolated_dirs, capsys):
    err = _one_line_error(_collect("--env", "CartPole-v1"), capsys)
    assert "--env CartPole-v1" in err and "needs a continuous Box action space" in err
    assert not (isolated_dirs / "minari").exists()


def test_unknown_env_is_refused_with_suggestions(isolated_dirs, capsys):
    err = _one_line_error(_collect("--env", "Hoper-v5"), capsys)
    assert "unknown env id 'Hoper-v5'" in err and "did you mean 'Hopper-v5'" in err


def test_train_behavior_checks_the_env_before_starting_ray(tmp_path, capsys, monkeypatch):
    import rllib_diffusion.utils.runtime as runtime

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for an unknown env id")

    monkeypatch.setattr(runtime, "init_ray", no_ray)
    argv = ["train-behavior", "--env", "Hoper-v5", "--out", str(tmp_path / "out")]
    err = _one_line_error(argv, capsys)
    assert "unknown env id 'Hoper-v5'" in err
