"""Gaussian baseline: RLlib BC pretraining, PPO fine-tuning from it, weight transfer, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rllib_diffusion.algorithms.gaussian import gaussian_ppo
from rllib_diffusion.algorithms.gaussian.gaussian_bc import GaussianBCSettings, pretrain_gaussian
from rllib_diffusion.algorithms.gaussian.gaussian_ppo import (
    GaussianPPOSettings,
    bc_to_ppo_state,
    build_gaussian_ppo_config,
    finetune_gaussian_ppo,
    load_bc_policy,
)
from rllib_diffusion.checkpoints import CheckpointError, load_policy_module
from rllib_diffusion.cli import main
from rllib_diffusion.evaluation import policy_actions
from rllib_diffusion.modules.model_config import ConfigError

TINY_BC = dict(
    hidden_dims=(32, 32), gradient_steps=40, steps_per_iteration=20, batch_size=32, eval_episodes=2
)
TINY_PPO = dict(
    env_steps=64,
    train_batch_size=64,
    minibatch_size=32,
    num_epochs=1,
    num_env_runners=1,
    num_envs_per_env_runner=2,
    eval_interval=1,
    eval_episodes=2,
    checkpoint_interval=0,
)


@pytest.fixture(scope="module")
def bc_run(tiny_dataset, ray_session):
    # The session-wide tiny Hopper dataset of tests/algorithms/conftest.py.
    root, dataset_id = tiny_dataset
    out = root / "gaussian" / "bc"
    return out, pretrain_gaussian(GaussianBCSettings(dataset_id, out_dir=str(out), **TINY_BC))


@pytest.fixture(scope="module")
def ppo_run(bc_run, ray_session):
    out = bc_run[0].parent / "ppo"
    settings = GaussianPPOSettings(str(bc_run[0] / "checkpoint"), out_dir=str(out), **TINY_PPO)
    return out, finetune_gaussian_ppo(settings)


def test_bc_pretrain_writes_checkpoint_progress_and_eval(bc_run):
    out, summary = bc_run
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [x["gradient_steps"] for x in lines] == [20, 40]
    assert all(np.isfinite(x["loss"]) for x in lines)
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == "GaussianBC"
    env_config = meta["env_config"]
    assert (env_config["horizon"], env_config["act_steps"], env_config["flatten_actions"]) == (
        1,
        1,
        True,
    )
    assert env_config["normalization"]["action"]["low"]
    assert env_config["clamp_obs"] is False  # the default: unclipped, as before
    assert meta["model_config"]["fcnet_hiddens"] == [32, 32]
    assert summary["evaluation"]["num_episodes"] == 2
    assert "normalized_score" in summary["evaluation"]
    assert json.loads((out / "result.json").read_text())["gradient_steps"] == 40
    module, _ = load_policy_module(out / "checkpoint")
    assert module.action_space.shape == (3,)


def test_ppo_finetune_one_iteration_starts_from_bc(bc_run, ppo_run):
    out, summary = ppo_run
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [0, 1]
    assert lines[1]["env_steps"] >= 64
    assert np.isfinite(lines[1]["vf_loss"]) and "eval_normalized_score" in lines[1]
    # Before any update the PPO policy is the BC policy: same deterministic episodes.
    np.testing.assert_allclose(
        summary["initial_evaluation"]["episode_returns"],
        bc_run[1]["evaluation"]["episode_returns"],
    )
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == "GaussianPPO"
    assert meta["env_config"] == bc_run[1]["env_config"]
    assert meta["bc_checkpoint"] == str(bc_run[0] / "checkpoint")
    result = json.loads((out / "result.json").read_text())
    assert result["iterations"] == 1 and result["evaluation"]["num_episodes"] == 2


def test_weight_transfer_gives_bc_actions_and_fresh_critic(bc_run, ray_session, monkeypatch):
    bc_ckpt = bc_run[0] / "checkpoint"
    bc_module, meta = load_policy_module(bc_ckpt)
    settings = GaussianPPOSettings(str(bc_ckpt), num_env_runners=0, num_envs_per_env_runner=1)
    algo = build_gaussian_ppo_config(
        settings, meta["env_config"], meta["model_config"]
    ).build_algo()
    try:
        learner_module = algo.learner_group._learner.module["default_policy"].unwrapped()
        critic = {k: v.clone() for k, v in learner_module.state_dict().items() if "critic" in k}
        obs = torch.as_tensor(
            np.random.default_rng(1).uniform(-1, 1, (64, 11)), dtype=torch.float32
        )
        with torch.no_grad():
            before = policy_actions(learner_module, obs, deterministic=True)
            expected = policy_actions(bc_module, obs, deterministic=True)
        assert not torch.allclose(before, expected)

        mapping = load_bc_policy(algo, bc_module)
        assert ("_pi_head.log_std", "pi.log_std") in mapping
        assert ("_encoder.net.mlp.0.weight", "encoder.actor_encoder.net.mlp.0.weight") in mapping
        with torch.no_grad():
            after = policy_actions(learner_module, obs, deterministic=True)
        torch.testing.assert_close(after, expected, rtol=0, atol=0)
        torch.testing.assert_close(
            learner_module.pi.log_std, bc_module._pi_head.log_std, rtol=0, atol=0
        )
        for key, value in learner_module.state_dict().items():
            if "critic" in key:
                torch.testing.assert_close(value, critic[key], rtol=0, atol=0)

        # The check after loading catches a transfer that did not happen.
        monkeypatch.setattr(gaussian_ppo, "bc_to_ppo_state", lambda bc, ppo: (ppo, []))
        learner_module.pi.net.mlp[0].bias.data.add_(1.0)
        with pytest.raises(RuntimeError, match="differ from the BC module"):
            load_bc_policy(algo, bc_module)
    finally:
        algo.stop()


def test_state_mapping_rejects_other_networks():
    bc = {"_encoder.net.mlp.0.weight": np.zeros((32, 11)), "_pi_head.log_std": np.zeros(3)}
    ppo = {
        "encoder.actor_encoder.net.mlp.0.weight": np.zeros((64, 11)),
        "pi.log_std": np.zeros(3),
    }
    with pytest.raises(CheckpointError, match="shape"):
        bc_to_ppo_state(bc, ppo)
    with pytest.raises(CheckpointError, match="no counterpart"):
        bc_to_ppo_state({"other.weight": np.zeros(1)}, ppo)
    with pytest.raises(CheckpointError, match="no weights for PPO's policy keys"):
        bc_to_ppo_state({"_pi_head.log_std": np.zeros(3)}, ppo)


def test_finetune_rejects_missing_and_diffusion_checkpoints(isolated_dirs, capsys):
    with pytest.raises(CheckpointError, match="not found"):
        finetune_gaussian_ppo(GaussianPPOSettings(str(isolated_dirs / "nope")))
    diffusion = isolated_dirs / "diffusion_ckpt"
    diffusion.mkdir()
    (diffusion / "rllib_diffusion.json").write_text(
        json.dumps({"algorithm": "DiffusionBC", "policy_config": {}})
    )
    with pytest.raises(CheckpointError, match="'DiffusionBC' checkpoint, not a 'GaussianBC'"):
        finetune_gaussian_ppo(GaussianPPOSettings(str(diffusion)))
    assert main(["finetune-gaussian", "--checkpoint", str(diffusion)]) == 2
    assert "DPPO" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="minibatch_size"):
        finetune_gaussian_ppo(GaussianPPOSettings(str(diffusion), minibatch_size=10_000))


@pytest.mark.parametrize("which", ["bc", "ppo"])
def test_cli_evaluate_gaussian_checkpoints(which, bc_run, ppo_run, tmp_path, capsys):
    out = {"bc": bc_run, "ppo": ppo_run}[which][0]
    out_json = tmp_path / "eval.json"
    args = ["evaluate", "--checkpoint", str(out / "checkpoint"), "--episodes", "2"]
    assert main([*args, "--json", str(out_json)]) == 0
    assert "over 2 episodes" in capsys.readouterr().out
    result = json.loads(out_json.read_text())
    assert result["algorithm"] == {"bc": "GaussianBC", "ppo": "GaussianPPO"}[which]
    assert len(result["episode_returns"]) == 2 and "normalized_score" in result
    assert main([*args, "--stochastic"]) == 0


def test_ppo_finetune_resumes_through_the_run_loop(bc_run, ray_session, tmp_path, monkeypatch):
    """The Gaussian baseline continues a crashed run from its checkpoint (the shared run
    loop), refuses an existing run without --resume and a resume with other settings."""
    from rllib_diffusion.algorithms.gaussian.gaussian_ppo import GaussianPPOFamily

    out = tmp_path / "ppo"
    kw = {**TINY_PPO, "env_steps": 128, "checkpoint_interval": 1}
    ckpt = str(bc_run[0] / "checkpoint")
    real_line = GaussianPPOFamily.progress_line

    def crash_in_iteration_2(self, algo, result, it, **kwargs):
        if it == 2:
            raise KeyboardInterrupt("killed")
        return real_line(self, algo, result, it, **kwargs)

    monkeypatch.setattr(GaussianPPOFamily, "progress_line", crash_in_iteration_2)
    with pytest.raises(KeyboardInterrupt):
        finetune_gaussian_ppo(GaussianPPOSettings(ckpt, out_dir=str(out), **kw))
    monkeypatch.setattr(GaussianPPOFamily, "progress_line", real_line)
    with pytest.raises(CheckpointError, match="--resume"):
        finetune_gaussian_ppo(GaussianPPOSettings(ckpt, out_dir=str(out), **kw))
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.0001 vs now 0.001"):
        finetune_gaussian_ppo(
            GaussianPPOSettings(ckpt, out_dir=str(out), resume=True, **{**kw, "lr": 1e-3})
        )
    summary = finetune_gaussian_ppo(GaussianPPOSettings(ckpt, out_dir=str(out), resume=True, **kw))
    assert summary["resumed"] == {"from_iteration": 1} and summary["iterations"] == 2
    assert summary["env_steps"] >= 128
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [0, 1, 2]
    # The start evaluation survives the crash (checkpoint meta), as in DPPO.
    assert summary["initial_evaluation"]["episode_returns"] == pytest.approx(
        bc_run[1]["evaluation"]["episode_returns"]
    )


def test_ppo_train_result_has_rllibs_structure(bc_run, ray_session):
    """RLlib's own check of a ``train()`` result, on the baseline's tiny config."""
    from ray.rllib.utils.test_utils import check_train_results_new_api_stack

    bc_ckpt = bc_run[0] / "checkpoint"
    _, meta = load_policy_module(bc_ckpt)
    settings = GaussianPPOSettings(
        str(bc_ckpt), **{k: v for k, v in TINY_PPO.items() if not k.startswith("eval")}
    )
    algo = build_gaussian_ppo_config(
        settings, meta["env_config"], meta["model_config"]
    ).build_algo()
    try:
        result = algo.train()
        check_train_results_new_api_stack(result)
        # Ta = act_steps = 1: RLlib's env steps are real env steps.
        assert result["num_env_steps_sampled_lifetime"] >= TINY_PPO["train_batch_size"]
        assert result["fault_tolerance"]["num_healthy_workers"] == TINY_PPO["num_env_runners"]
    finally:
        algo.stop()
