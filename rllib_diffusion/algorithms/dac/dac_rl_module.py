"""RLModule of DAC: the shared diffusion actor-critic plus DAC's dual variable η.

η is a buffer (``dual_eta``) so that checkpoints restore it; the learner sets it to η₀
(``DACConfig.eta``) when it is built and moves it by dual ascent after every step.
"""

from __future__ import annotations

import torch
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.offline_q.diffusion_actor_critic import (
    DiffusionActorCriticConfig,
    DiffusionActorCriticMixin,
)
from rllib_diffusion.modules.apis import EvalWhenInferenceOnly

#: DAC's model config is the shared one (its defaults: ``DACConfig.default_model_config``).
DACModelConfig = DiffusionActorCriticConfig


class DACModule(EvalWhenInferenceOnly, DiffusionActorCriticMixin, TorchRLModule, InferenceOnlyAPI):
    """Observation Box (Do,), action Box [-max_action, max_action] (Da,)."""

    @override(DiffusionActorCriticMixin)
    def setup(self) -> None:
        super().setup()
        self.register_buffer("dual_eta", torch.ones(()))
