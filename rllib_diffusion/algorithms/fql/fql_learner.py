"""FQL learner: BC flow matching, one-step policy distilled toward the flow plus Q.

Glossary: B batch, Da action dim, H critic heads. As the official code (seohongpark/fql,
``agents/fql.py``):

critic:   Σ_j MSE(Q_j(s, a), r + γ(1 − d)·agg_j Q′_j(s′, μ_ω(s′, z′))), agg = ``q_agg``
          (mean by default, or min)
bc flow:  flow matching on dataset actions
one-step: α·mean_{b,i}(μ_ω(s, z) − ODE_φ(s, z))² − λ·mean_j Q_j(s, clip(μ_ω(s, z))),
          λ = 1/stopgrad(mean|Q|) when ``normalize_q_loss`` else 1; ODE_φ: S Euler steps,
          no grad, clipped; the distillation sees the unclipped μ_ω (its pull keeps the
          output inside the bounds), the Q term the clipped one (no gradient past a
          bound), acting and the TD target clip too.
"""

from __future__ import annotations

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
from rllib_diffusion.diffusion import flow_matching_loss

BC_FLOW = "bc_flow"


def aggregate_heads(q: torch.Tensor, how: str) -> torch.Tensor:
    """``mean_j Q_j`` (``how="mean"``) or ``min_j Q_j`` (``"min"``) of ``q`` (H, B) → (B,)."""
    return q.mean(dim=0) if how == "mean" else q.min(dim=0).values


def distillation_loss(actions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_{b,i} (μ_ω(s_b, z_b)_i − ODE_φ(s_b, z_b)_i)²`` over (B, Da): the mean over
    action dims too (the official ``jnp.mean``), so α does not scale with Da."""
    return ((actions - target) ** 2).mean()


def q_term(q_pi: torch.Tensor, normalize: bool) -> torch.Tensor:
    """``−λ·mean_b Q(s_b, a_b)`` for ``q_pi`` (B,); λ = 1/stopgrad(mean_b |Q|) when
    ``normalize``, else 1."""
    lam = 1.0 / q_pi.abs().mean().detach() if normalize else 1.0
    return -lam * q_pi.mean()


class FQLTorchLearner(
    MixedPrecisionMixin, SkipNonFiniteStepsMixin, SeparateLossesMixin, TorchLearner
):
    # The one-step policy's Q term reaches the critic: actor first.
    OPTIMIZER_ORDER = (ACTOR, BC_FLOW, CRITIC)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        register_adam_optimizers(
            self,
            module_id,
            (
                (ACTOR, module.onestep, config.actor_lr),
                (BC_FLOW, module.bc_flow, config.actor_lr),
                (CRITIC, module.critic, config.critic_lr),
            ),
        )

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        obs, actions = transition_batch(batch)
        da = actions.shape[1]

        with torch.no_grad():
            next_obs = batch[Columns.NEXT_OBS].float()
            next_a = module.onestep_actions(
                next_obs, torch.randn(obs.shape[0], da, device=obs.device)
            )
            q_next = aggregate_heads(module.critic_target(next_obs, next_a), config.q_agg)
            y = td_target(batch, q_next, config.gamma)
        q = module.critic(obs, actions)
        critic_loss = ensemble_mse(q, y)

        flow_loss = flow_matching_loss(module.bc_flow, actions.unsqueeze(1), obs)

        z = torch.randn(obs.shape[0], da, device=obs.device)
        with torch.no_grad():
            target_a = module.flow_actions(obs, z)
        raw = module.onestep_raw(obs, z)
        distill = distillation_loss(raw, target_a)  # unclipped, as the official code
        a = module.clip_to_bounds(raw)
        q_pi = module.critic(obs, a).mean(dim=0)
        actor_loss = config.alpha * distill + q_term(q_pi, config.normalize_q_loss)

        self._temp_losses[(module_id, ACTOR)] = actor_loss
        self._temp_losses[(module_id, BC_FLOW)] = flow_loss
        self._temp_losses[(module_id, CRITIC)] = critic_loss
        self.metrics.log_dict(
            {
                M.ACTOR_LOSS: actor_loss.detach(),
                M.CRITIC_LOSS: critic_loss.detach(),
                M.BC_LOSS: flow_loss.detach(),
                M.DISTILL_LOSS: distill.detach(),
                M.Q_MEAN: q.mean().detach(),
                M.Q_POLICY_MEAN: q_pi.mean().detach(),
                M.TARGET_MEAN: y.mean(),
                M.TD_ERROR: (q.detach() - y).abs().mean(),
            },
            key=module_id,
            window=1,
        )
        return actor_loss + flow_loss + critic_loss
