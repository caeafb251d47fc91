"""DPPO: module contract, learner loss details, GAE bootstrapping, and a smoke run."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.evaluation.postprocessing import Postprocessing

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.dppo.dppo_connectors import (
    DENOISE_K,
    OLD_LOGP,
    X_NEXT,
    X_PREV,
    ExpandDenoisingSteps,
)
from rllib_diffusion.algorithms.dppo.dppo_learner import clip_schedule
from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig, DPPOModule
from rllib_diffusion.algorithms.dppo.finetune import (
    FinetuneSettings,
    dppo_config_from_pretrained,
    finetune,
)
from rllib_diffusion.checkpoints import CheckpointError
from rllib_diffusion.envs.chunking import chunk_spaces
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig

OBS_DIM, DA, TA, K, K_FT = 3, 2, 4, 6, 3


def make_module(
    sampler="ddpm", k_ft=K_FT, inference_only=False, act_steps=TA, network="mlp"
) -> DPPOModule:
    policy = DiffusionPolicyConfig(
        network=network,
        unet_dims=(8, 16),
        obs_dim=OBS_DIM,
        action_dim=DA,
        horizon=TA,
        act_steps=act_steps,
        denoising_steps=K,
        sampler=sampler,
        ddim_steps=3 if sampler == "ddim" else None,
        hidden_dims=(16, 16),
    )
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    torch.manual_seed(0)
    return DPPOModule(
        observation_space=obs_space,
        action_space=act_space,
        inference_only=inference_only,
        model_config=DPPOModelConfig(
            policy=policy.to_dict(), ft_denoising_steps=k_ft, critic_hidden_dims=(8,)
        ).to_dict(),
    )


def test_clip_schedule_single_and_multiple_steps():
    np.testing.assert_allclose(clip_schedule(1, 0.01, 0.001).numpy(), [0.01])
    sched = clip_schedule(5, 0.01, 0.001).numpy()
    assert sched[0] == pytest.approx(0.001) and sched[-1] == pytest.approx(0.01)
    assert np.all(np.diff(sched) > 0)
    k = np.arange(5)
    expected = 0.001 + 0.009 * (np.exp(3 * k / 4) - 1) / (np.exp(3) - 1)
    np.testing.assert_allclose(sched, expected, rtol=1e-6)


@pytest.mark.parametrize("sampler,network", [("ddpm", "mlp"), ("ddim", "mlp"), ("ddpm", "unet")])
def test_exploration_outputs_and_logp_recomputation(sampler, network):
    module = make_module(sampler, network=network)
    obs = torch.randn(7, OBS_DIM)
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: obs})
    chain, logp = out[C.CHAINS], out[C.CHAIN_LOGP]
    assert chain.shape == (7, K_FT + 1, TA, DA) and logp.shape == (7, K_FT)
    assert out[Columns.ACTIONS].shape == (7, TA, DA)
    np.testing.assert_allclose(out[Columns.ACTIONS], chain[:, -1].clamp(-1, 1))
    # The learner's recomputation with the same weights equals the rollout's log-probs.
    for k in range(K_FT):
        with torch.no_grad():
            again = module.pair_logp(obs, chain[:, k], chain[:, k + 1], torch.full((7,), k))
        np.testing.assert_allclose(again.numpy(), logp[:, k].numpy(), rtol=1e-5, atol=1e-5)


def test_logp_uses_only_executed_rows():
    module = make_module(act_steps=2)
    obs = torch.randn(4, OBS_DIM)
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: obs})
        chain = out[C.CHAINS]
        changed = chain[:, 1].clone()
        changed[:, 2:] += 5.0  # rows beyond act_steps must not matter
        k0 = torch.zeros(4, dtype=torch.long)
        a = module.pair_logp(obs, chain[:, 0], chain[:, 1], k0)
        b = module.pair_logp(obs, chain[:, 0], changed, k0)
    np.testing.assert_allclose(a.numpy(), b.numpy())


def test_inference_uses_fine_tuned_actor_and_is_deterministic_enough():
    module = make_module()
    obs = torch.randn(5, OBS_DIM)
    x0 = torch.randn(5, TA, DA)
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    with torch.no_grad():
        a = module.sample(obs, deterministic=True, x_init=x0, generator=g())["actions"]
        # Changing only the fine-tuned actor changes evaluation actions: evaluation uses
        # exactly what is trained (the reference silently used the base actor).
        for p in module.actor_ft.parameters():
            p.add_(0.5)
        b = module.sample(obs, deterministic=True, x_init=x0, generator=g())["actions"]
    assert not torch.allclose(a, b)


def test_inference_only_module_has_no_critic():
    module = make_module(inference_only=True)
    assert not hasattr(module, "critic")
    assert "critic" in make_module().get_non_inference_attributes()


def test_config_errors_name_allowed_values():
    policy = DiffusionPolicyConfig(obs_dim=3, action_dim=2, sampler="flow")
    with pytest.raises(ConfigError, match="DDPM or DDIM"):
        DPPOModelConfig(policy=policy.to_dict())
    policy = DiffusionPolicyConfig(obs_dim=3, action_dim=2, denoising_steps=5)
    with pytest.raises(ConfigError, match="ft_denoising_steps"):
        DPPOModelConfig(policy=policy.to_dict(), ft_denoising_steps=6)


def test_expand_denoising_steps_pairs():
    n = 3
    chains = torch.randn(n, K_FT + 1, TA, DA)
    logp = torch.randn(n, K_FT)
    batch = {
        "p": {
            Columns.OBS: torch.arange(n * OBS_DIM, dtype=torch.float32).reshape(n, OBS_DIM),
            C.CHAINS: chains,
            C.CHAIN_LOGP: logp,
            Postprocessing.ADVANTAGES: torch.tensor([1.0, 2.0, 3.0]),
            Postprocessing.VALUE_TARGETS: torch.tensor([4.0, 5.0, 6.0]),
            Columns.LOSS_MASK: torch.tensor([True, True, False]),
        }
    }
    out = ExpandDenoisingSteps()(rl_module=None, batch=batch, episodes=[])["p"]
    assert out[X_PREV].shape == (n * K_FT, TA, DA)
    row = 1 * K_FT + 2  # env step 1, denoising step 2
    torch.testing.assert_close(out[X_PREV][row], chains[1, 2])
    torch.testing.assert_close(out[X_NEXT][row], chains[1, 3])
    assert out[DENOISE_K][row] == 2
    assert out[OLD_LOGP][row] == logp[1, 2]
    assert out[Postprocessing.ADVANTAGES][row] == 2.0
    assert out[Columns.LOSS_MASK].tolist() == [True] * 2 * K_FT + [False] * K_FT


# ----------------------------------------------------------------- learner-level tests
@pytest.fixture(scope="module")
def dppo_learner(pretrained, ray_session, tmp_path_factory):
    s = FinetuneSettings(
        checkpoint=str(pretrained[0] / "checkpoint"),
        ft_denoising_steps=2,
        reward_scaling=False,
        decisions_per_iteration=50,
        pair_minibatch_size=40,
        gamma=0.9,
        lambda_=0.8,
    )
    config = dppo_config_from_pretrained(s.checkpoint, s)
    env = gym.make("Hopper-v5")  # unused for spaces: the config carries them
    learner = config.build_learner(env=env)
    return learner, config


def _pair_batch(module, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, module.policy_config.obs_dim, generator=g)
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: obs})
    batch = {
        Columns.OBS: obs,
        C.CHAINS: out[C.CHAINS],
        C.CHAIN_LOGP: out[C.CHAIN_LOGP],
        Postprocessing.ADVANTAGES: torch.randn(n, generator=g),
        Postprocessing.VALUE_TARGETS: torch.randn(n, generator=g),
    }
    return ExpandDenoisingSteps()(rl_module=None, batch={"default_policy": batch}, episodes=[])[
        "default_policy"
    ]


def test_first_minibatch_ratio_is_one_and_grads_skip_frozen_actor(dppo_learner):
    learner, config = dppo_learner
    module = learner.module["default_policy"].unwrapped()
    batch = _pair_batch(module)
    learner.metrics.reset() if hasattr(learner.metrics, "reset") else None
    loss = learner.compute_loss_for_module(
        module_id="default_policy", config=config, batch=batch, fwd_out={}
    )
    ratio = learner.metrics.peek(("default_policy", "ratio_mean"))
    assert float(ratio) == pytest.approx(1.0, abs=1e-6)
    assert float(learner.metrics.peek(("default_policy", "approx_kl"))) == pytest.approx(
        0, abs=1e-7
    )
    for p in module.parameters():
        p.grad = None
    loss.backward()
    assert all(p.grad is None for p in module.actor.parameters())
    assert not any(p.requires_grad for p in module.actor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.actor_ft.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.critic.parameters())


def test_gae_bootstraps_truncation_from_final_obs_not_across_reset(dppo_learner):
    learner, config = dppo_learner
    module = learner.module["default_policy"].unwrapped()
    gamma, lam = config.gamma, config.lambda_
    obs_dim = module.policy_config.obs_dim
    # V(s) = s[0] exactly: a critic we can compute by hand.
    module.compute_values = lambda batch, embeddings=None: batch[Columns.OBS][:, 0].float()

    def episode(values, rewards, terminated, truncated):
        ep = SingleAgentEpisode(
            observation_space=module.observation_space, action_space=module.action_space
        )
        o = lambda v: np.r_[v, np.zeros(obs_dim - 1)].astype(np.float32)  # noqa: E731
        ep.add_env_reset(observation=o(values[0]))
        for i, r in enumerate(rewards):
            with torch.no_grad():
                out = module.forward_exploration({Columns.OBS: torch.as_tensor(o(values[i]))[None]})
            ep.add_env_step(
                o(values[i + 1]),
                out[Columns.ACTIONS][0].numpy(),
                r,
                terminated=terminated and i == len(rewards) - 1,
                truncated=truncated and i == len(rewards) - 1,
                extra_model_outputs={
                    C.CHAINS: out[C.CHAINS][0].numpy(),
                    C.CHAIN_LOGP: out[C.CHAIN_LOGP][0].numpy(),
                    Columns.ACTION_LOGP: out[Columns.ACTION_LOGP][0].numpy(),
                },
            )
        return ep

    v_trunc, r_trunc = [1.0, 2.0, 10.0], [0.5, 0.25]  # final obs value 10 must be used
    v_term, r_term = [3.0, 4.0, 99.0], [1.0, 2.0]  # terminal value 99 must not be used
    episodes = [episode(v_trunc, r_trunc, False, True), episode(v_term, r_term, True, False)]
    batch = learner._learner_connector(
        rl_module=learner.module, batch={}, episodes=episodes, shared_data={}, metrics=None
    )["default_policy"]
    targets = batch[Postprocessing.VALUE_TARGETS].reshape(-1, 2)[:, 0]  # one per env step
    mask = batch[Columns.LOSS_MASK].reshape(-1, 2)[:, 0].bool()
    targets = targets[mask].numpy()

    def gae(v, r, bootstrap):
        d1 = r[1] + gamma * bootstrap - v[1]
        d0 = r[0] + gamma * v[1] - v[0]
        a1, a0 = d1, d0 + gamma * lam * d1
        return [a0 + v[0], a1 + v[1]]

    expected = gae(v_trunc, r_trunc, v_trunc[2]) + gae(v_term, r_term, 0.0)
    np.testing.assert_allclose(targets, expected, rtol=1e-5)


# ------------------------------------------------------------------- algorithm smoke
def test_finetune_smoke_and_checkpoint(pretrained, ray_session, tmp_path):
    out = tmp_path / "ft"
    summary = finetune(
        FinetuneSettings(
            checkpoint=str(pretrained[0] / "checkpoint"),
            out_dir=str(out),
            env_steps=300,
            num_envs_per_env_runner=2,
            decisions_per_iteration=60,
            pair_minibatch_size=100,
            num_epochs=2,
            ft_denoising_steps=2,
            eval_interval=1,
            eval_episodes=2,
            checkpoint_interval=1,
        )
    )
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert lines[0]["iteration"] == 0 and "eval_return_mean" in lines[0]
    # The budget is honoured, not rounded up to whole iterations of 60 decisions × 4:
    # 75 decisions in one iteration (≤ 1.5 iterations' worth), at most one vector step of
    # the 2 envs over, fewer true env steps only where episodes ended inside a chunk.
    assert len(lines) == 2
    act_steps = summary["policy_config"]["act_steps"]
    assert 300 <= lines[-1]["decisions"] * act_steps <= 300 + 2 * act_steps
    assert lines[-1]["env_steps"] <= 300 + 2 * act_steps
    assert all("eval_return_mean" in x for x in lines[1:])
    assert {
        "approx_kl",
        "clip_fraction",
        "clip_fraction_per_step",
        "ratio_first_minibatch",
        "ratio_first_minibatch_max_dev",
        "actor_grad_norm",
        "actor_update_norm",
        "actor_update_relative",
        "actor_steps",
        "explained_variance",
        "denoising_std",
        "sample_seconds",
        "learn_seconds",
        "train_normalized_score",
        "eval_normalized_score",
    } <= set(lines[1])
    assert summary["final_evaluation"]["num_episodes"] == 2
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == "DPPO"


def test_finetune_rejects_wrong_checkpoints(pretrained, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        dppo_config_from_pretrained(tmp_path / "missing", FinetuneSettings(checkpoint=""))
    other = tmp_path / "other"
    other.mkdir()
    (other / "rllib_diffusion.json").write_text(json.dumps({"algorithm": "GaussianBC"}))
    with pytest.raises(CheckpointError, match="GaussianBC"):
        dppo_config_from_pretrained(other, FinetuneSettings(checkpoint=""))


def test_pretrained_mismatch_is_reported_field_by_field():
    from rllib_diffusion.algorithms.dppo.dppo import check_policy_match

    a = DiffusionPolicyConfig(obs_dim=11, action_dim=3, horizon=4).to_dict()
    b = DiffusionPolicyConfig(obs_dim=17, action_dim=3, horizon=8, act_steps=4).to_dict()
    with pytest.raises(CheckpointError) as err:
        check_policy_match(a, b, "ckpt")
    assert "obs_dim" in str(err.value) and "horizon" in str(err.value)


def test_sampling_std_is_posterior_std_with_floor():
    module = make_module()
    k = torch.arange(K_FT)
    # Fine-tuned DDPM steps are the last K_FT timesteps: t = K_FT-1 ... 0.
    t = torch.arange(K_FT - 1, -1, -1)
    post = (0.5 * module.schedule.posterior_log_variance_clipped[t]).exp()
    expected = post.clamp(min=0.1)
    torch.testing.assert_close(module.sampling_std(k), expected)


def test_bc_regulariser_trains_only_the_fine_tuned_actor():
    from rllib_diffusion.algorithms.dppo.dppo_learner import DPPOTorchLearner

    module = make_module()
    obs = torch.randn(5, OBS_DIM)
    loss = DPPOTorchLearner._bc_regulariser(module, obs)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in module.actor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.actor_ft.parameters())


def test_ddpm_policy_can_be_fine_tuned_with_ddim(pretrained):
    from rllib_diffusion.algorithms.dppo.dppo import check_policy_match

    ckpt = str(pretrained[0] / "checkpoint")
    s = FinetuneSettings(checkpoint=ckpt, use_ddim=True, ddim_steps=5, ft_denoising_steps=2)
    config = dppo_config_from_pretrained(ckpt, s)
    policy = config.model_config["policy"]
    assert (policy["sampler"], policy["ddim_steps"]) == ("ddim", 5)
    meta = json.loads((pretrained[0] / "checkpoint" / "rllib_diffusion.json").read_text())
    check_policy_match(meta["policy_config"], policy, ckpt)  # allowed: same ε-network
    with pytest.raises(CheckpointError, match="sampler"):
        check_policy_match(
            {**meta["policy_config"], "sampler": "ddim"}, {**policy, "sampler": "ddpm"}, ckpt
        )


def test_warmup_counter_and_reward_scaling_are_in_the_learner_state(pretrained, ray_session):
    """A restored learner continues the critic warm-up count and the running reward std
    (both live outside the module, so RLlib's own learner state would drop them)."""
    from rllib_diffusion.algorithms.dppo.dppo_connectors import RunningRewardScaling

    s = FinetuneSettings(
        checkpoint=str(pretrained[0] / "checkpoint"), ft_denoising_steps=2, reward_scaling=True
    )
    config = dppo_config_from_pretrained(s.checkpoint, s)
    env = gym.make("Hopper-v5")
    source, target = config.build_learner(env=env), config.build_learner(env=env)
    (scaler,) = source._reward_scalers()
    assert isinstance(scaler, RunningRewardScaling)
    source._updates_done = 7
    scaler._update(np.array([1.0, 3.0, 8.0]))
    target.set_state(source.get_state())
    (restored,) = target._reward_scalers()
    assert target._updates_done == 7
    assert (restored.count, restored.mean, restored.m2) == (scaler.count, scaler.mean, scaler.m2)
    assert restored.std == pytest.approx(np.std([1.0, 3.0, 8.0]))
