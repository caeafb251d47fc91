"""Policies that can drive data collection: uniform random, or an RLlib checkpoint.

Protocol (``CollectPolicy``): the collector calls ``reset(i, obs)`` when episode slot
``i`` starts, ``act(indices)`` to get one action per listed slot (``(n, Da)``, env units),
and ``step(i, action, obs, reward, terminated, truncated)`` after each env step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np


class CollectPolicy(Protocol):
    name: str

    def reset(self, i: int, obs: np.ndarray) -> None: ...

    def act(self, indices: list[int]) -> np.ndarray: ...

    def step(
        self,
        i: int,
        action: np.ndarray,
        obs: np.ndarray,
        reward: float,
        terminated: bool,
        truncated: bool,
    ) -> None: ...


class RandomPolicy:
    """Uniform random actions in the env's Box action space."""

    name = "random"

    def __init__(self, action_space: gym.spaces.Box, seed: int = 0) -> None:
        self.space = action_space
        self.rng = np.random.default_rng(seed)

    def reset(self, i: int, obs: np.ndarray) -> None:
        pass

    def act(self, indices: list[int]) -> np.ndarray:
        low, high = self.space.low, self.space.high
        return self.rng.uniform(low, high, size=(len(indices), *low.shape)).astype(np.float32)

    def step(self, i, action, obs, reward, terminated, truncated) -> None:
        pass


class RLlibCheckpointPolicy:
    """Acts with the RLModule of an RLlib Algorithm checkpoint and its env-runner connectors.

    The checkpoint's env-to-module pipeline (e.g. a ``MeanStdFilter``) is restored with
    its statistics and frozen, so the policy sees exactly what it saw in training.

    Args:
        checkpoint: Algorithm checkpoint directory (e.g. one written by
            ``rllib-diffusion train-behavior``).
        explore: sample from the action distribution (True) or act deterministically.
    """

    def __init__(self, checkpoint: str | Path, *, explore: bool = True) -> None:
        from rllib_diffusion.checkpoints import MODULE_SUBDIR, CheckpointError, restore_component

        root = Path(checkpoint).expanduser().resolve()
        if not root.exists():
            raise CheckpointError(
                f"--policy '{checkpoint}' does not exist ({root}); pass 'random' or an RLlib "
                "Algorithm checkpoint directory (e.g. <train-behavior --out>/checkpoint_00010)."
            )
        from ray.rllib.connectors.env_to_module import EnvToModulePipeline
        from ray.rllib.connectors.module_to_env import ModuleToEnvPipeline
        from ray.rllib.core.rl_module.rl_module import RLModule

        needed = [
            root / MODULE_SUBDIR,
            root / "env_runner" / "env_to_module_connector",
            root / "env_runner" / "module_to_env_connector",
        ]
        missing = [str(p.relative_to(root)) for p in needed if not p.exists()]
        if missing:
            raise CheckpointError(
                f"'{root}' is not a complete RLlib Algorithm checkpoint (missing {missing}). "
                "Pass the checkpoint directory saved by Algorithm.save_to_path / train-behavior."
            )
        self.name = f"rllib:{root.name}"
        self.explore = explore
        self.module = restore_component(RLModule, needed[0], root)
        self.module.eval()
        self.env_to_module = restore_component(EnvToModulePipeline, needed[1], root)
        self.module_to_env = restore_component(ModuleToEnvPipeline, needed[2], root)
        for connector in self.env_to_module.connectors:
            # Freeze running statistics (MeanStdFilter) during collection.
            if hasattr(connector, "_update_stats"):
                connector._update_stats = False
        self._episodes: dict[int, object] = {}

    def reset(self, i: int, obs: np.ndarray) -> None:
        from ray.rllib.env.single_agent_episode import SingleAgentEpisode

        ep = SingleAgentEpisode()
        ep.add_env_reset(observation=obs)
        self._episodes[i] = ep

    def act(self, indices: list[int]) -> np.ndarray:
        import torch
        from ray.rllib.core.columns import Columns

        episodes = [self._episodes[i] for i in indices]
        shared: dict = {}
        batch = self.env_to_module(
            episodes=episodes, rl_module=self.module, explore=self.explore, shared_data=shared
        )
        with torch.no_grad():
            out = (
                self.module.forward_exploration(batch)
                if self.explore
                else self.module.forward_inference(batch)
            )
        out = self.module_to_env(
            batch=out,
            episodes=episodes,
            rl_module=self.module,
            explore=self.explore,
            shared_data=shared,
        )
        return np.stack([np.asarray(a, dtype=np.float32) for a in out[Columns.ACTIONS_FOR_ENV]])

    def step(self, i, action, obs, reward, terminated, truncated) -> None:
        ep = self._episodes[i]
        ep.add_env_step(obs, action, reward, terminated=terminated, truncated=truncated)
        if terminated or truncated:
            del self._episodes[i]
        elif len(ep) > 64:
            # Connectors only look at the latest observation; keep memory flat.
            self._episodes[i] = ep.cut(len_lookback_buffer=1)
