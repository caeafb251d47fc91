"""DyDiff learns a known linear dynamics (no Ray; the module's own training forward):
its states given the actions are close to the true ones and a model blind to the
actions fails the same check; rollouts of two policies follow each policy's true
closed-loop trajectory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rllib_diffusion import columns as C
from rllib_diffusion.algorithms.dydiff.rollout import inject_actions
from tests.synthetic.dydiff_toy import step, toy_module, toy_segments, train_toy

pytestmark = pytest.mark.slow

#: Largest mean RMSE (units of the state std) of states that "follow" the true ones.
TOLERANCE = 0.25


@pytest.fixture(scope="module")
def data():
    torch.set_num_threads(1)
    return toy_segments(200, 0), toy_segments(20, 1)


@pytest.fixture(scope="module")
def trained(data):
    return train_toy(toy_module(data[0]), data[0], 300)


def _rmse(pred: np.ndarray, true: np.ndarray, std: np.ndarray) -> float:
    return float(np.sqrt((((pred - true) / std) ** 2).mean()))


def _given_actions_error(module, held, std) -> float:
    s0, actions = torch.as_tensor(held[C.OBS][:400, 0]), torch.as_tensor(held[C.ACTIONS][:400])
    gen = module.generate_states(s0, actions, generator=torch.Generator().manual_seed(0))
    return _rmse(gen.numpy(), held[C.NEXT_OBS][:400], std)


def test_states_given_the_actions_match_the_true_dynamics(data, trained) -> None:
    seg, held = data
    std = seg[C.NEXT_OBS].reshape(-1, 3).std(0)
    assert _given_actions_error(trained, held, std) < TOLERANCE
    deltas = train_toy(toy_module(seg, diffuse="deltas"), seg, 300)
    assert _given_actions_error(deltas, held, std) < TOLERANCE
    blind = train_toy(toy_module(seg), seg, 300, shuffle_actions=True)
    assert _given_actions_error(blind, held, std) > 2 * TOLERANCE


def test_rollouts_follow_each_policys_true_closed_loop_trajectory(data, trained) -> None:
    seg, held = data
    std = seg[C.NEXT_OBS].reshape(-1, 3).std(0)
    s0 = held[C.OBS][:200, 0]
    out = {}
    for gain in (0.5, -0.5):
        policy = lambda s, g=gain: (g * np.asarray(s)[:, :2]).astype(np.float32)  # noqa: E731
        true = [s0]
        for _ in range(4):
            true.append(step(true[-1], policy(true[-1])))
        states, actions = inject_actions(trained, policy, s0, rounds=2,
                                         generator=torch.Generator().manual_seed(0))  # fmt: skip
        np.testing.assert_allclose(
            actions, policy(states[:, :-1].reshape(-1, 3)).reshape(200, 4, 2)
        )
        out[gain] = (states, np.stack(true, axis=1))
        assert _rmse(states[:, 1:], out[gain][1][:, 1:], std) < TOLERANCE
    # The two policies' rollouts differ by more than either's error.
    assert _rmse(out[0.5][0][:, 1:], out[-0.5][0][:, 1:], std) > 2 * TOLERANCE
