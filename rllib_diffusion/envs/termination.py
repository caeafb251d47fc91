"""Termination rules of the MuJoCo locomotion envs on observations, without an env.

A rule maps next observations ``(..., Do)`` to bool ``(...)``: True where the env
would terminate (gymnasium's v5 ``terminated``, default healthy ranges). Models that
generate next states (DyDiff's rollouts, SynthER's ``--terminals env-rule``) label
their terminal flags with it. Pure numpy: no env, no Ray.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TerminationFn = Callable[[np.ndarray], np.ndarray]


def _hopper_terminated(next_obs: np.ndarray) -> np.ndarray:
    """Hopper-v5's unhealthy check on observations (qpos[1:], qvel): z = obs[0] ≤ 0.7,
    |angle = obs[1]| ≥ 0.2, or any |obs[1:]| ≥ 100 (also MBPO's/DyDiff's rule)."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (np.abs(next_obs[..., 1:]) < 100).all(-1) & (z > 0.7) & (np.abs(angle) < 0.2)
    return ~(healthy & np.isfinite(next_obs).all(-1))


def _walker_terminated(next_obs: np.ndarray) -> np.ndarray:
    """Walker2d-v5's unhealthy check: z = obs[0] outside (0.8, 2.0) or angle outside (−1, 1)."""
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~(healthy & np.isfinite(next_obs).all(-1))


def _never_terminated(next_obs: np.ndarray) -> np.ndarray:
    return np.zeros(next_obs.shape[:-1], bool)


#: Env-id prefix → termination of a next observation (default healthy ranges of v5).
TERMINATIONS: dict[str, TerminationFn] = {
    "Hopper": _hopper_terminated,
    "Walker2d": _walker_terminated,
    "HalfCheetah": _never_terminated,
}


def termination_fn(env_id: str | None) -> TerminationFn | None:
    """The known termination rule of ``env_id`` (None: no rule is known for it)."""
    name = (env_id or "").split("/")[-1]
    for prefix, fn in TERMINATIONS.items():
        if name.startswith(prefix):
            return fn
    return None
