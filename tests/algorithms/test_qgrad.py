"""DIPO and QSM: the action improvement, its write-back into exactly the sampled replay
rows, QSM's score target and the twin-critic loss against hand computations; the
learner's steps; the CLI's official defaults; a smoke run with checkpoint and resume; and
learning tests on the toy task (``rllib_diffusion/ReachTarget-v0``, see
test_dppo_learning.py: BC on data acting at ``target + 0.5``, return ≈ 5 of 10).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ray.rllib.core.columns import Columns

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.qgrad.qgrad import DIPO, DIPOConfig, QSMConfig
from rllib_diffusion.algorithms.qgrad.qgrad_learner import (
    critic_action_gradient,
    improve_actions,
    qsm_loss,
)
from rllib_diffusion.algorithms.qgrad.qgrad_rl_module import DIPOModelConfig, QSMModelConfig
from rllib_diffusion.algorithms.replay import TransitionReplay
from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS
from rllib_diffusion.algorithms.replay_finetune_learner import twin_critic_step
from rllib_diffusion.modules.model_config import ConfigError
from tests.algorithms.batches import (
    DA,
    OBS_DIM,
    TA,
    TINY_CRITICS,
    LinearTwinQ,
    cli_finetune_config,
    improves_weak_policy,
    replay_finetune_smoke,
    replay_learner_steps,
    replay_rows,
    stepped_episode,
    td_batch,
    tiny_learner,
    tiny_policy,
)


# ------------------------------------------------------------------- pure math
def test_twin_critic_step_by_hand():
    """The critics' loss DIPO and QSM share with DQL (``twin_critic_step``)."""
    sampled = []

    def sample(obs, *, deterministic):
        sampled.append(deterministic)
        return torch.zeros(len(obs), 1, 2)

    module = SimpleNamespace(
        critic=LinearTwinQ(torch.tensor([[1.0, 0.0], [0.0, 2.0]])),  # Q1 = a₁, Q2 = 2·a₂
        critic_target=LinearTwinQ(torch.zeros(2, 2), c=(3.0, 2.0)),  # min_i Q'_i = 2
        sample=sample,
    )
    batch = {
        Columns.OBS: torch.zeros(2, 1),
        Columns.ACTIONS: torch.tensor([[1.0, 1.0], [0.0, 2.0]]),
        Columns.REWARDS: torch.tensor([1.0, 0.0]),
        Columns.NEXT_OBS: torch.zeros(2, 1),
        Columns.TERMINATEDS: torch.tensor([False, True]),
    }
    loss, metrics = twin_critic_step(module, batch, gamma=0.5)
    # y = (1 + 0.5·2, 0); Q1 = (1, 0), Q2 = (2, 4): ((1 + 0) + (0 + 16))/2 = 8.5.
    torch.testing.assert_close(loss, torch.tensor(8.5))
    assert metrics[M.Q_MEAN] == 1.75 and metrics[M.TARGET_MEAN] == 1.0
    assert sampled == [False]  # the next actions explore


def test_one_action_step_is_adam_along_the_gradient_of_the_smaller_q():
    # min(Q1, Q2) = Q2 = (−1, 2)·a − 5 everywhere on [−1, 1]²: g = (−1, 2) per row.
    critic = LinearTwinQ(torch.tensor([[1.0, 1.0], [-1.0, 2.0]]), c=(10.0, -5.0))
    a = torch.tensor([[0.0, 0.0], [0.5, 0.9995]])
    out = improve_actions(critic, torch.zeros(2, 1), a, lr=1e-3, steps=1, max_grad_norm=100.0)
    # Adam's first step: lr·g/(|g| + eps) = ±lr·(1 − eps/|g|) per coordinate.
    step = 1e-3 * torch.tensor([-1.0 / (1.0 + 1e-5), 2.0 / (2.0 + 1e-5)])
    expected = (a + step).clamp(-1.0, 1.0)  # the second row's a₂ is clamped at 1
    torch.testing.assert_close(out, expected)
    assert out[1, 1] == 1.0 and critic.w.grad is None  # the critic gets no gradient


def test_action_gradient_norm_clip_covers_the_whole_minibatch():
    # ‖g‖ over the (2, 2) batch = sqrt(2·(1 + 4)) = sqrt(10); clip at 1 scales g by
    # 1/sqrt(10); Adam's first step is then lr·ĝ/(|ĝ| + eps): eps now matters more.
    critic = LinearTwinQ(torch.tensor([[-1.0, 2.0], [-1.0, 2.0]]))
    a = torch.zeros(2, 2)
    out = improve_actions(critic, torch.zeros(2, 1), a, lr=1e-2, steps=1, max_grad_norm=1.0)
    g = torch.tensor([-1.0, 2.0]) / 10**0.5
    torch.testing.assert_close(out, (1e-2 * g / (g.abs() + 1e-5)).expand(2, 2))


def test_dipo_writes_the_improved_actions_back_into_exactly_the_sampled_rows():
    replay = TransitionReplay(capacity=100, seed=0)
    n = 3 * 2
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(21, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-1, 1, (20, n)).astype(np.float32)
    replay.add([stepped_episode(obs, actions, [0.0] * 20, terminated=False)])
    before = replay.data[Columns.ACTIONS][: len(replay)].copy()
    critic = LinearTwinQ(torch.ones(2, n))  # ∇ min Q = +1 everywhere: every action grows

    def improve(obs, actions):
        a = torch.as_tensor(actions)
        return improve_actions(critic, torch.as_tensor(obs), a, lr=0.1, steps=2, max_grad_norm=1e9)

    learner = SimpleNamespace(improve_actions=improve)
    logged = {}
    algo = SimpleNamespace(
        replay=replay,
        config=SimpleNamespace(minibatch_size=8),
        learner_group=SimpleNamespace(
            foreach_learner=lambda fn: [SimpleNamespace(get=lambda: fn(learner).numpy())]
        ),
        log_own=lambda key, v: logged.update({key: v}),
    )
    state = replay.rng.bit_generator.state
    rows = DIPO.actor_rows(algo, {})
    replay.rng.bit_generator.state = state
    idx = replay.sample_indices(8)
    after = replay.data[Columns.ACTIONS][: len(replay)]
    changed = np.flatnonzero(np.any(after != before, axis=1))
    assert set(changed) == set(idx.tolist())  # exactly the sampled rows (repeats allowed)
    # Two Adam steps of lr 0.1 along +1: +0.2 each (≈, eps), clamped at 1.
    np.testing.assert_allclose(after[idx], np.minimum(before[idx] + 0.2, 1.0), atol=1e-5)
    np.testing.assert_array_equal(rows[ACTOR_ACTIONS], after[idx])
    np.testing.assert_array_equal(rows[ACTOR_OBS], replay.data[Columns.OBS][idx])
    assert logged[M.ACTION_SHIFT] > 0


def test_checkpoints_from_before_the_shared_loop_restore_their_replay_and_counters():
    """DIPO/QSM checkpoints kept the counters and the replay under ``qgrad_*`` keys
    before they ran on ``ReplayFinetuneMixin``; both still come back."""
    from rllib_diffusion.algorithms.qgrad.qgrad import QSM
    from rllib_diffusion.algorithms.replay_finetune import COUNTERS_STATE, ReplayFinetuneMixin

    class Rest:
        def set_state(self, state):
            self.rest = state

    old = TransitionReplay(capacity=50, seed=0)
    obs, actions = np.zeros((4, OBS_DIM), np.float32), np.zeros((3, 2), np.float32)
    old.add([stepped_episode(obs, actions, [1.0] * 3, terminated=True)])
    old.sample(5)  # the sampling RNG moved on: it is restored too
    for algo in (DIPO, QSM):
        host = type("Host", (ReplayFinetuneMixin, Rest), {"STATE_ALIASES": algo.STATE_ALIASES})()
        host.replay = TransitionReplay(capacity=50)
        host.set_state({"qgrad_counters": (12, 3), "qgrad_replay": old.get_state(), "x": 1})
        assert (host._env_steps_lifetime, host._decisions_lifetime) == (12, 3)
        assert host.replay.size == 3 and host.rest["x"] == 1 and COUNTERS_STATE in host.rest
        assert host.replay.rng.bit_generator.state == old.rng.bit_generator.state


def test_qsm_score_target_by_hand():
    # Twin linear critics: ∇_a of their mean = (w1 + w2)/2 at every a.
    critic = LinearTwinQ(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
    grad = critic_action_gradient(critic, torch.zeros(2, 1), torch.randn(2, 2))
    torch.testing.assert_close(grad, torch.tensor([[2.0, -1.0], [2.0, -1.0]]))
    eps_pred = torch.tensor([[-19.0, 10.0], [0.0, 0.0]])
    # −ε̂ − M·g with M = 10: row 1 (19 − 20, −10 + 10) = (−1, 0); row 2 (−20, 10).
    torch.testing.assert_close(qsm_loss(eps_pred, grad, 10.0), torch.tensor(501.0 / 4))
    # The loss's minimiser is ε̂ = −M·∇_a Q (the reference's sign).
    assert qsm_loss(-10.0 * grad, grad, 10.0) == 0


def test_model_configs_refuse_flow_and_carry_the_target_actor():
    assert QSMModelConfig.from_dict(DIPOModelConfig(tiny_policy()).to_dict()).act_with_target
    dumped = QSMModelConfig(tiny_policy()).to_dict()
    assert type(QSMModelConfig.from_dict(dumped)) is QSMModelConfig
    with pytest.raises(ConfigError, match="--sampler ddpm"):
        QSMModelConfig(tiny_policy("flow"))


@pytest.mark.parametrize("algo", ["dipo", "qsm"])
def test_cli_builds_each_with_the_official_hopper_defaults(algo, fake_bc_checkpoint):
    config = cli_finetune_config(algo, fake_bc_checkpoint)
    official = dict(actor_lr=1e-4, critic_lr=1e-3, tau=0.005, reward_scale=0.01, gamma=0.99)
    official |= dict(minibatch_size=1000, critic_warmup_decisions=80_000)
    if algo == "dipo":
        assert type(config) is DIPOConfig
        official |= dict(buffer_decisions=1_000_000, replay_ratio=64, action_lr=1e-4)
        official |= dict(action_gradient_steps=10, action_grad_norm_per_dim=0.1)
    else:
        assert type(config) is QSMConfig
        official |= dict(buffer_decisions=25_000, replay_ratio=16, q_grad_coeff=10)
    assert {k: getattr(config, k) for k in official} == official
    assert config.model_config["min_sampling_std"] == 0.1
    assert config.model_config["critic_hidden_dims"] == [256, 256, 256]
    assert config.model_config.get("act_with_target", False) == (algo == "dipo")
    foreign = "--q-grad-coeff" if algo == "dipo" else "--action-lr"
    with pytest.raises(ConfigError, match=f"{foreign} is not a knob of {algo}"):
        cli_finetune_config(algo, fake_bc_checkpoint, foreign, "3")


# ------------------------------------------------------------------- learner
@pytest.mark.parametrize("algo", ["dipo", "qsm"])
def test_learner_steps_the_critic_and_the_actor_only_with_actor_rows(algo, ray_session):
    classes = (DIPOConfig, DIPOModelConfig) if algo == "dipo" else (QSMConfig, QSMModelConfig)
    learner, _, module = tiny_learner(
        *classes, TINY_CRITICS, actor_lr=1e-2, critic_lr=1e-2, tau=0.5
    )
    res, actor0 = replay_learner_steps(learner, module)
    assert res["losses/actor_loss"] > 0
    assert hasattr(module, "actor_target") == (algo == "dipo")
    if algo == "dipo":  # the target actor follows by Polyak averaging (τ = 0.5)
        for t, a, a0 in zip(module.actor_target.parameters(), module.actor.parameters(), actor0):
            torch.testing.assert_close(t, 0.5 * a0 + 0.5 * a.detach())
        rows = replay_rows()
        improved = learner.improve_actions(rows[Columns.OBS], rows[Columns.ACTIONS])
        assert improved.shape == (16, TA * DA) and np.abs(improved).max() <= 1.0


def test_critic_loss_uses_scaled_rewards_the_terminal_mask_and_the_smaller_target(
    ray_session,
):
    learner, _, module = tiny_learner(
        QSMConfig, QSMModelConfig, TINY_CRITICS, gamma=0.5, reward_scale=0.1
    )
    module.critic_target = LinearTwinQ(torch.zeros(2, TA * DA), c=(3.0, 2.0))  # min = 2
    batch = td_batch()
    q = module.critic(batch[Columns.OBS], batch[Columns.ACTIONS]).detach()
    losses = learner.compute_losses(fwd_out={"default_policy": {}}, batch={"default_policy": batch})
    # y = 0.1·r + 0.5·(1 − d)·2: (1 + 1, 2, 0 + 1, −1).
    y = torch.tensor([2.0, 2.0, 1.0, -1.0])
    torch.testing.assert_close(losses["default_policy"], ((q - y) ** 2).mean(dim=1).sum())


def test_default_critics_are_plain_mish_mlps_as_the_reference_builds_them(ray_session):
    """The reference's ``CriticObsAct(residual_tyle=...)`` (sic) never sees its configs'
    ``residual_style: True``: Q = W₃·mish(W₂·mish(W₁·[s, a] + b₁) + b₂) + b₃, no skip."""
    model = {"critic_hidden_dims": (8, 8)}  # the second layer would be a residual one
    _, _, module = tiny_learner(DIPOConfig, DIPOModelConfig, model)
    x = torch.randn(5, OBS_DIM + TA * DA)
    for head, q in zip(module.critic.heads, module.critic(x[:, :OBS_DIM], x[:, OBS_DIM:])):
        first, second, out = (m for m in head.modules() if isinstance(m, torch.nn.Linear))
        hand = out(F.mish(second(F.mish(first(x))))).squeeze(-1)
        torch.testing.assert_close(q, hand)
    _, _, residual = tiny_learner(DIPOConfig, DIPOModelConfig, model | {"critic_residual": True})
    first, second, out = (
        m for m in residual.critic.heads[0].modules() if isinstance(m, torch.nn.Linear)
    )
    h = F.mish(first(x))
    hand = out(h + F.mish(second(h))).squeeze(-1)
    torch.testing.assert_close(residual.critic(x[:, :OBS_DIM], x[:, OBS_DIM:])[0], hand)


def test_exploring_chunks_are_not_clamped_unless_final_action_clip(ray_session):
    """A denoiser whose x̂₀ saturates at +1: the last DDPM step (t = 0, posterior std 0,
    floor 0.1) is ``1 + 0.1·clip(ε, ±3)`` in [0.7, 1.3], about half of it above 1, as
    the reference (``final_action_clip_value`` unset) samples; ``final_action_clip`` 1
    clamps it."""
    for clip in (None, 1.0):
        model = {"final_action_clip": clip} if clip else {}
        _, _, module = tiny_learner(DIPOConfig, DIPOModelConfig, TINY_CRITICS | model)
        module.actor_target.forward = lambda x, t, cond: torch.full_like(x, -100.0)
        torch.manual_seed(0)
        a = module.sample(torch.zeros(500, OBS_DIM), deterministic=False)
        assert a.min() >= 0.7 - 1e-5 and a.max() <= (clip or 1.3 + 1e-5)
        above = (a > 1.0).float().mean()
        assert (0.45 < above < 0.55) if clip is None else above == 0


def test_a_model_config_saved_before_the_critic_knobs_keeps_what_it_was_trained_with():
    """A saved config without ``critic_residual`` (and without the policy's newer
    ``env_kwargs``) reads as residual critics and ±1-clamped chunks, so its weights are not
    silently run as plain critics; a resume names exactly the fields that differ."""
    from rllib_diffusion.checkpoints import field_diffs

    new = DIPOModelConfig(policy=tiny_policy()).to_dict()
    old = {k: v for k, v in new.items() if k not in ("critic_residual", "final_action_clip")}
    old["policy"] = {k: v for k, v in new["policy"].items() if k != "env_kwargs"}
    read = QSMModelConfig.from_dict(old)
    assert type(read) is DIPOModelConfig
    assert (read.critic_residual, read.final_action_clip) == (True, 1.0)
    fresh = QSMModelConfig.from_dict(new)
    assert (fresh.critic_residual, fresh.final_action_clip) == (False, None)
    diffs = field_diffs({"model": read.to_dict()}, {"model": new})
    assert [d.split(":")[0] for d in diffs] == ["model.critic_residual", "model.final_action_clip"]
    legacy = DIPOModelConfig(policy=tiny_policy(), critic_residual=True, final_action_clip=1.0)
    assert field_diffs({"model": read.to_dict()}, {"model": legacy.to_dict()}) == []


# --------------------------------------------------------------- toy-task runs
@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dipo", "qsm"])
def test_finetune_smoke_evaluation_checkpoint_and_resume(algo, pretrained, tmp_path):
    """On the session's tiny Hopper DiffusionBC policy (shared with DPPO's tests)."""
    lines = replay_finetune_smoke(algo, pretrained, tmp_path / algo)
    assert lines[-1]["actor_loss"] > 0


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("algo", ["dipo", "qsm"])
def test_each_improves_a_weak_ddpm_policy(algo, weak_ddpm_policy, tmp_path):
    """Official defaults but a warm-up of 2 iterations, minibatches of 256 and: DIPO a
    larger action step (the reference's 1e-4 × 10 Adam steps move an action by ≤ 1e-3
    per update, far too little for this budget); QSM M = 100 and replay ratio 64 (here
    only the immediate reward depends on the action, so with rewards × 0.01 ∇_a Q is
    ≈ 0.01 and M = 10 would make a target ε̂ of ≈ 0.1: a nearly flat policy)."""
    knobs = {"critic_warmup_decisions": 1000, "minibatch_size": 256, "replay_ratio": 64}
    if algo == "dipo":
        knobs["action_lr"] = 0.01
    else:
        knobs["q_grad_coeff"] = 100.0
    improves_weak_policy(algo, weak_ddpm_policy, tmp_path / algo, **knobs)
