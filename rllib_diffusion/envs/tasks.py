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
* robomimic's Lift, Can, Square, Transport on robosuite (``robomimic/<Task>-v0``, see
  :mod:`rllib_diffusion.envs.robosuite_tasks`): return = success (0 or 1), so the
  normalised score is 100 · success rate.

:func:`make_env` is how this package makes every env: it registers gymnasium-robotics
envs on demand, applies a task's default kwargs and flattens Dict observations in
``gymnasium.spaces.flatten`` order, the order datasets are flattened in.
"""

from __future__ import annotations

import contextlib
import difflib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import find_highest_version, parse_env_id

from rllib_diffusion.envs.kitchen import KitchenSuccessInfo, is_kitchen
from rllib_diffusion.envs.robosuite_tasks import ROBOT_TASKS
from rllib_diffusion.envs.toy import ENV_ID as TOY_ENV_ID

KITCHEN_TASKS = ("microwave", "kettle", "light switch", "slide cabinet")
_ROBOTICS_HINT = (
    " If it is a gymnasium-robotics env (FrankaKitchen, Fetch, Adroit, mazes), install it "
    "with `pip install 'rllib-diffusion[robotics]'`."
)


@dataclass(frozen=True)
class TaskInfo:
    env_id: str
    ref_min_score: float
    ref_max_score: float
    ref_source: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    #: envs an evaluation keeps alive at once (None: one per episode). robosuite envs
    #: hold ~105 MB each (measured on Lift): 50 at once would take over 5 GB.
    eval_envs_at_once: int | None = None


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
    # robomimic tasks on robosuite (envs/robosuite_tasks.py): sparse reward 1 at the first
    # success, which ends the episode, so return = success and the score is 100 · success rate.
    **{
        env_id: TaskInfo(
            env_id, 0.0, 1.0, "sparse success reward: return 0 or 1", eval_envs_at_once=10
        )
        for env_id in ROBOT_TASKS
    },
}


def task_info(env_id: str) -> TaskInfo | None:
    """Reference scores for ``env_id`` or ``None`` for tasks without references."""
    return TASKS.get(env_id)


def eval_envs_at_once(env_id: str | None) -> int | None:
    """Envs an evaluation of ``env_id`` keeps alive at once (None: one per episode)."""
    info = task_info(env_id or "")
    return None if info is None else info.eval_envs_at_once


def reference_scores(env_id: str | None, dataset: Mapping[str, Any] | None = None):
    """The one source of normalised-score references, used by every command: the
    dataset's own (``ref_min_score``/``ref_max_score`` of its summary, as stored in a
    checkpoint's meta) where it has both, else this table's for ``env_id``, else None.

    Returns ``{"min", "max", "source"}`` or None.
    """
    data = dataset or {}
    if data.get("ref_min_score") is not None and data.get("ref_max_score") is not None:
        name = data.get("name") or "the dataset"
        return {
            "min": float(data["ref_min_score"]),
            "max": float(data["ref_max_score"]),
            "source": f"dataset {name}",
        }
    info = task_info(env_id or "")
    if info is None:
        return None
    return {"min": info.ref_min_score, "max": info.ref_max_score, "source": info.ref_source}


def normalized(returns: Any, refs: Mapping[str, Any]) -> Any:
    """D4RL-style ``100 * (R - min) / (max - min)`` of ``returns`` under ``refs``."""
    return 100.0 * (returns - refs["min"]) / (refs["max"] - refs["min"])


def make_env(env_id: str, **kwargs: Any) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` with this package's conventions.

    * The id is checked first (:func:`check_env_id`): an unknown id is one
      :class:`~rllib_diffusion.modules.model_config.ConfigError` line with suggestions.
    * gymnasium-robotics envs are registered on first use (so EnvRunner processes need
      no extra import).
    * The task's default kwargs (:data:`TASKS`) apply unless ``kwargs`` overrides them.
    * Dict/Tuple observations are flattened with ``gymnasium.wrappers.FlattenObservation``.
    * Franka Kitchen infos get ``"success"`` (all its tasks completed:
      :class:`~rllib_diffusion.envs.kitchen.KitchenSuccessInfo`).
    """
    check_env_id(env_id)
    info = task_info(env_id)
    kwargs = {**(info.env_kwargs if info else {}), **kwargs}
    env = gym.make(env_id, **kwargs)
    if is_kitchen(env_id):
        env = KitchenSuccessInfo(env)
    if isinstance(env.observation_space, gym.spaces.Dict | gym.spaces.Tuple):
        env = gym.wrappers.FlattenObservation(env)
    return env


def check_env_id(env_id: str) -> str:
    """Return ``env_id`` if gymnasium can make it, else raise a one-line ``ConfigError``.

    Cheap (a registry lookup; gymnasium-robotics is imported only for ids gymnasium does
    not know) and needs no Ray, so commands call it before starting anything.
    ``"module:Env-v0"`` ids are left to ``gym.make``, which imports ``module``.
    """
    from rllib_diffusion.modules.model_config import ConfigError

    if isinstance(env_id, str) and (":" in env_id or _is_registered(env_id)):
        return env_id
    robotics = _register_robotics()
    if isinstance(env_id, str) and _is_registered(env_id):
        return env_id
    known = [i for i in (*TASKS, TOY_ENV_ID) if i in gym.registry]
    close = difflib.get_close_matches(str(env_id), list(gym.registry), n=3, cutoff=0.7)
    hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
    install = "" if robotics else _ROBOTICS_HINT
    raise ConfigError(
        f"unknown env id {env_id!r}; registered ids include {', '.join(known)}, ... "
        f"({len(gym.registry)} in all: `python -c 'import gymnasium; "
        f"gymnasium.pprint_registry()'`){hint}.{install}"
    )


def _is_registered(env_id: str) -> bool:
    """``env_id`` is registered, or is a version-less name gymnasium resolves to its latest."""
    if env_id in gym.registry:
        return True
    try:
        namespace, name, version = parse_env_id(env_id)
    except gym.error.Error:
        return False
    return version is None and find_highest_version(namespace, name) is not None


def _register_robotics() -> bool:
    """Register gymnasium-robotics' envs; False if it is not installed."""
    try:
        # Its import prints a Farama version notice to stderr; keep user errors to one line.
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics
    except ImportError:
        return False
    gym.register_envs(gymnasium_robotics)
    return True
