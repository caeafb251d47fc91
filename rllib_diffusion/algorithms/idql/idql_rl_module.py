"""RLModule of IDQL: the shared diffusion actor-critic plus IDQL's value net V(s).

The official critics (``ddpm_iql_simple``): Q heads ``MLP(256, 256, relu) → 1`` and
``V = LayerNorm(s) → MLP(256, 256, relu) → 1`` (jaxrl5's ``use_layer_norm`` normalises
the MLP's input only).

V is learner-only unless acting resamples candidates with expectile weights
|τ − 1(Q − V < 0)| (``action_selection="expectile"``), which needs it on EnvRunners.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor, nn

from rllib_diffusion.algorithms.offline_q.diffusion_actor_critic import (
    DiffusionActorCriticConfig,
    DiffusionActorCriticMixin,
)
from rllib_diffusion.diffusion import MLP
from rllib_diffusion.modules.apis import EvalWhenInferenceOnly
from rllib_diffusion.modules.critics import QEnsemble


@dataclass
class IDQLModelConfig(DiffusionActorCriticConfig):
    """The shared knobs plus IDQL's critic options and acting by expectile resampling.

    Field defaults are the pre-fidelity networks, so checkpoints recorded before these
    fields existed rebuild as trained; ``IDQLConfig.default_model_config`` sets the
    official ``critic_activation="relu"`` and ``value_layer_norm=True``.

    Attributes:
        critic_activation: activation of the Q heads and of V.
        value_layer_norm: LayerNorm on V's input (the official ``value_layer_norm``).
        expectile: τ of the acting weights; filled from ``IDQLConfig.expectile`` (RLlib's
            model-config auto-includes), so ``to_dict`` leaves it out.
    """

    SELECTIONS: ClassVar[tuple[str, ...]] = ("softmax", "argmax", "expectile")

    critic_activation: str = "mish"
    value_layer_norm: bool = False
    expectile: float = 0.7

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.pop("expectile")
        return d


def value_network(cfg: IDQLModelConfig) -> nn.Module:
    """``V(s)``: ``[LayerNorm(Do)] → MLP(critic_hidden_dims, critic_activation) → 1``."""
    mlp = MLP(cfg.obs_dim, 1, cfg.critic_hidden_dims, activation=cfg.critic_activation)
    return nn.Sequential(nn.LayerNorm(cfg.obs_dim), mlp) if cfg.value_layer_norm else mlp


class IDQLModule(EvalWhenInferenceOnly, DiffusionActorCriticMixin, TorchRLModule, InferenceOnlyAPI):
    """Observation Box (Do,), action Box [-max_action, max_action] (Da,)."""

    MODEL_CONFIG = IDQLModelConfig

    @override(DiffusionActorCriticMixin)
    def setup(self) -> None:
        super().setup()
        cfg = self.dql_config
        # The shared setup builds Mish heads; IDQL's take ``critic_activation``.
        critic = QEnsemble(
            cfg.obs_dim,
            cfg.action_dim,
            num_heads=cfg.num_critics,
            hidden_dims=cfg.critic_hidden_dims,
            activation=cfg.critic_activation,
        )
        self.critic_target = copy.deepcopy(critic).requires_grad_(False)
        if not self.inference_only:
            self.critic = critic
        if cfg.action_selection == "expectile" or not self.inference_only:
            self.value = value_network(cfg)

    @override(DiffusionActorCriticMixin)
    def pick_candidates(self, obs: Tensor, q: Tensor, *, explore: bool) -> Tensor:
        cfg = self.dql_config
        if cfg.action_selection != "expectile":
            return super().pick_candidates(obs, q, explore=explore)
        adv = q - self.value(obs).view(q.shape[0], 1)
        weights = (cfg.expectile - (adv < 0).float()).abs()
        return torch.multinomial(weights, 1).squeeze(1)

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        learner_only = super().get_non_inference_attributes()
        if self.dql_config.action_selection != "expectile":
            learner_only.append("value")
        return learner_only
