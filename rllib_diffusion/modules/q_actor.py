"""The forwards of an off-policy actor module (TD3+BC, FQL, the Diffusion-QL family):
it acts through one ``select_actions(obs, explore=...)`` and its learner evaluates the networks
itself, so ``forward_train`` computes nothing and exploration carries no behaviour
log-prob (a zero ``action_logp`` column, which RLlib's episode code expects). Acting
runs under ``no_grad``: overriding ``_forward_inference``/``_forward_exploration`` drops
the one of ``TorchRLModule``'s defaults, and RLlib's EnvRunners add none."""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor


class OffPolicyActorForwards:
    """Mixin placed before ``TorchRLModule`` in the bases; subclasses define ``select_actions``."""

    def select_actions(self, obs: Tensor, *, explore: bool) -> Tensor:
        """Actions (B, Da) for raw observations ``obs`` (B, Do)."""
        raise NotImplementedError

    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            return {Columns.ACTIONS: self.select_actions(batch[Columns.OBS], explore=False)}

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        with torch.no_grad():
            actions = self.select_actions(batch[Columns.OBS], explore=True)
        return {
            Columns.ACTIONS: actions,
            Columns.ACTION_LOGP: torch.zeros(actions.shape[0], device=actions.device),
        }

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        # The learner evaluates actor and critics itself (several losses, targets).
        return {}
