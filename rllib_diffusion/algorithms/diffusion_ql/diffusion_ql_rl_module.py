"""RLModule of Diffusion-QL: diffusion (or flow) actor, its EMA, critics, targets.

Everything but the class itself is shared with DAC and IDQL
(:mod:`rllib_diffusion.algorithms.offline_q.diffusion_actor_critic`).

Pre-redesign checkpoints of DAC and IDQL pickled this class (``DiffusionQLModule``) with
their model configs and state (``dual_eta``, IDQL's ``value`` net): constructing it with
such a config builds the module that now owns that state (``DACModule``/``IDQLModule``,
found through the registry, see ``offline_q/legacy.py``), so the old state loads whole
and acts identically. Full-algorithm restores of such runs load the learner state into
those modules too: the state keys are unchanged.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from rllib_diffusion.algorithms.offline_q.diffusion_actor_critic import (
    DiffusionActorCriticConfig,
    DiffusionActorCriticMixin,
    set_acting,
)
from rllib_diffusion.algorithms.offline_q.legacy import legacy_module_class
from rllib_diffusion.modules.apis import EvalWhenInferenceOnly

#: Diffusion-QL's model config is the shared diffusion actor-critic config.
DiffusionQLModelConfig = DiffusionActorCriticConfig

__all__ = ["DiffusionQLModelConfig", "DiffusionQLModule", "set_acting"]


class DiffusionQLModule(
    EvalWhenInferenceOnly, DiffusionActorCriticMixin, TorchRLModule, InferenceOnlyAPI
):
    """Observation Box (Do,), action Box [-max_action, max_action] (Da,)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        # RLlib rebuilds a checkpointed module as ``pickled_class(**ctor_kwargs)``; a
        # pre-redesign DAC/IDQL config here becomes the module that owns its state.
        owner = (
            legacy_module_class(kwargs.get("model_config")) if cls is DiffusionQLModule else None
        )
        if owner is None:
            return super().__new__(cls)
        module = owner.__new__(owner)
        module.__init__(*args, **kwargs)  # not a DiffusionQLModule: Python will not
        return module
