"""DPPO against the reference implementation's choices (issue 12's DPPO audit): the running
reward scaler carries the discounted return across chunks of one episode, the minibatch
that crosses ``target_kl`` is applied before the update stops, and the critic warm-up
leaves the actor untouched (no BC-regulariser step, no weight decay)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from rllib_diffusion import columns as C
from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dppo.dppo import DPPOConfig
from rllib_diffusion.algorithms.dppo.dppo_connectors import (
    DENOISE_K,
    ExpandDenoisingSteps,
    RunningRewardScaling,
)
from rllib_diffusion.envs.chunking import chunk_spaces
from tests.algorithms.test_dppo import DA, OBS_DIM, TA, model_config

MID = "default_policy"


def _learner(k_ft: int = 2, **training):
    obs_space, act_space = chunk_spaces(OBS_DIM, TA, DA)
    config = (
        DPPOConfig()
        .environment(observation_space=obs_space, action_space=act_space)
        .training(**{"reward_scaling": False, "target_kl": None, **training})
        .rl_module(model_config=model_config("ddpm", k_ft, TA, "mlp"))
    )
    torch.manual_seed(0)
    learner = config.build_learner(spaces={MID: (obs_space, act_space)})
    return learner, config, learner.module[MID].unwrapped()


def _pair_batch(module, n: int = 24) -> MultiAgentBatch:
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, OBS_DIM, generator=g)
    with torch.no_grad():
        out = module.forward_exploration({Columns.OBS: obs})
    rows = {
        Columns.OBS: obs,
        C.CHAINS: out[C.CHAINS],
        C.CHAIN_LOGP: out[C.CHAIN_LOGP],
        Postprocessing.ADVANTAGES: torch.randn(n, generator=g),
        Postprocessing.VALUE_TARGETS: torch.randn(n, generator=g),
    }
    pairs = ExpandDenoisingSteps()(rl_module=None, batch={MID: rows}, episodes=[])[MID]
    return MultiAgentBatch({MID: SampleBatch(dict(pairs))}, env_steps=n)


def _vector(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).clone() for p in params])


# ------------------------------------------------------------------- approx-KL stop
def test_the_minibatch_that_crosses_target_kl_is_applied_then_the_update_stops(ray_session):
    """Reference (``train_ppo_diffusion_agent.py``): optimizer.step(), then ``if approx_kl >
    target_kl: break``. Epoch 1's minibatch has KL 0 (θ = θ_old), epoch 2's crosses the tiny
    target and is still applied, epoch 3 is skipped: 2 actor steps (the old code made 1)."""
    learner, _, module = _learner(target_kl=1e-12, actor_lr=1e-3)
    batch = _pair_batch(module)
    results = learner.update(batch=batch, num_epochs=3, minibatch_size=10_000)[MID]
    assert float(results[M.ACTOR_STEPS]) == 2
    assert float(results[M.KL_STOPPED]) == 1.0


def test_without_target_kl_every_minibatch_is_applied(ray_session):
    learner, _, module = _learner(target_kl=None, actor_lr=1e-3)
    results = learner.update(batch=_pair_batch(module), num_epochs=3, minibatch_size=10_000)[MID]
    assert float(results[M.ACTOR_STEPS]) == 3
    assert float(results[M.KL_STOPPED]) == 0.0


# ------------------------------------------------------------------- critic warm-up
def test_critic_warmup_steps_the_critic_only(ray_session):
    """Reference: during the warm-up only ``critic_optimizer.step()`` runs. With a BC
    regulariser and weight decay on, the old code (actor loss × 0) still moved the actor."""
    learner, _, module = _learner(critic_warmup_iterations=1, bc_loss_coeff=0.5, weight_decay=0.1)
    batch = _pair_batch(module)
    actor0, critic0 = _vector(module.actor_ft.parameters()), _vector(module.critic.parameters())
    learner.update(batch=batch, num_epochs=2, minibatch_size=10_000)
    assert torch.equal(_vector(module.actor_ft.parameters()), actor0)
    assert not torch.equal(_vector(module.critic.parameters()), critic0)
    learner.update(batch=batch, num_epochs=1, minibatch_size=10_000)  # warm-up over
    assert not torch.equal(_vector(module.actor_ft.parameters()), actor0)


# ------------------------------------------------------------------- reward scaling
class _ReferenceScaler:
    """The reference's ``RunningRewardScaler`` written out for the test: a running
    mean/var with prior count 1e-4 (mean 0, var 1) and ``var = M2 / (count − 1)``."""

    def __init__(self) -> None:
        self.count, self.mean, self.var = 1e-4, 0.0, 1.0

    def update(self, rets: list[float]) -> None:
        x = np.asarray(rets, dtype=np.float64)
        delta, n = x.mean() - self.mean, len(x)
        total = self.count + n
        m2 = self.var * self.count + x.var() * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / (total - 1), total

    def scale(self, r: list[float]) -> np.ndarray:
        return np.clip(np.asarray(r) / np.sqrt(self.var + 1e-8), -10, 10)


def _lambda_returns(r: np.ndarray, gamma: float, lam: float) -> np.ndarray:
    """Value targets of a chunk with V ≡ 0 and bootstrap 0: Σ_l (γλ)^l r_{t+l}."""
    out, acc = np.zeros(len(r)), 0.0
    for t in reversed(range(len(r))):
        acc = r[t] + gamma * lam * acc
        out[t] = acc
    return out


def _episode(module, rewards, *, terminated=False, truncated=False, episode=None):
    ep = episode
    if ep is None:
        ep = SingleAgentEpisode(
            observation_space=module.observation_space, action_space=module.action_space
        )
        ep.add_env_reset(observation=np.zeros(OBS_DIM, np.float32))
    for i, r in enumerate(rewards):
        obs = torch.full((1, OBS_DIM), float(i))
        with torch.no_grad():
            out = module.forward_exploration({Columns.OBS: obs})
        last = i == len(rewards) - 1
        ep.add_env_step(
            obs[0].numpy(),
            out[Columns.ACTIONS][0].numpy(),
            r,
            terminated=terminated and last,
            truncated=truncated and last,
            extra_model_outputs={
                C.CHAINS: out[C.CHAINS][0].numpy(),
                C.CHAIN_LOGP: out[C.CHAIN_LOGP][0].numpy(),
                Columns.ACTION_LOGP: out[Columns.ACTION_LOGP][0].numpy(),
            },
        )
    return ep


def _targets(learner, episodes) -> np.ndarray:
    """Value targets of the real steps, one per env step, through the learner pipeline."""
    batch = learner._learner_connector(
        rl_module=learner.module, batch={}, episodes=episodes, shared_data={}, metrics=None
    )[MID]
    first = batch[DENOISE_K] == 0
    mask = batch[Columns.LOSS_MASK].bool() & first
    return batch[Postprocessing.VALUE_TARGETS][mask].numpy()


def test_reward_scaling_carries_the_return_across_two_chunks_of_one_episode(ray_session):
    """Episode A arrives in two chunks (iterations); B ends in the first. The second chunk's
    return starts from A's carried return and RLlib's zero-reward bootstrap step never
    enters the statistics: scaled rewards equal the reference scaler's (the old scaler,
    behind ``AddOneTsToEpisodesAndTruncate``, lost the carry and counted the extra step)."""
    gamma, lam = 0.9, 0.8
    learner, _, module = _learner(reward_scaling=True, gamma=gamma, lambda_=lam)
    module.compute_values = lambda batch, embeddings=None: torch.zeros(len(batch[Columns.OBS]))
    # As an EnvRunner hands them over: the ongoing episode is cut, chunks are numpy'd.
    a1 = _episode(module, [1.0, 2.0])
    a2 = _episode(module, [3.0], terminated=True, episode=a1.cut())
    b = _episode(module, [0.5, -1.0], truncated=True)
    for ep in (a1, a2, b):
        ep.to_numpy()
        ep.rewards.data.flags.writeable = False  # as they arrive from a remote EnvRunner

    ref = _ReferenceScaler()
    ra = [1.0, gamma * 1.0 + 2.0]
    ref.update([*ra, 0.5, gamma * 0.5 - 1.0])
    expected_1 = np.r_[
        _lambda_returns(ref.scale([1.0, 2.0]), gamma, lam),
        _lambda_returns(ref.scale([0.5, -1.0]), gamma, lam),
    ]
    np.testing.assert_allclose(_targets(learner, [a1, b]), expected_1, rtol=1e-5)

    ref.update([gamma * ra[-1] + 3.0])  # carried from the first chunk
    np.testing.assert_allclose(_targets(learner, [a2]), ref.scale([3.0]), rtol=1e-5)
    (scaler,) = learner._reward_scalers()
    assert scaler.count == pytest.approx(ref.count) and scaler.var == pytest.approx(ref.var)
    assert not scaler._returns  # A ended: nothing left to carry


def test_reward_scaler_state_reads_the_earlier_layout():
    """Checkpoints written before the fix saved a population ``m2`` with no prior count."""
    scaler = RunningRewardScaling()
    scaler.set_state({"count": 3, "mean": 4.0, "m2": 26.0})
    assert scaler.var == pytest.approx(13.0) and scaler.count == 3.0
    scaler.set_state(scaler.get_state())
    assert scaler.var == pytest.approx(13.0)
