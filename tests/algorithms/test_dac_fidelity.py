"""DAC against the official code (github.com/Fang-Lin93/DAC, ``agents/dac.py``, ``main.py``):
each default checked against a hand computation on tiny tensors, and the old behaviour
still reachable through its option."""

from __future__ import annotations

import math

import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_diffusion.algorithms.dac import DACConfig
from rllib_diffusion.algorithms.dac.dac_learner import (
    bc_loss,
    cosine_lr,
    critic_loss,
    dual_eta_step,
    guidance_loss,
    lcb,
    lcb_target,
)
from rllib_diffusion.algorithms.diffusion_ql.train import (
    OfflineSettings,
    build_offline_config,
    normalizes_rewards,
)
from tests.algorithms.batches import transition_batch

OBS, ACT = 3, 3  # three action dims, as Hopper's
MID = "default_policy"


def make_dac_learner(seed=0, **training):
    torch.manual_seed(seed)
    settings = OfflineSettings(dataset="unused", algo="dac", hidden_dims=(16, 16))
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    config.training(**training)
    return config.build_learner(), config


def tiny_batch(n=6, seed=0):
    return transition_batch(n, OBS, ACT, seed)


def fake_sample(obs, ema, x_init=None):
    """Deterministic next actions (no RNG draws): a function of the observation."""
    return torch.tanh(obs[:, :ACT])


def one_step(learner, config, batch):
    loss = learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    learner.apply_gradients(learner.compute_gradients({MID: loss}))


def test_defaults_are_the_official_choices():
    c = DACConfig()
    assert (c.actor_loss_reduction, c.critic_loss_reduction) == ("mean", "mean")
    assert (c.lcb_std_ddof, c.eta_bc_loss, c.lr_decay_steps) == (0, "pre_update", 2_000_000)
    assert DACConfig.NORMALIZES_LOCOMOTION_REWARDS
    with pytest.raises(ValueError, match="actor_loss_reduction"):
        DACConfig().training(actor_loss_reduction="max").validate()
    with pytest.raises(ValueError, match="lr_decay_steps"):
        DACConfig().training(lr_decay_steps=0).validate()


# ---------------------------------------------------------------- 1. mean over action dims
def test_bc_and_guidance_terms_are_means_over_action_dims():
    eps_hat = torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, -1.0, 1.0]]])
    noise = torch.tensor([[[0.5, 0.0, 0.0]], [[0.0, 0.0, -1.0]]])
    # (ε̂ − ε)²: [0.25, 4, 9] and [0, 1, 4]: 18.25 over 6 elements.
    assert float(bc_loss(eps_hat, noise, "mean")) == pytest.approx(18.25 / 6)
    assert float(bc_loss(eps_hat, noise, "sum")) == pytest.approx(18.25 / 2)
    guide = torch.tensor([[[0.5, 0.5, 0.5]], [[1.0, 1.0, 1.0]]])
    # guide·ε̂: [0.5, 1, 1.5] and [0, -1, 1]: 3 over 6 elements.
    assert float(guidance_loss(guide, eps_hat, "mean")) == pytest.approx(3 / 6)
    assert float(guidance_loss(guide, eps_hat, "sum")) == pytest.approx(3 / 2)


class _LinearQ(torch.nn.Module):
    """Two heads Q_h(s, a) = c_h·Σ_d a_d, c = (1, 3): ∇_a mean_h Q = 2 in every dim."""

    def forward(self, obs, act):
        return torch.stack([act.sum(-1), 3.0 * act.sum(-1)])


class _FixedEps(torch.nn.Module):
    def __init__(self, eps_hat):
        super().__init__()
        self.eps_hat = torch.nn.Parameter(eps_hat)

    def forward(self, a_t, t, obs):
        return self.eps_hat


def test_actor_loss_by_hand_with_mean_reduction():
    learner, _ = make_dac_learner()
    module = learner.module[MID].unwrapped()
    module.critic_target = _LinearQ()
    module.actor = _FixedEps(torch.tensor([[[1.0, 2.0, 3.0]], [[0.0, -1.0, 1.0]]]))
    module.dual_eta.fill_(2.0)
    obs = torch.zeros(2, OBS)
    act = torch.tensor([[0.5, -0.5, 1.0], [0.2, 0.2, 0.2]])  # Σ_d a: 1.0 and 0.6
    noise = torch.tensor([[[0.5, 0.0, 0.0]], [[0.0, 0.0, -1.0]]])
    t = torch.tensor([0, 4])
    sigma0 = float(module.schedule.sqrt_one_minus_alphas_cumprod[0])
    scale = (1.0 + 3.0 + 0.6 + 1.8) / 4 + 1e-6  # mean |Q′(s, a)| over heads and batch
    # L_g = mean_{b,d} σ_b·(2/scale)·ε̂: ε̂ sums to 6 (b=0) and 0 (b=1), over 6 elements.
    l_g = sigma0 * 2.0 / scale * 6.0 / 6.0
    loss, bc = learner.actor_loss(module, obs, act, t, noise)
    assert float(bc.detach()) == pytest.approx(18.25 / 6, rel=1e-6)
    assert float(loss.detach()) == pytest.approx(2.0 * 18.25 / 6 + l_g, rel=1e-5)
    # The old behaviour (sum over action dims) is the "sum" option: 3× both terms.
    loss, bc = learner.actor_loss(module, obs, act, t, noise, reduction="sum")
    assert float(bc.detach()) == pytest.approx(18.25 / 2, rel=1e-6)
    assert float(loss.detach()) == pytest.approx(2.0 * 18.25 / 2 + 3.0 * l_g, rel=1e-5)


# ---------------------------------------------------------------- 2. mean over the Q heads
def test_critic_loss_is_a_mean_over_heads():
    q = torch.tensor([[1.0, 2.0], [0.0, 0.0], [2.0, 2.0]])  # (H=3, B=2)
    y = torch.tensor([1.0, 1.0])
    # Per-head MSE: 0.5, 1, 1.
    assert float(critic_loss(q, y, "mean")) == pytest.approx(2.5 / 3)
    assert float(critic_loss(q, y, "sum")) == pytest.approx(2.5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_learner_critic_loss_by_hand(reduction):
    learner, config = make_dac_learner(critic_loss_reduction=reduction)
    module = learner.module[MID].unwrapped()
    module.sample = fake_sample
    batch = tiny_batch()
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    logged = float(learner.metrics.peek((MID, "losses/critic_loss")))
    with torch.no_grad():
        y = lcb_target(module, batch, gamma=config.gamma, rho=config.lcb_rho, num_samples=10)
        sq = (module.critic(batch[Columns.OBS], batch[Columns.ACTIONS]) - y) ** 2  # (10, B)
    expected = sq.mean() if reduction == "mean" else sq.mean(dim=1).sum()
    assert logged == pytest.approx(float(expected), rel=1e-5)


# ---------------------------------------------------------------- 3. LCB with ddof 0
def test_lcb_uses_the_population_std():
    q = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # (H=2, B=2)
    # Heads 1 and 3: mean 2, population std 1 (ddof 1: sqrt 2).
    torch.testing.assert_close(lcb(q, 1.5), torch.tensor([2.0 - 1.5, 0.0]))
    torch.testing.assert_close(lcb(q, 1.5, ddof=1), torch.tensor([2.0 - 1.5 * math.sqrt(2), 0.0]))


def test_lcb_target_default_is_ddof_0():
    learner, _ = make_dac_learner()
    module = learner.module[MID].unwrapped()
    module.sample = fake_sample
    batch = tiny_batch(n=4)
    y = lcb_target(module, batch, gamma=0.9, rho=1.5, num_samples=2)
    with torch.no_grad():
        s_next = batch[Columns.NEXT_OBS]
        x = torch.cat([s_next, torch.tanh(s_next[:, :ACT])], dim=-1)
        q = torch.stack([h(x)[:, 0] for h in module.critic_target.heads])  # (10, B)
        pop_std = ((q - q.mean(0)) ** 2).mean(0).sqrt()
        done = batch[Columns.TERMINATEDS]
        expected = batch[Columns.REWARDS] + 0.9 * (1 - done) * (q.mean(0) - 1.5 * pop_std)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- 4. η's BC loss
def _draws(seed, n):
    """``(t, ε)`` as the learner draws them after ``torch.manual_seed(seed)`` (the target
    uses ``fake_sample``, which draws nothing)."""
    torch.manual_seed(seed)
    t = torch.randint(0, 5, (n,))
    return t, torch.randn(n, 1, ACT)


def _bc_by_hand(module, batch, t, noise):
    with torch.no_grad():
        ab = module.schedule.alphas_cumprod[t].view(-1, 1, 1)
        a_t = ab.sqrt() * batch[Columns.ACTIONS].unsqueeze(1) + (1 - ab).sqrt() * noise
        return float(((module.actor(a_t, t, batch[Columns.OBS]) - noise) ** 2).mean())


@pytest.mark.parametrize("when", ["pre_update", "post_update"])
def test_eta_moves_with_the_chosen_bc_loss(when):
    lr, threshold = 0.1, 1.0
    learner, config = make_dac_learner(
        eta_lr=lr, bc_threshold=threshold, eta_bc_loss=when, actor_lr=0.05
    )
    module = learner.module[MID].unwrapped()
    module.sample = fake_sample
    batch = tiny_batch()
    t, noise = _draws(7, 6)
    bc_pre = _bc_by_hand(module, batch, t, noise)
    torch.manual_seed(7)
    one_step(learner, config, batch)
    bc_post = _bc_by_hand(module, batch, t, noise)
    assert abs(bc_post - bc_pre) > 1e-3 and max(abs(bc_pre - 1), abs(bc_post - 1)) < 1
    bc = bc_pre if when == "pre_update" else bc_post
    eta = 1.0 + lr * (bc - threshold)  # η₀ = 1; no clip binds here
    assert float(module.dual_eta) == pytest.approx(eta, rel=1e-5)
    assert dual_eta_step(1.0, bc, lr=lr, threshold=threshold) == pytest.approx(eta, rel=1e-6)


# ---------------------------------------------------------------- 5. reward normalisation
def test_rewards_are_normalised_on_locomotion_by_default():
    def s(flag=None):
        return OfflineSettings(dataset="d", algo="dac", normalize_rewards=flag)

    assert normalizes_rewards(s(), "Hopper-v5")
    assert normalizes_rewards(s(), "Walker2d-v5")
    assert not normalizes_rewards(s(), "rllib_diffusion/ReachTarget-v0")
    assert not normalizes_rewards(s(False), "Hopper-v5")


# ---------------------------------------------------------------- 6. cosine lr decay
def test_cosine_lr_by_hand():
    assert cosine_lr(3e-4, 0, 1000) == pytest.approx(3e-4)
    assert cosine_lr(3e-4, 500, 1000) == pytest.approx(1.5e-4)
    assert cosine_lr(3e-4, 250, 1000) == pytest.approx(3e-4 * (1 + math.sqrt(0.5)) / 2)
    assert cosine_lr(3e-4, 1000, 1000) == 0.0 and cosine_lr(3e-4, 5000, 1000) == 0.0


def test_learning_rates_decay_per_gradient_step():
    learner, config = make_dac_learner(lr_decay_steps=4, actor_lr=1e-3, critic_lr=2e-3)
    module = learner.module[MID].unwrapped()
    actor, critic = (learner.get_optimizer(MID, n) for n in ("actor", "critic"))
    assert (actor.param_groups[0]["lr"], critic.param_groups[0]["lr"]) == (1e-3, 2e-3)
    for k in range(3):
        one_step(learner, config, tiny_batch(seed=k))
        # The rate of step k: lr₀·½(1 + cos(πk/4)).
        factor = 0.5 * (1 + math.cos(math.pi * k / 4))
        assert actor.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)
        assert critic.param_groups[0]["lr"] == pytest.approx(2e-3 * factor)
    assert int(module.train_step) == 3


def test_constant_rates_when_asked_or_given_a_schedule():
    learner, config = make_dac_learner(lr_decay_steps=None, actor_lr=1e-3)
    one_step(learner, config, tiny_batch())
    one_step(learner, config, tiny_batch())
    assert learner.get_optimizer(MID, "actor").param_groups[0]["lr"] == 1e-3
    # An RLlib schedule (--lr-end) is RLlib's to apply, not decayed again.
    sched = [[0, 1e-3], [100, 1e-4]]
    learner, config = make_dac_learner(lr_decay_steps=4, actor_lr=sched)
    one_step(learner, config, tiny_batch())
    one_step(learner, config, tiny_batch())
    assert learner.get_optimizer(MID, "actor").param_groups[0]["lr"] == pytest.approx(1e-3)


# ------------------------------------------------- 7. per-data BC thresholds (runs.sh)
@pytest.mark.parametrize(
    ("env_id", "dataset", "threshold"),
    [
        ("Hopper-v5", "mujoco/hopper/medium-expert-v0", 0.05),
        ("HalfCheetah-v5", "halfcheetah-medium-expert-v2", 0.1),
        ("Walker2d-v5", "walker2d-medium-expert-v2", 1.0),
        ("Hopper-v5", "mujoco/hopper/medium-v0", 1.0),
        ("Hopper-v5", "data/hopper-medium-replay.npz", 1.0),
    ],
)
def test_bc_threshold_follows_the_official_runs_per_data_kind(env_id, dataset, threshold):
    """Official ``runs.sh``: ``--bc_threshold`` 0.05 on hopper-medium-expert, 0.1 on
    halfcheetah-medium-expert, 1 elsewhere (ρ stays per task)."""
    found = DACConfig.dataset_defaults(env_id, dataset)
    assert found["bc_threshold"] == threshold
    assert found["lcb_rho"] == DACConfig.task_defaults(env_id)["lcb_rho"]
    settings = OfflineSettings(dataset=dataset, algo="dac", hidden_dims=(16, 16))
    config, _ = build_offline_config(settings, "/nonexistent", env_id, OBS, ACT)
    assert config.bc_threshold == threshold


# ------------------------------------------------------- 8. the sampler (acting, targets)
def test_sampler_option_is_the_official_ddpm_sampler_by_hand():
    """``sampler_variance="beta"`` is the official ``diffusions/diffusion.py`` ``ddpm_sampler``: x̂0 clamped to ±1, the
    posterior mean, plus sqrt(β_t)·z before every step but the last (σ² = β_t, not the
    posterior variance β̃_t of the earlier sampler); the last step's output is x̂0."""
    from rllib_diffusion.algorithms.dac.dac_rl_module import DACModule

    assert DACConfig.default_model_config(OBS, ACT).sampler_variance == "posterior"
    cfg = DACConfig.default_model_config(OBS, ACT, hidden_dims=(8,), sampler_variance="beta")
    assert (cfg.sampler_variance, cfg.sampler_clip) == ("beta", "x0")
    module = DACModule(model_config=cfg.to_dict()).eval()
    obs, x = torch.randn(4, OBS), 3 * torch.randn(4, 1, ACT)  # x̂0 clamps on the way
    torch.manual_seed(5)
    got = module.sample(obs, ema=True, x_init=x)
    sched, n = module.schedule, cfg.denoising_steps
    torch.manual_seed(5)
    with torch.no_grad():
        for t in range(n - 1, -1, -1):  # index t is the official step t + 1
            eps = module.ema_actor(x, torch.full((4,), t), obs)
            beta, abar = sched.betas[t], sched.alphas_cumprod[t]
            abar_prev = sched.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
            x0 = ((x - (1 - abar).sqrt() * eps) / abar.sqrt()).clamp(-1, 1)
            mean = (abar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - abar_prev) * x) / (
                1 - abar
            )
            x = mean + (t > 0) * beta.sqrt() * torch.randn(x.shape)
    torch.testing.assert_close(got, x[:, 0], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- 9. the acting actor
def _nan_ema_module(**overrides):
    """A DAC module (and its EnvRunner copy) whose EMA actor outputs NaN."""
    from rllib_diffusion.algorithms.dac.dac_rl_module import DACModule

    cfg = DACConfig.default_model_config(OBS, ACT, hidden_dims=(8,), **overrides).to_dict()
    learner_side = DACModule(model_config=cfg)
    runner_side = DACModule(model_config=cfg, inference_only=True)
    runner_side.set_state(learner_side.get_state(inference_only=True))
    for module in (learner_side, runner_side):
        with torch.no_grad():
            for p in module.ema_actor.parameters():
                p.fill_(float("nan"))
    return learner_side, runner_side


def test_acting_ranks_samples_of_the_trained_actor_not_the_ema():
    """Official ``sample_actions`` decodes with ``self.actor`` (the trained actor; the
    EMA actor ``actor_tar`` only gives the critic's target actions): acting never
    touches a broken EMA actor, and the EnvRunner copy carries the actor."""
    learner_side, runner_side = _nan_ema_module()
    assert runner_side.get_non_inference_attributes() == ["critic"]
    assert hasattr(runner_side, "actor") and not hasattr(runner_side, "critic")
    obs = torch.randn(5, OBS)
    for module in (learner_side, runner_side):
        assert torch.isfinite(module.select_actions(obs, explore=False)).all()
    assert torch.isnan(learner_side.sample(obs, ema=True)).all()  # targets: the EMA
    old_learner, old_runner = _nan_ema_module(acting_actor="ema")  # the earlier choice
    assert not hasattr(old_runner, "actor")
    assert torch.isnan(old_runner.select_actions(obs, explore=False)).all()
