"""DQL: online Diffusion-QL fine-tuning of a pretrained diffusion policy from an empty
replay (the DPPO paper's baseline), ``rllib-diffusion finetune --algo dql``.

The pretrained (DiffusionBC) denoiser is the actor; twin critics are trained on
``y = r·reward_scale + γ(1 − d)·min_i Q'_i(s', a')``, ``a'`` sampled (exploring) from the
actor; the actor on ``L_bc + η·L_q`` (:func:`~.finetune_learner.dql_actor_loss`). The
loop (replay, warm-up, checkpoints) is :mod:`~rllib_diffusion.algorithms.replay_finetune`.

Defaults are the reference's Hopper config (irom-lab/dppo ``cfg/gym/finetune/hopper-v2/
ft_dql_diffusion_mlp.yaml``; loop ``agent/finetune/train_dql_diffusion_agent.py``, model
``model/diffusion/diffusion_dql.py``): actor lr 1e-4, critic lr 1e-3, τ 0.005, rewards ×
0.01, buffer 1,000,000 decisions, η 1, replay ratio 16, minibatch 1000, warm-up 80,000
decisions, min sampling std 0.1. Like the reference: no EMA actor (the trained actor
acts and forms the TD targets), one sample per decision, the BC term on the actor's own
differentiable sample (``bc_actions="sampled"``), the actor's loss computed with the
critic after this step's update (``actor_after_critic_step``; False: one forward for
both losses, the critic as it was before the step). Deviation: the warm-up counts
decisions.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.pretrained_actor_critic import (
    PretrainedActorCriticConfig,
    PretrainedActorCriticModule,
)
from rllib_diffusion.algorithms.replay_finetune import (
    ReplayFinetuneConfigMixin,
    ReplayFinetuneMixin,
)
from rllib_diffusion.knobs import set_provided

#: Algorithm name stored in checkpoint metadata.
DQL_NAME = "DQL"
#: What the BC term of the actor loss regresses: the actor's own sample (reference) or
#: the replay's actions (offline Diffusion-QL's choice).
BC_ACTIONS = ("sampled", "replay")

#: DQL's model config: the shared pretrained actor-critic one.
DQLModelConfig = PretrainedActorCriticConfig


class DQLModule(PretrainedActorCriticModule):
    """The pretrained denoiser acting alone (one sample per decision) + twin critics."""


class DQLConfig(ReplayFinetuneConfigMixin, AlgorithmConfig):
    """Config of :class:`DQL` (reference Hopper defaults; see the module doc)."""

    def __init__(self, algo_class: type | None = None) -> None:
        super().__init__(algo_class=algo_class or DQL)
        self.eta = 1.0
        self.bc_actions = "sampled"
        self.actor_after_critic_step = True

    @override(AlgorithmConfig)
    def training(
        self,
        *,
        eta: float | None = NotProvided,
        bc_actions: str | None = NotProvided,
        actor_after_critic_step: bool | None = NotProvided,
        **kwargs: Any,
    ) -> DQLConfig:
        """DQL's knobs (and the shared ones, see ``ReplayFinetuneConfigMixin.training``).

        Args:
            eta: weight η of the Q term in the actor loss (reference 1).
            bc_actions: what the actor's BC term regresses: "sampled", the actor's own
                differentiable sample (reference), or "replay", the replay's actions.
            actor_after_critic_step: compute the actor's loss with the critic after this
                gradient step's critic update (True, the reference's order) or with the
                critic before it, in one forward with the critic's loss (False).
        """
        super().training(**kwargs)
        set_provided(
            self,
            {
                "eta": eta,
                "bc_actions": bc_actions,
                "actor_after_critic_step": actor_after_critic_step,
            },
        )
        return self

    @override(AlgorithmConfig)
    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(module_class=DQLModule)

    @override(AlgorithmConfig)
    def get_default_learner_class(self) -> type:
        from rllib_diffusion.algorithms.diffusion_ql.finetune_learner import DQLTorchLearner

        return DQLTorchLearner

    @override(AlgorithmConfig)
    def validate(self) -> None:
        super().validate()
        if self.eta < 0:
            self._value_error(f"eta must be >= 0, got {self.eta}.")
        if self.bc_actions not in BC_ACTIONS:
            self._value_error(f"bc_actions={self.bc_actions!r}; allowed: {', '.join(BC_ACTIONS)}.")


class DQL(ReplayFinetuneMixin, Algorithm):
    """DQL: Diffusion-QL's actor loss on a pretrained denoiser, trained online."""

    @classmethod
    @override(Algorithm)
    def get_default_config(cls) -> DQLConfig:
        return DQLConfig()
