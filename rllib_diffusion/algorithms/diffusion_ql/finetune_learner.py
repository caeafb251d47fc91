"""Learner of DQL (online Diffusion-QL fine-tuning, ``finetune.py``).

Glossary: B batch, N = Ta·Da flattened action chunk, Do observation dim.

critic: ``Σ_i mean_b (Q_i(s, a) − y)²``, ``y = r + γ(1 − d)·min_i Q'_i(s', a')``,
        ``a'`` sampled exploring from the actor (no gradient)
actor:  ``L_bc(x0) + η·L_q``, ``L_q = −mean Q_j(s, â) / sg(mean |Q_k(s, â)|)``, ``â``
        sampled exploring through the whole chain with gradients, ``(j, k)`` a random
        order of the twin critics, ``x0 = â`` (reference) or the replay's actions
Critic targets: Polyak ``tau`` after every step.
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
    """Actor (``actor_lr``) then critic (``critic_lr``), each with its own Adam: the
    actor's Q term reaches the critic, whose step then drops those gradients."""

    OPTIMIZER_ORDER = (ACTOR, CRITIC)

    @override(ReplayFinetuneLearnerMixin)
    def actor_loss(self, module, config, obs, actions):
        """:func:`dql_actor_loss` on the actor rows, with its BC and Q terms."""
        actor, bc, q_term = dql_actor_loss(
            module, obs, actions, eta=config.eta, bc_actions=config.bc_actions
        )
        return actor, {M.BC_LOSS: bc.detach(), M.Q_LOSS: q_term.detach()}
