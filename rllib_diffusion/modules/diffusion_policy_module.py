"""RLModule wrapping a diffusion (DDPM/DDIM) or flow-matching action-chunk policy.

Glossary: B batch, To*Do flattened normalised observation, Ta action horizon,
Da action dim, K denoising steps.

Thin glue: the math lives in :mod:`rllib_diffusion.diffusion`. The module holds the
trained network ``net`` and its EMA copy ``ema_net``; acting (inference and
exploration) always uses ``ema_net``, the learner trains ``net``. On EnvRunners
(``inference_only=True``) ``net`` is not built at all.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor, nn

from rllib_diffusion.diffusion import (
    NoiseSchedule,
    build_network,
    euler_sample,
    linear_path,
    sample_chain,
)
from rllib_diffusion.modules.apis import EvalWhenInferenceOnly, TrainPrecisionAPI
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig

#: Keys of ``forward_train`` outputs: the network's prediction and its regression target.
PREDICTION = "diffusion_prediction"
TARGET = "diffusion_target"

#: Time scaling of flow time t in [0, 1] before the sinusoidal embedding, so it spans
#: a range comparable to DDPM's integer steps.
FLOW_TIME_SCALE = 100.0


def build_denoiser(cfg: DiffusionPolicyConfig) -> nn.Module:
    """The ε- (or velocity-) network described by ``cfg``."""
    common: dict[str, Any] = dict(
        action_dim=cfg.action_dim,
        horizon=cfg.horizon,
        cond_dim=cfg.obs_dim,
        time_dim=cfg.time_dim,
    )
    if cfg.network == "mlp":
        common.update(hidden_dims=cfg.hidden_dims, activation=cfg.activation)
        if cfg.sampler == "flow":
            common["time_scale"] = FLOW_TIME_SCALE
        return build_network("mlp", **common)
    return build_network("unet", dims=cfg.unet_dims, **common)


class DiffusionPolicyModule(
    EvalWhenInferenceOnly, TorchRLModule, InferenceOnlyAPI, TrainPrecisionAPI
):
    """Diffusion/flow policy over normalised action chunks.

    Observation space: Box (To*Do,), action space: Box [-1, 1] (Ta, Da).
    ``model_config``: a ``DiffusionPolicyConfig`` dict.
    """

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = DiffusionPolicyConfig.from_dict(dict(self.model_config or {}), strict=False)
        self.policy_config = cfg
        if self.action_space is not None and tuple(self.action_space.shape) != (
            cfg.horizon,
            cfg.action_dim,
        ):
            raise ValueError(
                f"Action space shape {self.action_space.shape} != (horizon, action_dim) = "
                f"({cfg.horizon}, {cfg.action_dim}) from the model config."
            )
        if cfg.sampler != "flow":
            self.schedule = NoiseSchedule.from_name(cfg.schedule, cfg.denoising_steps)
        ema_net = build_denoiser(cfg)
        if not self.inference_only:
            self.net = ema_net
            ema_net = copy.deepcopy(ema_net)
        self.ema_net = ema_net.requires_grad_(False)
        # Counts gradient updates seen by the EMA; a buffer so checkpoints restore it.
        self.register_buffer("ema_step", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ acting
    def sample_actions(
        self,
        obs: Tensor,
        *,
        deterministic: bool,
        use_ema: bool = True,
        x_init: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample a normalised action chunk ``(B, Ta, Da)`` for observations ``(B, To*Do)``."""
        cfg = self.policy_config
        net = self.ema_net if use_ema or self.inference_only else self.net
        obs = obs.float()
        shape = (obs.shape[0], cfg.horizon, cfg.action_dim)
        if x_init is None:
            x_init = torch.randn(shape, generator=generator, device=obs.device)
        if cfg.sampler == "flow":
            return euler_sample(lambda x, t: net(x, t, obs), x_init, cfg.denoising_steps, clip=1.0)
        out = sample_chain(
            lambda x, t: net(x, t, obs),
            self.schedule,
            shape,
            method=cfg.sampler,
            ddim_steps=cfg.ddim_steps,
            clip_x0=cfg.clip_x0,
            min_std=cfg.min_sampling_std,
            deterministic=deterministic,
            x_init=x_init,
            generator=generator,
        )
        return out.actions

    # Overriding these drops TorchRLModule's default no_grad; acting never needs grads.
    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            actions = self.sample_actions(batch[Columns.OBS], deterministic=True)
        return {Columns.ACTIONS: actions}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            actions = self.sample_actions(batch[Columns.OBS], deterministic=False)
        # BC does not use log-probs; RLlib's episode bookkeeping expects the column.
        logp = torch.zeros(actions.shape[0], device=actions.device)
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp}

    # ---------------------------------------------------------------- training
    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Noise the dataset chunks and predict ε (DDPM/DDIM) or the velocity (flow).

        Returns ``PREDICTION`` and ``TARGET`` tensors ``(B, Ta, Da)``; the learner
        regresses one onto the other. Done here (not in the learner) so that it runs
        through DDP when there are several learners.
        """
        cfg = self.policy_config
        obs = batch[Columns.OBS].float()
        x0 = batch[Columns.ACTIONS].float().reshape(obs.shape[0], cfg.horizon, cfg.action_dim)
        noise = torch.randn_like(x0)
        if cfg.sampler == "flow":
            t = torch.rand(x0.shape[0], device=x0.device)
            x_t, target = linear_path(noise, x0, t)
        else:
            t = torch.randint(0, cfg.denoising_steps, (x0.shape[0],), device=x0.device)
            x_t, target = self.schedule.q_sample(x0, t, noise), noise
        with self.train_autocast(x0.device):
            return {PREDICTION: self.net(x_t, t, obs), TARGET: target}

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["net"]
