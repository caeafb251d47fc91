"""ReinFlow learner: DPPO's chain-PPO learner plus the decay of the noise std's upper bound.

The loss is DPPO's (``DPPOTorchLearner``) on ReinFlow's units: one clamped whole-chain
log-prob per env step (``ReinFlowModule.ppo_units``), a constant clip, an entropy bonus.
After each update the bound follows ``ReinFlowConfig.max_std_after`` (official
"learn_decay"); it is a module buffer, so it reaches the EnvRunners with the weights and
is checkpointed with them.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.utils.annotations import override

from rllib_diffusion.algorithms.dppo.dppo_learner import DPPOTorchLearner


class ReinFlowTorchLearner(DPPOTorchLearner):
    @override(DPPOTorchLearner)
    def after_gradient_based_update(self, *, timesteps: dict[str, Any]) -> None:
        super().after_gradient_based_update(timesteps=timesteps)
        for mid in self.module.keys():
            module = self.module[mid].unwrapped()
            cfg = module.reinflow_config
            # ``_updates_done`` updates are complete: the bound for the next rollouts is
            # the official schedule's value at iteration ``_updates_done − 1``.
            bound = self.config.max_std_after(self._updates_done - 1, cfg.min_std, cfg.max_std)
            module.set_max_std(bound)
