"""Franka Kitchen (gymnasium-robotics ``FrankaKitchen-v1``): a success flag in the infos.

The kitchen's reward is the number of its ``tasks_to_complete`` finished on a step, and
it ends an episode once all of them are done. :class:`KitchenSuccessInfo` adds
``info["success"]``: True once every task of the env is completed, so evaluations report
a success rate (``evaluate``'s ``success_rate``) next to the return (tasks completed).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

#: The info key gymnasium-robotics lists the episode's completed tasks under.
COMPLETED_KEY = "episode_task_completions"


def is_kitchen(env_id: str) -> bool:
    """True for the gymnasium-robotics kitchen ids (``FrankaKitchen-v1`` and later)."""
    return env_id.split("/")[-1].startswith("FrankaKitchen")


class KitchenSuccessInfo(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Adds ``info["success"]``: every one of the env's tasks completed this episode.
    (Recorded in ``env.spec``, so ``gym.make(env.spec)`` rebuilds it.)"""

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self._num_tasks = len(env.unwrapped.goal)

    def _with_success(self, info: dict[str, Any]) -> dict[str, Any]:
        info["success"] = len(info.get(COMPLETED_KEY, ())) >= self._num_tasks
        return info

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return obs, self._with_success(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._with_success(info)
