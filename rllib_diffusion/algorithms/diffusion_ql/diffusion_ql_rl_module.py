"""RLModule of Diffusion-QL: diffusion (or flow) actor, its EMA, critics, targets.

Everything but the class itself is shared with DAC and IDQL
(:mod:`rllib_diffusion.algorithms.offline_q.diffusion_actor_critic`).

Pre-redesign checkpoints of DAC and IDQL pickled this class (``DiffusionQLModule``) with
their model configs and state (``dual_eta``, IDQL's ``value`` net): they still load
here and act identically, since acting needs neither; the unknown config keys are
ignored and RLlib loads module state non-strictly. Full-algorithm restores of such runs
load that state into DAC's and IDQL's own modules, whose keys are the same.
"""

from __future__ import annotations

from ray.rllib.core.rl_module.apis import InferenceOnlyAPI
from ray.rllib.core.rl_module.torch import TorchRLModule

from rllib_diffusion.algorithms.offline_q.diffusion_actor_critic import (
    DiffusionActorCriticConfig,
    DiffusionActorCriticMixin,
    set_acting,
)

#: Diffusion-QL's model config is the shared diffusion actor-critic config.
DiffusionQLModelConfig = DiffusionActorCriticConfig

__all__ = ["DiffusionQLModelConfig", "DiffusionQLModule", "set_acting"]


class DiffusionQLModule(DiffusionActorCriticMixin, TorchRLModule, InferenceOnlyAPI):
    """Observation Box (Do,), action Box [-max_action, max_action] (Da,)."""
