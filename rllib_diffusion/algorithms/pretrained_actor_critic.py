"""RLModule pieces of the replay fine-tuning (``replay_finetune``: online DQL/IDQL,
DIPO/QSM), above the families: the pretrained denoiser as the actor, twin critics
Q(s, a) and their Polyak targets, and the reverse chain as the reference samples it.

Glossary: B batch, K denoising steps, Ta action horizon, Da action dim, N = Ta·Da the
flattened action chunk, Do flattened (normalised) observation dim.

The whole reverse chain runs the one denoiser (the core's ``sample_chain``): exploring
with every step's std floored at ``min_sampling_std`` (noise clipped at 3), and
deterministically at inference (std 1e-3, 0 at the last DDPM step), as the reference's
``DQLDiffusion``/``IDQLDiffusion`` (irom-lab/dppo ``model/diffusion/``). The critics are
the reference's ``CriticObsAct``: Mish MLPs on ``(s, a)`` with the whole chunk (plain, as
the reference's typo builds them; ``critic_residual`` adds skips). Sampled chunks are
not clamped unless ``final_action_clip`` (the reference's DIPO/QSM/DQL/IDQL configs).
A family's module (``<Algo>Module(PretrainedActorCriticModule)``) picks the action it
executes (:meth:`PretrainedActorCriticModule.select_actions`), the denoiser that samples
(:attr:`PretrainedActorCriticModule.acting_net`; DIPO's Polyak target copy) and adds its
own networks.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor, nn

from rllib_diffusion.diffusion import NoiseSchedule, sample_chain
from rllib_diffusion.knobs import Positive, PositiveFloat
from rllib_diffusion.modules.apis import EvalWhenInferenceOnly
from rllib_diffusion.modules.critics import QEnsemble
from rllib_diffusion.modules.diffusion_policy_module import build_denoiser
from rllib_diffusion.modules.finetuned_denoiser import FinetunedDenoiserConfig
from rllib_diffusion.modules.q_actor import OffPolicyActorForwards


@dataclass
class PretrainedActorCriticConfig(FinetunedDenoiserConfig):
    """Model config (passed as a dict in ``model_config``): the pretrained policy and the
    std floor (:class:`FinetunedDenoiserConfig`), plus the twin critics.

    Attributes:
        min_sampling_std: std floor of every reverse step when exploring, of the TD
            targets' next actions and of DQL's differentiable actions (reference
            ``min_sampling_denoising_std`` 0.1).
        critic_hidden_dims: Mish MLP sizes of each twin critic Q(s, a) (reference
            ``CriticObsAct`` 256-256-256).
        critic_residual: skip connections ``x + Mish(Linear(x))`` in the critics'
            hidden layers. The reference's ``CriticObsAct`` names its argument
            ``residual_tyle`` (sic), so its configs' ``residual_style: True`` never
            reaches it and its critics are plain Mish MLPs: default False (True: the
            residual critics used before this knob existed).
        final_action_clip: clamp of every sampled chunk (acting, TD targets' next
            actions, DQL's differentiable actions) to ±this. None (the reference's
            ``final_action_clip_value`` unset in its DIPO/QSM/DQL/IDQL configs): no
            clamp, so an exploring chunk leaves [−1, 1] by up to the last step's
            noise (≤ 3·``min_sampling_std``); the env clips what it executes.
    """

    ALGOS: ClassVar[str] = "DQL/IDQL"

    critic_hidden_dims: tuple[Positive, ...] = field(default_factory=lambda: (256, 256, 256))
    critic_residual: bool = False
    final_action_clip: PositiveFloat | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """The config of ``d``'s entries that are fields (others are left out); a ``d``
        written before ``critic_residual`` existed gets :data:`LEGACY_CRITIC_AND_CLIP`."""
        return cls.pick(with_legacy_critic_and_clip(d), cls)


#: What a model config saved before ``critic_residual``/``final_action_clip`` existed
#: was trained with (residual critics, chunks clamped to ±1): its checkpoints evaluate and
#: resume with the networks and actions they were trained with, not the new defaults.
LEGACY_CRITIC_AND_CLIP: dict[str, Any] = {"critic_residual": True, "final_action_clip": 1.0}


def with_legacy_critic_and_clip(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with :data:`LEGACY_CRITIC_AND_CLIP` where it has no ``critic_residual`` (a
    saved config of an older version: new configs always carry every field)."""
    return d if "critic_residual" in d else {**LEGACY_CRITIC_AND_CLIP, **d}


class PretrainedActorCriticModule(
    EvalWhenInferenceOnly, OffPolicyActorForwards, TorchRLModule, InferenceOnlyAPI
):
    """Pretrained denoiser + twin critics. Observation (Do,), action Box [-1, 1] (Ta, Da).

    ``MODEL_CONFIG``: the model-config dataclass; ``RUNNER_NETWORKS``: learner networks
    the EnvRunners also need to act (IDQL: ``critic_target``, ``value``).
    """

    MODEL_CONFIG: ClassVar[type] = PretrainedActorCriticConfig
    RUNNER_NETWORKS: ClassVar[tuple[str, ...]] = ()

    @override(TorchRLModule)
    def setup(self) -> None:
        cfg = self.MODEL_CONFIG.from_dict(dict(self.model_config or {}))
        pol = cfg.policy_config
        self.finetune_config, self.policy_config = cfg, pol
        self.schedule = NoiseSchedule.from_name(pol.schedule, pol.denoising_steps)
        self.actor = build_denoiser(pol)
        # Gradient steps taken (checkpointed; SeparateLossesMixin counts them).
        self.register_buffer("train_step", torch.zeros((), dtype=torch.long))
        if self.needs("critic_target"):
            n = pol.horizon * pol.action_dim
            critic = QEnsemble(
                pol.obs_dim, n, hidden_dims=cfg.critic_hidden_dims, residual=cfg.critic_residual
            )
            self.critic_target = copy.deepcopy(critic).requires_grad_(False)
            if not self.inference_only:
                self.critic = critic

    def needs(self, name: str) -> bool:
        """Whether this copy of the module holds learner network ``name``."""
        return not self.inference_only or name in self.RUNNER_NETWORKS

    @property
    def acting_net(self) -> nn.Module:
        """The denoiser that samples (acting and the TD targets' next actions)."""
        return self.actor

    def sample(self, obs: Tensor, *, deterministic: bool) -> Tensor:
        """Action chunks ``(B, Ta, Da)`` for observations ``(B, Do)`` from
        :attr:`acting_net` (differentiable unless called under ``no_grad``)."""
        pol, net = self.policy_config, self.acting_net
        obs = obs.float()
        return sample_chain(
            lambda x, t: net(x, t, obs),
            self.schedule,
            (obs.shape[0], pol.horizon, pol.action_dim),
            method=pol.sampler,
            ddim_steps=pol.ddim_steps,
            clip_x0=pol.clip_x0,
            min_std=self.finetune_config.min_sampling_std,
            final_clip=self.finetune_config.final_action_clip,
            deterministic=deterministic,
            device=obs.device,
        ).actions

    def select_actions(self, obs: Tensor, *, explore: bool) -> Tensor:
        """The executed chunks ``(B, Ta, Da)``: one sample (DQL); IDQL ranks candidates."""
        return self.sample(obs, deterministic=not explore)

    def load_pretrained_denoiser(self, state_dict: dict[str, Tensor]) -> None:
        """Copy pretrained (EMA) denoiser weights into the actor."""
        self.actor.load_state_dict(state_dict)

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        learner_only = ("critic", "critic_target", "value")
        return [n for n in learner_only if n not in self.RUNNER_NETWORKS]
