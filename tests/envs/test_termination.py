"""The shared MuJoCo termination rules on hand-built observations (no env)."""

from __future__ import annotations

import numpy as np

from rllib_diffusion.envs.termination import termination_fn


def _hopper(**dims: float) -> np.ndarray:
    """A healthy Hopper-v5 observation (z 1.25, upright) with ``dims`` (``d<i>=v``) set."""
    obs = np.zeros(11, np.float32)
    obs[0] = 1.25
    for key, value in dims.items():
        obs[int(key[1:])] = value
    return obs


def test_hopper_rule_flags_low_tilted_wild_and_non_finite_states() -> None:
    fn = termination_fn("Hopper-v5")
    states = np.stack(
        [
            _hopper(),  # healthy
            _hopper(d1=0.19, d5=99.0),  # still healthy: just inside the ranges
            _hopper(d0=0.7),  # z too low (z > 0.7 required)
            _hopper(d1=0.2),  # angle too large (|angle| < 0.2 required)
            _hopper(d1=-0.25),
            _hopper(d5=100.0),  # a velocity out of range
            _hopper(d3=np.nan),  # non-finite
            _hopper(d0=np.inf),
        ]
    )
    np.testing.assert_array_equal(fn(states), [0, 0, 1, 1, 1, 1, 1, 1])
    assert fn(states.reshape(2, 4, 11)).shape == (2, 4)  # leading dims kept


def test_rules_by_env_id() -> None:
    assert termination_fn("Hopper-v4") is termination_fn("Hopper-v5")
    walker = termination_fn("Walker2d-v5")
    ok = np.zeros((2, 17), np.float32)
    ok[:, 0] = 1.25
    low = ok.copy()
    low[1, 0] = 0.5
    np.testing.assert_array_equal(walker(low), [0, 1])
    assert termination_fn("HalfCheetah-v5")(np.full((3, 17), 1e3)).sum() == 0
    assert termination_fn("rllib_diffusion/ReachTarget-v0") is None
    assert termination_fn(None) is None
