"""The learners' speed-ups keep their math: the one-sync finite check, the fused
optimizers and the fused EMA (issue 13)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.diffusion_ql import OfflineSettings
from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_learner import ACTOR, CRITIC
from rllib_diffusion.algorithms.diffusion_ql.train import build_offline_config
from rllib_diffusion.utils.optim import adam, all_finite
from tests.algorithms.batches import transition_batch

OBS, ACT = 3, 2
MID = "default_policy"


# ------------------------------------------------------------------ all_finite
def test_all_finite_is_exact():
    ok = [torch.randn(4, 5), torch.randn(7)]
    assert all_finite(ok)
    assert all_finite([])
    assert all_finite([None, ok[0]])
    for bad in (float("nan"), float("inf"), float("-inf")):
        t = torch.randn(7)
        t[3] = bad
        assert not all_finite([ok[0], t])
    both_inf = [torch.tensor([float("inf")]), torch.tensor([float("-inf")])]
    assert not all_finite(both_inf)  # inf − inf = NaN in the total: still caught


def test_all_finite_overflowing_total_of_finite_tensors_is_true():
    big = torch.full((4,), 3e38)  # finite, but the float32 sum overflows to inf
    assert not torch.isfinite(big.sum())
    assert all_finite([big, big])


# ------------------------------------------------------------------ NaN safety
def _dql_learner(**framework):
    settings = OfflineSettings(
        dataset="unused", algo="diffusion_ql", hidden_dims=(16, 16), num_candidates=4
    )
    config, _ = build_offline_config(settings, "/nonexistent", "Hopper-v5", OBS, ACT)
    if framework:
        config.framework(**framework)
    return config.build_learner()


def _update(learner, batch: dict) -> dict:
    sample = SampleBatch({k: v.numpy() for k, v in batch.items()})
    return learner.update(
        batch=MultiAgentBatch({MID: sample}, env_steps=len(sample)),
        timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 0},
    )


def _params(net: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in net.parameters()]


def test_offline_configs_use_the_one_sync_check():
    learner = _dql_learner()
    assert learner.config.torch_skip_nan_gradients is True


def test_nan_critic_gradient_skips_only_the_critic_step():
    """A NaN reward makes the critic's gradients NaN: the critic (weights and Adam state)
    stays as it was, the actor steps, nothing becomes NaN, the skip is counted."""
    learner = _dql_learner()
    module = learner.module[MID].unwrapped()
    batch = transition_batch(8, OBS, ACT)
    batch[Columns.REWARDS][2] = float("nan")
    critic0, actor0 = _params(module.critic), _params(module.actor)
    results = _update(learner, batch)
    for before, after in zip(critic0, module.critic.parameters()):
        assert torch.equal(before, after)
    assert not learner.get_optimizer(MID, CRITIC).state  # Adam never stepped
    assert learner.get_optimizer(MID, ACTOR).state
    assert any(not torch.equal(b, a) for b, a in zip(actor0, module.actor.parameters()))
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert results[MID][M.NONFINITE_STEPS_SKIPPED] == 1
    # A finite batch afterwards trains the critic again.
    _update(learner, transition_batch(8, OBS, ACT, seed=1))
    assert any(not torch.equal(b, a) for b, a in zip(critic0, module.critic.parameters()))


def test_rllib_alone_steps_on_nan_gradients_with_the_flag_on(monkeypatch):
    """Why the mixin exists: with ``torch_skip_nan_gradients=True`` RLlib 2.60 checks
    nothing and the optimizer steps on NaN gradients. If RLlib starts skipping such
    steps itself, this test fails and the mixin can be reconsidered."""
    from ray.rllib.core.learner.torch.torch_learner import TorchLearner

    from rllib_diffusion.algorithms.finite_gradients import SkipNonFiniteStepsMixin

    monkeypatch.setattr(
        SkipNonFiniteStepsMixin,
        "postprocess_gradients",
        lambda self, grads: TorchLearner.postprocess_gradients(self, grads),
    )
    learner = _dql_learner()
    batch = transition_batch(8, OBS, ACT)
    batch[Columns.REWARDS][2] = float("nan")
    _update(learner, batch)
    critic = learner.module[MID].unwrapped().critic
    assert any(not torch.isfinite(p).all() for p in critic.parameters())


def test_rllib_zeroing_path_still_available():
    """``torch_skip_nan_gradients=False``: RLlib's own check zeroes the NaN entries and
    steps; the weights stay finite."""
    learner = _dql_learner(torch_skip_nan_gradients=False)
    module = learner.module[MID].unwrapped()
    batch = transition_batch(8, OBS, ACT)
    batch[Columns.REWARDS][2] = float("nan")
    results = _update(learner, batch)
    assert learner.get_optimizer(MID, CRITIC).state  # stepped (on zeroed gradients)
    assert M.NONFINITE_STEPS_SKIPPED not in results[MID]
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_diffusion_bc_nan_batch_leaves_the_denoiser_unchanged():
    from rllib_diffusion.algorithms.bc.diffusion_bc import DiffusionBCConfig
    from rllib_diffusion.envs.chunking import chunk_spaces
    from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

    pol = DiffusionPolicyConfig(obs_dim=OBS, action_dim=ACT, horizon=2, act_steps=2,
                                hidden_dims=(16, 16), denoising_steps=5)  # fmt: skip
    obs_space, act_space = chunk_spaces(OBS, 2, ACT)
    config = (
        DiffusionBCConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .rl_module(model_config=pol.to_dict())
    )
    assert config.torch_skip_nan_gradients is True
    learner = config.build_learner()
    module = learner.module[MID].unwrapped()
    obs = torch.randn(8, OBS)
    obs[0, 0] = float("nan")
    net0 = _params(module.net)
    batch = {Columns.OBS: obs, Columns.ACTIONS: torch.rand(8, 2 * ACT) * 2 - 1}
    results = _update(learner, batch)
    for before, after in zip(net0, module.net.parameters()):
        assert torch.equal(before, after)
    assert results[MID][M.NONFINITE_STEPS_SKIPPED] == 1
    assert all(np.isfinite(p.detach().numpy()).all() for p in module.parameters())


# ------------------------------------------------------------------ fused Adam
def _net_and_grads(steps: int = 3):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.Mish(), torch.nn.Linear(32, 3))
    grads = [[torch.randn_like(p) for p in net.parameters()] for _ in range(steps)]
    return net, grads


def _run(net, optimizer, grads) -> torch.Tensor:
    for step in grads:
        for p, g in zip(net.parameters(), step):
            p.grad = g.clone()
        optimizer.step()
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


@pytest.mark.parametrize("decoupled", [False, True])
def test_fused_adam_matches_the_per_parameter_update(decoupled):
    net, grads = _net_and_grads()
    kw = {"lr": 1e-2, "weight_decay": 0.1 if decoupled else 0.0}
    ref_net = copy.deepcopy(net)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref = _run(ref_net, kind(ref_net.parameters(), foreach=False, **kw), grads)
    fast_opt = adam(net.parameters(), decoupled=decoupled, **kw)
    assert isinstance(fast_opt, kind) and fast_opt.param_groups[0]["fused"] is True
    fast = _run(net, fast_opt, grads)
    start = torch.cat([p.detach().reshape(-1) for p in _net_and_grads()[0].parameters()])
    assert not torch.equal(fast, start)
    torch.testing.assert_close(fast, ref, rtol=1e-6, atol=1e-6)


def test_fused_adam_stays_fused_after_loading_a_non_fused_state():
    net, grads = _net_and_grads()
    ref_net = copy.deepcopy(net)
    old = torch.optim.Adam(ref_net.parameters(), lr=1e-2)
    _run(ref_net, old, grads[:1])
    net.load_state_dict(ref_net.state_dict())
    fast_opt = adam(net.parameters(), lr=1e-2)
    fast_opt.load_state_dict(copy.deepcopy(old.state_dict()))  # as from a file
    assert fast_opt.param_groups[0]["fused"] is True
    torch.testing.assert_close(
        _run(net, fast_opt, grads[1:]), _run(ref_net, old, grads[1:]), rtol=1e-6, atol=1e-6
    )


def test_offline_learners_use_fused_adam():
    learner = _dql_learner()
    for name in (ACTOR, CRITIC):
        assert learner.get_optimizer(MID, name).param_groups[0]["fused"] is True
