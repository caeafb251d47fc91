"""RLModule of IDQL: the shared diffusion actor-critic plus IDQL's value net V(s).

V is learner-only unless acting resamples candidates with expectile weights
|τ − 1(Q − V < 0)| (``action_selection="expectile"``), which needs it on EnvRunners.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion.algorithms.offline_q.diffusion_actor_critic import (
    DiffusionActorCriticConfig,
    DiffusionActorCriticMixin,
)
from rllib_diffusion.diffusion import MLP


@dataclass
class IDQLModelConfig(DiffusionActorCriticConfig):
    """The shared knobs plus IDQL's acting by expectile resampling.

    Attributes:
        expectile: τ of the acting weights; filled from ``IDQLConfig.expectile`` (RLlib's
            model-config auto-includes), so ``to_dict`` leaves it out.
    """

    SELECTIONS: ClassVar[tuple[str, ...]] = ("softmax", "argmax", "expectile")

    expectile: float = 0.7

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.pop("expectile")
        return d


class IDQLModule(DiffusionActorCriticMixin, TorchRLModule, InferenceOnlyAPI):
    """Observation Box (Do,), action Box [-max_action, max_action] (Da,)."""

    MODEL_CONFIG = IDQLModelConfig

    @override(DiffusionActorCriticMixin)
    def setup(self) -> None:
        super().setup()
        cfg = self.dql_config
        if cfg.action_selection == "expectile" or not self.inference_only:
            self.value = MLP(cfg.obs_dim, 1, cfg.critic_hidden_dims, activation="mish")

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
        learner_only = ["actor", "critic"]
        if self.dql_config.action_selection != "expectile":
            learner_only.append("value")
        return learner_only
