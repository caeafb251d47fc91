"""What DPPO's and ReinFlow's modules share: a frozen pretrained denoiser ``actor``, its
fine-tuned copy ``actor_ft`` (initialised from the same pretrained EMA weights) and, on
learners only, a value critic V(s) (residual Mish MLP). The chain-PPO learner scores the
units each module defines (``DenoisingChainAPI``) and evaluates the critic."""

from __future__ import annotations

import copy
from typing import Any

from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion.diffusion import MLP
from rllib_diffusion.modules.apis import DenoisingChainAPI, EvalWhenInferenceOnly
from rllib_diffusion.modules.diffusion_policy_module import build_denoiser
from rllib_diffusion.modules.model_config import DiffusionPolicyConfig


class FineTunedChainModule(
    EvalWhenInferenceOnly, TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI, DenoisingChainAPI
):
    """Base of the chain-PPO modules; subclasses build their parts in ``setup`` with
    :meth:`_build_actors` and :meth:`_build_critic` and define the chain's units."""

    def _build_actors(self, policy: DiffusionPolicyConfig) -> None:
        self.actor = build_denoiser(policy).requires_grad_(False)
        self.actor_ft = copy.deepcopy(self.actor).requires_grad_(True)

    def _build_critic(self, policy: DiffusionPolicyConfig, hidden_dims: tuple[int, ...]) -> None:
        if not self.inference_only:
            self.critic = MLP(policy.obs_dim, 1, hidden_dims, activation="mish", residual=True)

    def load_pretrained_denoiser(self, state_dict: dict[str, Tensor]) -> None:
        """Copy pretrained (EMA) denoiser weights into both the frozen and fine-tuned actor."""
        self.actor.load_state_dict(state_dict)
        self.actor_ft.load_state_dict(state_dict)

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        # The chain-PPO learner scores its units via pair_logp(_entropy) and
        # compute_values; nothing to precompute here.
        return {}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> Tensor:
        return self.critic(batch[Columns.OBS].float()).squeeze(-1)

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["critic"]
