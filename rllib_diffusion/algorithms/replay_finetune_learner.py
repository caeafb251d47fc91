"""Learner pieces of the replay fine-tuning (``replay_finetune``), above the families:
the twin critics' TD step and the critic + actor update of DQL, DIPO and QSM.

Glossary: B batch, N = Ta·Da flattened action chunk, Do observation dim.

Each gradient step gets a replay minibatch (the critics) and, once the critic has warmed
up, the actor's rows :data:`~rllib_diffusion.algorithms.replay_finetune.ACTOR_OBS` /
``ACTOR_ACTIONS`` (``ReplayFinetuneMixin.actor_rows``). Critic and actor have their own
Adam (``actor_lr``, ``critic_lr``) and backward (``SeparateLossesMixin``, in the host's
``OPTIMIZER_ORDER``); a host brings only its actor loss.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from torch import Tensor

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
from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS


def twin_critic_step(
    module: Any, batch: dict[str, Any], gamma: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """The twin critics' loss on a replay minibatch and its metrics (the reference's
    ``loss_critic`` of DQL, DIPO and QSM): ``Σ_i mean_b (Q_i(s, a) − y)²`` with
    ``y = r + γ(1 − d)·min_i Q'_i(s', a')`` ``(B,)``, ``a'`` one exploring sample of the
    module's ``acting_net`` at ``s'`` (no gradient to ``y``).
    """
    obs, actions = transition_batch(batch)
    with torch.no_grad():
        next_obs = batch[Columns.NEXT_OBS].float()
        next_actions = module.sample(next_obs, deterministic=False).flatten(1)
        next_q = module.critic_target(next_obs, next_actions).min(dim=0).values
        target = td_target(batch, next_q, gamma)
    q = module.critic(obs, actions)
    loss = ensemble_mse(q, target)
    return loss, {
        M.CRITIC_LOSS: loss.detach(),
        M.Q_MEAN: q.detach().mean(),
        M.TARGET_MEAN: target.mean(),
    }


class ReplayFinetuneLearnerMixin(SeparateLossesMixin):
    """Twin critics by :func:`twin_critic_step` and the host's :meth:`actor_loss` on the
    actor rows, each with its own Adam. Host: ``<Algo>TorchLearner(
    ReplayFinetuneLearnerMixin, TorchLearner)`` with ``OPTIMIZER_ORDER`` a permutation of
    ``(ACTOR, CRITIC)`` (a loss that reaches the other network comes first)."""

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self.module[module_id].unwrapped()
        nets = {ACTOR: (module.actor, config.actor_lr), CRITIC: (module.critic, config.critic_lr)}
        register_adam_optimizers(
            self, module_id, [(name, *nets[name]) for name in self.OPTIMIZER_ORDER]
        )

    def compute_losses(self, *, fwd_out, batch):
        """Note whether this gradient step is the warm-up's (no module has actor rows),
        for :meth:`target_tau`; then the losses."""
        self._warmup_step = not any(ACTOR_ACTIONS in b for b in batch.values())
        return super().compute_losses(fwd_out=fwd_out, batch=batch)

    def target_tau(self, cfg: Any) -> float:
        """``critic_warmup_tau`` in a warm-up step when set, else ``tau``."""
        warmup = getattr(cfg, "critic_warmup_tau", None)
        if warmup is not None and getattr(self, "_warmup_step", False):
            return warmup
        return cfg.tau

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> Tensor:
        module = self.module[module_id].unwrapped()
        critic, metrics = twin_critic_step(module, batch, config.gamma)
        self._temp_losses[(module_id, CRITIC)] = critic
        if ACTOR_ACTIONS in batch:
            obs = batch[ACTOR_OBS].float()
            actions = batch[ACTOR_ACTIONS].float().reshape(obs.shape[0], -1)
            actor, extra = self.actor_loss(module, config, obs, actions)
            self._temp_losses[(module_id, ACTOR)] = actor
            metrics |= {M.ACTOR_LOSS: actor.detach(), **extra}
        self.metrics.log_dict(metrics, key=module_id, window=1)
        return critic + self._temp_losses.get((module_id, ACTOR), 0.0)

    def actor_loss(
        self, module: Any, config: Any, obs: Tensor, actions: Tensor
    ) -> tuple[Tensor, dict[str, Any]]:
        """The actor's loss on its rows ``(B, Do)``, ``(B, N)`` and extra metrics."""
        raise NotImplementedError
