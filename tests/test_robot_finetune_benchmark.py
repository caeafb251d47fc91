"""``benchmarks/robot_finetune.py``: the training reward it asks for, and its refusal to
continue a run made with another one (no robosuite or Ray needed)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("robot_finetune")


def settings_for(bench, out: Path, *extra: str):
    args = bench.parse_args(["--task", "lift", "--out", str(out), *extra])
    return bench.finetune_settings(args, Path("bc/checkpoint"))


def test_training_reward_is_dppos_unless_asked(bench, tmp_path):
    assert settings_for(bench, tmp_path).env_kwargs == {"terminate_on_success": False}
    assert settings_for(bench, tmp_path, "--train-reward", "success").env_kwargs is None


def test_a_run_from_before_env_kwargs_is_not_continued_with_another_reward(bench, tmp_path):
    from rllib_diffusion.checkpoints import META_FILE

    old = settings_for(bench, tmp_path, "--train-reward", "success")
    saved = {k: v for k, v in asdict(old).items() if k != "env_kwargs"}  # an older run
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / META_FILE).write_text(
        json.dumps({"algorithm": "dppo", "env_id": "robomimic/Lift-v0", "settings": saved})
    )
    bench.check_same_run(tmp_path, old)  # the same reward: continued
    with pytest.raises(SystemExit, match="env_kwargs: run None"):
        bench.check_same_run(tmp_path, settings_for(bench, tmp_path))


def test_kitchen_trains_on_its_own_reward(bench, tmp_path):
    args = bench.parse_args(["--task", "kitchen_microwave", "--out", str(tmp_path)])
    assert args.train_reward == "success"
    assert bench.finetune_settings(args, Path("bc/checkpoint")).env_kwargs is None
    assert bench.train_series(args) == "train_success_rate"
    all3 = bench.parse_args(["--task", "kitchen_all3"])
    assert bench.train_series(all3) == "train_tasks_completed_per_episode"
    with pytest.raises(SystemExit, match="robomimic's"):
        bench.parse_args(["--task", "kitchen_microwave", "--train-reward", "dppo"])


def test_kitchen_demos_are_collected_once_under_a_minari_id(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    calls = []
    monkeypatch.setattr(bench, "run_stage", calls.append)
    args = bench.parse_args(["--task", "kitchen_all3", "--demos", "7"])
    assert bench.bc_dataset(args) == "local/kitchen/all3-scripted7-v0"
    assert calls[0][1:] == [
        "-m", "rllib_diffusion.collect.kitchen_demos", "--tasks",
        "microwave", "light_switch", "slide_cabinet",
        "--episodes", "7", "--dataset-id", "local/kitchen/all3-scripted7-v0",
    ]  # fmt: skip
    (tmp_path / "local" / "kitchen" / "all3-scripted7-v0").mkdir(parents=True)
    bench.bc_dataset(args)
    assert len(calls) == 1
    assert bench.kitchen_figures(args)["kitchen_tasks"] == list(bench.KITCHEN_TASKS["kitchen_all3"])
    assert bench.kitchen_figures(bench.parse_args(["--task", "lift"])) == {}
    all4 = bench.parse_args(["--task", "kitchen_all4", "--demos", "3"])
    assert bench.bc_dataset(all4) == "local/kitchen/all4-scripted3-v0"
    assert calls[1][4:8] == ["microwave", "kettle", "light_switch", "slide_cabinet"]
    assert bench.train_series(all4) == "train_tasks_completed_per_episode"


def test_clamp_obs_pretrains_its_own_weak_bc(bench, tmp_path, monkeypatch):
    """``--clamp-obs``: a separate BC dir (``_clamp``) pretrained with ``--clamp-obs``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    (tmp_path / "local" / "kitchen" / "microwave-scripted5-v0").mkdir(parents=True)
    calls = []
    monkeypatch.setattr(bench, "run_stage", calls.append)
    plain = bench.parse_args(["--task", "kitchen_microwave", "--demos", "5"])
    clamped = bench.parse_args(["--task", "kitchen_microwave", "--demos", "5", "--clamp-obs"])
    assert bench.bc_dir(plain).name == "bc_kitchen_microwave5_100"
    assert bench.bc_dir(clamped).name == "bc_kitchen_microwave5_100_clamp"
    bench.make_weak_bc(plain)
    bench.make_weak_bc(clamped)
    assert "--clamp-obs" not in calls[0] and calls[1][-1] == "--clamp-obs"
    assert calls[1][calls[1].index("--out") + 1] == str(bench.bc_dir(clamped))
