"""Critic diagnostics of the offline Q-learners reach their progress lines (and so
TensorBoard and result.json): Q on data and policy actions, target, TD error."""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.offline_run import offline_progress_line
from tests.algorithms.test_diffusion_ql import MID, make_learner, tiny_batch


def test_diffusion_ql_logs_td_error_and_policy_q_by_hand():
    learner, config = make_learner("ddpm")
    module = learner.module[MID].unwrapped()
    batch = tiny_batch()
    fixed_next = torch.rand(8, batch[Columns.ACTIONS].shape[1]) * 2 - 1
    real_sample = module.sample
    module.sample = lambda obs, ema, x_init=None: fixed_next if ema else real_sample(obs, ema=False)
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    learner._temp_losses.clear()

    def q_head(net, obs, act):
        return net(torch.cat([obs, act], dim=-1)).squeeze(-1)

    with torch.no_grad():
        q_next = torch.minimum(
            *(q_head(h, batch[Columns.NEXT_OBS], fixed_next) for h in module.critic_target.heads)
        )
        y = batch[Columns.REWARDS] + 0.99 * (1 - batch[Columns.TERMINATEDS]) * q_next
        q = torch.stack(
            [q_head(h, batch[Columns.OBS], batch[Columns.ACTIONS]) for h in module.critic.heads]
        )
        td = (q - y).abs().mean()
    assert float(learner.metrics.peek((MID, M.TD_ERROR))) == pytest.approx(float(td), rel=1e-5)
    assert float(learner.metrics.peek((MID, M.Q_MEAN))) == pytest.approx(float(q.mean()), rel=1e-5)
    assert float(learner.metrics.peek((MID, M.TARGET_MEAN))) == pytest.approx(float(y.mean()))
    assert torch.isfinite(torch.tensor(float(learner.metrics.peek((MID, M.Q_POLICY_MEAN)))))


def test_progress_line_carries_the_diagnostics_present():
    learner = {M.CRITIC_LOSS: 2.0, M.Q_MEAN: 10.0, M.TD_ERROR: 0.5, M.DUAL_ETA: float("nan")}
    result = {"learners": {"default_policy": learner}}
    line = offline_progress_line(
        result, 3, steps_per_iteration=100, loss_key=M.CRITIC_LOSS, evaluated=False
    )
    assert line["gradient_steps"] == 300 and line["loss"] == 2.0
    assert (line["critic_loss"], line["q_mean"], line["td_error"]) == (2.0, 10.0, 0.5)
    assert "dual_eta" not in line and "v_mean" not in line  # NaN / absent: left out


@pytest.mark.parametrize(
    ("algo", "keys"),
    [
        ("dac", {M.TD_ERROR, M.DUAL_ETA, M.Q_MEAN, M.TARGET_MEAN, M.Q_POLICY_MEAN}),
        ("idql", {M.TD_ERROR, M.VALUE_MEAN, M.VALUE_LOSS, M.Q_MEAN, M.Q_POLICY_MEAN}),
        ("fql", {M.TD_ERROR, M.Q_POLICY_MEAN, M.DISTILL_LOSS, M.Q_MEAN}),
    ],
)
def test_each_q_learner_logs_its_critic_diagnostics(algo, keys):
    """One loss computation logs the TD error and the algorithm's own diagnostics."""
    from rllib_diffusion.algorithms.offline_q.train import OfflineSettings, build_offline_config

    settings = OfflineSettings(dataset="unused", algo=algo, hidden_dims=(16, 16))
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", 3, 2)
    learner = config.build_learner()
    batch = tiny_batch()  # obs dim 3, action dim 2
    learner.compute_loss_for_module(module_id=MID, config=config, batch=batch, fwd_out={})
    learner._temp_losses.clear()
    for key in keys:
        value = float(learner.metrics.peek((MID, key)))
        assert value == value, key  # logged and finite
    assert float(learner.metrics.peek((MID, M.TD_ERROR))) >= 0.0


def test_acting_policy_q_by_hand_every_interval_and_rng_untouched():
    """IDQL and DAC sample no policy action in their losses: every POLICY_Q_INTERVAL-th step
    they log the mean Q (over heads and the first POLICY_Q_STATES states) of the acting
    policy's actions, without moving torch's RNG stream of the training."""
    from types import SimpleNamespace

    from rllib_diffusion.algorithms.actor_critic import (
        POLICY_Q_INTERVAL,
        POLICY_Q_STATES,
        acting_policy_q,
    )

    obs = torch.arange(40.0).reshape(40, 1)

    def select_actions(states, explore):
        assert not explore
        return states * 2 + torch.randn(states.shape) * 0  # consumes the RNG

    def critic(states, actions):  # two heads, (H, B)
        return torch.stack([actions[:, 0], actions[:, 0] + 1.0])

    module = SimpleNamespace(train_step=torch.tensor(POLICY_Q_INTERVAL * 3), critic=critic,
                             select_actions=select_actions)  # fmt: skip
    torch.manual_seed(0)
    q = acting_policy_q(module, obs)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)  # the training's RNG stream is untouched
    # Actions 2s for s = 0..31; heads 2s and 2s + 1: mean = 2·mean(s) + 0.5.
    expected = 2 * (POLICY_Q_STATES - 1) / 2 + 0.5
    assert float(q) == pytest.approx(expected)
    module.train_step = torch.tensor(POLICY_Q_INTERVAL * 3 + 1)
    assert acting_policy_q(module, obs) is None
