"""Online DQL and IDQL fine-tuning from a DiffusionBC checkpoint with an empty replay
(``finetune --algo dql|idql``): the losses against hand computations, the learners'
steps, the CLI's official defaults, the loaded actor acting exactly as the BC policy, the
replay growing from empty by the sampled decisions, a smoke run with checkpoint and exact
resume (slow) and learning tests on the toy task (slow; see test_qgrad.py).
"""

from __future__ import annotations

import json

import numpy as np
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
from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS
from rllib_diffusion.envs.chunking import chunk_spaces
from tests.algorithms.test_awr import DA, OBS_DIM, TA, _fake_checkpoint, _pretrain, policy
from tests.algorithms.test_qgrad import LinearTwinQ

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
    config_cls, model_cls = CLASSES[algo]
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    model = model_cls(policy=policy(), critic_hidden_dims=(8,))
    config = (
        config_cls()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(**training)
        .rl_module(model_config=model.to_dict())
    )
    torch.manual_seed(0)
    learner = config.build_learner(spaces={"default_policy": (obs_space, act_space)})
    return learner, learner.module["default_policy"].unwrapped()


def _batch(n: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        Columns.OBS: torch.randn(n, OBS_DIM, generator=g),
        Columns.ACTIONS: torch.rand(n, TA * DA, generator=g) * 2 - 1,
        Columns.REWARDS: torch.tensor([10.0, 20.0, 0.0, -10.0]),
        Columns.NEXT_OBS: torch.randn(n, OBS_DIM, generator=g),
        Columns.TERMINATEDS: torch.tensor([False, True, False, True]),
    }


def test_dql_critic_loss_uses_scaled_rewards_the_terminal_mask_and_the_smaller_target(
    ray_session,
):
    learner, module = _learner("dql", gamma=0.5, reward_scale=0.1)
    module.critic_target = LinearTwinQ(torch.zeros(2, TA * DA), c=(3.0, 2.0))  # min = 2
    batch = _batch()
    q = module.critic(batch[Columns.OBS], batch[Columns.ACTIONS]).detach()
    losses = learner.compute_losses(fwd_out={"default_policy": {}}, batch={"default_policy": batch})
    y = torch.tensor([2.0, 2.0, 1.0, -1.0])  # 0.1·r + 0.5·(1 − d)·2
    torch.testing.assert_close(losses["default_policy"], ((q - y) ** 2).mean(dim=1).sum())


def test_idql_value_and_critic_losses_by_hand(ray_session):
    learner, module = _learner("idql", gamma=0.5, reward_scale=0.1, expectile=0.8)
    module.critic_target = LinearTwinQ(torch.zeros(2, TA * DA), c=(3.0, 2.0))  # min Q' = 2
    module.value = ConstantV(1.0)
    batch = _batch()
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
    obs, replay = _batch()[Columns.OBS], _batch()[Columns.ACTIONS]
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


@pytest.mark.parametrize("algo", ["dql", "idql"])
def test_learner_steps_the_critics_and_the_actor_only_with_actor_rows(algo, ray_session):
    from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

    learner, module = _learner(algo, actor_lr=1e-2, critic_lr=1e-2, tau=0.5)

    def snap(net):
        return [p.detach().clone() for p in net.parameters()]

    def moved(net, before):
        return any(not torch.equal(p, q) for p, q in zip(net.parameters(), before))

    rng = np.random.default_rng(0)
    rows = {
        Columns.OBS: rng.normal(size=(16, OBS_DIM)).astype(np.float32),
        Columns.ACTIONS: rng.uniform(-1, 1, (16, TA * DA)).astype(np.float32),
        Columns.REWARDS: np.ones(16, np.float32),
        Columns.NEXT_OBS: rng.normal(size=(16, OBS_DIM)).astype(np.float32),
        Columns.TERMINATEDS: np.zeros(16, bool),
    }

    def update(batch):
        ma = MultiAgentBatch({"default_policy": SampleBatch(batch)}, env_steps=16)
        return learner.update(batch=ma)["default_policy"]

    actor0, critic0, target0 = snap(module.actor), snap(module.critic), snap(module.critic_target)
    res = update(rows)
    assert moved(module.critic, critic0) and moved(module.critic_target, target0)
    assert not moved(module.actor, actor0) and "losses/actor_loss" not in res
    res = update(rows | {ACTOR_OBS: rows[Columns.OBS], ACTOR_ACTIONS: rows[Columns.ACTIONS]})
    assert moved(module.actor, actor0) and "losses/actor_loss" in res
    assert ("losses/value_loss" in res) == (algo == "idql")


# ----------------------------------------------------------------------- CLI
@pytest.mark.parametrize("algo", ["dql", "idql"])
def test_cli_builds_each_with_the_official_hopper_defaults(algo, tmp_path):
    from rllib_diffusion.algorithms.denoiser_finetune import denoiser_finetune_config
    from rllib_diffusion.algorithms.finetune_run import validated
    from rllib_diffusion.cli import build_parser, finetune_settings_from_args
    from rllib_diffusion.modules.model_config import ConfigError

    ckpt = _fake_checkpoint(tmp_path)
    args = build_parser().parse_args(["finetune", "--algo", algo, "--checkpoint", ckpt])
    config = validated(denoiser_finetune_config(finetune_settings_from_args(args)), algo)
    assert type(config) is CLASSES[algo][0]
    official = dict(actor_lr=1e-4, critic_lr=1e-3, reward_scale=0.01, gamma=0.99)
    official |= dict(minibatch_size=1000, critic_warmup_decisions=80_000)
    official |= dict(buffer_decisions=1_000_000)
    if algo == "dql":
        official |= dict(tau=0.005, replay_ratio=16, eta=1.0, bc_actions="sampled")
    else:
        official |= dict(tau=0.001, replay_ratio=128, expectile=0.8)
        model = config.model_config
        assert (model["num_candidates"], model["exploration_expectile"]) == (20, 0.7)
        assert model["expectile_exploration"] is True
    assert {k: getattr(config, k) for k in official} == official
    assert config.model_config["min_sampling_std"] == 0.1
    assert config.model_config["critic_hidden_dims"] == [256, 256, 256]
    foreign = "--expectile" if algo == "dql" else "--eta"
    args = build_parser().parse_args(
        ["finetune", "--algo", algo, "--checkpoint", ckpt, foreign, "0.5"]
    )
    with pytest.raises(ConfigError, match=f"{foreign} is not a knob of {algo}"):
        finetune_settings_from_args(args)


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
                torch.testing.assert_close(ours, theirs)

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
def _finetune(algo: str, bc: dict, out, **kw) -> dict:
    from rllib_diffusion.algorithms.finetune_run import FinetuneSettings, finetune

    return finetune(
        FinetuneSettings.of(algo=algo, checkpoint=bc["checkpoint"], out_dir=str(out), **kw)
    )


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dql", "idql"])
def test_finetune_smoke_evaluation_checkpoint_and_resume(algo, pretrained, tmp_path):
    """On the session's tiny Hopper DiffusionBC policy (shared with DPPO's tests)."""
    out = tmp_path / algo
    bc = {"checkpoint": str(pretrained[0] / "checkpoint")}
    common = dict(
        num_envs_per_env_runner=2,
        decisions_per_iteration=40,
        eval_interval=1,
        eval_episodes=2,
        checkpoint_interval=1,
        knobs={"minibatch_size": 16, "critic_warmup_decisions": 0},
    )
    summary = _finetune(algo, bc, out, env_steps=200, **common)
    lines = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    assert len(lines) >= 3 and 200 <= lines[-1]["env_steps"] <= 210
    assert lines[-1]["trained_decisions"] > 0 and lines[-1]["critic_loss"] >= 0
    assert 50 <= lines[-1]["buffer_decisions"] < 80
    assert summary["final_evaluation"]["num_episodes"] == 2
    meta = json.loads((out / "checkpoint" / "rllib_diffusion.json").read_text())
    assert meta["algorithm"] == algo.upper() and meta["env_steps"] == lines[-1]["env_steps"]
    budget = lines[-1]["env_steps"] + 1
    resumed = _finetune(algo, bc, out, env_steps=budget, resume=True, **common)
    # The replay came back with the checkpoint (one more vector step of 2 decisions).
    assert resumed["progress"][-1]["buffer_decisions"] == lines[-1]["buffer_decisions"] + 2


@pytest.fixture(scope="module")
def weak_policy(ray_session, tmp_path_factory):
    """Diffusion BC (K = 10, DDPM) on the biased toy data (as DIPO/QSM's test)."""
    return _pretrain(tmp_path_factory.mktemp("replay_ft_weak"), 1500, (64, 64), 10)


@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("algo", ["dql", "idql"])
def test_each_improves_a_weak_ddpm_policy(algo, weak_policy, tmp_path):
    """Official defaults but a warm-up of 2 iterations and minibatches of 256 (the
    budget here is 8,000 env steps, not millions), and for IDQL an actor lr of 1e-3 and
    Q-greedy exploration (``expectile_exploration=False``): its actor only regresses the
    replay's actions, which the reference's 0.7/0.3 expectile weights select weakly, at
    lr 1e-4 over ≈ 3,500 steps (measured with those: 5.19 -> 5.97), and its deterministic
    candidates are nearly one action, so ranking them alone gains little."""
    knobs = {"critic_warmup_decisions": 1000, "minibatch_size": 256}
    if algo == "idql":
        knobs |= {"actor_lr": 1e-3, "expectile_exploration": False}
    summary = _finetune(
        algo,
        weak_policy,
        tmp_path / algo,
        env_steps=8000,
        num_envs_per_env_runner=10,
        decisions_per_iteration=500,
        eval_interval=0,
        eval_episodes=20,
        checkpoint_interval=0,
        knobs=knobs,
    )
    before = summary["start_evaluation"]["episode_return_mean"]
    after = summary["final_evaluation"]["episode_return_mean"]
    print(json.dumps({"algo": algo, "before": before, "after": after}))
    assert before < 6.0, "the pretrained policy should be weak (biased data)"
    assert after > before + 1.0, f"{algo} did not improve the policy: {before:.2f} -> {after:.2f}"
