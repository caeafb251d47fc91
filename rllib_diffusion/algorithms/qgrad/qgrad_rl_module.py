"""RLModule of DIPO and QSM: the fine-tuned denoiser, twin critics Q(s, a) and their
Polyak targets, and (DIPO) a Polyak target copy of the denoiser.

Glossary: B batch, K denoising steps, Ta action horizon, Da action dim, N = Ta·Da the
flattened action chunk, Do flattened (normalised) observation dim.

The whole reverse chain runs one denoiser (the core's ``sample_chain``), exploring with
every step's std floored at ``min_sampling_std`` and acting deterministically at
inference (std 1e-3, 0 at the last DDPM step), as the reference's ``DIPODiffusion`` and
``QSMDiffusion``. The reference's DIPO acts, evaluates and forms TD targets with its
target actor (``DIPODiffusion.forward`` runs ``actor_target``); ``act_with_target``
keeps that (default) or uses the trained actor. Critics are dropped on EnvRunners.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor, nn

from rllib_diffusion.diffusion import NoiseSchedule, sample_chain
from rllib_diffusion.knobs import Positive
from rllib_diffusion.modules.critics import QEnsemble
from rllib_diffusion.modules.diffusion_policy_module import build_denoiser
from rllib_diffusion.modules.finetuned_denoiser import FinetunedDenoiserConfig


@dataclass
class QSMModelConfig(FinetunedDenoiserConfig):
    """Model config of QSM (passed as a dict in ``model_config``): the pretrained policy
    and the std floor (:class:`FinetunedDenoiserConfig`), plus the critics.

    Attributes:
        critic_hidden_dims: residual Mish MLP sizes of each of the twin critics Q(s, a)
            (reference ``CriticObsAct`` 256-256-256).
    """

    ALGOS: ClassVar[str] = "DIPO/QSM"

    critic_hidden_dims: tuple[Positive, ...] = field(default_factory=lambda: (256, 256, 256))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QSMModelConfig:
        """The DIPO config where ``d`` has ``act_with_target``, else the QSM one."""
        return cls.pick(d, DIPOModelConfig if "act_with_target" in d else QSMModelConfig)


@dataclass
class DIPOModelConfig(QSMModelConfig):
    """Model config of DIPO: QSM's plus the target actor.

    Attributes:
        act_with_target: act, evaluate and sample the TD targets' next actions with the
            Polyak target copy of the denoiser (reference: yes); False uses the trained
            denoiser for all three.
    """

    act_with_target: bool = True


class QGradModule(TorchRLModule, InferenceOnlyAPI):
    """Diffusion policy of DIPO/QSM. Observation (Do,), action Box [-1, 1] (Ta, Da)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = QSMModelConfig.from_dict(dict(self.model_config or {}))
        pol = cfg.policy_config
        self.qgrad_config, self.policy_config = cfg, pol
        self.schedule = NoiseSchedule.from_name(pol.schedule, pol.denoising_steps)
        self.actor = build_denoiser(pol)
        # Gradient steps taken (checkpointed; SeparateLossesMixin counts them).
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        self.act_with_target = isinstance(cfg, DIPOModelConfig) and cfg.act_with_target
        if self.act_with_target:
            self.actor_target = _frozen_copy(self.actor)
        if not self.inference_only:
            n = pol.horizon * pol.action_dim
            self.critic = QEnsemble(
                pol.obs_dim, n, hidden_dims=cfg.critic_hidden_dims, residual=True
            )
            self.critic_target = _frozen_copy(self.critic)

    @property
    def acting_net(self) -> nn.Module:
        """The denoiser that acts (and samples TD next actions)."""
        return self.actor_target if self.act_with_target else self.actor

    def sample(self, obs: Tensor, *, deterministic: bool) -> Tensor:
        """Action chunks ``(B, Ta, Da)`` for observations ``(B, Do)`` from
        :attr:`acting_net` (the core's ``sample_chain``)."""
        pol, net = self.policy_config, self.acting_net
        obs = obs.float()
        return sample_chain(
            lambda x, t: net(x, t, obs),
            self.schedule,
            (obs.shape[0], pol.horizon, pol.action_dim),
            method=pol.sampler,
            ddim_steps=pol.ddim_steps,
            clip_x0=pol.clip_x0,
            min_std=self.qgrad_config.min_sampling_std,
            deterministic=deterministic,
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
        """Nothing: the learner's losses call the networks themselves (they need the
        critic's action gradient and fresh next actions)."""
        return {}

    def load_pretrained_denoiser(self, state_dict: dict[str, Tensor]) -> None:
        """Copy pretrained (EMA) denoiser weights into the actor (and its target)."""
        self.actor.load_state_dict(state_dict)
        if self.act_with_target:
            self.actor_target.load_state_dict(state_dict)

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        # DIPO's runners act with actor_target, but the trained actor stays in the
        # inference module too: weight sync by name needs the same keys on both sides.
        return ["critic", "critic_target"]


def _frozen_copy(net: nn.Module) -> nn.Module:
    target = copy.deepcopy(net)
    target.requires_grad_(False)
    return target
