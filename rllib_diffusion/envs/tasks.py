"""Known tasks and the reference scores used for normalised scores.

Normalised score = 100 * (R - ref_min) / (ref_max - ref_min).

* ``ref_min``: mean return of a uniform-random policy on the gymnasium **v5** env,
  measured on this project's machines (see ``docs/datasets.md``).
* ``ref_max``: D4RL's expert reference for the corresponding v2 task. The v5 envs
  differ slightly (healthy reward only while healthy, Walker2d foot friction), so the
  score is an approximate "fraction of expert"; raw returns are always reported too.
* Robot manipulation (gymnasium-robotics, ``pip install 'rllib-diffusion[robotics]'``):
  ``FrankaKitchen-v1`` with D4RL's four tasks (microwave, kettle, light switch, slide
  cabinet), the env of Minari's ``D4RL/kitchen/{complete,partial,mixed}-v2``; its return
  is the number of tasks completed, so the score is D4RL's 100 · tasks / 4.

:func:`make_env` is how this package makes every env: it registers gymnasium-robotics
envs on demand, applies a task's default kwargs and flattens Dict observations in
``gymnasium.spaces.flatten`` order, the order datasets are flattened in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

KITCHEN_TASKS = ("microwave", "kettle", "light switch", "slide cabinet")


@dataclass(frozen=True)
class TaskInfo:
    env_id: str
    ref_min_score: float
    ref_max_score: float
    ref_source: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)


TASKS: dict[str, TaskInfo] = {
    "Hopper-v5": TaskInfo(
        "Hopper-v5", 16.7, 3234.3, "random mean on v5 (measured) / D4RL expert v2"
    ),
    "Walker2d-v5": TaskInfo(
        "Walker2d-v5", 1.8, 4592.3, "random mean on v5 (measured) / D4RL expert v2"
    ),
    "HalfCheetah-v5": TaskInfo(
        "HalfCheetah-v5", -274.0, 12135.0, "random mean on v5 (measured) / D4RL expert v2"
    ),
    "FrankaKitchen-v1": TaskInfo(
        "FrankaKitchen-v1",
        0.0,
        4.0,
        "D4RL kitchen: 0 and 4 completed tasks",
        env_kwargs={"tasks_to_complete": list(KITCHEN_TASKS)},
    ),
}


def task_info(env_id: str) -> TaskInfo | None:
    """Reference scores for ``env_id`` or ``None`` for tasks without references."""
    return TASKS.get(env_id)


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` with this package's conventions.

    * An id gymnasium does not know is looked up in gymnasium-robotics (imported and
      registered on first use, so EnvRunner processes need no extra import).
    * The task's default kwargs (:data:`TASKS`) apply unless ``kwargs`` overrides them.
    * Dict/Tuple observations are flattened with ``gymnasium.wrappers.FlattenObservation``.
    """
    info = task_info(env_id)
    kwargs = {**(info.env_kwargs if info else {}), **kwargs}
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as err:
        if not _register_robotics(env_id, err):
            raise
        env = gym.make(env_id, **kwargs)
    if isinstance(env.observation_space, gym.spaces.Dict | gym.spaces.Tuple):
        env = gym.wrappers.FlattenObservation(env)
    return env


def _register_robotics(env_id: str, err: Exception) -> bool:
    """Register gymnasium-robotics' envs; False if that cannot help with ``env_id``."""
    if not isinstance(err, gym.error.NameNotFound | gym.error.NamespaceNotFound):
        return False
    try:
        import gymnasium_robotics
    except ImportError as imp:
        raise gym.error.NameNotFound(
            f"Environment '{env_id}' is not registered. If it is a gymnasium-robotics env "
            "(FrankaKitchen, Fetch, Adroit, mazes), install it with "
            "`pip install 'rllib-diffusion[robotics]'`."
        ) from imp
    gym.register_envs(gymnasium_robotics)
    return env_id in gym.registry
