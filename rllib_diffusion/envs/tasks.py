"""Known tasks and the reference scores used for normalised scores.

Normalised score = 100 * (R - ref_min) / (ref_max - ref_min).

* ``ref_min``: mean return of a uniform-random policy on the gymnasium **v5** env,
  measured on this project's machines (see ``docs/datasets.md``).
* ``ref_max``: D4RL's expert reference for the corresponding v2 task. The v5 envs
  differ slightly (healthy reward only while healthy, Walker2d foot friction), so the
  score is an approximate "fraction of expert"; raw returns are always reported too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskInfo:
    env_id: str
    ref_min_score: float
    ref_max_score: float
    ref_source: str


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
}


def task_info(env_id: str) -> TaskInfo | None:
    """Reference scores for ``env_id`` or ``None`` for tasks without references."""
    return TASKS.get(env_id)
