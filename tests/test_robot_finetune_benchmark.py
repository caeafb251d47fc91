"""``benchmarks/robot_finetune.py``: the training reward it asks for, and its refusal to
continue a run made with another one (no robosuite or Ray needed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "robot_finetune.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("robot_finetune_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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
