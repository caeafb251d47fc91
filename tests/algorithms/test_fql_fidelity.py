"""FQL against the official code (github.com/seohongpark/fql, ``agents/fql.py``): the
networks the CLI builds, the distillation reduction, the Q term, the TD target's head
aggregation and α, each checked against a hand computation or the built config."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.fql import FQLConfig
from rllib_diffusion.algorithms.fql.fql_learner import (
    aggregate_heads,
    distillation_loss,
    q_term,
)
from rllib_diffusion.algorithms.offline_q.train import build_offline_config
from rllib_diffusion.cli import build_parser, offline_settings_from_args
from tests.algorithms.batches import transition_batch

OBS, ACT = 3, 2
MID = "default_policy"


def _cli_learner(*flags: str, env_id: str = "Hopper-v5"):
    """The learner, module and config of ``rllib-diffusion offline --algo fql <flags>``."""
    args = build_parser().parse_args(["offline", "--dataset", "d", "--algo", "fql", *flags])
    config, _ = build_offline_config(offline_settings_from_args(args), "/x", env_id, OBS, ACT)
    learner = config.build_learner()
    return learner, learner.module[MID].unwrapped(), config


def _tiny_batch(n=8, seed=0):
    return transition_batch(n, OBS, ACT, seed)


def _hidden_widths(mlp) -> list[int]:
    return [layer.body[0].out_features for layer in mlp.hidden]


def test_cli_builds_4x512_actor_critic_and_one_step_policy():
    """Official ``actor_hidden_dims`` = ``value_hidden_dims`` = (512,)*4: the BC flow,
    the one-step policy and both Q heads (LayerNorm, as ``layer_norm=True``)."""
    _, module, _ = _cli_learner()
    assert _hidden_widths(module.onestep) == [512] * 4
    assert _hidden_widths(module.bc_flow.mlp) == [512] * 4
    assert len(module.critic.heads) == 2
    for head in (*module.critic.heads, *module.critic_target.heads):
        assert _hidden_widths(head) == [512] * 4
        assert all(isinstance(layer.body[1], torch.nn.LayerNorm) for layer in head.hidden)


def test_distillation_loss_is_the_mean_over_action_dims():
    """Official ``jnp.mean((actor_actions - target_flow_actions) ** 2)``: a mean over batch
    and action dims. Hand: squares 1, 4 (others 0) over 2×3 entries → 5/6 (the old sum
    over action dims gave 2.5)."""
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert float(distillation_loss(a, torch.zeros(2, 3))) == pytest.approx(5 / 6)


def test_q_term_is_unnormalised_by_default():
    """Official ``normalize_q_loss=False``: the Q term is −mean Q; normalised on request.
    Hand: Q = (2, −4) → −mean = 1; mean|Q| = 3 → 1/3."""
    q = torch.tensor([2.0, -4.0])
    assert FQLConfig().normalize_q_loss is False
    assert float(q_term(q, normalize=False)) == pytest.approx(1.0)
    assert float(q_term(q, normalize=True)) == pytest.approx(1 / 3)


def test_default_actor_loss_matches_the_official_equation():
    """Default CLI config: α·mean(Δ²) − mean_b mean_j Q_j (α = 10, no normalisation),
    replaying the learner's random draws."""
    learner, module, config = _cli_learner("--hidden-dims", "16", "16")
    assert (config.alpha, config.normalize_q_loss) == (10.0, False)
    batch = _tiny_batch()
    torch.manual_seed(0)
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    learner._temp_losses.clear()
    torch.manual_seed(0)
    with torch.no_grad():
        torch.randn(8, ACT)  # next-action noise
        torch.rand(8)  # flow-matching time ...
        torch.randn(8, 1, ACT)  # ... and noise
        z = torch.randn(8, ACT)
        raw = module.onestep_raw(batch[Columns.OBS], z)
        a = raw.clamp(-1.0, 1.0)
        target = module.flow_actions(batch[Columns.OBS], z)
        q_pi = module.critic(batch[Columns.OBS], a).mean(0)
        expected = 10.0 * ((raw - target) ** 2).mean() - q_pi.mean()
    logged = float(learner.metrics.peek((MID, M.ACTOR_LOSS)))
    assert logged == pytest.approx(float(expected), rel=1e-4)


def test_aggregate_heads_mean_and_min():
    q = torch.tensor([[1.0, 5.0], [3.0, -1.0]])  # (H=2, B=2)
    torch.testing.assert_close(aggregate_heads(q, "mean"), torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(aggregate_heads(q, "min"), torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize("q_agg", [None, "min"])
def test_td_target_aggregates_heads_by_q_agg(q_agg):
    """Official ``q_agg='mean'`` by default: y = r + γ(1 − d)·mean_j Q′_j(s′, μ_ω(s′, z′));
    ``--q-agg min`` takes the min (clipped double Q)."""
    flags = ["--hidden-dims", "16", "16"] + ([] if q_agg is None else ["--q-agg", q_agg])
    learner, module, config = _cli_learner(*flags)
    assert config.q_agg == (q_agg or "mean")
    batch = _tiny_batch()
    torch.manual_seed(0)
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    learner._temp_losses.clear()
    torch.manual_seed(0)
    with torch.no_grad():
        next_obs = batch[Columns.NEXT_OBS]
        next_a = module.onestep_actions(next_obs, torch.randn(8, ACT))
        heads = module.critic_target(next_obs, next_a)
        q_next = heads.min(0).values if q_agg == "min" else heads.mean(0)
        assert not torch.allclose(heads.mean(0), heads.min(0).values)
        y = batch[Columns.REWARDS] + 0.99 * (1 - batch[Columns.TERMINATEDS]) * q_next
        q = module.critic(batch[Columns.OBS], batch[Columns.ACTIONS])
        expected = ((q - y) ** 2).mean(dim=1).sum()
    assert float(learner.metrics.peek((MID, M.TARGET_MEAN))) == pytest.approx(
        float(y.mean()), rel=1e-5
    )
    assert float(learner.metrics.peek((MID, M.CRITIC_LOSS))) == pytest.approx(
        float(expected), rel=1e-5
    )


def test_alpha_default_is_the_official_one_and_no_task_overrides_it():
    """Official ``alpha=10.0``; its per-task values (README) cover OGBench and D4RL
    AntMaze/Adroit only, none of the MuJoCo locomotion tasks."""
    assert FQLConfig().alpha == 10.0
    for env_id in ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"):
        assert FQLConfig.task_defaults(env_id) == {}
        _, _, config = _cli_learner("--hidden-dims", "8", env_id=env_id)
        assert config.alpha == 10.0 and config.q_agg == "mean"


def test_outputs_past_the_bounds_act_clipped_and_are_pulled_back_by_distillation():
    """Official clipping: an output far past the bound acts at the bound exactly (a
    straight-through clamp computed as ``out + (clip(out) − out).detach()`` gave 0.0 at
    |out| ≈ 1e16 in float32, the size a diverged run reached); the Q term sends no
    gradient past a bound, so the only gradient on such an output is the distillation's,
    toward the flow's action."""
    learner, module, config = _cli_learner("--hidden-dims", "16", "16")
    linear = [m for m in module.onestep.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([1e16, 5.0]))  # ACT = 2
    obs = _tiny_batch()[Columns.OBS]
    z = torch.zeros(obs.shape[0], ACT)
    acted = module.onestep_actions(obs, z)
    assert acted[:, 0].eq(1.0).all() and acted[:, 1].eq(1.0).all()

    raw = module.onestep_raw(obs, z).detach().requires_grad_(True)
    q_pi = module.critic(obs, module.clip_to_bounds(raw)).mean(0)
    (q_grad,) = torch.autograd.grad(q_term(q_pi, normalize=False), raw)
    assert q_grad.abs().sum() == 0.0  # every output is past a bound
    target = torch.zeros_like(raw)
    (d_grad,) = torch.autograd.grad(distillation_loss(raw, target), raw)
    assert (d_grad[:, 1] > 0).all()  # descending it moves the output 5.0 back toward 0
