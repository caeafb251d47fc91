"""DyDiff's pieces without Ray: segments, the ensemble's disagreement, the joint loss
packing, filters (exact), terminations, valid steps, and action injection using the
current policy (an untrained small model suffices for the plumbing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.dydiff.dydiff_rl_module import joint_prediction_and_target
from rllib_diffusion.algorithms.dydiff.dynamics_ensemble import (
    ensemble_disagreement,
    ensemble_targets,
)
from rllib_diffusion.algorithms.dydiff.rollout import (
    Rollouts,
    disagreement_filter,
    filter_rollouts,
    hardmax_filter,
    inject_actions,
    softmax_filter,
    termination_fn,
)
from rllib_diffusion.data import Episode, EpisodeDataset
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.data.segments import make_segments
from tests.synthetic.dydiff_toy import toy_module, toy_segments


# -------------------------------------------------------------------------- segments
def _episode(t: int, offset: float, terminal: bool) -> Episode:
    obs = offset + np.arange(t + 1, dtype=np.float32)[:, None].repeat(2, 1)
    term = np.zeros(t, bool)
    term[-1] = terminal
    return Episode(
        observations=obs,
        actions=offset + np.arange(t, dtype=np.float32)[:, None],
        rewards=offset + np.arange(t, dtype=np.float32),
        terminations=term,
        truncations=~term & (np.arange(t) == t - 1),
    )


def test_segments_are_consecutive_transitions_within_one_episode() -> None:
    data = EpisodeDataset(
        episodes=[_episode(4, 0.0, True), _episode(2, 100.0, False), _episode(3, 200.0, False)],
        env_id=None,
        name="hand",
    )
    seg = make_segments(data, horizon=3)
    # 4-step episode: starts 0, 1; 2-step: none; 3-step: start 0.
    np.testing.assert_array_equal(seg[C.OBS][:, :, 0], [[0, 1, 2], [1, 2, 3], [200, 201, 202]])
    np.testing.assert_array_equal(seg[C.NEXT_OBS][:, :, 0], seg[C.OBS][:, :, 0] + 1)
    np.testing.assert_array_equal(seg[C.ACTIONS][:, :, 0], seg[C.OBS][:, :, 0])
    np.testing.assert_array_equal(seg[C.REWARDS], seg[C.OBS][:, :, 0])
    np.testing.assert_array_equal(seg[C.TERMINATEDS], [[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    with pytest.raises(DatasetError, match="--horizon <= 4") as err:
        make_segments(data, horizon=5)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------- ensemble and loss
def test_disagreement_is_the_largest_distance_to_the_member_mean() -> None:
    # Members at (0, 0), (2, 0), (1, 3): mean (1, 1); distances √2, √2, 2.
    pred = torch.tensor([[[0.0, 0.0]], [[2.0, 0.0]], [[1.0, 3.0]]])
    assert ensemble_disagreement(pred).item() == pytest.approx(2.0)
    assert ensemble_disagreement(torch.ones(4, 5, 3)).abs().max().item() == 0.0


def test_joint_mse_is_the_element_weighted_sum_of_both_losses() -> None:
    g = torch.Generator().manual_seed(0)
    b, h, do, m = 3, 2, 2, 4
    eps_hat, eps = torch.randn(b, h, do, generator=g), torch.randn(b, h, do, generator=g)
    y = ensemble_targets(
        torch.randn(b, h, do, generator=g), torch.randn(b, h, generator=g), torch.ones(b, h), m
    )
    f = torch.randn(m, b, h, do + 2, generator=g)
    pred, target = joint_prediction_and_target(eps_hat, eps, f, y)
    assert pred.shape == target.shape == (b, 1, h * do + m * h * (do + 2))
    n_d, n_e = h * do, m * h * (do + 2)
    expected = (n_d * ((eps_hat - eps) ** 2).mean() + n_e * ((f - y) ** 2).mean()) / (n_d + n_e)
    got = torch.nn.functional.mse_loss(pred, target)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    # Every member regresses the same target: [z_Δ, z_r, d].
    assert torch.equal(y[0], y[-1]) and torch.equal(y[0, ..., -1], torch.ones(b, h))


# --------------------------------------------------------------------------- filters
def _rollouts(disagreement, terminals=None, rewards=None) -> Rollouts:
    d = np.asarray(disagreement, np.float32)
    n, h = d.shape
    return Rollouts(
        obs=np.zeros((n, h + 1, 2), np.float32),
        actions=np.zeros((n, h, 1), np.float32),
        rewards=np.zeros((n, h), np.float32) if rewards is None else np.asarray(rewards),
        terminals=np.zeros((n, h), bool) if terminals is None else np.asarray(terminals, bool),
        disagreement=d,
    )


def test_disagreement_filter_drops_exactly_the_rollouts_above_the_threshold() -> None:
    # Rollout 2 exceeds 0.5 only after its terminal step, which does not count.
    r = _rollouts(
        [[0.1, 0.5, 0.2], [0.1, 0.51, 0.0], [0.2, 0.3, 9.0], [0.5, 0.5, 0.5]],
        terminals=[[0, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]],
    )
    np.testing.assert_allclose(r.max_disagreement(), [0.5, 0.51, 0.3, 0.5])
    keep = filter_rollouts(r, "disagreement", fraction=0, threshold=0.5, temperature=1,
                           rng=np.random.default_rng(0))  # fmt: skip
    np.testing.assert_array_equal(keep, [True, False, True, True])
    np.testing.assert_array_equal(disagreement_filter(np.array([0.49, 0.5, 0.51]), 0.5),
                                  [True, True, False])  # fmt: skip


def test_hardmax_keeps_the_top_fraction_and_softmax_draws_that_many() -> None:
    returns = np.arange(1.0, 11.0)
    np.testing.assert_array_equal(np.flatnonzero(hardmax_filter(returns, 0.3)), [7, 8, 9])
    # T → 0: the top rollout takes almost all the mass, the others the uniform 1e-6.
    keep = softmax_filter(returns, 0.3, temperature=1e-3, rng=np.random.default_rng(0))
    assert keep[9] and keep.sum() == 3
    keep = softmax_filter(returns, 0.6, temperature=100.0, rng=np.random.default_rng(0))
    assert keep.sum() == 6
    with pytest.raises(ValueError, match="allowed: hardmax, softmax, disagreement"):
        filter_rollouts(_rollouts([[0.0]]), "topk", fraction=0.5, threshold=0, temperature=1,
                        rng=np.random.default_rng(0))  # fmt: skip


def test_transitions_stop_at_the_first_terminal_step() -> None:
    r = _rollouts(
        np.zeros((2, 3)), terminals=[[0, 1, 1], [0, 0, 0]], rewards=[[1, 2, 3], [4, 5, 6]]
    )
    r.obs[:, :, 0] = np.arange(4)
    cols = r.transitions()
    np.testing.assert_array_equal(cols[C.REWARDS], [1, 2, 4, 5, 6])
    np.testing.assert_array_equal(cols[C.TERMINATEDS], [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(cols[C.NEXT_OBS][:, 0], cols[C.OBS][:, 0] + 1)
    assert len(r.transitions(np.array([False, True]))[C.OBS]) == 3


def test_hopper_termination_is_its_healthy_check() -> None:
    fn = termination_fn("Hopper-v5")
    healthy = np.zeros(11, np.float32)
    healthy[0] = 1.25
    low, tilted, wild = healthy.copy(), healthy.copy(), healthy.copy()
    low[0], tilted[1], wild[5] = 0.7, -0.2, 100.0
    np.testing.assert_array_equal(fn(np.stack([healthy, low, tilted, wild])), [0, 1, 1, 1])
    assert termination_fn("HalfCheetah-v5")(np.zeros((2, 17))).sum() == 0
    assert termination_fn("rllib_diffusion/ReachTarget-v0") is None  # ensemble's head


# ------------------------------------------------------------------ action injection
@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    seg = toy_segments(20, 0)
    return toy_module(seg, denoising_steps=5), seg[C.OBS][:16, 0]


def _linear_policy(gain: float):
    return lambda s: (gain * np.asarray(s)[:, :2]).astype(np.float32)


def test_injection_conditions_on_the_current_policys_actions(untrained, monkeypatch) -> None:
    module, s0 = untrained
    seen, real = [], module.generate_states

    def spy(start, actions, generator=None):
        out = real(start, actions, generator=generator)
        seen.append((actions.numpy().copy(), out.numpy().copy()))
        return out

    monkeypatch.setattr(module, "generate_states", spy)
    policy = _linear_policy(0.5)
    states, actions = inject_actions(module, policy, s0, rounds=2, mix=1.0,
                                     generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert len(seen) == 2
    # Round 2 is conditioned on π of round 1's states; the result's actions are π(states).
    s1 = np.concatenate([s0[:, None], seen[0][1]], axis=1)
    np.testing.assert_allclose(seen[1][0], 0.5 * s1[:, :-1, :2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(actions, 0.5 * states[:, :-1, :2], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(states[:, 1:], seen[1][1], rtol=1e-5, atol=1e-6)  # mix = 1


def test_swapping_the_policy_changes_the_rollouts(untrained) -> None:
    module, s0 = untrained

    def run(policy):
        return inject_actions(module, policy, s0, rounds=1,
                              generator=torch.Generator().manual_seed(3))  # fmt: skip

    (sa, aa), (sb, ab) = run(_linear_policy(0.5)), run(_linear_policy(-1.0))
    (sa2, _) = run(_linear_policy(0.5))
    np.testing.assert_array_equal(sa, sa2)  # same policy and seed: same rollouts
    assert np.abs(sa[:, 1:] - sb[:, 1:]).mean() > 1e-2
    assert not np.allclose(aa, ab)
