"""ReinFlow learner: DPPO's chain-PPO learner plus the decay of the noise std's upper bound
and ReinFlow's BC regulariser.

The loss is DPPO's (``DPPOTorchLearner``) on ReinFlow's units: one clamped whole-chain
log-prob per env step (``ReinFlowModule.ppo_units``), a constant clip, an entropy bonus.
After each update the bound follows ``ReinFlowConfig.max_std_after`` (official
"learn_decay"); it is a module buffer, so it reaches the EnvRunners with the weights and
is checkpointed with them.
"""

from __future__ import annotations

from typing import Any

import torch
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

    @staticmethod
    @override(DPPOTorchLearner)
    def _bc_regulariser(module, obs: torch.Tensor) -> torch.Tensor:
        """The official W2 action loss (``bc_loss_type: W2``): MSE between the deterministic
        flows of the frozen and the fine-tuned velocity nets, both from ``x_0 = 0``."""
        pol = module.policy_config
        z = torch.zeros(obs.shape[0], pol.horizon, pol.action_dim, device=obs.device)
        with torch.no_grad():
            target = module.flow_actions(obs, z, base=True)
        return torch.nn.functional.mse_loss(module.flow_actions(obs, z), target)
