"""Online DQL and IDQL fine-tuning from a DiffusionBC checkpoint with an empty replay
(``finetune --algo dql|idql``): the losses against hand computations, the learners'
steps, the CLI's official defaults, the loaded actor acting exactly as the BC policy, the
replay growing from empty by the sampled decisions, a smoke run with checkpoint and exact
resume (slow) and learning tests on the toy task (slow; see test_qgrad.py).
"""

from __future__ import annotations

import pytest
import torch
from ray.rllib.core.columns import Columns
from torch import nn

from rllib_diffusion.algorithms.diffusion_ql.finetune import DQLConfig, DQLModelConfig
from rllib_diffusion.algorithms.diffusion_ql.finetune_learner import dql_actor_loss
from rllib_diffusion.algorithms.idql.finetune import (
    IDQLFinetuneConfig,
    IDQLFinetuneModelConfig,
    expectile_weights,
)
from rllib_diffusion.modules.model_config import ConfigError
from tests.algorithms.batches import (
    DA,
    TA,
    TINY_CRITICS,
    LinearTwinQ,
    cli_finetune_config,
    improves_weak_policy,
    moved,
    replay_finetune_smoke,
    replay_learner_steps,
    snapshot,
    td_batch,
    tiny_learner,
)

CLASSES = {
    "dql": (DQLConfig, DQLModelConfig),
    "idql": (IDQLFinetuneConfig, IDQLFinetuneModelConfig),
}


class ConstantV(nn.Module):
    """``V(s) = v`` for every state: ``(B, Do) -> (B, 1)``."""

    def __init__(self, v: float) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.tensor(v))

    def forward(self, obs):
        return self.v.expand(obs.shape[0], 1)


# ------------------------------------------------------------------- pure math
def test_expectile_weights_by_hand():
    adv = torch.tensor([[-1.0, 0.0, 2.0]])
    torch.testing.assert_close(expectile_weights(adv, 0.7), torch.tensor([[0.3, 0.7, 0.7]]))


def _learner(algo: str, **training):
    """A seeded local learner of ``algo`` with tiny critics: ``(learner, module)``."""
    learner, _, module = tiny_learner(*CLASSES[algo], TINY_CRITICS, **training)
    return learner, module


def test_dql_critic_loss_uses_scaled_rewards_the_terminal_mask_and_the_smaller_target(
    ray_session,
):
    learner, module = _learner("dql", gamma=0.5, reward_scale=0.1)
    module.critic_target = LinearTwinQ(torch.zeros(2, TA * DA), c=(3.0, 2.0))  # min = 2
    batch = td_batch()
    q = module.critic(batch[Columns.OBS], batch[Columns.ACTIONS]).detach()
    losses = learner.compute_losses(fwd_out={"default_policy": {}}, batch={"default_policy": batch})
    y = torch.tensor([2.0, 2.0, 1.0, -1.0])  # 0.1·r + 0.5·(1 − d)·2
    torch.testing.assert_close(losses["default_policy"], ((q - y) ** 2).mean(dim=1).sum())


def test_idql_value_and_critic_losses_by_hand(ray_session):
    learner, module = _learner("idql", gamma=0.5, reward_scale=0.1, expectile=0.8)
    module.critic_target = LinearTwinQ(torch.zeros(2, TA * DA), c=(3.0, 2.0))  # min Q' = 2
    module.value = ConstantV(1.0)
    batch = td_batch()
    q = module.critic(batch[Columns.OBS], batch[Columns.ACTIONS]).detach()
    losses = learner.compute_losses(fwd_out={"default_policy": {}}, batch={"default_policy": batch})
    value = 0.8 * (2.0 - 1.0) ** 2  # u = 2 − 1 > 0: weight τ
    y = torch.tensor([1.5, 2.0, 0.5, -1.0])  # 0.1·r + 0.5·(1 − d)·V(s') with V = 1
    torch.testing.assert_close(
        losses["default_policy"], value + ((q - y) ** 2).mean(dim=1).sum(), atol=1e-5, rtol=0
    )


def test_dql_actor_loss_is_bc_plus_eta_times_the_normalised_q_of_the_own_sample(ray_session):
    _, module = _learner("dql")
    w = torch.randn(2, TA * DA, generator=torch.Generator().manual_seed(1))
    module.critic = LinearTwinQ(w)
    obs, replay = td_batch()[Columns.OBS], td_batch()[Columns.ACTIONS]
    torch.manual_seed(3)
    total, bc, q_term = dql_actor_loss(module, obs, replay, eta=2.5, bc_actions="sampled")
    torch.testing.assert_close(total, bc + 2.5 * q_term)
    torch.manual_seed(3)  # the same exploring sample â: the loss's first random draw
    q = (w @ module.sample(obs, deterministic=False).flatten(1).T).detach()
    options = [-q[0].mean() / q[1].abs().mean(), -q[1].mean() / q[0].abs().mean()]
    assert any(torch.allclose(q_term.detach(), o) for o in options)
    assert total.requires_grad and bc > 0
    _, bc_replay, _ = dql_actor_loss(module, obs, replay, eta=1.0, bc_actions="replay")
    assert bc_replay.requires_grad


def _dql_actor_gradients(after_critic: bool, seed: int = 5):
    """One DQL step's gradients (``compute_losses`` + ``compute_gradients``) on replay
    rows that are also the actor's rows, the twin order fixed to (0, 1), a big critic lr
    so that its step changes the critic a lot; and, by hand from a copy of the module
    before the step, the actor's gradient with the critic after one Adam step on its TD
    loss (the reference's order) and with the critic before it.
    Returns ``(learner, module, grads, after, before, critic_before_step)``."""
    import copy
    from unittest import mock

    from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS
    from rllib_diffusion.algorithms.replay_finetune_learner import twin_critic_step
    from tests.algorithms.batches import replay_rows

    learner, module = _learner("dql", critic_lr=0.5, actor_after_critic_step=after_critic)
    rows = {k: torch.as_tensor(v) for k, v in replay_rows().items()}
    obs, actions = rows[Columns.OBS], rows[Columns.ACTIONS]
    twin_order = mock.patch("torch.randperm", return_value=torch.tensor([0, 1]))
    start = copy.deepcopy(module)
    with twin_order:
        torch.manual_seed(seed)
        batch = dict(rows) | {ACTOR_OBS: obs, ACTOR_ACTIONS: actions}
        losses = learner.compute_losses(
            fwd_out={"default_policy": {}}, batch={"default_policy": batch}
        )
        grads = learner.compute_gradients(losses)
        expected = {}
        for order in ("after", "before"):
            ref = copy.deepcopy(start)
            torch.manual_seed(seed)  # the TD targets' next actions: the step's first draw
            scaled = dict(rows) | {Columns.REWARDS: 0.01 * rows[Columns.REWARDS]}
            critic_loss, _ = twin_critic_step(ref, scaled, 0.99)
            if order == "after":
                optim = torch.optim.Adam(ref.critic.parameters(), lr=0.5)
                critic_loss.backward()
                optim.step()
            actor, _, _ = dql_actor_loss(ref, obs, actions, eta=1.0, bc_actions="sampled")
            expected[order] = torch.autograd.grad(actor, list(ref.actor.parameters()))
    return learner, module, grads, expected["after"], expected["before"], start.critic


def test_dql_actor_loss_sees_the_critic_after_its_step_as_the_reference(ray_session):
    learner, module, grads, after, before, critic0 = _dql_actor_gradients(after_critic=True)
    ours = [grads[learner.get_param_ref(p)] for p in module.actor.parameters()]
    for mine, expected in zip(ours, after):
        torch.testing.assert_close(mine, expected, atol=1e-5, rtol=1e-4)
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(after, before))
    # The critic stepped already (once): no critic gradient is left for apply_gradients.
    assert not any(learner.get_param_ref(p) in grads for p in module.critic.parameters())
    assert moved(module.critic, snapshot(critic0))


def test_dql_one_forward_order_sees_the_critic_before_its_step(ray_session):
    learner, module, grads, _, before, critic0 = _dql_actor_gradients(after_critic=False)
    ours = [grads[learner.get_param_ref(p)] for p in module.actor.parameters()]
    for mine, expected in zip(ours, before):
        torch.testing.assert_close(mine, expected, atol=1e-5, rtol=1e-4)
    assert not moved(module.critic, snapshot(critic0))  # it steps in apply_gradients


@pytest.mark.parametrize("algo", ["dql", "idql"])
def test_learner_steps_the_critics_and_the_actor_only_with_actor_rows(algo, ray_session):
    learner, module = _learner(algo, actor_lr=1e-2, critic_lr=1e-2, tau=0.5)
    res, _ = replay_learner_steps(learner, module)
    assert ("losses/value_loss" in res) == (algo == "idql")


# ----------------------------------------------------------------------- CLI
@pytest.mark.parametrize("algo", ["dql", "idql"])
def test_cli_builds_each_with_the_official_hopper_defaults(algo, fake_bc_checkpoint):
    config = cli_finetune_config(algo, fake_bc_checkpoint)
    assert type(config) is CLASSES[algo][0]
    official = dict(actor_lr=1e-4, critic_lr=1e-3, reward_scale=0.01, gamma=0.99)
    official |= dict(minibatch_size=1000, critic_warmup_decisions=80_000)
    official |= dict(buffer_decisions=1_000_000)
    official |= dict(critic_warmup_replay_ratio=None, critic_warmup_tau=None)
    if algo == "dql":
        official |= dict(tau=0.005, replay_ratio=16, eta=1.0, bc_actions="sampled")
        official |= dict(actor_after_critic_step=True)
    else:
        official |= dict(tau=0.001, replay_ratio=128, expectile=0.8)
        model = config.model_config
        assert (model["num_candidates"], model["exploration_expectile"]) == (20, 0.7)
        assert model["expectile_exploration"] is True
    assert {k: getattr(config, k) for k in official} == official
    assert config.model_config["min_sampling_std"] == 0.1
    assert config.model_config["critic_hidden_dims"] == [256, 256, 256]
    foreign = "--expectile" if algo == "dql" else "--eta"
    with pytest.raises(ConfigError, match=f"{foreign} is not a knob of {algo}"):
        cli_finetune_config(algo, fake_bc_checkpoint, foreign, "0.5")


# ---------------------------------------------------- the tiny Hopper BC policy
def _built(algo: str, ckpt: str, tmp_path, **knobs):
    from rllib_diffusion.algorithms.denoiser_finetune import denoiser_finetune_config
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, validated

    s = FinetuneSettings.of(
        algo=algo,
        checkpoint=ckpt,
        out_dir=str(tmp_path),
        num_envs_per_env_runner=2,
        decisions_per_iteration=20,
        **knobs,
    )
    return validated(denoiser_finetune_config(s), algo).build_algo()


@pytest.mark.parametrize("algo", ["dql", "idql"])
def test_loaded_actor_acts_as_the_bc_policy_and_the_replay_grows_from_empty(
    algo, pretrained, tmp_path
):
    """IDQL with one candidate (its pick among N is the critics'); the warm-up keeps the
    actor as loaded through the first iteration."""
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

    from rllib_diffusion.algorithms.finetune_run import learner_module_copy
    from rllib_diffusion.checkpoints import load_policy_module

    ckpt = str(pretrained[0] / "checkpoint")
    knobs = {"minibatch_size": 8, "critic_warmup_decisions": 1000}
    if algo == "idql":
        knobs["num_candidates"] = 1
    algorithm = _built(algo, ckpt, tmp_path, **knobs)
    try:
        assert len(algorithm.replay) == 0 and algorithm.env_steps_lifetime == 0
        bc, _ = load_policy_module(ckpt)
        obs = torch.randn(6, bc.policy_config.obs_dim, generator=torch.Generator().manual_seed(0))

        def acts_as_bc(module) -> None:
            for forward in ("forward_inference", "forward_exploration"):
                torch.manual_seed(7)
                ours = getattr(module, forward)({Columns.OBS: obs})[Columns.ACTIONS]
                torch.manual_seed(7)
                theirs = getattr(bc, forward)({Columns.OBS: obs})[Columns.ACTIONS]
                # The BC policy clamps its chunks to [-1, 1]; the fine-tuners (as the
                # reference's DQL/IDQL) do not: exploring ones may leave it.
                torch.testing.assert_close(ours.clamp(-1.0, 1.0), theirs)

        acts_as_bc(learner_module_copy(algorithm))
        result = algorithm.train()
        decisions = len(algorithm.replay)
        # Every decision the EnvRunners sampled (20, or a vector step more), nothing else.
        sampled = result[ENV_RUNNER_RESULTS][NUM_ENV_STEPS_SAMPLED_LIFETIME]
        assert decisions == sampled and 20 <= decisions <= 22
        assert 0 < algorithm.env_steps_lifetime <= decisions * bc.policy_config.act_steps
        acts_as_bc(learner_module_copy(algorithm))  # warm-up: the critics alone moved
    finally:
        algorithm.stop()


# --------------------------------------------------------------- toy-task runs
@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dql", "idql"])
def test_finetune_smoke_evaluation_checkpoint_and_resume(algo, pretrained, tmp_path):
    """On the session's tiny Hopper DiffusionBC policy (shared with DPPO's tests)."""
    replay_finetune_smoke(algo, pretrained, tmp_path / algo)


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("algo", ["dql", "idql"])
def test_each_improves_a_weak_ddpm_policy(algo, weak_ddpm_policy, tmp_path):
    """Official defaults but a warm-up of 2 iterations and minibatches of 256 (the
    budget here is 8,000 env steps, not millions), and for IDQL an actor lr of 1e-3 and
    Q-greedy exploration (``expectile_exploration=False``): its actor only regresses the
    replay's actions, which the reference's 0.7/0.3 expectile weights select weakly, at
    lr 1e-4 over ≈ 3,500 steps (measured with those: 5.19 -> 5.97), and its deterministic
    candidates are nearly one action, so ranking them alone gains little."""
    knobs = {"critic_warmup_decisions": 1000, "minibatch_size": 256}
    if algo == "idql":
        knobs |= {"actor_lr": 1e-3, "expectile_exploration": False}
    improves_weak_policy(algo, weak_ddpm_policy, tmp_path / algo, **knobs)


# ------------------------------------------------ warm-up replay ratio and tau
def test_warmup_tau_moves_the_targets_only_in_steps_without_actor_rows(ray_session):
    """``critic_warmup_tau`` 1: a warm-up step (no actor rows) copies the critics into
    their targets; a step with actor rows moves them by ``tau`` 0.1 only."""
    from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS
    from tests.algorithms.batches import replay_rows, update

    learner, module = _learner("dql", critic_lr=1e-2, tau=0.1, critic_warmup_tau=1.0)
    rows = replay_rows()
    update(learner, rows)
    for target, critic in zip(module.critic_target.parameters(), module.critic.parameters()):
        torch.testing.assert_close(target, critic)
    update(learner, rows | {ACTOR_OBS: rows[Columns.OBS], ACTOR_ACTIONS: rows[Columns.ACTIONS]})
    pairs = zip(module.critic_target.parameters(), module.critic.parameters())
    assert any(not torch.allclose(target, critic) for target, critic in pairs)
    default, module = _learner("dql", critic_lr=1e-2, tau=0.1)
    update(default, rows)  # default (None): the warm-up's steps use tau
    pairs = zip(module.critic_target.parameters(), module.critic.parameters())
    assert any(not torch.allclose(target, critic) for target, critic in pairs)


def test_warmup_replay_ratio_applies_only_before_the_actor_moves():
    from types import SimpleNamespace

    from rllib_diffusion.algorithms.replay_finetune import ReplayFinetuneMixin

    ratio = ReplayFinetuneMixin.replay_ratio_now
    warm = SimpleNamespace(config=DQLConfig().training(critic_warmup_replay_ratio=500.0))
    assert (ratio(warm, actor_on=False), ratio(warm, actor_on=True)) == (500.0, 16.0)
    default = SimpleNamespace(config=DQLConfig())
    assert (ratio(default, actor_on=False), ratio(default, actor_on=True)) == (16.0, 16.0)


@pytest.mark.parametrize(
    ("algo", "flag", "value", "error"),
    [
        ("dql", "--critic-warmup-replay-ratio", "0", "--critic-warmup-replay-ratio must be > 0"),
        ("dql", "--critic-warmup-tau", "1.5", r"--critic-warmup-tau must be in \(0, 1\]"),
        ("idql", "--critic-warmup-tau", "0.5", "learner has no warm-up Polyak rate"),
    ],
)
def test_bad_warmup_knobs_are_one_line_errors(algo, flag, value, error, fake_bc_checkpoint):
    with pytest.raises(ValueError, match=error):
        cli_finetune_config(algo, fake_bc_checkpoint, flag, value)
