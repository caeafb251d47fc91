"""Checks that a dataset is usable, with messages that say what to do about it."""

from __future__ import annotations

import logging

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from rllib_diffusion.data.episodes import EpisodeDataset
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.envs.tasks import make_env

logger = logging.getLogger(__name__)


def check_finite(name: str, array: npt.ArrayLike) -> None:
    """Raise :class:`DatasetError` if ``array`` holds NaN or ±inf.

    Args:
        name: what the array is, used verbatim in the message (e.g. "observations of episode 3").
        array: any shape; the first bad position is reported by its leading index.
    """
    arr = np.asarray(array)
    if not np.issubdtype(arr.dtype, np.inexact):
        return  # integers and bools cannot hold NaN/inf
    finite = np.isfinite(arr)
    if finite.all():
        return
    n_nan = int(np.isnan(arr).sum())
    n_inf = int((~finite).sum()) - n_nan
    first = np.argwhere(~finite)[0]
    where = f" (first at index {tuple(int(i) for i in first)})" if arr.ndim else ""
    raise DatasetError(
        f"{name} contain {n_nan + n_inf} non-finite value(s): {n_nan} NaN, {n_inf} inf{where}. "
        "Filter those episodes out (e.g. keep only episodes whose arrays pass "
        "np.isfinite(...).all()) or fix the data source."
    )


def _space_dim(space: gym.Space, kind: str) -> int:
    try:
        return int(gym.spaces.flatdim(space))
    except (ValueError, NotImplementedError) as err:
        raise DatasetError(
            f"The {kind} space {space} has no flat dimension to compare the dataset with; "
            "pass a Box (or Dict/Tuple of Boxes) space."
        ) from err


def validate_dataset(
    dataset: EpisodeDataset,
    *,
    observation_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
    env_id: str | None = None,
) -> None:
    """Check a dataset before training on it; raise :class:`DatasetError` on the first problem.

    Checks, in order: not empty; every episode's arrays have consistent lengths and the
    same dims as the first episode; observations, actions and rewards are finite; the
    observation / action dims match the given gymnasium spaces. Actions outside a Box
    action space's bounds are only logged (datasets are often collected with clipping in
    the env, and the policy may still learn from them).

    Args:
        dataset: the episodes.
        observation_space, action_space: the env's spaces. If both are ``None`` and
            ``env_id`` is given, they are taken from ``gymnasium.make(env_id)``.
        env_id: the env the dataset is meant for; defaults to ``dataset.env_id`` in messages.
    """
    if not dataset.episodes or dataset.num_transitions == 0:
        raise DatasetError(
            f"Dataset '{dataset.name}' is empty ({dataset.num_episodes} episodes, "
            f"{dataset.num_transitions} transitions); load or collect a non-empty dataset "
            "(e.g. `rllib-diffusion collect`)."
        )
    if observation_space is None and action_space is None and env_id is not None:
        try:
            env = make_env(env_id)
        except gym.error.Error as err:
            raise DatasetError(
                f"Cannot make env '{env_id}' to check the dataset against: {err}. Import the "
                "package that registers it, or pass observation_space/action_space directly."
            ) from err
        observation_space, action_space = env.observation_space, env.action_space
        env.close()
    env_label = env_id if env_id is not None else dataset.env_id

    do, da = dataset.obs_dim, dataset.action_dim
    for i, ep in enumerate(dataset.episodes):
        problem = ep.length_problem()
        if problem is not None:
            raise DatasetError(f"Dataset '{dataset.name}', episode {i}: {problem}")
        if ep.observations.ndim != 2 or ep.observations.shape[1] != do:
            raise DatasetError(
                f"Dataset '{dataset.name}': episode {i} has observations of shape "
                f"{ep.observations.shape} but episode 0 has obs dim {do}; all episodes must "
                "come from the same env. Drop the odd episodes or load them separately."
            )
        if ep.actions.ndim != 2 or ep.actions.shape[1] != da:
            raise DatasetError(
                f"Dataset '{dataset.name}': episode {i} has actions of shape "
                f"{ep.actions.shape} but episode 0 has action dim {da}; all episodes must "
                "come from the same env. Drop the odd episodes or load them separately."
            )

    for field in ("observations", "actions", "rewards"):
        bad = [
            i for i, ep in enumerate(dataset.episodes) if not np.isfinite(getattr(ep, field)).all()
        ]
        if bad:
            first = bad[0]
            try:
                check_finite(
                    f"Dataset '{dataset.name}': {field} of episode {first}",
                    getattr(dataset.episodes[first], field),
                )
            except DatasetError as err:
                shown = f"{bad[:10]}{'...' if len(bad) > 10 else ''}"
                # Append the full extent so users know how much data a filter would drop.
                raise DatasetError(f"{err} ({len(bad)} episodes affected: {shown})") from None

    if observation_space is not None:
        want = _space_dim(observation_space, "observation")
        if want != do:
            raise DatasetError(
                f"Dataset '{dataset.name}' has obs dim {do} but env '{env_label}' has obs dim "
                f"{want} (observation space {observation_space}). Use the env the data was "
                f"collected on (dataset env_id: {dataset.env_id}) or a dataset for '{env_label}'."
            )
    if action_space is not None:
        if not isinstance(action_space, gym.spaces.Box):
            raise DatasetError(
                f"Env '{env_label}' has action space {action_space}; diffusion policies need a "
                "continuous Box action space. Pick a continuous-control env."
            )
        want = _space_dim(action_space, "action")
        if want != da:
            raise DatasetError(
                f"Dataset '{dataset.name}' has action dim {da} but env '{env_label}' has "
                f"action dim {want} (action space {action_space}). Use the env the data was "
                f"collected on (dataset env_id: {dataset.env_id}) or a dataset for '{env_label}'."
            )
        low = action_space.low.reshape(-1)
        high = action_space.high.reshape(-1)
        outside = sum(
            int(((ep.actions < low - 1e-6) | (ep.actions > high + 1e-6)).sum())
            for ep in dataset.episodes
        )
        if outside:
            logger.warning(
                "Dataset '%s': %d action values lie outside the action space bounds of '%s'; "
                "they will be clipped by the env.",
                dataset.name,
                outside,
                env_label,
            )
