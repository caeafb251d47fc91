"""ReinFlow: chain math against torch.distributions, module contract, learner ratio, a
smoke run with checkpoint and resume, and a learning test on the toy task.

Toy task (``rllib_diffusion/ReachTarget-v0``, see test_dppo_learning.py): the flow BC
policy is trained on data acting at ``target + 0.5`` (return ≈ 5 of 10); ReinFlow must
move it towards the target.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing
from torch.distributions import Normal

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.dppo.dppo_connectors import (
    DENOISE_K,
    OLD_LOGP,
    X_NEXT,
    X_PREV,
    ExpandDenoisingSteps,
)
from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig
from rllib_diffusion.algorithms.dppo.reinflow import (
    ReinFlowConfig,
    cosine_warm_restarts,
    max_std_schedule,
)
from rllib_diffusion.algorithms.dppo.reinflow_rl_module import ReinFlowModelConfig, ReinFlowModule
from rllib_diffusion.diffusion import (
    chain_logprobs,
    euler_sample,
    flow_chain_entropy,
    flow_chain_logprob,
)
from rllib_diffusion.envs.chunking import chunk_spaces
from rllib_diffusion.modules.model_config import ConfigError
from tests.algorithms.batches import DA, OBS_DIM, TA, tiny_policy

K = 4  # Euler steps of the tiny flow policy


def policy(sampler: str = "flow") -> dict:
    return tiny_policy(sampler, k=K)


def make_module(**model_knobs) -> ReinFlowModule:
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    cfg = ReinFlowModelConfig(policy=policy(), critic_hidden_dims=(8,), **model_knobs)
    torch.manual_seed(0)
    return ReinFlowModule(
        observation_space=obs_space, action_space=act_space, model_config=cfg.to_dict()
    )


# ------------------------------------------------------------------- pure math
@pytest.mark.parametrize("include_init", [True, False])
def test_chain_logprob_and_entropy_equal_torch_normal(include_init):
    g = torch.Generator().manual_seed(0)
    b = 5
    chain = torch.randn(b, K + 1, TA, DA, generator=g)
    means = torch.randn(b, K, TA, DA, generator=g)
    stds = 0.1 + torch.rand(b, K, TA, DA, generator=g)
    step = chain_logprobs(chain, means, stds, clamp=None)
    got = flow_chain_logprob(chain[:, 0], step, include_init=include_init, clamp=None)

    # Reference: the official formula, sums over (Ta, Da) and steps, then / terms / Ta·Da.
    total = Normal(means, stds).log_prob(chain[:, 1:]).sum(dim=(1, 2, 3))
    ent = Normal(means, stds).entropy().sum(dim=(1, 2, 3))
    terms = K
    if include_init:
        total = total + Normal(0.0, 1.0).log_prob(chain[:, 0]).sum(dim=(1, 2))
        ent = ent + Normal(torch.zeros(TA, DA), 1.0).entropy().sum()
        terms += 1
    torch.testing.assert_close(got, total / terms / (TA * DA))
    torch.testing.assert_close(
        flow_chain_entropy(stds, include_init=include_init), ent / terms / (TA * DA)
    )
    clamped = flow_chain_logprob(chain[:, 0], step, include_init=include_init)
    torch.testing.assert_close(clamped, got.clamp(-1, 1))


def test_noise_bound_schedule_is_the_official_learn_decay():
    kw = dict(min_std=0.1, max_std=0.24, iterations=1000, hold_ratio=0.35, decay_ratio=0.7)
    low = 0.1 * 0.3 + 0.24 * 0.7
    assert max_std_schedule(0, **kw) == pytest.approx(0.24)
    assert max_std_schedule(350, **kw) == pytest.approx(0.24)
    mid = 350 + 650 // 2
    assert max_std_schedule(mid, **kw) == pytest.approx((0.24 + low) / 2, rel=1e-3)
    assert max_std_schedule(1000, **kw) == pytest.approx(low)
    assert max_std_schedule(5000, **{**kw, "iterations": None}) == 0.24


def test_lr_schedule_is_the_official_cosine_with_warm_restarts():
    kw = dict(max_lr=4.5e-5, min_lr=2e-5, cycle=100, warmup=10)
    assert cosine_warm_restarts(0, **kw) == pytest.approx(2e-5)
    assert cosine_warm_restarts(5, **kw) == pytest.approx(3.25e-5)
    assert cosine_warm_restarts(10, **kw) == pytest.approx(4.5e-5)
    assert cosine_warm_restarts(55, **kw) == pytest.approx(3.25e-5)
    assert cosine_warm_restarts(99, **kw) == pytest.approx(2e-5, rel=1e-2)
    assert cosine_warm_restarts(100, **kw) == pytest.approx(2e-5)  # restart
    config = ReinFlowConfig()
    assert config.iteration_lr("critic", 10) == pytest.approx(6.5e-4)
    assert config.training(lr_cycle_iterations=None).iteration_lr("actor", 7) is None


# --------------------------------------------------------------- module contract
def test_exploration_outputs_and_the_stored_logprob_is_the_chains():
    module = make_module()
    obs = torch.randn(6, OBS_DIM)
    out = module.forward_exploration({Columns.OBS: obs})
    chain, step_logp = out[C.CHAINS], out[C.CHAIN_LOGP]
    assert chain.shape == (6, K + 1, TA, DA) and step_logp.shape == (6, K)
    torch.testing.assert_close(out[Columns.ACTIONS], chain[:, -1])
    assert out[Columns.ACTIONS].abs().max() <= 1.0
    # Each stored step is a draw from the step's Gaussian, within ±3σ of its mean.
    means, stds = module.step_means_stds(obs, chain[:, :-1])
    assert ((chain[:, 1:-1] - means[:, :-1]).abs() <= 3 * stds[:, :-1] + 1e-6).all()
    assert (stds >= 0.1 - 1e-6).all() and (stds <= 0.24 + 1e-6).all()
    assert not module.inference_only and hasattr(module, "critic")


def test_noise_at_its_lower_bound_gives_the_deterministic_euler_flow():
    # Noise std pinned at ~0: the sampled chain is the flow of the fine-tuned velocity net.
    module = make_module(min_std=1e-7, max_std=1e-7, mean_clip=None)
    obs = torch.randn(8, OBS_DIM)
    x0 = torch.randn(8, TA, DA, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        noisy = module.sample(obs, deterministic=False, x_init=x0).actions
        flow = euler_sample(lambda x, t: module.actor_ft(x, t, obs), x0, K, clip=1.0)
    torch.testing.assert_close(noisy, flow, atol=1e-5, rtol=0)
    # Inference (deterministic) is that flow too, with or without the bound.
    wide = make_module(mean_clip=None)
    with torch.no_grad():
        det = wide.sample(obs, deterministic=True, x_init=x0).actions
        ref = euler_sample(lambda x, t: wide.actor_ft(x, t, obs), x0, K, clip=1.0)
    torch.testing.assert_close(det, ref)
    # Inference-only modules (EnvRunners) have no critic.
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    cfg = ReinFlowModelConfig(policy=policy()).to_dict()
    lean = ReinFlowModule(
        observation_space=obs_space, action_space=act_space, inference_only=True, model_config=cfg
    )
    assert not hasattr(lean, "critic")


def test_ppo_units_and_pair_logp_reproduce_the_rollout_logprob():
    module = make_module()
    obs = torch.randn(5, OBS_DIM)
    out = module.forward_exploration({Columns.OBS: obs})
    x_prev, x_next, k, old = module.ppo_units(out[C.CHAINS], out[C.CHAIN_LOGP], 3)
    assert x_prev.shape == (15, K, TA, DA) and (k == 0).all()
    torch.testing.assert_close(old, out[Columns.ACTION_LOGP].repeat_interleave(3))
    with torch.no_grad():
        again = module.pair_logp(obs.repeat_interleave(3, dim=0), x_prev, x_next, k)
    torch.testing.assert_close(again, old, atol=1e-6, rtol=0)


def test_config_refusals_name_the_fix():
    with pytest.raises(ConfigError, match="pretrain --sampler flow"):
        ReinFlowModelConfig(policy=policy("ddpm"))
    with pytest.raises(ConfigError, match="Pretrain with --sampler ddpm or ddim"):
        DPPOModelConfig(policy=policy("flow"))
    with pytest.raises(ConfigError, match="--min-std"):
        ReinFlowModelConfig(policy=policy(), min_std=0.3, max_std=0.2)
    with pytest.raises(ValueError, match="gamma_denoising does not apply"):
        ReinFlowConfig().training(gamma_denoising=0.9).validate()


# ------------------------------------------------------------------- learner
def _learner(**training):
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    model = ReinFlowModelConfig(policy=policy(), critic_hidden_dims=(8,)).to_dict()
    config = (
        ReinFlowConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(reward_scaling=False, target_kl=None, **training)
        .rl_module(model_config=model)
    )
    torch.manual_seed(0)
    learner = config.build_learner(spaces={"default_policy": (obs_space, act_space)})
    return learner, config, learner.module["default_policy"].unwrapped()


def _unit_batch(learner, module, n=12):
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, OBS_DIM, generator=g)
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: obs})
    rows = {
        Columns.OBS: obs,
        C.CHAINS: out[C.CHAINS],
        C.CHAIN_LOGP: out[C.CHAIN_LOGP],
        Postprocessing.ADVANTAGES: torch.randn(n, generator=g),
        Postprocessing.VALUE_TARGETS: torch.randn(n, generator=g),
    }
    connector = ExpandDenoisingSteps(repeats=learner.config.repeat_samples)
    return connector(rl_module=learner.module, batch={"default_policy": rows}, episodes=[])[
        "default_policy"
    ]


def test_learner_ratio_is_one_on_stored_chains_and_grads_reach_velocity_and_noise_nets(
    ray_session,
):
    learner, config, module = _learner()
    batch = _unit_batch(learner, module)
    assert len(batch[OLD_LOGP]) == 12 * config.repeat_samples == 120
    assert batch[X_PREV].shape == (120, K, TA, DA) and batch[X_NEXT].shape == (120, K, TA, DA)
    assert (batch[DENOISE_K] == 0).all()
    loss = learner.compute_loss_for_module(
        module_id="default_policy", config=config, batch=batch, fwd_out={}
    )
    assert float(learner.metrics.peek(("default_policy", "ratio_mean"))) == pytest.approx(
        1.0, abs=1e-6
    )
    entropy = float(learner.metrics.peek(("default_policy", "entropy")))
    assert math.isfinite(entropy)
    for p in module.parameters():
        p.grad = None
    loss.backward()
    assert all(p.grad is None for p in module.actor.parameters())
    for net in (module.actor_ft, module.noise_net, module.critic):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    actor_opt = learner.get_optimizer("default_policy", "actor")
    assert actor_opt.param_groups[0]["lr"] == pytest.approx(4.5e-5)
    assert actor_opt.param_groups[0]["weight_decay"] == 0.0
    assert learner.get_optimizer("default_policy", "critic").param_groups[0][
        "weight_decay"
    ] == pytest.approx(1e-5)
    n_opt = sum(p.numel() for g in actor_opt.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in module.actor_parameters())


def test_one_update_moves_the_policy_and_lowers_the_noise_bound(ray_session):
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    learner, config, module = _learner(actor_lr=1e-3, noise_decay_iterations=2)
    units = _unit_batch(learner, module, n=24)
    batch = MultiAgentBatch({"default_policy": SampleBatch(dict(units))}, env_steps=24)
    results = learner.update(batch=batch, num_epochs=1)["default_policy"]
    assert float(results["ratio_first_minibatch_max_dev"]) < 1e-5
    assert float(results["actor_steps"]) == 1 and float(results["actor_update_norm"]) > 0
    # After update 1 of a 2-iteration schedule (hold 0 iterations → cosine from 0): the
    # bound is the schedule's value at iteration 0 = max_std; after the 2nd it decays.
    assert float(module.max_std) == pytest.approx(0.24)
    learner.update(batch=batch, num_epochs=1)
    expected = max_std_schedule(
        1, min_std=0.1, max_std=0.24, iterations=2, hold_ratio=0.35, decay_ratio=0.7
    )
    assert float(module.max_std) == pytest.approx(expected) and expected < 0.24
    # Updates 0 and 1 ran at the official schedule's lrs: warm-up from the minimum.
    actor_lr = learner.get_optimizer("default_policy", "actor").param_groups[0]["lr"]
    critic_lr = learner.get_optimizer("default_policy", "critic").param_groups[0]["lr"]
    assert actor_lr == pytest.approx(config.iteration_lr("actor", 1))
    assert critic_lr == pytest.approx(3e-4 + (6.5e-4 - 3e-4) / 10)


def test_w2_bc_regulariser_pulls_only_the_fine_tuned_flow_back(ray_session):
    from rllib_diffusion.algorithms.dppo.reinflow_learner import ReinFlowTorchLearner

    learner, config, module = _learner(bc_loss_coeff=0.5)
    obs = torch.randn(6, OBS_DIM)
    assert float(ReinFlowTorchLearner._bc_regulariser(module, obs).detach()) == 0.0
    with torch.no_grad():
        for p in module.actor_ft.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss = ReinFlowTorchLearner._bc_regulariser(module, obs)
    z = torch.zeros(6, TA, DA)
    with torch.no_grad():
        base = euler_sample(lambda x, t: module.actor(x, t, obs), z, K, clip=1.0)
        ft = euler_sample(lambda x, t: module.actor_ft(x, t, obs), z, K, clip=1.0)
    torch.testing.assert_close(loss, ((ft - base) ** 2).mean(), rtol=1e-4, atol=1e-6)
    loss.backward()
    assert all(p.grad is None for p in module.actor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.actor_ft.parameters())
    batch = _unit_batch(learner, module)
    learner.compute_loss_for_module(
        module_id="default_policy", config=config, batch=batch, fwd_out={}
    )
    assert float(learner.metrics.peek(("default_policy", "losses/bc_regulariser"))) > 0


# --------------------------------------------------------------- toy-task runs
@pytest.fixture(scope="module")
def weak_flow_policy(ray_session, tmp_path_factory):
    """Flow BC (K = 4 Euler steps) on the biased toy data: a weak policy."""
    from tests.algorithms.batches import pretrain_biased

    root = tmp_path_factory.mktemp("reinflow")
    return pretrain_biased(root, "bc_flow", denoising_steps=4, sampler="flow")


def _finetune(bc: dict, out, **kw) -> dict:
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune

    return finetune(FinetuneSettings.of(algo="reinflow", checkpoint=bc["checkpoint"], **kw))


def test_finetune_smoke_checkpoint_and_resume(weak_flow_policy, tmp_path):
    out = tmp_path / "rf"
    common = dict(
        out_dir=str(out),
        num_envs_per_env_runner=2,
        decisions_per_iteration=60,
        pair_minibatch_size=200,
        num_epochs=2,
        eval_interval=0,
        eval_episodes=2,
        checkpoint_interval=1,
    )
    summary = _finetune(weak_flow_policy, out, env_steps=60, **common)
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert lines[-1]["env_steps"] >= 60
    assert lines[1]["ratio_first_minibatch_max_dev"] < 1e-4
    assert {"entropy", "denoising_std", "approx_kl", "actor_update_norm"} <= set(lines[1])
    assert summary["final_evaluation"]["num_episodes"] == 2
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == "ReinFlow"
    assert meta["model_config"]["min_std"] == 0.1
    resumed = _finetune(weak_flow_policy, out, env_steps=120, resume=True, **common)
    assert resumed["progress"][-1]["env_steps"] >= 120


def test_finetune_refuses_a_ddpm_checkpoint(tmp_path):
    from rllib_diffusion.algorithms.dppo.finetune import dppo_config_from_pretrained
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings

    meta = {"algorithm": "DiffusionBC", "policy_config": policy("ddpm")}
    (tmp_path / "rllib_diffusion.json").write_text(json.dumps(meta))
    s = FinetuneSettings(checkpoint=str(tmp_path), algo="reinflow")
    with pytest.raises(ConfigError, match="pretrain --sampler flow"):
        dppo_config_from_pretrained(s.checkpoint, s)


@pytest.mark.learning
def test_reinflow_improves_a_weak_flow_policy(weak_flow_policy, tmp_path):
    summary = _finetune(
        weak_flow_policy,
        tmp_path / "rf",
        out_dir=str(tmp_path / "rf"),
        env_steps=8000,
        num_envs_per_env_runner=10,
        decisions_per_iteration=500,
        pair_minibatch_size=1000,
        actor_lr=1e-3,
        clip=0.1,
        eval_interval=0,
        eval_episodes=20,
        checkpoint_interval=0,
    )
    before = summary["start_evaluation"]["episode_return_mean"]
    after = summary["final_evaluation"]["episode_return_mean"]
    lines = summary["progress"][1:]
    print(json.dumps({"before": before, "after": after, "kl": [x.get("approx_kl") for x in lines]}))
    assert all(x["ratio_first_minibatch_max_dev"] < 1e-4 for x in lines)
    assert before < 7.0, "the pretrained policy should be weak (biased data)"
    assert after > before + 1.0, f"ReinFlow did not improve the policy: {before:.2f} -> {after:.2f}"
    assert np.isfinite([x["entropy"] for x in lines]).all()
