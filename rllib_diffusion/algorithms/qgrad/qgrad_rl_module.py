"""RLModule of DIPO and QSM: the shared pretrained actor-critic
(:class:`~rllib_diffusion.algorithms.pretrained_actor_critic.PretrainedActorCriticModule`:
the fine-tuned denoiser, twin critics Q(s, a) and their Polyak targets) and (DIPO) a
Polyak target copy of the denoiser.

Glossary: B batch, K denoising steps, Ta action horizon, Da action dim, N = Ta·Da the
flattened action chunk, Do flattened (normalised) observation dim.

The whole reverse chain runs one denoiser (the shared module's ``sample``), exploring
with every step's std floored at ``min_sampling_std`` and acting deterministically at
inference (std 1e-3, 0 at the last DDPM step), as the reference's ``DIPODiffusion`` and
``QSMDiffusion``. The reference's DIPO acts, evaluates and forms TD targets with its
target actor (``DIPODiffusion.forward`` runs ``actor_target``); ``act_with_target``
keeps that (default) or uses the trained actor. Critics are dropped on EnvRunners.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

from ray.rllib.utils.annotations import override
from torch import Tensor, nn

from rllib_diffusion.algorithms.pretrained_actor_critic import (
    PretrainedActorCriticConfig,
    PretrainedActorCriticModule,
    with_legacy_critic_and_clip,
)


@dataclass
class QSMModelConfig(PretrainedActorCriticConfig):
    """Model config of QSM (passed as a dict in ``model_config``): the pretrained policy,
    the std floor, the critics and the chunks' clamp (:class:`PretrainedActorCriticConfig`)."""

    ALGOS: ClassVar[str] = "DIPO/QSM"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QSMModelConfig:
        """The DIPO config where ``d`` has ``act_with_target``, else the QSM one (an older
        version's ``d``: :func:`with_legacy_critic_and_clip`)."""
        target = DIPOModelConfig if "act_with_target" in d else QSMModelConfig
        return cls.pick(with_legacy_critic_and_clip(d), target)


@dataclass
class DIPOModelConfig(QSMModelConfig):
    """Model config of DIPO: QSM's plus the target actor.

    Attributes:
        act_with_target: act, evaluate and sample the TD targets' next actions with the
            Polyak target copy of the denoiser (reference: yes); False uses the trained
            denoiser for all three.
    """

    act_with_target: bool = True


class QGradModule(PretrainedActorCriticModule):
    """Diffusion policy of DIPO/QSM: the shared pretrained denoiser + twin critics
    (critics dropped on EnvRunners) and, for DIPO with ``act_with_target``, a Polyak
    target copy of the denoiser that acts and samples the TD targets' next actions.
    Observation (Do,), action Box [-1, 1] (Ta, Da)."""

    MODEL_CONFIG = QSMModelConfig

    @override(PretrainedActorCriticModule)
    def setup(self) -> None:
        super().setup()
        cfg = self.finetune_config
        self.act_with_target = isinstance(cfg, DIPOModelConfig) and cfg.act_with_target
        if self.act_with_target:
            # DIPO's runners act with it, and the trained actor stays in the inference
            # module too: weight sync by name needs the same keys on both sides.
            self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)

    @property
    @override(PretrainedActorCriticModule)
    def acting_net(self) -> nn.Module:
        return self.actor_target if self.act_with_target else self.actor

    @override(PretrainedActorCriticModule)
    def load_pretrained_denoiser(self, state_dict: dict[str, Tensor]) -> None:
        """Copy pretrained (EMA) denoiser weights into the actor (and its target)."""
        super().load_pretrained_denoiser(state_dict)
        if self.act_with_target:
            self.actor_target.load_state_dict(state_dict)
