"""DSRL's EnvRunner side: the noise SAC picks becomes the base policy's action chunk.

Glossary: B batch (one row per sub-env), N = Ta*Da flattened noise, Ta action horizon,
Da action dim, To*Do flattened normalised observation.

:class:`NoiseToActionChunk` is a module-to-env ConnectorV2 piece placed right after
RLlib's ``GetActions``. SAC's module acts in its own action space, the noise Box
``[-noise_bound, noise_bound]^N``, with tanh-squashed actions ``a`` in [-1, 1]^N; the piece
decodes ``w = noise_bound · a`` with the frozen base policy into the chunk
``(B, Ta, Da)`` and writes it to ``Columns.ACTIONS_FOR_ENV``, which is what the env steps
with. ``Columns.ACTIONS`` (what the episode records, so SAC learns in noise space) stays
``a``. RLlib's ``NormalizeAndClipActions`` must then pass ``ACTIONS_FOR_ENV`` through:
``DSRLConfig`` turns ``normalize_actions`` and ``clip_actions`` off.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModule
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.dsrl.decoder import decode_noise, load_decoder


class NoiseToActionChunk(ConnectorV2):
    """Decodes SAC's noise actions into base-policy action chunks (see the module doc).

    Args:
        base_checkpoint: the DiffusionBC checkpoint (a path every EnvRunner can read).
        noise_bound: ``w = noise_bound · a``.
        ddim_steps: DDIM steps of a diffusion base policy's decoder (None: its own).
        init_rollout_steps: the first this many exploring vector steps of each EnvRunner
            act with the base policy itself, ``w ~ N(0, I)`` (clipped to ±``noise_bound``
            for DSRL-SAC, recorded as ``a = w / noise_bound``), as the official warm-up.
        store_env_actions: DSRL-NA: ``Columns.ACTIONS`` (what episodes record) becomes
            the decoded chunk, flattened to ``(B, N)``, for the critics on env actions.
    """

    def __init__(
        self,
        input_observation_space: gym.Space | None = None,
        input_action_space: gym.Space | None = None,
        *,
        base_checkpoint: str,
        noise_bound: float,
        ddim_steps: int | None,
        init_rollout_steps: int = 0,
        store_env_actions: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(input_observation_space, input_action_space, **kwargs)
        self.base_checkpoint, self.ddim_steps = base_checkpoint, ddim_steps
        self.decoder = load_decoder(base_checkpoint, ddim_steps)
        self.noise_bound = float(noise_bound)
        self.init_rollout_steps = int(init_rollout_steps)
        self.store_env_actions = bool(store_env_actions)
        self.exploring_steps = 0

    @override(ConnectorV2)
    def __call__(
        self,
        *,
        rl_module: RLModule,
        batch: dict[str, Any],
        episodes: list[Any],
        explore: bool | None = None,
        shared_data: dict | None = None,
        **kwargs: Any,
    ) -> Any:
        squashed = self._squashed_actions(rl_module, batch, bool(explore))
        if explore:
            if self.exploring_steps < self.init_rollout_steps:
                bound = None if self.store_env_actions else self.noise_bound
                squashed = base_policy_noise(squashed.shape, bound) / self.noise_bound
            self.exploring_steps += 1
        obs = last_observations(episodes, self.decoder.policy_config.obs_dim)
        chunk = decode_noise(self.decoder, obs, self.noise_bound * squashed.float())
        batch[Columns.ACTIONS_FOR_ENV] = chunk
        batch[Columns.ACTIONS] = (
            chunk.reshape(len(chunk), -1) if self.store_env_actions else squashed
        )
        return batch

    @override(ConnectorV2)
    def get_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"exploring_steps": self.exploring_steps}

    @override(ConnectorV2)
    def set_state(self, state: dict[str, Any]) -> None:
        self.exploring_steps = int(state.get("exploring_steps", self.exploring_steps))
        if state.get(END_WARMUP):
            self.exploring_steps = max(self.exploring_steps, self.init_rollout_steps)

    @override(ConnectorV2)
    def get_ctor_args_and_kwargs(self) -> tuple[tuple, dict[str, Any]]:
        return (
            (self.input_observation_space, self.input_action_space),
            {
                "base_checkpoint": self.base_checkpoint,
                "noise_bound": self.noise_bound,
                "ddim_steps": self.ddim_steps,
                "init_rollout_steps": self.init_rollout_steps,
                "store_env_actions": self.store_env_actions,
            },
        )

    @staticmethod
    def _squashed_actions(rl_module: RLModule, batch: dict[str, Any], explore: bool) -> Tensor:
        """SAC's action in [-1, 1]^N: the squashed sample when exploring, ``tanh(mean)``
        otherwise (RLlib's deterministic form of its squashed Gaussian is the raw mean)."""
        if explore or Columns.ACTION_DIST_INPUTS not in batch:
            return torch.as_tensor(batch[Columns.ACTIONS])
        dist_cls = rl_module.get_exploration_action_dist_cls()
        dist = dist_cls.from_logits(torch.as_tensor(batch[Columns.ACTION_DIST_INPUTS]))
        return torch.tanh(dist.loc)


#: ``set_state`` key that ends the base-policy warm-up (a resumed run is past it).
END_WARMUP = "end_warmup"


def end_warmup(runner: Any) -> None:
    """Called on an EnvRunner: its decoder's warm-up is over (public state API)."""
    from ray.rllib.core import COMPONENT_MODULE_TO_ENV_CONNECTOR

    runner.set_state(
        {COMPONENT_MODULE_TO_ENV_CONNECTOR: {NoiseToActionChunk.__name__: {END_WARMUP: True}}}
    )


def base_policy_noise(shape: tuple[int, ...], noise_bound: float | None) -> Tensor:
    """``w ~ N(0, I)``, clipped to ±``noise_bound`` unless None (the official warm-up
    clips for DSRL-SAC, not for DSRL-NA)."""
    w = torch.randn(shape)
    return w if noise_bound is None else w.clamp(-noise_bound, noise_bound)


def last_observations(episodes: list[Any], obs_dim: int) -> Tensor:
    """``(B, To*Do)`` latest observation of each episode, in the batch's order (one row
    per sub-env). An episode that was just replaced after its end has none yet; its
    row's action is ignored by the vector env (it resets that sub-env), so zeros do."""
    rows = [
        np.asarray(ep.get_observations(-1), np.float32).reshape(-1)
        if ep.is_reset
        else np.zeros(obs_dim, np.float32)
        for ep in episodes
    ]
    return torch.as_tensor(np.stack(rows))


def count_env_steps(*, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
    """``on_episode_step`` callback: the true env steps of the decision just taken
    (``info["env_steps"]`` of the chunked env), summed per iteration over all EnvRunners
    as ``env_runners/`` :data:`~rllib_diffusion.metrics.ENV_STEPS_SAMPLED`."""
    if metrics_logger is None:
        return
    info = episode.get_infos(-1) or {}
    metrics_logger.log_value(M.ENV_STEPS_SAMPLED, int(info.get("env_steps", 1)), reduce="sum")
