"""DRWR and DAWR: the weights and returns against hand computations, the weighted loss,
the replay/episode store, the learner's two phases, the CLI's official defaults, a
smoke run with checkpoint and resume, and learning tests on the toy task.

Toy task (``rllib_diffusion/ReachTarget-v0``, see test_dppo_learning.py): diffusion BC
is trained on data acting at ``target + 0.5`` (return ≈ 5 of 10); each algorithm must
move the policy towards the target.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.awr.awr import DAWRConfig, DRWRConfig
from rllib_diffusion.algorithms.awr.awr_learner import value_loss, weighted_denoising_loss
from rllib_diffusion.algorithms.awr.awr_rl_module import AWRModelConfig, RWRModelConfig
from rllib_diffusion.algorithms.awr.segments import EpisodeSegments, Segment, flatten
from rllib_diffusion.algorithms.awr.weights import (
    awr_weights,
    discounted_returns,
    rwr_weights,
    td_lambda_targets,
)
from rllib_diffusion.modules.model_config import ConfigError
from tests.algorithms.batches import (
    DA,
    OBS_DIM,
    TA,
    TINY_CRITICS,
    K,
    cli_finetune_config,
    improves_weak_policy,
    moved,
    smoke_and_resume,
    snapshot,
    tiny_learner,
    tiny_policy,
    update,
)


# ------------------------------------------------------------------- pure math
def test_discounted_returns_restart_at_each_episode_end():
    rewards = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    last = np.array([False, False, True, False, True])
    got = discounted_returns(rewards, last, gamma=0.5)
    # 1 + .5·(2 + .5·3) = 2.75; 2 + .5·3 = 3.5; 3; 4 + .5·5 = 6.5; 5.
    np.testing.assert_allclose(got, [2.75, 3.5, 3.0, 6.5, 5.0])


def test_td_lambda_targets_follow_the_reference_recursion_by_hand():
    # Two segments: rows 0-1 (cut, bootstrap V' = 2 at its end), row 2 (terminated).
    rewards = np.array([1.0, 0.0, 1.0])
    values = np.array([0.5, 1.0, 0.25])
    next_values = np.array([1.0, 2.0, 7.0])  # the 7 must be ignored (terminated)
    last = np.array([False, True, True])
    terminated = np.array([False, False, True])
    got = td_lambda_targets(
        rewards, values, next_values, last, terminated, gamma=0.5, lam=0.5, alpha=0.8
    )
    # δ = r + γ·V' − V: δ0 = 1 + .5 − .5 = 1, δ1 = 0 + 1 − 1 = 0, δ2 = 1 − .25 = .75.
    # u1 = .8·0 = 0; u0 = .8·1 + .25·u1 = .8; u2 = .8·.75 = .6 (nothing carried in).
    np.testing.assert_allclose(got, [0.5 + 0.8, 1.0 + 0.0, 0.25 + 0.6])


def test_drwr_weights_are_the_reference_normalised_exponent_clipped_at_its_max():
    returns = np.array([0.0, 1.0, 3.0])
    got = rwr_weights(returns, beta=10.0, max_weight=100.0)
    # Population std over the iteration, + 1e-3 (train_rwr_diffusion_agent.py).
    mean, std = 4.0 / 3.0, math.sqrt(((4 / 3) ** 2 + (1 / 3) ** 2 + (5 / 3) ** 2) / 3)
    expected = [min(math.exp(10 * (r - mean) / (std + 1e-3)), 100.0) for r in returns]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[2] == 100.0 and got[0] == pytest.approx(math.exp(-10 * (4 / 3) / (std + 1e-3)))
    np.testing.assert_allclose(
        rwr_weights(returns, 0.1, 100.0)[2], math.exp(0.1 * 5 / 3 / (std + 1e-3))
    )


def test_dawr_weights_are_clipped_at_100():
    adv = torch.tensor([0.0, 0.0, 0.0, 3.0])
    got = awr_weights(adv, beta=10.0, max_weight=100.0)
    # mean .75, unbiased std sqrt((3·.75² + 2.25²)/3) = 1.5: z = −.5, −.5, −.5, 1.5.
    z = (torch.tensor([-0.75, -0.75, -0.75, 2.25])) / (1.5 + 1e-6)
    torch.testing.assert_close(got[:3], torch.exp(10 * z[:3]))
    assert float(got[3]) == 100.0  # exp(15) clipped
    assert float(awr_weights(adv, beta=1.0, max_weight=100.0)[3]) == pytest.approx(
        math.exp(2.25 / (1.5 + 1e-6))
    )


def test_weighted_denoising_loss_by_hand():
    pred = torch.tensor([[[1.0, 1.0]], [[0.0, 2.0]]])  # (B=2, Ta=1, Da=2)
    target = torch.zeros_like(pred)
    # Per row: mean((1, 1)²) = 1 and mean((0, 2)²) = 2; (2·1 + 0.5·2) / 2 = 1.5.
    loss = weighted_denoising_loss(pred, target, torch.tensor([2.0, 0.5]))
    assert float(loss) == pytest.approx(1.5)
    assert float(value_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0]))) == 2.5


# --------------------------------------------------------------- episode store
def _segment(n: int, start: float = 0.0, *, done: bool = False, terminated: bool = False):
    obs = (start + np.arange(n + 1, dtype=np.float32))[:, None].repeat(OBS_DIM, 1)
    acts = np.full((n, TA, DA), start, np.float32)
    return Segment(obs, acts, start + np.arange(n, dtype=np.float64), terminated, done)


def test_store_joins_an_episode_across_iterations_and_evicts_oldest_first():
    store = EpisodeSegments(capacity=7)
    store.add_segment("a", _segment(3, 0.0))
    store.add_segment("b", _segment(2, 100.0, done=True, terminated=True))
    store.add_segment("a", _segment(2, 3.0, done=True))  # continues "a" at obs 3
    assert len(store) == 7
    a, b = store.segments()
    np.testing.assert_array_equal(a.obs[:, 0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(a.rewards, [0, 1, 2, 3, 4])
    assert a.done and not a.terminated and b.terminated
    store.add_segment("c", _segment(3, 200.0))  # 10 > 7: drop "a"'s 3 oldest rows
    assert len(store) == 7
    np.testing.assert_array_equal(store.segments()[0].rewards, [3, 4])
    rows = flatten(store.segments())
    # obs: a (3 obs), b (3 obs), c (4 obs); rows index their own observation.
    np.testing.assert_array_equal(rows.row_obs, [0, 1, 3, 4, 6, 7, 8])
    np.testing.assert_array_equal(rows.last, [0, 1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(rows.terminated, [0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(rows.obs[rows.row_obs + 1, 0], rows.rewards + 1)
    assert [len(s) for s in store.pop_done()] == [2, 2] and len(store) == 3
    copy = EpisodeSegments(capacity=7)
    copy.set_state(store.get_state())  # a checkpoint's round trip
    assert [len(s) for s in copy.segments()] == [len(s) for s in store.segments()] == [3]
    np.testing.assert_array_equal(copy.segments()[0].obs, store.segments()[0].obs)
    store.drop_open(keep=set())
    assert len(store) == 0 and len(copy) == 3


# --------------------------------------------------------------- configs
def test_model_configs_refuse_flow_and_carry_the_critic():
    with pytest.raises(ConfigError, match="Pretrain with --sampler ddpm"):
        RWRModelConfig(policy=tiny_policy("flow"))
    d = AWRModelConfig(policy=tiny_policy()).to_dict()
    assert d["critic_hidden_dims"] == [256, 256, 256]
    assert isinstance(RWRModelConfig.from_dict(d), AWRModelConfig)
    assert type(RWRModelConfig.from_dict(RWRModelConfig(policy=tiny_policy()).to_dict())) is (
        RWRModelConfig
    )
    with pytest.raises(ValueError, match="max_weight must be > 0"):
        DAWRConfig().training(max_weight=0.0).validate()


@pytest.mark.parametrize("algo", ["drwr", "dawr"])
def test_cli_builds_each_with_the_official_hopper_defaults(algo, fake_bc_checkpoint):
    config = cli_finetune_config(algo, fake_bc_checkpoint)
    official = dict(actor_lr=1e-4, weight_decay=0.0, beta=10.0, max_weight=100.0, gamma=0.99)
    official["minibatch_size"] = 1000
    if algo == "drwr":
        assert type(config) is DRWRConfig
        official["num_epochs"] = 16
    else:
        assert type(config) is DAWRConfig
        official.update(
            critic_lr=1e-3,
            reward_scale=0.01,
            buffer_decisions=5000 * 40,
            replay_ratio=64,
            critic_update_ratio=4,
            td_lambda=0.95,
            td_alpha=0.95,
            critic_warmup_iterations=0,
        )
    assert {k: getattr(config, k) for k in official} == official
    assert config.grad_clip is None
    assert config.model_config["min_sampling_std"] == 0.1
    assert ("critic_hidden_dims" in config.model_config) == (algo == "dawr")
    # A typed knob reaches the config; one the algorithm does not use is refused.
    assert cli_finetune_config(algo, fake_bc_checkpoint, "--beta", "2").beta == 2.0
    foreign = "--critic-lr" if algo == "drwr" else "--num-epochs"
    with pytest.raises(ConfigError, match=f"{foreign} is not a knob of {algo}"):
        cli_finetune_config(algo, fake_bc_checkpoint, foreign, "3")


# ------------------------------------------------------------------- learner
def test_learner_loss_is_the_weighted_denoising_loss_of_the_module(ray_session):
    learner, config, module = tiny_learner(DRWRConfig, RWRModelConfig)
    assert not module.has_critic and not hasattr(module, "critic")
    g = torch.Generator().manual_seed(0)
    batch = {
        Columns.OBS: torch.randn(6, OBS_DIM, generator=g),
        Columns.ACTIONS: torch.rand(6, TA, DA, generator=g) * 2 - 1,
        C.SAMPLE_WEIGHTS: torch.tensor([0.0, 1.0, 2.0, 100.0, 0.5, 3.0]),
    }
    torch.manual_seed(1)
    fwd = module.forward_train(batch)
    loss = learner.compute_loss_for_module(
        module_id="default_policy", config=config, batch=batch, fwd_out=fwd
    )
    # Reference: noise the chunks the same way and weight each row's mean squared error.
    torch.manual_seed(1)
    x0 = batch[Columns.ACTIONS]
    noise = torch.randn_like(x0)
    t = torch.randint(0, K, (6,))
    eps = module.actor(module.schedule.q_sample(x0, t, noise), t, batch[Columns.OBS])
    per_row = ((eps - noise) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(loss, (per_row * batch[C.SAMPLE_WEIGHTS]).mean())


def test_dawr_phases_step_only_their_network(ray_session):
    learner, _, module = tiny_learner(
        DAWRConfig, AWRModelConfig, TINY_CRITICS, actor_lr=1e-2, critic_lr=1e-2
    )
    obs = np.random.default_rng(0).normal(size=(32, OBS_DIM)).astype(np.float32)
    critic_rows = {Columns.OBS: obs, Columns.VALUE_TARGETS: np.ones(32, np.float32)}
    actor0, critic0 = snapshot(module.actor), snapshot(module.critic)
    res = update(learner, critic_rows, minibatch_size=16, num_epochs=1)
    assert moved(module.critic, critic0) and not moved(module.actor, actor0)
    assert "losses/critic_loss" in res
    actor_rows = {
        Columns.OBS: obs,
        Columns.ACTIONS: np.zeros((32, TA, DA), np.float32),
        Columns.ADVANTAGES: np.linspace(-1, 1, 32).astype(np.float32),
    }
    critic1 = snapshot(module.critic)
    res = update(learner, actor_rows, minibatch_size=32, num_epochs=1)
    assert moved(module.actor, actor0) and not moved(module.critic, critic1)
    # z of linspace(−1, 1, 32) reaches 1.68: exp(16.8) is clipped at 100.
    assert 0 < float(res["charts/weight_at_max"]) < 0.5
    values = learner.values(torch.as_tensor(obs))
    assert values.shape == (32,) and torch.isfinite(values).all()


# --------------------------------------------------------------- toy-task runs
@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dawr", "drwr"])
def test_finetune_smoke_evaluation_checkpoint_and_resume(algo, pretrained, tmp_path):
    """On the session's tiny Hopper DiffusionBC policy (shared with DPPO's tests). Slow:
    49 s for DAWR (two builds, four evaluations) at load average 17-50 on 2 cores."""
    run = smoke_and_resume(algo, pretrained, tmp_path / algo, 400, minibatch_size=16)
    lines = run["lines"]
    # 40 decisions of 4 actions (<= 160 env steps: episodes end inside chunks) per
    # iteration, the last sized to what is left (and topped up in the same iteration
    # where episodes ended inside a chunk),
    # so the run ends within one vector step (2 envs x 4 actions) of the budget
    # instead of up to a whole iteration above it.
    assert len(lines) >= 3 and 400 <= lines[-1]["env_steps"] <= 408
    assert all("eval_return_mean" in x for x in lines)
    # (A last iteration of a few decisions may end no episode: DRWR then has nothing to
    # train.)
    assert any(x.get("trained_decisions", 0) > 0 and x["actor_loss"] > 0 for x in lines[1:])
    if algo == "dawr":  # every decision (>= 100 of <= 4 env steps each) is buffered
        assert 100 <= lines[-1]["buffer_decisions"] <= lines[-1]["env_steps"]
        assert lines[-1]["critic_loss"] >= 0
    assert ("critic_hidden_dims" in run["meta"]["model_config"]) == (algo == "dawr")
    steps = [x["env_steps"] for x in run["resumed"]["progress"]]
    assert len(steps) == len(lines) + 1 and steps[-1] >= lines[-1]["env_steps"] + 1
    # The last iteration needed 1 env step: one vector step of the 2 envs.
    assert steps[-1] - steps[-2] <= 8
    if algo == "dawr":  # the replay buffer came back with the checkpoint (else <= 8)
        assert run["resumed"]["progress"][-1]["buffer_decisions"] > lines[-1]["buffer_decisions"]


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("algo", ["drwr", "dawr"])
def test_each_improves_a_weak_ddpm_policy_with_the_official_defaults(
    algo, weak_ddpm_policy, tmp_path
):
    summary = improves_weak_policy(algo, weak_ddpm_policy, tmp_path / algo)
    assert all(x["trained_decisions"] > 0 for x in summary["progress"][1:])
