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
from rllib_diffusion.diffusion import reverse_step_std
from rllib_diffusion.envs.chunking import chunk_spaces
from rllib_diffusion.modules.model_config import ConfigError, DiffusionPolicyConfig

OBS_DIM, DA, TA, K, K_FT = 3, 2, 4, 6, 3


def model_config(sampler="ddpm", k_ft=K_FT, act_steps=TA, network="mlp") -> dict:
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
    return DPPOModelConfig(
        policy=policy.to_dict(), ft_denoising_steps=k_ft, critic_hidden_dims=(8,)
    ).to_dict()


def make_module(
    sampler="ddpm", k_ft=K_FT, inference_only=False, act_steps=TA, network="mlp"
) -> DPPOModule:
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    torch.manual_seed(0)
    return DPPOModule(
        observation_space=obs_space,
        action_space=act_space,
        inference_only=inference_only,
        model_config=model_config(sampler, k_ft, act_steps, network),
    )


#: (network, sampler, K_ft) combinations the issue-18 tests cover: K_ft = 1 and all steps
#: (None: the default, which is every DDIM step / min(10, K) = K DDPM steps here).
COMBOS = [
    pytest.param(net, sampler, k_ft, id=f"{net}-{sampler}-kft{k_ft or 'all'}")
    for net in ("mlp", "unet")
    for sampler in ("ddpm", "ddim")
    for k_ft in (1, None)
]


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
    s = FinetuneSettings.of(
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
        FinetuneSettings.of(
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
    # one iteration of 75 decisions (≤ 1.5 iterations' worth), where episodes ended
    # inside a chunk topped up in the same iteration (no second, tiny PPO update); at
    # most one vector step of the 2 envs over.
    act_steps = summary["policy_config"]["act_steps"]
    assert len(lines) == 2 and 300 <= lines[1]["env_steps"] <= 300 + 2 * act_steps
    assert 75 <= lines[1]["decisions"] <= lines[1]["env_steps"]
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


def test_in_training_evaluation_is_the_lockstep_evaluate_module(pretrained, ray_session):
    """RLlib's evaluation of a DPPO run is the project's lock-step ``evaluate_module`` on
    the local EnvRunner's module (one batched forward per decision), with fixed seeds."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS

    from rllib_diffusion.evaluation import evaluate_module

    s = FinetuneSettings.of(
        checkpoint=str(pretrained[0] / "checkpoint"),
        ft_denoising_steps=2,
        decisions_per_iteration=20,
        eval_interval=1,
        eval_episodes=3,
        seed=4,
    )
    config = dppo_config_from_pretrained(s.checkpoint, s)
    algo = config.build_algo()
    try:
        first = algo.evaluate()[ENV_RUNNER_RESULTS]
        again = algo.evaluate()[ENV_RUNNER_RESULTS]
        direct = evaluate_module(
            algo.get_module(), dict(config.env_config), num_episodes=3, seed=10_004
        )
    finally:
        algo.stop()
    assert first["num_episodes"] == 3
    assert first["episode_return_mean"] == again["episode_return_mean"]
    assert first["episode_return_mean"] == pytest.approx(direct["episode_return_mean"])
    assert first["episode_len_mean"] == pytest.approx(np.mean(direct["episode_lengths"]))


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
    s = FinetuneSettings.of(checkpoint=ckpt, use_ddim=True, ddim_steps=5, ft_denoising_steps=2)
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

    s = FinetuneSettings.of(
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
    assert (restored.count, restored.mean, restored.var) == (scaler.count, scaler.mean, scaler.var)
    assert restored.var == pytest.approx(scaler.var) and restored.var != 1.0


# ------------------------------------------- issue 18: every (network × sampler × K_ft)
def _exploration_pairs(module, n=16, seed=0):
    """A fixed batch of rollout pairs: (obs, x_prev, x_next, k, stored logp), flattened."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS_DIM, generator=g)
    torch.manual_seed(seed)
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: obs})
    chain, logp = out[C.CHAINS], out[C.CHAIN_LOGP]
    k_ft = logp.shape[1]
    return (
        obs.repeat_interleave(k_ft, 0),
        chain[:, :-1].reshape(n * k_ft, TA, DA),
        chain[:, 1:].reshape(n * k_ft, TA, DA),
        torch.arange(k_ft).repeat(n),
        logp.reshape(-1),
    )


@pytest.mark.parametrize("network,sampler,k_ft", COMBOS)
def test_default_ft_steps_and_first_ratio_is_one(network, sampler, k_ft):
    module = make_module(sampler, k_ft=k_ft, network=network)
    expected_k_ft = k_ft or (3 if sampler == "ddim" else K)  # all DDIM steps / all K DDPM
    assert module.ft_denoising_steps == expected_k_ft
    obs, x_prev, x_next, k, old = _exploration_pairs(module)
    assert old.shape == (16 * expected_k_ft,)
    with torch.no_grad():
        ratio = (module.pair_logp(obs, x_prev, x_next, k) - old).exp()
    assert (ratio - 1).abs().max() < 1e-5


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_first_ratio_is_one_when_sampling_and_logprob_floors_differ(sampler):
    """Old log-probs are scored under the log-prob floor, as the learner scores them, not
    under the (here larger) exploration floor the step was sampled with."""
    cfg = model_config(sampler, None)
    cfg["min_sampling_std"] = 0.3
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    module = DPPOModule(observation_space=obs_space, action_space=act_space, model_config=cfg)
    obs, x_prev, x_next, k, old = _exploration_pairs(module)
    with torch.no_grad():
        ratio = (module.pair_logp(obs, x_prev, x_next, k) - old).exp()
    assert (ratio - 1).abs().max() < 1e-5


@pytest.mark.parametrize("network,sampler,k_ft", COMBOS)
def test_stored_logprob_is_the_normal_logprob_of_the_step(network, sampler, k_ft):
    module = make_module(sampler, k_ft=k_ft, network=network)
    obs, x_prev, x_next, k, old = _exploration_pairs(module)
    with torch.no_grad():
        mean, std = module.step_mean_std(obs, x_prev, k)
    # The std is the step's own std floored at min_logprob_std, whatever the network.
    raw = reverse_step_std(
        module.schedule,
        sampler,
        module.timesteps[module._step_index(k)],
        module.prev_steps[module._step_index(k)],
        eta=1.0,
    )
    torch.testing.assert_close(std[:, 0, 0], raw.clamp(min=0.1))
    ref = torch.distributions.Normal(mean, std).log_prob(x_next).clamp(-5.0, 2.0)
    torch.testing.assert_close(old, ref.mean(dim=(1, 2)), rtol=1e-5, atol=1e-5)
    # Rollouts explore: the stored step is not its mean (else no gradient reaches θ).
    assert (x_next - mean).abs().mean() > 1e-3


def _combo_learner(network, sampler, k_ft, lr=1e-4):
    from rllib_diffusion.algorithms.dppo.dppo import DPPOConfig

    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    config = (
        DPPOConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(actor_lr=lr, reward_scaling=False, target_kl=None)
        .rl_module(model_config=model_config(sampler, k_ft, TA, network))
    )
    torch.manual_seed(0)
    learner = config.build_learner(spaces={"default_policy": (obs_space, act_space)})
    return learner, config, learner.module["default_policy"].unwrapped()


def _surrogate(module, batch) -> float:
    """Unclipped surrogate mean(Â·γ_den^(K_ft−k−1)·ratio) with the learner's Â normalisation."""
    with torch.no_grad():
        ratio = (
            module.pair_logp(batch[Columns.OBS], batch[X_PREV], batch[X_NEXT], batch[DENOISE_K])
            - batch[OLD_LOGP]
        ).exp()
        adv = batch[Postprocessing.ADVANTAGES]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        adv = adv * 0.99 ** (module.ft_denoising_steps - batch[DENOISE_K] - 1).float()
        return float((adv * ratio).mean()), ratio


def _learner_batch(module, n=24):
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    pairs = _pair_batch(module, n=n)
    return pairs, MultiAgentBatch({"default_policy": SampleBatch(dict(pairs))}, env_steps=n)


@pytest.mark.parametrize("network,sampler,k_ft", COMBOS)
def test_one_update_moves_the_ratio_uphill(network, sampler, k_ft, ray_session):
    learner, config, module = _combo_learner(network, sampler, k_ft)
    pairs, batch = _learner_batch(module)
    before, ratio0 = _surrogate(module, pairs)
    assert (ratio0 - 1).abs().max() < 1e-5
    frozen = [p.clone() for p in module.actor.parameters()]
    results = learner.update(batch=batch, num_epochs=1)  # one step on the whole batch
    after, ratio = _surrogate(module, pairs)
    log_ratio = ratio.log()
    kl = float(((ratio - 1) - log_ratio).mean())
    assert kl > 0 and (ratio - 1).abs().max() > 1e-6, "the ratio did not move"
    assert after > before, f"the update did not increase the surrogate ({before} -> {after})"
    assert all(torch.equal(a, b) for a, b in zip(frozen, module.actor.parameters()))
    health = results["default_policy"]
    assert abs(float(health["ratio_first_minibatch"]) - 1) < 1e-5
    assert float(health["ratio_first_minibatch_max_dev"]) < 1e-5
    assert float(health["actor_steps"]) == 1
    assert float(health["actor_grad_norm"]) > 0 and float(health["actor_update_norm"]) > 0


def test_minibatch_never_exceeds_the_pairs_collected(ray_session):
    """Regression (issue 18): 5 epochs with a 10,000-pair minibatch on a small batch are 5
    actor steps, not one oversized minibatch that repeats each pair and covers every epoch."""
    learner, config, module = _combo_learner("mlp", "ddim", None)
    pairs, batch = _learner_batch(module)
    results = learner.update(batch=batch, num_epochs=5, minibatch_size=10_000)
    assert float(results["default_policy"]["actor_steps"]) == 5
    assert float(results["default_policy"]["approx_kl"]) > 0  # last minibatch saw a moved θ


def test_actor_lr_and_ft_steps_follow_the_network_and_sampler(ray_session):
    from rllib_diffusion.algorithms.dppo.dppo import DEFAULT_ACTOR_LR, DPPOConfig

    assert DPPOConfig().resolved_actor_lr("unet") == DEFAULT_ACTOR_LR["unet"] == 1e-5
    assert DPPOConfig().resolved_actor_lr("mlp") == 1e-4
    assert DPPOConfig().training(actor_lr=3e-4).resolved_actor_lr("unet") == 3e-4
    learner, _, _ = _combo_learner("unet", "ddpm", None, lr=None)
    assert learner.get_optimizer("default_policy", "actor").param_groups[0]["lr"] == 1e-5
    policy = DiffusionPolicyConfig(obs_dim=3, action_dim=2, sampler="ddim", ddim_steps=5)
    assert DPPOModelConfig(policy=policy.to_dict()).ft_denoising_steps == 5
    with pytest.raises(ConfigError, match="leave it unset"):
        DPPOModelConfig(policy=policy.to_dict(), ft_denoising_steps=10)


def test_health_warnings():
    from rllib_diffusion.algorithms.dppo.finetune import health_warnings

    ok = {"iteration": 3, "ratio_first_minibatch_max_dev": 2e-7, "actor_update_norm": 0.1}
    assert health_warnings(ok) == []
    bad_ratio = {**ok, "ratio_first_minibatch_max_dev": 0.02}
    assert "first minibatch" in health_warnings(bad_ratio)[0]
    still = {**ok, "actor_update_norm": 0.0, "actor_steps": 0}
    assert "did not move" in health_warnings(still)[0]
    assert health_warnings(still, critic_warmup_iterations=3) == []  # warm-up: expected


def test_pretrain_budget_is_trained_exactly_or_refused():
    """Issue 18: ``pretrain --gradient-steps 300`` trained one default iteration of 500."""
    from rllib_diffusion.algorithms.bc.pretrain import PretrainSettings

    short = PretrainSettings(dataset="x", gradient_steps=300)  # default 500 per iteration
    assert (short.steps_per_iteration, short.iterations) == (300, 1)
    whole = PretrainSettings(dataset="x", gradient_steps=1500, steps_per_iteration=500)
    assert whole.iterations * whole.steps_per_iteration == 1500
    with pytest.raises(ConfigError, match="--gradient-steps 1000 or 1500"):
        PretrainSettings(dataset="x", gradient_steps=1200, steps_per_iteration=500)


def test_ddim_eta_is_configured_and_refused_without_ddim(pretrained):
    ckpt = str(pretrained[0] / "checkpoint")
    s = FinetuneSettings.of(checkpoint=ckpt, use_ddim=True, ddim_steps=5, ddim_eta=0.5)
    assert dppo_config_from_pretrained(ckpt, s).model_config["ddim_eta"] == 0.5
    with pytest.raises(ConfigError, match="--use-ddim"):
        dppo_config_from_pretrained(ckpt, FinetuneSettings.of(checkpoint=ckpt, ddim_eta=0.5))


@pytest.mark.parametrize("num_learners", [0, 1, 2, 3])
def test_decisions_per_iteration_is_the_total_over_all_learners(pretrained, num_learners):
    """RLlib samples train_batch_size_per_learner × num_learners: the per-learner share
    is what makes the total the decisions the user asked for (not num_learners times)."""
    ckpt = str(pretrained[0] / "checkpoint")
    s = FinetuneSettings.of(checkpoint=ckpt, decisions_per_iteration=200, num_learners=num_learners)
    config = dppo_config_from_pretrained(ckpt, s)
    assert config.total_train_batch_size == (200 if num_learners != 3 else 201)


#: finetune flag → (value, the DPPOConfig attribute it must set).
DPPO_FLAG_KNOBS = {
    "--actor-lr": ("3e-4", "actor_lr"),
    "--critic-lr": ("2e-3", "critic_lr"),
    "--weight-decay": ("1e-5", "weight_decay"),
    "--clip": ("0.02", "clip_param"),
    "--clip-base": ("0.005", "clip_param_base"),
    "--target-kl": ("none", "target_kl"),
    "--gamma": ("0.98", "gamma"),
    "--lambda": ("0.9", "lambda_"),
    "--gamma-denoising": ("0.95", "gamma_denoising"),
    "--critic-warmup-iterations": ("2", "critic_warmup_iterations"),
    "--bc-loss-coeff": ("0.1", "bc_loss_coeff"),
    "--num-epochs": ("3", "num_epochs"),
    "--pair-minibatch-size": ("500", "pair_minibatch_size"),
    "--synthetic-ratio": ("0.5", "synthetic_ratio"),
    "--synthetic-matched-updates": ("1", "synthetic_matched_updates"),
    "--synthetic-actions": ("generated", "synthetic_actions"),
    "--segment-length": ("4", "segment_length"),
    "--recent-segments": ("100", "recent_segments"),
    "--generator-retrain-every": ("2", "generator_retrain_every"),
    "--generator-gradient-steps": ("10", "generator_gradient_steps"),
    "--generator-batch-size": ("32", "generator_batch_size"),
    "--generator-lr": ("1e-3", "generator_lr"),
    "--generator-width": ("64", "generator_width"),
    "--generator-depth": ("2", "generator_depth"),
    "--generator-denoising-steps": ("5", "generator_denoising_steps"),
    "--decisions-per-iteration": ("300", "train_batch_size_per_learner"),
}


def test_every_dppo_knob_set_on_the_cli_reaches_the_learner(pretrained):
    """Each declared DPPOConfig knob has a finetune flag, and a non-default value given
    there arrives in the built learner's config (and the model knobs in its module)."""
    from rllib_diffusion.algorithms.dppo.dppo import DPPOConfig
    from rllib_diffusion.cli import build_parser, finetune_settings_from_args
    from rllib_diffusion.knobs import declared_knobs

    ckpt = str(pretrained[0] / "checkpoint")
    argv = ["finetune", "--checkpoint", ckpt, "--no-reward-scaling", "--ft-denoising-steps", "2"]
    for flag, (value, _) in DPPO_FLAG_KNOBS.items():
        argv += [flag, value]
    s = finetune_settings_from_args(build_parser().parse_args(argv))
    learner = dppo_config_from_pretrained(ckpt, s).build_learner()
    cfg = learner.config
    default = DPPOConfig()
    for flag, (value, attr) in DPPO_FLAG_KNOBS.items():
        expected = None if value == "none" else type(getattr(default, attr) or 0.0)(value)
        assert getattr(cfg, attr) == expected != getattr(default, attr), flag
    assert cfg.reward_scaling is False and default.reward_scaling is True
    assert learner.module["default_policy"].unwrapped().ft_denoising_steps == 2
    # Every knob DPPOConfig declares is reachable from the command line.
    covered = {attr for _, attr in DPPO_FLAG_KNOBS.values()} | {"reward_scaling"}
    # precision: its only other value (bf16) is refused (test_mixed_precision).
    declared = {k.name for k in declared_knobs(DPPOConfig)} - {"pretrained_checkpoint", "precision"}
    assert declared <= covered, declared - covered


#: finetune flag → (value, the DPPOModelConfig field it must set) (ddim_eta: DDIM only).
DPPO_MODEL_FLAG_KNOBS = {
    "--ft-denoising-steps": (["3"], "ft_denoising_steps", 3),
    "--min-sampling-std": (["0.05"], "min_sampling_std", 0.05),
    "--min-logprob-std": (["0.2"], "min_logprob_std", 0.2),
    "--logprob-clamp": (["-4", "1"], "logprob_clamp", (-4.0, 1.0)),
    "--ddim-eta": (["0.5"], "ddim_eta", 0.5),
    "--critic-hidden-dims": (["16", "16"], "critic_hidden_dims", (16, 16)),
}


def test_every_dppo_model_knob_set_on_the_cli_reaches_the_module(pretrained):
    """DPPOModelConfig's fields are flags too, and reach the built learner's module."""
    from rllib_diffusion.algorithms.dppo.dppo_rl_module import DPPOModelConfig
    from rllib_diffusion.cli import build_parser, finetune_settings_from_args
    from rllib_diffusion.knobs import settings_knobs

    ckpt = str(pretrained[0] / "checkpoint")
    argv = ["finetune", "--checkpoint", ckpt, "--use-ddim", "--ddim-steps", "5"]
    for flag, (values, _, _) in DPPO_MODEL_FLAG_KNOBS.items():
        argv += [flag, *values]
    s = finetune_settings_from_args(build_parser().parse_args(argv))
    module = dppo_config_from_pretrained(ckpt, s).build_learner().module["default_policy"]
    got = module.unwrapped().dppo_config
    default = DPPOModelConfig(policy={**got.policy})
    for flag, (_, field, value) in DPPO_MODEL_FLAG_KNOBS.items():
        assert getattr(got, field) == value != getattr(default, field), flag
    declared = {k.name for k in settings_knobs(DPPOModelConfig, exclude=("policy",))}
    assert declared == {field for _, field, _ in DPPO_MODEL_FLAG_KNOBS.values()}


def test_a_knob_dppo_does_not_declare_is_refused_in_one_line(pretrained, capsys):
    from rllib_diffusion.cli import main

    ckpt = str(pretrained[0] / "checkpoint")
    with pytest.raises(ConfigError, match=r"--eta is not a knob of dppo; its knobs: .*--clip"):
        dppo_config_from_pretrained(ckpt, FinetuneSettings(checkpoint=ckpt, knobs={"eta": 5.0}))
    # No fine-tuning algorithm declares max_q_backup (offline Diffusion-QL's knob).
    with pytest.raises(ConfigError, match="FinetuneSettings has no setting or knob 'max_q_backup'"):
        FinetuneSettings.of(checkpoint=ckpt, max_q_backup=5)
    # --eta is a finetune flag (online DQL's knob), not DPPO's: one line naming both.
    assert main(["finetune", "--checkpoint", ckpt, "--eta", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--eta is not a knob of dppo" in err
