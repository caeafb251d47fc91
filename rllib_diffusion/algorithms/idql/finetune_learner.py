"""Learner of IDQL fine-tuning (``finetune.py``).

Glossary: B batch, N = Ta·Da flattened action chunk, Do observation dim.

value:  ``mean(|τ − 1(u < 0)|·u²)``, ``u = min_i Q'_i(s, a) − V(s)``
critic: ``Σ_i mean_b (Q_i(s, a) − y)²``, ``y = r + γ(1 − d)·V(s')`` (no gradient)
actor:  the denoising loss on the replay's action chunks (plain diffusion BC)
Critic targets: Polyak ``tau`` after every step. The three losses touch disjoint
parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.actor_critic import (
    ACTOR,
    CRITIC,
    SeparateLossesMixin,
    ensemble_mse,
    register_adam_optimizers,
    td_target,
)
from rllib_diffusion.algorithms.idql.idql_learner import VALUE, expectile_loss
from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS
from rllib_diffusion.diffusion import denoising_loss


class IDQLFinetuneLearner(SeparateLossesMixin, TorchLearner):
    """Actor (``actor_lr``), V and twin Q (``critic_lr``), each with its own Adam."""

    OPTIMIZER_ORDER = (ACTOR, VALUE, CRITIC)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        register_adam_optimizers(
            self,
            module_id,
            [
                (ACTOR, module.actor, config.actor_lr),
                (VALUE, module.value, config.critic_lr),
                (CRITIC, module.critic, config.critic_lr),
            ],
        )

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> Tensor:
        module = self.module[module_id].unwrapped()
        obs = batch[Columns.OBS].float()
        actions = batch[Columns.ACTIONS].float().reshape(obs.shape[0], -1)
        with torch.no_grad():
            q_target = module.critic_target(obs, actions).min(dim=0).values
            v_next = module.value(batch[Columns.NEXT_OBS].float()).squeeze(-1)
            y = td_target(batch, v_next, config.gamma)
        v = module.value(obs).squeeze(-1)
        value_loss = expectile_loss(q_target - v, config.expectile)
        q = module.critic(obs, actions)
        critic_loss = ensemble_mse(q, y)
        self._temp_losses[(module_id, VALUE)] = value_loss
        self._temp_losses[(module_id, CRITIC)] = critic_loss
        metrics: dict[str, Any] = {
            M.CRITIC_LOSS: critic_loss.detach(),
            M.VALUE_LOSS: value_loss.detach(),
            M.Q_MEAN: q.detach().mean(),
            M.VALUE_MEAN: v.detach().mean(),
            M.TARGET_MEAN: y.mean(),
        }
        if ACTOR_OBS in batch:
            a_obs = batch[ACTOR_OBS].float()
            pol = module.policy_config
            x0 = batch[ACTOR_ACTIONS].float().reshape(-1, pol.horizon, pol.action_dim)
            actor = denoising_loss(module.actor, module.schedule, x0, a_obs)
            self._temp_losses[(module_id, ACTOR)] = actor
            metrics[M.ACTOR_LOSS] = actor.detach()
        self.metrics.log_dict(metrics, key=module_id, window=1)
        return value_loss + critic_loss + self._temp_losses.get((module_id, ACTOR), 0.0)
