"""tune_configs/dppo_robomimic.py: builds on a robomimic checkpoint with DPPO's robomimic
settings, refuses a checkpoint of another env in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from rllib_diffusion.algorithms.dppo.robomimic import (
    ROBOMIMIC_ENV_KWARGS,
    ROBOMIMIC_KNOBS,
    ROBOMIMIC_RUN,
)
from rllib_diffusion.checkpoints import META_FILE
from rllib_diffusion.modules.model_config import ConfigError
from rllib_diffusion.tuning import SweepArgs, build_sweep

LIFT = "robomimic/Lift-v0"


@pytest.fixture
def lift_checkpoint(pretrained, tmp_path):
    """The tiny Hopper policy's checkpoint metadata relabelled as a Lift policy (the
    sweep reads only the metadata; no env or weights are needed to build it)."""
    src = pretrained[0] / "checkpoint"
    dst = tmp_path / "checkpoint"
    dst.mkdir()
    meta = json.loads((src / META_FILE).read_text())
    meta["env_id"] = LIFT
    meta["policy_config"]["env_id"] = LIFT
    (dst / META_FILE).write_text(json.dumps(meta))
    shutil.copy(src / "rllib_checkpoint.json", dst / "rllib_checkpoint.json")
    return dst


def test_robomimic_sweep_builds_with_the_robomimic_settings(lift_checkpoint):
    from ray.tune.schedulers import ASHAScheduler

    sweep = build_sweep("dppo_robomimic", SweepArgs(checkpoint=str(lift_checkpoint), num_samples=2))
    assert isinstance(sweep.scheduler, ASHAScheduler)
    assert sweep.stop == {"training_iteration": 60}
    assert set(sweep.searched_keys()) == {
        "actor_lr",
        "critic_lr",
        "clip_param",
        "_model_config/ft_denoising_steps",
    }
    config = sweep.param_space
    for knob in ("gamma", "clip_param_base", "num_epochs", "critic_warmup_iterations"):
        assert getattr(config, knob) == ROBOMIMIC_KNOBS[knob]
    assert config.num_env_runners == ROBOMIMIC_RUN["num_env_runners"]
    assert config.num_envs_per_env_runner == ROBOMIMIC_RUN["num_envs_per_env_runner"]
    assert config.evaluation_interval == 10 and config.evaluation_duration == 20
    # Trials train with DPPO's robomimic reward (no end at the first success).
    assert config.env_config["env_id"] == LIFT
    assert (
        config.env_config["env_kwargs"] == ROBOMIMIC_ENV_KWARGS == {"terminate_on_success": False}
    )
    assert sweep.checkpoint_meta(sweep.param_dict())["env_id"] == LIFT


def test_robomimic_sweep_refuses_other_envs(pretrained):
    with pytest.raises(ConfigError, match=r"robomimic tasks .* is a Hopper-v5 policy"):
        build_sweep("dppo_robomimic", SweepArgs(checkpoint=str(pretrained[0] / "checkpoint")))
