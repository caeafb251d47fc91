"""RLModule of DRWR and DAWR: one fine-tuned denoiser and (DAWR) a critic V(s).

Glossary: B batch, K denoising steps, Ta action horizon, Da action dim, Do flattened
(normalised) observation dim.

Unlike DPPO there is no frozen copy: the whole reverse chain runs the fine-tuned
denoiser ``actor`` (the reference's ``RWRDiffusion``), exploring with every step's std
floored at ``min_sampling_std`` and acting deterministically at inference (std 1e-3,
0 at the last DDPM step). Training regresses ``actor`` on stored action chunks (ε
prediction, :meth:`_forward_train`); the critic is dropped on EnvRunners.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion.diffusion import MLP, NoiseSchedule, sample_chain
from rllib_diffusion.knobs import Positive
from rllib_diffusion.modules.apis import EvalWhenInferenceOnly
from rllib_diffusion.modules.diffusion_policy_module import PREDICTION, TARGET, build_denoiser
from rllib_diffusion.modules.finetuned_denoiser import FinetunedDenoiserConfig


@dataclass
class RWRModelConfig(FinetunedDenoiserConfig):
    """Model config of DRWR (passed as a dict in ``model_config``): the pretrained
    policy (the loss is the ε-prediction loss of its training) and the rollouts' std
    floor (:class:`FinetunedDenoiserConfig`)."""

    ALGOS: ClassVar[str] = "DRWR/DAWR"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RWRModelConfig:
        """The DAWR config where ``d`` has a critic, else the DRWR one."""
        return cls.pick(d, AWRModelConfig if "critic_hidden_dims" in d else RWRModelConfig)


@dataclass
class AWRModelConfig(RWRModelConfig):
    """Model config of DAWR: DRWR's plus the critic.

    Attributes:
        critic_hidden_dims: residual Mish MLP sizes of the critic V(s) (reference
            ``CriticObs`` 256-256-256).
    """

    critic_hidden_dims: tuple[Positive, ...] = field(default_factory=lambda: (256, 256, 256))


class RewardWeightedModule(
    EvalWhenInferenceOnly, TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI
):
    """Diffusion policy of DRWR/DAWR. Observation (Do,), action Box [-1, 1] (Ta, Da)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = RWRModelConfig.from_dict(dict(self.model_config or {}))
        pol = cfg.policy_config
        self.rwr_config, self.policy_config = cfg, pol
        self.schedule = NoiseSchedule.from_name(pol.schedule, pol.denoising_steps)
        self.actor = build_denoiser(pol)
        self.has_critic = isinstance(cfg, AWRModelConfig)
        if self.has_critic and not self.inference_only:
            self.critic = MLP(
                pol.obs_dim, 1, cfg.critic_hidden_dims, activation="mish", residual=True
            )

    def sample(self, obs: Tensor, *, deterministic: bool, x_init: Tensor | None = None) -> Tensor:
        """Action chunks ``(B, Ta, Da)`` for observations ``(B, Do)`` (the core's
        ``sample_chain`` with the fine-tuned denoiser at every step)."""
        pol = self.policy_config
        obs = obs.float()
        return sample_chain(
            lambda x, t: self.actor(x, t, obs),
            self.schedule,
            (obs.shape[0], pol.horizon, pol.action_dim),
            method=pol.sampler,
            ddim_steps=pol.ddim_steps,
            clip_x0=pol.clip_x0,
            min_std=self.rwr_config.min_sampling_std,
            deterministic=deterministic,
            x_init=x_init,
            device=obs.device,
        ).actions

    # Overriding the EnvRunner-side forwards drops TorchRLModule's no_grad: restore it.
    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self.sample(batch[Columns.OBS], deterministic=True)}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            actions = self.sample(batch[Columns.OBS], deterministic=False)
        # No log-probs are used; RLlib's episode bookkeeping expects the column.
        logp = torch.zeros(actions.shape[0], device=actions.device)
        return {Columns.ACTIONS: actions, Columns.ACTION_LOGP: logp}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """ε prediction on the batch's noised action chunks (``PREDICTION``, ``TARGET``
        ``(B, Ta, Da)``, t ~ U{0..K−1}) where it holds actions, and V(s) (``VF_PREDS``
        ``(B,)``) where it holds value targets; done here so that DDP sees it."""
        out: dict[str, Any] = {}
        obs = batch[Columns.OBS].float()
        if Columns.ACTIONS in batch:
            pol = self.policy_config
            x0 = batch[Columns.ACTIONS].float().reshape(-1, pol.horizon, pol.action_dim)
            noise = torch.randn_like(x0)
            t = torch.randint(0, pol.denoising_steps, (x0.shape[0],), device=x0.device)
            x_t = self.schedule.q_sample(x0, t, noise)
            out[PREDICTION], out[TARGET] = self.actor(x_t, t, obs), noise
        if Columns.VALUE_TARGETS in batch and self.has_critic:
            out[Columns.VF_PREDS] = self.compute_values(batch)
        return out

    def load_pretrained_denoiser(self, state_dict: dict[str, Tensor]) -> None:
        """Copy pretrained (EMA) denoiser weights into the actor."""
        self.actor.load_state_dict(state_dict)

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Tensor:
        return self.critic(batch[Columns.OBS].float()).squeeze(-1)

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["critic"] if self.has_critic else []
