"""Learner of DRWR and DAWR: the weighted denoising loss and (DAWR) the value loss.

A minibatch holds action chunks with per-row weights (DRWR: ``SAMPLE_WEIGHTS``, fixed
for the iteration) or advantages (DAWR: weighted per minibatch), and/or value targets
(DAWR's critic phase). Each part present adds its loss; only the optimizer whose
parameters got gradients steps, so the critic phase leaves the actor (and its Adam
moments) untouched and vice versa.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion import columns as C
from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.awr.weights import awr_weights
from rllib_diffusion.modules.diffusion_policy_module import PREDICTION, TARGET


def weighted_denoising_loss(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """``L = (1/B)·Σ_b w_b·mean_{Ta,Da}(ε̂_b − ε_b)²`` (the reference's ``p_losses`` of
    ``RWRDiffusion``: not normalised by Σw).

    Args:
        pred, target: ``(B, Ta, Da)`` predicted and true noise.
        weights: ``(B,)`` per-row weights (no gradient flows into them).
    """
    per_row = (pred - target).pow(2).flatten(1).mean(dim=1)
    return (per_row * weights.detach().to(per_row.dtype)).mean()


def value_loss(values: Tensor, targets: Tensor) -> Tensor:
    """``L_V = mean_b (V(s_b) − y_b)²`` (the reference's ``loss_critic``)."""
    return (values - targets.to(values.dtype)).pow(2).mean()


class RewardWeightedTorchLearner(TorchLearner):
    """AdamW for the actor (``actor_lr``) and, with a critic, the critic (``critic_lr``)."""

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        parts = [("actor", module.actor, config.actor_lr)]
        if module.has_critic:
            parts.append(("critic", module.critic, config.critic_lr))
        for name, net, lr in parts:
            params = self.get_parameters(net)
            self.register_optimizer(
                module_id=module_id,
                optimizer_name=name,
                optimizer=torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay),
                params=params,
                lr_or_lr_schedule=lr,
            )

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> Tensor:
        total: Tensor | float = 0.0
        metrics: dict[str, Any] = {}
        if PREDICTION in fwd_out:
            if C.SAMPLE_WEIGHTS in batch:
                weights = batch[C.SAMPLE_WEIGHTS]
            else:
                weights = awr_weights(batch[Columns.ADVANTAGES], config.beta, config.max_weight)
            actor = weighted_denoising_loss(fwd_out[PREDICTION], fwd_out[TARGET], weights)
            total = total + actor
            metrics[M.ACTOR_LOSS] = actor.detach()
            metrics[M.WEIGHT_MEAN] = weights.float().mean()
            metrics[M.WEIGHT_AT_MAX] = (weights >= config.max_weight).float().mean()
        if Columns.VF_PREDS in fwd_out:
            critic = value_loss(fwd_out[Columns.VF_PREDS], batch[Columns.VALUE_TARGETS])
            total = total + critic
            metrics[M.CRITIC_LOSS] = critic.detach()
            metrics[M.VALUE_MEAN] = fwd_out[Columns.VF_PREDS].detach().mean()
        self.metrics.log_dict(metrics, key=module_id, window=1)
        return total

    @override(TorchLearner)
    def compute_gradients(self, loss_per_module, **kwargs):
        # A phase trains one of the two nets: the other's parameters have no gradient
        # and must stay out (RLlib would otherwise step them with a None gradient).
        grads = super().compute_gradients(loss_per_module, **kwargs)
        return {ref: g for ref, g in grads.items() if g is not None}

    def values(self, obs: Tensor, chunk: int = 65_536) -> Tensor:
        """V(s) ``(N,)`` of observations ``(N, Do)`` under the current critic (CPU)."""
        module = self.module[DEFAULT_MODULE_ID].unwrapped()
        device = next(module.critic.parameters()).device
        out = []
        with torch.no_grad():
            for part in torch.as_tensor(obs).split(chunk):
                batch = {Columns.OBS: part.to(device)}
                out.append(module.compute_values(batch).cpu())
        return torch.cat(out) if out else torch.zeros(0)
