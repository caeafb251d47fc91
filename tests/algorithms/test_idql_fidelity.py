"""IDQL against the official code (github.com/philippe-eecs/IDQL: the exported
``jaxrl5/agents/ddpm_iql_simple/ddpm_iql_learner.py`` and
``launcher/examples/train_ddpm_iql_offline.py``): candidates when acting, the critic and
value networks, the EMA schedule and the batch size, each checked on the built config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rllib_diffusion.algorithms.idql.idql_rl_module import IDQLModelConfig, IDQLModule
from rllib_diffusion.algorithms.offline_q.train import build_offline_config
from rllib_diffusion.cli import build_parser, offline_settings_from_args

OBS, ACT = 3, 2
MID = "default_policy"


def _cli_learner(*flags: str):
    """The learner, module and config of ``rllib-diffusion offline --algo idql <flags>``."""
    args = build_parser().parse_args(["offline", "--dataset", "d", "--algo", "idql", *flags])
    config, _ = build_offline_config(offline_settings_from_args(args), "/x", "Hopper-v5", OBS, ACT)
    learner = config.build_learner()
    return learner, learner.module[MID].unwrapped(), config


def _layers(mlp) -> list[tuple[int, type, type]]:
    """``(width, norm type, activation type)`` of each hidden layer of our ``MLP``."""
    return [
        (layer.body[0].out_features, type(layer.body[1]), type(layer.body[2]))
        for layer in mlp.hidden
    ]


def test_acting_samples_64_candidates_and_takes_the_argmax_of_min_q():
    """Official ``N=64`` (launcher and ``create``), ``eval_actions``: argmax of the
    target critics' min over the heads."""
    _, module, _ = _cli_learner("--hidden-dims", "16", "16")
    cfg = module.dql_config
    assert (cfg.num_candidates, cfg.action_selection, cfg.q_aggregation) == (
        64,
        "argmax",
        "min",
    )


def test_critics_are_two_relu_layers_of_256_and_v_has_an_input_layernorm():
    """Official ``critic_hidden_dims=(256, 256)``, jaxrl5 ``MLP`` (ReLU, no norm) for the Q
    heads; V's ``MLP`` with ``use_layer_norm=value_layer_norm=True``: one LayerNorm on
    its input, then the same 2×256 ReLU layers."""
    _, module, _ = _cli_learner("--hidden-dims", "16", "16")
    assert len(module.critic.heads) == 2
    for head in (*module.critic.heads, *module.critic_target.heads):
        assert _layers(head) == [(256, nn.Identity, nn.ReLU)] * 2
    norm, mlp = module.value
    assert isinstance(norm, nn.LayerNorm) and norm.normalized_shape == (OBS,)
    assert _layers(mlp) == [(256, nn.Identity, nn.ReLU)] * 2
    assert mlp.out.out_features == 1


def test_ema_actor_is_updated_every_step_with_decay_0999_from_the_start():
    """Official ``actor_tau=0.001``: after every actor step,
    target ← 0.999·target + 0.001·actor, starting from the initial weights."""
    learner, module, config = _cli_learner("--hidden-dims", "16", "16")
    assert (config.ema_decay, config.ema_update_every, config.ema_start) == (0.999, 1, 0)
    with torch.no_grad():
        for p in module.actor.parameters():
            p.add_(1.0)
    before = [p.detach().clone() for p in module.ema_actor.parameters()]
    learner.update_targets(MID)  # gradient step 1
    for old, new, src in zip(before, module.ema_actor.parameters(), module.actor.parameters()):
        torch.testing.assert_close(new, 0.999 * old + 0.001 * src)


def test_batch_defaults_to_the_official_512_and_the_flag_overrides_it():
    """``offline --algo idql`` trains on batches of 512 (the official runs'), another
    algorithm on 256, and ``--batch-size`` sets either."""
    from rllib_diffusion.algorithms.offline_q.train import OfflineSettings, with_algorithm_batch

    _, _, config = _cli_learner("--hidden-dims", "8")
    assert config.train_batch_size_per_learner == 512
    _, _, config = _cli_learner("--hidden-dims", "8", "--batch-size", "128")
    assert config.train_batch_size_per_learner == 128
    assert with_algorithm_batch(OfflineSettings(dataset="d", algo="dac")).batch_size == 256
    assert with_algorithm_batch(OfflineSettings(dataset="d", algo="idql")).batch_size == 512


def test_model_configs_recorded_before_these_fields_rebuild_as_trained():
    """A checkpoint's model config without ``critic_activation``/``value_layer_norm``
    (written before them) rebuilds Mish critics and V without a LayerNorm."""
    recorded = IDQLModelConfig(obs_dim=OBS, action_dim=ACT, hidden_dims=(8,)).to_dict()
    for key in ("critic_activation", "value_layer_norm"):
        recorded.pop(key)
    module = IDQLModule(model_config=recorded)
    assert _layers(module.critic.heads[0]) == [(256, nn.Identity, nn.Mish)] * 3
    assert not any(isinstance(m, nn.LayerNorm) for m in module.value.modules())


@pytest.mark.parametrize("activation", ["mish", "relu"])
def test_value_and_q_heads_follow_critic_activation(activation):
    cfg = IDQLModelConfig(
        obs_dim=OBS, action_dim=ACT, hidden_dims=(8,), critic_activation=activation
    )
    module = IDQLModule(model_config=cfg.to_dict())
    act = nn.Mish if activation == "mish" else nn.ReLU
    assert {type(layer.body[2]) for layer in module.critic.heads[0].hidden} == {act}
    assert {type(layer.body[2]) for layer in module.value.hidden} == {act}


def _one_step(learner, config, batch) -> torch.Tensor:
    """One gradient step on ``batch``; the summed loss it took."""
    loss = learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    learner.apply_gradients(learner.compute_gradients({MID: loss}))
    return loss


def test_critic_loss_is_the_mean_over_heads_by_hand():
    """Official ``update_q``: ``((qs − target_q)²).mean()`` over heads and batch (the
    sum over the two heads before: twice that)."""
    from tests.algorithms.batches import transition_batch

    learner, module, config = _cli_learner("--hidden-dims", "8")
    batch = transition_batch(5, OBS, ACT, seed=1)
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    critic_loss = learner._temp_losses[(MID, "critic")]
    with torch.no_grad():
        v_next = module.value(batch["new_obs"]).squeeze(-1)
        y = batch["rewards"] + config.gamma * (1 - batch["terminateds"]) * v_next
        q = module.critic(batch["obs"], batch["actions"])  # (2, 5)
    by_hand = sum(((q[j] - y) ** 2).mean() for j in range(2)) / 2
    torch.testing.assert_close(critic_loss.detach(), by_hand)


def test_actor_uses_adamw_with_weight_decay_1e4_and_the_critics_plain_adam():
    """Official ``create``: ``optax.adamw(actor_lr)`` (weight decay 1e-4 by default) for
    the score model, ``optax.adam`` for Q and V; ``--actor-weight-decay 0``: Adam."""
    learner, _, _ = _cli_learner("--hidden-dims", "8")
    actor = learner.get_optimizer(MID, "actor")
    assert isinstance(actor, torch.optim.AdamW)
    assert actor.param_groups[0]["weight_decay"] == pytest.approx(1e-4)
    for name in ("value", "critic"):
        optim = learner.get_optimizer(MID, name)
        assert not isinstance(optim, torch.optim.AdamW)
        assert optim.param_groups[0]["weight_decay"] == 0
    learner, _, _ = _cli_learner("--hidden-dims", "8", "--actor-weight-decay", "0")
    assert not isinstance(learner.get_optimizer(MID, "actor"), torch.optim.AdamW)


def test_actor_rate_is_cosine_decayed_per_step_and_the_critics_rates_are_constant():
    """Official ``decay_steps``: ``optax.cosine_decay_schedule(actor_lr, decay_steps)`` on
    the actor only: the rate of gradient step k is lr₀·½(1 + cos(πk/K))."""
    import math

    from tests.algorithms.batches import transition_batch

    learner, _, config = _cli_learner(
        "--hidden-dims", "8", "--lr-decay-steps", "4", "--actor-lr", "1e-3"
    )
    actor = learner.get_optimizer(MID, "actor")
    others = [learner.get_optimizer(MID, n) for n in ("value", "critic")]
    for k in range(3):
        _one_step(learner, config, transition_batch(6, OBS, ACT, seed=k))
        factor = 0.5 * (1 + math.cos(math.pi * k / 4))
        assert actor.param_groups[0]["lr"] == pytest.approx(1e-3 * factor)
        assert [o.param_groups[0]["lr"] for o in others] == [pytest.approx(3e-4)] * 2


def test_sampler_is_the_official_ddpm_sampler_by_hand():
    """Official ``jaxrl5/networks/diffusion.py`` ``ddpm_sampler``: x ← (x − β_t/sqrt(1−ᾱ_t)
    ·ε̂)/sqrt(α_t) + sqrt(β_t)·z (no noise at t = 0), then x clamped to ±1 after every
    step (no x̂0 clamp), and the result clamped once more."""
    from rllib_diffusion.algorithms.idql.idql import IDQLConfig

    cfg = IDQLConfig.default_model_config(OBS, ACT, hidden_dims=(8,))
    assert (cfg.sampler_variance, cfg.sampler_clip) == ("beta", "xt")
    module = IDQLModule(model_config=cfg.to_dict()).eval()
    obs, x = torch.randn(4, OBS), 3 * torch.randn(4, 1, ACT)
    torch.manual_seed(5)
    got = module.sample(obs, ema=True, x_init=x)
    sched = module.schedule
    torch.manual_seed(5)
    with torch.no_grad():
        for t in range(cfg.denoising_steps - 1, -1, -1):
            eps = module.ema_actor(x, torch.full((4,), t), obs)
            beta, abar = sched.betas[t], sched.alphas_cumprod[t]
            x = (x - beta / (1 - abar).sqrt() * eps) / (1 - beta).sqrt()
            x = (x + (t > 0) * beta.sqrt() * torch.randn(x.shape)).clamp(-1, 1)
    torch.testing.assert_close(got, x[:, 0], rtol=1e-4, atol=1e-5)
