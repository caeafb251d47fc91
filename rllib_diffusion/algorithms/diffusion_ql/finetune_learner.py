"""Learner of DQL (online Diffusion-QL fine-tuning, ``finetune.py``).

Glossary: B batch, N = Ta·Da flattened action chunk, Do observation dim.

critic: ``Σ_i mean_b (Q_i(s, a) − y)²``, ``y = r + γ(1 − d)·min_i Q'_i(s', a')``,
        ``a'`` sampled exploring from the actor (no gradient)
actor:  ``L_bc(x0) + η·L_q``, ``L_q = −mean Q_j(s, â) / sg(mean |Q_k(s, â)|)``, ``â``
        sampled exploring through the whole chain with gradients, ``(j, k)`` a random
        order of the twin critics, ``x0 = â`` (reference) or the replay's actions
Order per gradient step (``actor_after_critic_step``, the reference's): critic Adam step,
then the actor's loss with the stepped critic and its Adam step, then Polyak ``tau``
of the critic targets. False: both losses in one forward (the critic before its step).
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.utils.annotations import override
from torch import Tensor

from rllib_diffusion import metrics as M
from rllib_diffusion.algorithms.actor_critic import ACTOR, CRITIC
from rllib_diffusion.algorithms.diffusion_ql.diffusion_ql_learner import q_loss_term
from rllib_diffusion.algorithms.replay_finetune import ACTOR_ACTIONS, ACTOR_OBS
from rllib_diffusion.algorithms.replay_finetune_learner import ReplayFinetuneLearnerMixin
from rllib_diffusion.diffusion import denoising_loss


def dql_actor_loss(
    module: Any, obs: Tensor, replay_actions: Tensor, *, eta: float, bc_actions: str
) -> tuple[Tensor, Tensor, Tensor]:
    """``(L_bc + η·L_q, L_bc, L_q)`` (the reference's ``DQLDiffusion.loss_actor``).

    ``â`` ``(B, Ta, Da)`` is an exploring sample of the actor with gradients through the
    whole chain; ``L_q = −mean Q_j(s, â) / sg(mean |Q_k(s, â)|)``; ``L_bc`` the denoising
    loss on ``x0 = â`` (``bc_actions="sampled"``, the reference; gradients reach ``x0``
    too) or on the replay's actions ``(B, N)`` (``"replay"``).
    """
    new = module.sample(obs, deterministic=False)
    q_new = module.critic(obs, new.flatten(1))
    x0 = new if bc_actions == "sampled" else replay_actions.reshape(new.shape)
    bc = denoising_loss(module.actor, module.schedule, x0, obs)
    perm = tuple(torch.randperm(q_new.shape[0])[:2].tolist())
    q_term = q_loss_term(q_new, perm)
    return bc + eta * q_term, bc, q_term


class DQLTorchLearner(ReplayFinetuneLearnerMixin, TorchLearner):
    """Actor (``actor_lr``) and critic (``critic_lr``), each with its own Adam. With
    ``actor_after_critic_step`` (default, the reference's ``train_dql_diffusion_agent``
    order) the critic steps first and the actor's loss is computed with the stepped
    critic (:meth:`actor_gradients_after_critic_step`); otherwise one forward for both,
    the actor's backward first (its Q term reaches the critic, whose step then drops
    those gradients)."""

    OPTIMIZER_ORDER = (ACTOR, CRITIC)

    @override(TorchLearner)
    def build(self) -> None:
        super().build()
        # The actor's rows of this step (obs, actions) by module, kept for after the
        # critic's step.
        self._actor_rows_after_critic: dict[Any, tuple[Tensor, Tensor]] = {}

    @override(ReplayFinetuneLearnerMixin)
    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out) -> Tensor:
        """The critic's loss; the actor's too, or (``actor_after_critic_step``) its rows
        kept for :meth:`compute_gradients`."""
        if not config.actor_after_critic_step or ACTOR_ACTIONS not in batch:
            return super().compute_loss_for_module(
                module_id=module_id, config=config, batch=batch, fwd_out=fwd_out
            )
        obs = batch[ACTOR_OBS].float()
        actions = batch[ACTOR_ACTIONS].float().reshape(obs.shape[0], -1)
        self._actor_rows_after_critic[module_id] = (obs, actions)
        critic_rows = {k: v for k, v in batch.items() if k not in (ACTOR_OBS, ACTOR_ACTIONS)}
        return super().compute_loss_for_module(
            module_id=module_id, config=config, batch=critic_rows, fwd_out=fwd_out
        )

    @override(TorchLearner)
    def compute_gradients(self, loss_per_module, **kwargs):
        grads = super().compute_gradients(loss_per_module, **kwargs)
        for module_id, (obs, actions) in self._actor_rows_after_critic.items():
            grads = self.actor_gradients_after_critic_step(module_id, grads, obs, actions)
        self._actor_rows_after_critic.clear()
        return grads

    def actor_gradients_after_critic_step(
        self, module_id: Any, grads: dict[Any, Tensor], obs: Tensor, actions: Tensor
    ) -> dict[Any, Tensor]:
        """Step the critic's Adam on its gradients (``θ_Q ← Adam(θ_Q, ∇L_Q)``), then
        compute the actor's loss with the stepped critic; returns ``grads`` with the
        actor's gradients in place of the critic's, so ``apply_gradients`` steps only
        the actor (a parameter without gradient is skipped by Adam). The critic's step
        here precedes RLlib's ``postprocess_gradients``/``apply_gradients``: no
        ``grad_clip`` reaches it (the reference clips only the actor; DQL sets none)."""
        module = self.module[module_id].unwrapped()
        config = self.config.get_config_for_module(module_id)
        critic_optim = self.get_optimizer(module_id, CRITIC)
        actor_optim = self.get_optimizer(module_id, ACTOR)
        critic_optim.step()  # the critic's gradients are still on its parameters
        actor, extra = self.actor_loss(module, config, obs, actions)
        actor_optim.zero_grad(set_to_none=True)
        actor.backward()
        critic_optim.zero_grad(set_to_none=True)  # the Q term's, and the stepped ones
        params = {self.get_param_ref(p): p for p in self.get_parameters(self.module[module_id])}
        critic_ids = self.filter_param_dict_for_optimizer(params, critic_optim)
        actor_params = self.filter_param_dict_for_optimizer(params, actor_optim)
        grads = {pid: g for pid, g in grads.items() if pid not in critic_ids}
        grads |= {pid: p.grad.clone() for pid, p in actor_params.items() if p.grad is not None}
        metrics = {M.ACTOR_LOSS: actor.detach(), **extra}
        self.metrics.log_dict(metrics, key=module_id, window=1)
        return grads

    @override(ReplayFinetuneLearnerMixin)
    def actor_loss(self, module, config, obs, actions):
        """:func:`dql_actor_loss` on the actor rows, with its BC and Q terms."""
        actor, bc, q_term = dql_actor_loss(
            module, obs, actions, eta=config.eta, bc_actions=config.bc_actions
        )
        return actor, {M.BC_LOSS: bc.detach(), M.Q_LOSS: q_term.detach()}
