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

#: Overshoot beyond an action bound that is float rounding (silently accepted).
_ROUNDING = 1e-6
#: Largest accepted overshoot beyond an action bound, as a fraction of the bounds' range
#: (e.g. 0.1 for [-1, 1]); beyond it the actions are refused unless explicitly allowed.
OUT_OF_BOUNDS_TOLERANCE = 0.05


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
    allow_out_of_bounds_actions: bool = False,
) -> None:
    """Check a dataset before training on it; raise :class:`DatasetError` on the first problem.

    Checks, in order: not empty; every episode's arrays have consistent lengths and the
    same dims as the first episode; observations, actions and rewards are finite; the
    observation / action dims match the given gymnasium spaces; actions lie within a Box
    action space's bounds. Rounding-level overshoot passes; an overshoot up to
    :data:`OUT_OF_BOUNDS_TOLERANCE` of the bounds' range is only logged (datasets are
    often recorded before the env's clipping); a larger one (wrong units or env) is an
    error unless ``allow_out_of_bounds_actions``.

    Args:
        dataset: the episodes.
        observation_space, action_space: the env's spaces. If both are ``None`` and
            ``env_id`` is given, they are taken from ``gymnasium.make(env_id)``.
        env_id: the env the dataset is meant for; defaults to ``dataset.env_id`` in messages.
        allow_out_of_bounds_actions: accept actions far outside the action bounds (logged;
            the env clips them). CLI: ``--allow-out-of-bounds-actions``.
    """
    _check_not_empty(dataset)
    if observation_space is None and action_space is None and env_id is not None:
        observation_space, action_space = _spaces_of_env(env_id)
    env_label = env_id if env_id is not None else dataset.env_id
    _check_episode_shapes(dataset)
    _check_all_finite(dataset)
    if observation_space is not None:
        _check_obs_space(dataset, observation_space, env_label)
    if action_space is not None:
        _check_action_space(dataset, action_space, env_label)
        _check_action_bounds(dataset, action_space, env_label, allow=allow_out_of_bounds_actions)


def _check_not_empty(dataset: EpisodeDataset) -> None:
    """Refuse a dataset without episodes or transitions."""
    if not dataset.episodes or dataset.num_transitions == 0:
        raise DatasetError(
            f"Dataset '{dataset.name}' is empty ({dataset.num_episodes} episodes, "
            f"{dataset.num_transitions} transitions); load or collect a non-empty dataset "
            "(e.g. `rllib-diffusion collect`)."
        )


def _spaces_of_env(env_id: str) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of a freshly made ``env_id``."""
    try:
        env = make_env(env_id)
    except gym.error.Error as err:
        raise DatasetError(
            f"Cannot make env '{env_id}' to check the dataset against: {err}. Import the "
            "package that registers it, or pass observation_space/action_space directly."
        ) from err
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    return observation_space, action_space


def _check_episode_shapes(dataset: EpisodeDataset) -> None:
    """Every episode has consistent lengths and episode 0's obs / action dims."""
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


def _check_all_finite(dataset: EpisodeDataset) -> None:
    """Observations, actions and rewards are finite; the error counts the affected episodes."""
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


def _check_obs_space(
    dataset: EpisodeDataset, observation_space: gym.Space, env_label: str | None
) -> None:
    """The dataset's obs dim matches the observation space's."""
    do = dataset.obs_dim
    want = _space_dim(observation_space, "observation")
    if want != do:
        raise DatasetError(
            f"Dataset '{dataset.name}' has obs dim {do} but env '{env_label}' has obs dim "
            f"{want} (observation space {observation_space}). Use the env the data was "
            f"collected on (dataset env_id: {dataset.env_id}) or a dataset for '{env_label}'."
        )


def _check_action_space(
    dataset: EpisodeDataset, action_space: gym.Space, env_label: str | None
) -> None:
    """The action space is a Box whose dim matches the dataset's action dim."""
    da = dataset.action_dim
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


def _check_action_bounds(
    dataset: EpisodeDataset, space: gym.spaces.Box, env_label: str | None, *, allow: bool
) -> None:
    """Tolerate rounding, warn about a small overshoot (the env clips it), and refuse
    actions far outside ``space`` (wrong units or env) unless ``allow``."""
    low = space.low.astype(np.float64).reshape(-1)
    high = space.high.astype(np.float64).reshape(-1)
    # Per dimension: how far beyond its bounds each action goes (0 inside them).
    over = np.concatenate(
        [np.maximum(low - ep.actions, ep.actions - high).clip(min=0.0) for ep in dataset.episodes]
    )
    outside = int((over > _ROUNDING).sum())
    if not outside:
        return
    width = np.where(np.isfinite(high - low), high - low, np.inf)
    far = over > OUT_OF_BOUNDS_TOLERANCE * width
    if far.any() and not allow:
        max_abs = max(float(np.abs(ep.actions).max()) for ep in dataset.episodes)
        raise DatasetError(
            f"Dataset '{dataset.name}' has actions far outside the action bounds of env "
            f"'{env_label}': max |action| = {max_abs:.4g}, bounds [{low.min():.4g}, "
            f"{high.max():.4g}] ({int(far.sum())} values beyond them by more than "
            f"{OUT_OF_BOUNDS_TOLERANCE:.0%} of the range). The actions are probably in other "
            "units or from another env: rescale them or use the dataset's own env, or add "
            "--allow-out-of-bounds-actions (allow_out_of_bounds_actions=True from Python) "
            "to train on them anyway (the env clips them)."
        )
    logger.warning(
        "Dataset '%s': %d action values lie outside the action space bounds of '%s'; "
        "they will be clipped by the env.",
        dataset.name,
        outside,
        env_label,
    )
