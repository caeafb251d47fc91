"""IDQL learner (Hansen-Estruch et al. 2023): IQL critics + diffusion BC actor.

value:  mean(|τ − 1(u < 0)|·u²),  u = min_j Q′_j(s, a) − V(s)        (expectile regression)
critic: mean_j MSE(Q_j(s, a), r + γ(1 − d)·V(s′))    (mean over the heads, official)
actor:  denoising loss on dataset actions (plain diffusion BC); AdamW (weight decay
        1e-4), its rate cosine-decayed to 0 over lr_decay_steps (official)
Policy extraction happens at acting time (N samples; argmax Q or expectile resampling).
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
    CosineLRMixin,
    SeparateLossesMixin,
    acting_policy_q,
    ensemble_mse,
    register_adam_optimizers,
    td_target,
    transition_batch,
)
from rllib_diffusion.algorithms.finite_gradients import SkipNonFiniteStepsMixin
from rllib_diffusion.algorithms.mixed_precision import MixedPrecisionMixin
from rllib_diffusion.diffusion import denoising_loss

VALUE = "value"


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """``mean(|τ − 1(diff < 0)|·diff²)``."""
    weight = (expectile - (diff < 0).float()).abs()
    return (weight * diff**2).mean()


class IDQLTorchLearner(
    CosineLRMixin, MixedPrecisionMixin, SkipNonFiniteStepsMixin, SeparateLossesMixin, TorchLearner
):
    # The three losses touch disjoint parameters (targets are detached).
    OPTIMIZER_ORDER = (ACTOR, VALUE, CRITIC)

    @override(TorchLearner)
    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        """The official optimizers: the actor's AdamW (``actor_weight_decay``; 0: Adam)
        with a cosine-decayed rate (``lr_decay_steps``, offline), V's and Q's Adam."""
        module = self.module[module_id].unwrapped()
        decay = config.lr_decay_steps if not config.is_online else None
        actor_lr = self.cosine_or_lr(module_id, ACTOR, config.actor_lr, decay)
        wd = config.actor_weight_decay
        register_adam_optimizers(
            self,
            module_id,
            (
                (ACTOR, module.actor, actor_lr),
                (VALUE, module.value, config.critic_lr),
                (CRITIC, module.critic, config.critic_lr),
            ),
            {ACTOR: {"decoupled": True, "weight_decay": wd}} if wd > 0 else None,
        )
        self.set_cosine_lrs(module_id)

    @override(TorchLearner)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> torch.Tensor:
        module = self.module[module_id].unwrapped()
        obs, actions = transition_batch(batch)

        with torch.no_grad():
            q_target = module.critic_target(obs, actions).min(dim=0).values
        v = module.value(obs).squeeze(-1)
        value_loss = expectile_loss(q_target - v, config.expectile)

        with torch.no_grad():
            v_next = module.value(batch[Columns.NEXT_OBS].float()).squeeze(-1)
            y = td_target(batch, v_next, config.gamma)
        q = module.critic(obs, actions)
        critic_loss = ensemble_mse(q, y) / q.shape[0]  # the mean over heads

        actor_loss = denoising_loss(module.actor, module.schedule, actions.unsqueeze(1), obs)

        self._temp_losses[(module_id, ACTOR)] = actor_loss
        self._temp_losses[(module_id, VALUE)] = value_loss
        self._temp_losses[(module_id, CRITIC)] = critic_loss
        self.metrics.log_dict(
            {
                M.ACTOR_LOSS: actor_loss.detach(),
                M.CRITIC_LOSS: critic_loss.detach(),
                M.VALUE_LOSS: value_loss.detach(),
                M.Q_MEAN: q.mean().detach(),
                M.TARGET_MEAN: y.mean(),
                M.TD_ERROR: (q.detach() - y).abs().mean(),
                M.VALUE_MEAN: v.mean().detach(),
            },
            key=module_id,
            window=1,
        )
        q_policy = acting_policy_q(module, obs)
        if q_policy is not None:
            self.metrics.log_value((module_id, M.Q_POLICY_MEAN), q_policy, window=1)
        return actor_loss + value_loss + critic_loss
