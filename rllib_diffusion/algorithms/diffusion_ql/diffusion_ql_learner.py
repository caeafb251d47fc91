"""Diffusion-QL learner (Wang, Hunt, Zhou 2022), DDPM or flow-matching actor.

critic:  Σ_j MSE(Q_j(s, a), y),  y = r + γ(1 − d)·min_j Q′_j(s′, a′),  a′ ~ EMA actor(s′)
         (``max_q_backup = N``: min_j of max over N sampled a′ of Q′_j)
actor:   L_d + η·L_q,  L_q = −mean Q_j(s, â) / stopgrad(mean |Q_k(s, â)|),
         â sampled through the whole reverse chain (or Euler integration) with gradients,
         (j, k) a random permutation of two critics.
Targets: Polyak τ every gradient step; EMA actor every ``ema_update_every`` steps after
``ema_start`` (a plain copy before).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.actor_critic import (
    ACTOR,
    CRITIC,
    SeparateLossesMixin,
    ensemble_mse,
    register_adam_optimizers,
    td_target,
    transition_batch,
)
from rllib_diffusion.algorithms.finite_gradients import SkipNonFiniteStepsMixin
from rllib_diffusion.algorithms.mixed_precision import MixedPrecisionMixin
from rllib_diffusion.diffusion import denoising_loss, flow_matching_loss


def critic_target_values(
    module, batch: dict[str, Any], gamma: float, max_q_backup: int = 0
) -> torch.Tensor:
    """``y = r + γ(1 − d)·min_j Q′_j(s′, a′)``, ``a′`` from the EMA actor; ``(B,)``.

    ``max_q_backup = N > 0``: N next actions per state, ``y`` backs up
    ``min_j max_n Q′_j(s′, a′_n)``: each head's max over the N actions, then the min over
    heads, as the official ``ql_diffusion.py`` (the paper's AntMaze setting, N = 10).
    """
    with torch.no_grad():
        next_obs = batch[Columns.NEXT_OBS].float()
        if max_q_backup > 0:
            b = next_obs.shape[0]
            rep = next_obs.repeat_interleave(max_q_backup, dim=0)
            q = module.critic_target(rep, module.sample(rep, ema=True))  # (H, B·N)
            per_head_max = q.view(q.shape[0], b, max_q_backup).max(dim=2).values
            return td_target(batch, per_head_max.min(dim=0).values, gamma)
        next_actions = module.sample(next_obs, ema=True)
        return td_target(
            batch, module.critic_target(next_obs, next_actions).min(dim=0).values, gamma
        )


def q_loss_term(q_new: torch.Tensor, perm: tuple[int, int]) -> torch.Tensor:
    """``−mean Q_j / stopgrad(mean |Q_k|)`` for heads ``perm = (j, k)``; ``q_new`` is (H, B)."""
    j, k = perm
    return -q_new[j].mean() / q_new[k].abs().mean().detach()


class DiffusionQLTorchLearner(
    MixedPrecisionMixin, SkipNonFiniteStepsMixin, SeparateLossesMixin, TorchLearner
):
    # The actor's Q term reaches the critic: actor first (see SeparateLossesMixin).
    OPTIMIZER_ORDER = (ACTOR, CRITIC)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        register_adam_optimizers(
            self,
            module_id,
            ((ACTOR, module.actor, config.actor_lr), (CRITIC, module.critic, config.critic_lr)),
        )

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        obs, actions = transition_batch(batch)
        y = critic_target_values(module, batch, config.gamma, config.max_q_backup)
        q = module.critic(obs, actions)
        critic_loss = ensemble_mse(q, y)

        x0 = actions.unsqueeze(1)  # (B, 1, Da): a one-step "chunk"
        if module.dql_config.policy == "flow":
            bc_loss = flow_matching_loss(module.actor, x0, obs)
        else:
            bc_loss = denoising_loss(module.actor, module.schedule, x0, obs)
        new_actions = module.sample(obs, ema=False)
        q_new = module.critic(obs, new_actions)
        perm = tuple(torch.randperm(q_new.shape[0])[:2].tolist())
        q_term = q_loss_term(q_new, perm)
        actor_loss = bc_loss + config.eta * q_term

        self._temp_losses[(module_id, ACTOR)] = actor_loss
        self._temp_losses[(module_id, CRITIC)] = critic_loss
        self.metrics.log_dict(
            {
                M.ACTOR_LOSS: actor_loss.detach(),
                M.CRITIC_LOSS: critic_loss.detach(),
                M.BC_LOSS: bc_loss.detach(),
                M.Q_LOSS: q_term.detach(),
                M.Q_MEAN: q.mean().detach(),
                M.Q_POLICY_MEAN: q_new.mean().detach(),
                M.TARGET_MEAN: y.mean(),
                M.TD_ERROR: (q.detach() - y).abs().mean(),
            },
            key=module_id,
            window=1,
        )
        return actor_loss + critic_loss
